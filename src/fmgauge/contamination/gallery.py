"""The adjudication gallery: flagged (benchmark, reference) pairs side by side, marked by a reviewer.

A run directory holds ``gallery.html`` (the page), ``gallery/pairs.json`` (the pairs shown, each with a stable
``pair`` id ``<benchmark id>|<reference id>``), ``gallery/thumbs/*.png`` and, once someone has marked a pair,
``marks.json``::

    {"marks": {"<pair id>": {"mark": "duplicate" | "same-source" | "different", "at": "<UTC time>"}}}

Two ways to mark: ``fmgauge contamination gallery RUN`` serves the run over a local HTTP server (stdlib
``http.server``, 127.0.0.1) whose page loads the marks on every page load (``GET /api/marks``) and saves each
mark at once (``POST /api/marks``; it needs the server's per-run token and its own Origin/Host, see
:func:`make_handler` for the contract the page follows) into ``marks.json``; or open ``gallery.html`` from disk,
where marks live in the browser's localStorage and a button downloads them, and ``fmgauge contamination gallery
RUN --import marks.json`` merges them into the run. Either way the run's report is re-rendered with the counts.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import secrets
import socket
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np

from fmgauge.core.files import read_back
from fmgauge.core.validation import FmgaugeError

log = logging.getLogger(__name__)
MARKS = ("duplicate", "same-source", "different")
MARKS_FILE = "marks.json"
PAIRS_FILE = Path("gallery") / "pairs.json"
OUTSIDE_RGB = (40, 70, 140)  # aligned view / difference: blue where the aligned reference has no pixels
THUMB_PX = 160  # thumbnails are at most this many pixels a side; smaller images are enlarged (nearest)


def pair_id(benchmark_id: str, reference_id: str) -> str:
    return f"{benchmark_id}|{reference_id}"


def _thumb(im, path: Path) -> Path:
    from PIL import Image

    w, h = im.size
    scale = THUMB_PX / max(w, h)
    im = im.resize((max(1, round(w * scale)), max(1, round(h * scale))),
                   Image.NEAREST if scale > 1 else Image.LANCZOS)
    path.parent.mkdir(parents=True, exist_ok=True)
    im.save(path)
    return path


def _aligned_views(bench_im, ref_im, params, size: int, run_dir: Path, n: int) -> tuple[str, str]:
    """The reference image aligned into the benchmark image's frame, and |difference|, as thumbnails (paths)."""
    from PIL import Image

    from fmgauge.contamination.verify import align

    side = max(bench_im.size)
    a = np.asarray(bench_im.convert("L").resize((side, side), Image.BILINEAR), np.float64)
    b = np.asarray(ref_im.convert("L").resize((side, side), Image.BILINEAR), np.float64)
    warped, mask = align(b, np.asarray(params, np.float32), size=size, out=side)
    warped = warped.astype(np.float64)
    if mask.sum() > 2:  # match intensities over the overlap (the verification score ignores gain and offset)
        x, y = warped[mask], a[mask]
        gain = np.cov(x, y)[0, 1] / max(np.var(x), 1e-9)
        warped = (warped - x.mean()) * gain + y.mean()
    outside = np.array(OUTSIDE_RGB, np.uint8)
    shown = np.where(mask[..., None], np.clip(warped, 0, 255)[..., None].astype(np.uint8), outside)
    diff = np.where(mask[..., None], np.clip(np.abs(a - warped) * 2, 0, 255)[..., None].astype(np.uint8), outside)
    out = []
    for kind, arr in (("aligned", shown), ("diff", diff)):
        rel = Path("gallery") / "thumbs" / f"{n:05d}-{kind}.png"
        _thumb(Image.fromarray(np.ascontiguousarray(arr)), run_dir / rel)
        out.append(rel.as_posix())
    return out[0], out[1]


def write_gallery(run_dir: Path, pairs: list[dict], benchmark, reference, *, title: str = "",
                  verify_size: int = 32) -> Path:
    """Write thumbnails, ``gallery/pairs.json`` and ``gallery.html`` for ``pairs`` into ``run_dir``.

    Each pair dict has ``bench_row``, ``ref_row`` (rows of the ``benchmark`` / ``reference`` ImageSets),
    ``bench_id``, ``ref_id``, ``similarity`` and optional ``bench_caption``, ``ref_caption``, ``ref_source``,
    ``auto`` (automatic label), ``copy_score``, ``params`` (the verified transform at ``verify_size``, which
    adds the aligned view and the difference image) and ``neighbours`` (list of {ref_row, ref_id, similarity,
    copy_score}: thumbnails written, shown on demand).
    """
    from jinja2 import Environment, PackageLoader, select_autoescape

    run_dir = Path(run_dir)
    out = []
    ref_thumbs: dict[int, str] = {}

    def ref_thumb(row: int, im=None) -> str:
        if row not in ref_thumbs:
            im = im if im is not None else reference.load(int(row))
            rel = Path("gallery") / "thumbs" / f"ref-{int(row)}.png"
            ref_thumbs[row] = ""
            if im is not None:
                _thumb(im, run_dir / rel)
                ref_thumbs[row] = rel.as_posix()
        return ref_thumbs[row]

    for n, p in enumerate(pairs):
        q = dict(p, pair=pair_id(p["bench_id"], p["ref_id"]), n=n)
        b_im, r_im = benchmark.load(int(p["bench_row"])), reference.load(int(p["ref_row"]))
        q["bench_thumb"] = ""
        if b_im is not None:
            rel = Path("gallery") / "thumbs" / f"{n:05d}-bench.png"
            _thumb(b_im, run_dir / rel)
            q["bench_thumb"] = rel.as_posix()
        q["ref_thumb"] = ref_thumb(int(p["ref_row"]), r_im)
        q["aligned_thumb"] = q["diff_thumb"] = ""
        if p.get("params") is not None and b_im is not None and r_im is not None:
            q["aligned_thumb"], q["diff_thumb"] = _aligned_views(b_im, r_im, p["params"], verify_size, run_dir, n)
        q["neighbours"] = [dict(nb, thumb=ref_thumb(int(nb["ref_row"]))) for nb in p.get("neighbours", [])]
        out.append(q)
    (run_dir / PAIRS_FILE).parent.mkdir(parents=True, exist_ok=True)
    (run_dir / PAIRS_FILE).write_text(json.dumps(out, indent=1, default=str))
    env = Environment(loader=PackageLoader("fmgauge.contamination", "templates"),
                      autoescape=select_autoescape(("html", "html.j2")))
    html = env.get_template("gallery.html.j2").render(
        title=title or "Adjudication gallery", n_pairs=len(out), marks=MARKS, storage_key=f"fmgauge-marks:{run_dir.name}",
        pairs_json=json.dumps(out, default=str).replace("</", "<\\/"))
    path = run_dir / "gallery.html"
    path.write_text(html)
    return path


# ----------------------------------------------------------------------------------------------- marks

def read_pairs(run_dir: Path) -> list[dict]:
    f = Path(run_dir) / PAIRS_FILE
    if not f.is_file():
        raise FmgaugeError(f"{run_dir} has no {PAIRS_FILE}: run `fmgauge contamination image-overlap --out "
                           f"{run_dir}` first.")

    def read(path: Path) -> list[dict]:
        pairs = json.loads(path.read_text())
        if not isinstance(pairs, list) or not all(isinstance(p, dict) and "pair" in p for p in pairs):
            raise ValueError("expected a list of pairs, each with a 'pair' id")
        return pairs

    return read_back(f, read, what="gallery data", fix=f"rebuild it by rerunning `fmgauge contamination "
                                                       f"image-overlap ... --out {run_dir}` (embeddings are cached).")


def load_marks(run_dir: Path) -> dict[str, dict]:
    """``{pair id: {"mark": ..., "at": ...}}`` saved in the run (empty before any mark)."""
    f = Path(run_dir) / MARKS_FILE
    if not f.is_file():
        return {}
    try:
        return dict(json.loads(f.read_text()).get("marks", {}))
    except (json.JSONDecodeError, AttributeError) as e:
        raise FmgaugeError(f"{f} is not a marks file ({e}); move it away to start the marks afresh.") from None


def _write_marks(run_dir: Path, marks: dict[str, dict]) -> None:
    f = Path(run_dir) / MARKS_FILE
    tmp = f.with_name(f".{f.name}.tmp{os.getpid()}")
    tmp.write_text(json.dumps({"marks": marks}, indent=1, sort_keys=True))
    os.replace(tmp, f)


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _check(pairs: set[str], pid: Any, mark: Any, where: str) -> None:
    if pid not in pairs:
        raise FmgaugeError(f"{where}: pair {pid!r} is not in this run's gallery ({len(pairs)} pairs, e.g. "
                           f"{sorted(pairs)[:2]}).")
    if mark is not None and mark not in MARKS:
        raise FmgaugeError(f"{where}: mark of pair {pid!r} must be one of {list(MARKS)} (or null to clear), "
                           f"got {mark!r}.")


def set_marks(run_dir: Path, updates: dict[str, str | None], *, where: str = "marks") -> dict[str, dict]:
    """Apply ``{pair id: mark or None}`` (None clears) to the run's marks; validated first, saved atomically."""
    pairs = {p["pair"] for p in read_pairs(run_dir)}
    for pid, mark in updates.items():
        _check(pairs, pid, mark, where)
    marks = load_marks(run_dir)
    for pid, mark in updates.items():
        if mark is None:
            marks.pop(pid, None)
        else:
            marks[pid] = {"mark": mark, "at": _now()}
    _write_marks(run_dir, marks)
    return marks


def import_marks(run_dir: Path, file: Path) -> dict[str, dict]:
    """Merge a marks file downloaded from the static page (``{"marks": {pair: {"mark": m}}}`` or ``{pair: m}``)."""
    file = Path(file)
    try:
        data = json.loads(file.read_text())
    except FileNotFoundError:
        raise FmgaugeError(f"--import {file} does not exist.") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise FmgaugeError(f"--import {file} is not JSON ({e}).") from None
    raw = data.get("marks", data) if isinstance(data, dict) else None
    if not isinstance(raw, dict):
        raise FmgaugeError(f"--import {file} must hold {{\"marks\": {{pair: {{\"mark\": ...}}}}}}, got "
                           f"{type(data).__name__}.")
    updates = {pid: (m.get("mark") if isinstance(m, dict) else m) for pid, m in raw.items()}
    return set_marks(run_dir, updates, where=f"--import {file}")


def mark_counts(run_dir: Path) -> dict[str, int]:
    """Pairs in the gallery per mark, plus ``unmarked``."""
    pairs = [p["pair"] for p in read_pairs(run_dir)]
    marks = load_marks(run_dir)
    out = dict.fromkeys((*MARKS, "unmarked"), 0)
    for pid in pairs:
        m = marks.get(pid, {}).get("mark")
        out[m if m in MARKS else "unmarked"] += 1
    return out


# ---------------------------------------------------------------------------------------------- server

TOKEN_HEADER = "X-Fmgauge-Token"
TOKEN_META = "fmgauge-token"


def token_cookie(port: int) -> str:
    """Name of the cookie carrying a served gallery's write token (per port: cookies ignore ports)."""
    return f"fmgauge_gallery_{port}"


def make_handler(run_dir: Path, *, on_change=None, token: str | None = None) -> type[BaseHTTPRequestHandler]:
    """A request handler serving ``run_dir`` read-only plus ``GET/POST /api/marks``.

    POST takes ``{"pair": id, "mark": m|null}`` or ``{"marks": {id: m, ...}}``; ``on_change(run_dir)`` runs
    after each saved change (the CLI re-renders the report).

    Who may talk to it (the token contract; ``token`` is made per server run by :func:`serve`):

    - every request's ``Host`` must be this server (``127.0.0.1:<port>``, ``localhost:<port>``, ``[::1]:<port>`` or
      the bound host; bound to every interface, also an IP address or this machine's own name), so a DNS-rebinding
      page cannot read or write through it;
    - a POST whose ``Origin`` header is present must come from one of those origins (``http://<host>:<port>``);
    - a POST must carry the token, either as header ``X-Fmgauge-Token: <token>`` or as the cookie
      ``fmgauge_gallery_<port>`` (:func:`token_cookie`); otherwise it is refused with 403 and nothing is written.
      Serving the page (``/`` or ``/gallery.html``) sets that cookie (``HttpOnly; SameSite=Strict``), so the page's
      own same-origin ``fetch`` sends it without any code; a page that prefers the header reads the token from
      ``<meta name="fmgauge-token" content="...">``, which the server inserts into the HTML it serves (the file on
      disk has none).
    """
    root = Path(run_dir).resolve()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, fmt: str, *args) -> None:  # quiet: through logging, not stderr
            log.debug("gallery %s", fmt % args)

        def _send(self, code: int, body: bytes, ctype: str, headers: dict[str, str] | None = None) -> None:
            try:
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Cache-Control", "no-store")
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(body)
            except (BrokenPipeError, ConnectionResetError):  # the browser went away mid-reply: nothing to do
                self.close_connection = True

        def _json(self, code: int, obj: Any) -> None:
            self._send(code, json.dumps(obj).encode(), "application/json")

        # ---- who is asking
        def _port(self) -> int:
            return int(self.server.server_address[1])

        def _hosts(self) -> set[str]:
            port = self._port()
            bound = str(self.server.server_address[0])
            names = {"127.0.0.1", "localhost", "[::1]", bound if ":" not in bound else f"[{bound}]"}
            return {f"{h}:{port}" for h in names}

        def _host_ok(self) -> bool:
            return self._allowed((self.headers.get("Host") or "").strip().lower())

        def _allowed(self, host: str) -> bool:
            """Whether ``host`` (``name:port`` as in a Host header) names this server."""
            if host in self._hosts():
                return True
            if str(self.server.server_address[0]) in ("0.0.0.0", "::"):  # bound to every interface on purpose:
                import ipaddress  # a client may name this machine by any of its addresses, not by a DNS name

                name, _, port = host.rpartition(":")
                try:
                    ipaddress.ip_address(name.strip("[]"))
                except ValueError:
                    return name in {socket.gethostname().lower(), socket.getfqdn().lower()} and \
                        port == str(self._port())
                return port == str(self._port())
            return False

        def _token_ok(self) -> bool:
            if token is None:
                return True
            given = self.headers.get(TOKEN_HEADER)
            if given is None:
                from http.cookies import CookieError, SimpleCookie

                try:
                    jar = SimpleCookie(self.headers.get("Cookie") or "")
                except CookieError:
                    jar = SimpleCookie()
                morsel = jar.get(token_cookie(self._port()))
                given = morsel.value if morsel is not None else None
            return given is not None and secrets.compare_digest(given, token)

        def do_GET(self) -> None:  # noqa: N802
            if not self._host_ok():
                return self._send(HTTPStatus.FORBIDDEN, b"forbidden host", "text/plain")
            path = self.path.split("?", 1)[0]
            if path == "/api/marks":
                try:
                    return self._json(200, {"marks": load_marks(root), "counts": mark_counts(root)})
                except FmgaugeError as e:
                    return self._json(HTTPStatus.INTERNAL_SERVER_ERROR, {"error": str(e)})
            rel = "gallery.html" if path in ("/", "") else path.lstrip("/")
            f = (root / rel).resolve()
            if root not in f.parents or not f.is_file():  # nothing outside the run directory
                return self._send(HTTPStatus.NOT_FOUND, b"not found", "text/plain")
            ctype = {".html": "text/html; charset=utf-8", ".png": "image/png", ".json": "application/json",
                     ".md": "text/markdown; charset=utf-8", ".csv": "text/csv"}.get(f.suffix, "application/octet-stream")
            body, headers = f.read_bytes(), {}
            if rel == "gallery.html" and token is not None:  # the page gets the write token (cookie + meta)
                headers["Set-Cookie"] = f"{token_cookie(self._port())}={token}; Path=/; HttpOnly; SameSite=Strict"
                meta = f'<meta name="{TOKEN_META}" content="{token}">'.encode()
                body = body.replace(b"<head>", b"<head>" + meta, 1) if b"<head>" in body else meta + body
            self._send(200, body, ctype, headers)

        def do_POST(self) -> None:  # noqa: N802
            if not self._host_ok():
                return self._json(HTTPStatus.FORBIDDEN, {"error": "forbidden host"})
            origin = self.headers.get("Origin")
            o = (origin or "").strip().lower()
            if origin is not None and not (o.startswith("http://") and self._allowed(o.removeprefix("http://"))):
                return self._json(HTTPStatus.FORBIDDEN, {"error": f"cross-origin POST from {origin} refused"})
            if not self._token_ok():
                return self._json(HTTPStatus.FORBIDDEN, {"error": f"POST needs this gallery's token ({TOKEN_HEADER} "
                                                                  "header or the cookie set with the page)"})
            if self.path.split("?", 1)[0] != "/api/marks":
                return self._send(HTTPStatus.NOT_FOUND, b"not found", "text/plain")
            try:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                if isinstance(body, dict) and "pair" in body:
                    updates = {body["pair"]: body.get("mark")}
                elif isinstance(body, dict) and isinstance(body.get("marks"), dict):
                    updates = {k: (v.get("mark") if isinstance(v, dict) else v) for k, v in body["marks"].items()}
                else:
                    raise FmgaugeError('POST /api/marks takes {"pair": id, "mark": m} or {"marks": {id: m}}.')
                marks = set_marks(root, updates, where="POST /api/marks")
            except (FmgaugeError, json.JSONDecodeError, ValueError) as e:
                return self._json(HTTPStatus.BAD_REQUEST, {"error": str(e)})
            if on_change is not None:
                on_change(root)
            self._json(200, {"marks": marks, "counts": mark_counts(root)})

    return Handler


class GalleryServer(ThreadingHTTPServer):
    """The gallery's HTTP server; ``token`` is the per-run write token (see :func:`make_handler`)."""

    daemon_threads = True
    token: str = ""

    def handle_error(self, request, client_address) -> None:  # noqa: ANN001
        """One log line instead of socketserver's traceback on stderr (a client that hung up is not an error)."""
        import sys

        e = sys.exc_info()[1]
        if isinstance(e, ConnectionError):
            log.debug("gallery: client %s went away (%s)", client_address, type(e).__name__)
        else:
            log.warning("gallery: request from %s failed: %s: %s", client_address, type(e).__name__, e)


def serve(run_dir: Path, *, host: str = "127.0.0.1", port: int = 8765, on_change=None) -> GalleryServer:
    """A server for the gallery of ``run_dir`` (call ``serve_forever()``; port 0 picks a free port); its write
    token (fresh for every server) is ``server.token``."""
    read_pairs(run_dir)  # refuse a directory that is not an image-overlap run
    token = secrets.token_urlsafe(24)
    server = GalleryServer((host, port), make_handler(run_dir, on_change=on_change, token=token))
    server.token = token
    return server
