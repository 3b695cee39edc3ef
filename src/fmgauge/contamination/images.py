"""Image sets for the image-side overlap detector: benchmark, reference corpus and control, read in batches.

An image set is named by a string (``--benchmark``, ``--reference``, ``--control``):

- a **folder** of images, searched recursively (``.png .jpg .jpeg .bmp .tif .tiff``); ids are the paths relative
  to the folder;
- a **listing** ``.csv`` / ``.tsv`` / ``.parquet`` with a ``path`` column (optional ``id``, ``caption`` and
  ``source_id`` or ``pmcid``); relative paths are resolved against the listing's directory;
- the **PMC-OA layout** (Lin et al. 2023, PMC-CLIP): a ``.jsonl`` (or ``pmc-oa:<file>``) whose rows hold
  ``image``, ``caption`` and ``pmcid``; images resolve against ``<listing dir>/images/`` and then the listing's
  directory;
- a **MedMNIST npz** ``<name>.npz[:split]`` (keys ``<split>_images``, (N, H, W) or (N, H, W, 3) uint8); without a
  split every split, in the order train, val, test; ids are ``<split>/<index>``.

Nothing is decoded when a set is opened (only listed and checked), so a 1.6 M-image corpus costs a list of paths.
:meth:`ImageSet.read` decodes one range of rows; files that cannot be decoded (missing, truncated, not an image)
are returned as :class:`Skipped` entries instead of raising, so a run never dies on file 1,234,567. Every image
comes out as an RGB PIL image: L / LA / P / RGBA / CMYK and 16-bit or float greyscale (``I;16``, ``I``, ``F``,
min-max scaled to 0..255) are normalised; sizes are left to the embedder.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fmgauge.core.cache import file_fingerprint
from fmgauge.core.files import check_npz
from fmgauge.core.validation import FmgaugeError

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
LISTING_EXTS = (".csv", ".tsv", ".parquet", ".jsonl")
SOURCE_COLUMNS = ("source_id", "pmcid")
NPZ_SPLITS = ("train", "val", "test")
FORMS = ("a folder of images, a .csv/.tsv/.parquet listing with a 'path' column, a PMC-OA .jsonl (image, caption, "
         "pmcid) or a MedMNIST <name>.npz[:split]")


@dataclass(frozen=True)
class Skipped:
    """An image that could not be read: its row, id, path and the reason."""

    row: int
    id: str
    path: str
    reason: str

    def to_dict(self) -> dict:
        return {"row": self.row, "id": self.id, "path": self.path, "reason": self.reason}


@dataclass
class ImageSet:
    """N images named by ``ids`` (N,) str; files (``paths``) or the arrays of one npz (``npz``, ``npz_keys``).

    ``captions`` / ``source_ids`` are (N,) str or None when the source has none.
    """

    spec: str
    kind: str  # folder | listing | pmc-oa | npz
    ids: np.ndarray
    paths: list[str] | None = None
    captions: np.ndarray | None = None
    source_ids: np.ndarray | None = None
    npz: str | None = None
    npz_keys: tuple[str, ...] = ()
    _arrays: np.ndarray | None = field(default=None, repr=False)

    def __len__(self) -> int:
        return len(self.ids)

    def fingerprint(self) -> dict:
        """Identity for cache keys: for files, a hash over every (path, size, mtime); for an npz, the file's."""
        if self.kind == "npz":
            return {"kind": "npz", "file": file_fingerprint(self.npz), "keys": list(self.npz_keys)}
        h = hashlib.sha256()
        for p in self.paths:
            try:
                st = os.stat(p)
                h.update(f"{p}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
            except OSError:
                h.update(f"{p}\0missing\n".encode())
        return {"kind": self.kind, "n": len(self), "files": h.hexdigest()[:24]}

    def _npz_images(self) -> np.ndarray:
        if self._arrays is None:
            with np.load(self.npz, allow_pickle=False) as z:
                self._arrays = np.concatenate([z[k] for k in self.npz_keys])
        return self._arrays

    def read(self, start: int, stop: int) -> tuple[np.ndarray, list, list[Skipped]]:
        """Rows ``start..stop-1`` decoded: (rows read (M,) int64, M RGB PIL images, skipped), M <= stop - start."""
        from PIL import Image

        rows, images, skipped = [], [], []
        if self.kind == "npz":
            arr = self._npz_images()
            for r in range(start, stop):
                images.append(to_rgb(Image.fromarray(np.ascontiguousarray(arr[r]))))
                rows.append(r)
            return np.asarray(rows, dtype=np.int64), images, skipped
        for r in range(start, stop):
            im, why = open_image(self.paths[r])
            if im is None:
                skipped.append(Skipped(r, str(self.ids[r]), self.paths[r], why))
            else:
                rows.append(r)
                images.append(im)
        return np.asarray(rows, dtype=np.int64), images, skipped

    def load(self, row: int):
        """One RGB PIL image, or None when it cannot be read."""
        _, ims, _ = self.read(row, row + 1)
        return ims[0] if ims else None

    def describe(self) -> str:
        return f"{self.spec} ({self.kind}, {len(self)} images)"


def to_rgb(im):
    """Any PIL mode -> RGB: alpha composited on black, 16-bit/float greyscale min-max scaled to 0..255."""
    from PIL import Image

    if im.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        a = np.asarray(im, dtype=np.float64)
        lo, hi = float(a.min()), float(a.max())
        a = np.zeros_like(a) if hi <= lo else (a - lo) / (hi - lo) * 255.0
        return Image.fromarray(a.round().astype(np.uint8)).convert("RGB")
    if im.mode == "P":
        im = im.convert("RGBA")
    if im.mode in ("RGBA", "LA", "PA"):
        bg = Image.new("RGB", im.size, (0, 0, 0))
        rgba = im.convert("RGBA")
        bg.paste(rgba, mask=rgba.getchannel("A"))
        return bg
    return im.convert("RGB")


def open_image(path: str) -> tuple[object | None, str]:
    """(RGB PIL image, "") or (None, reason) for a missing, truncated or undecodable file. Decodes fully."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            im.load()  # truncated files fail here (ImageFile.LOAD_TRUNCATED_IMAGES is False)
            return to_rgb(im), ""
    except FileNotFoundError:
        return None, "file not found"
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        return None, f"{type(e).__name__}: {e}".strip()


# ------------------------------------------------------------------------------------------------ opening

def open_image_set(spec: str, *, option: str = "image set") -> ImageSet:
    """Resolve ``spec`` (module docstring) to an :class:`ImageSet`; refuses an unreadable or empty source.

    ``option`` names the argument in messages (e.g. ``--reference``).
    """
    s = str(spec).strip()
    if not s:
        raise FmgaugeError(f"{option} is empty; give {FORMS}.")
    if s.startswith("pmc-oa:"):
        return _listing(s, Path(s.removeprefix("pmc-oa:")).expanduser(), option, pmc=True)
    npz, sep, split = s.partition(".npz")
    if sep and (not split or split.startswith(":")):
        return _npz(s, Path(npz + ".npz").expanduser(), split.removeprefix(":"), option)
    p = Path(s).expanduser()
    if not p.exists():
        raise FmgaugeError(f"{option} {s!r} does not exist; give {FORMS}.")
    if p.is_dir():
        return _folder(s, p, option)
    if p.suffix.lower() in LISTING_EXTS:
        return _listing(s, p, option, pmc=p.suffix.lower() == ".jsonl")
    raise FmgaugeError(f"{option} {s!r} is a {p.suffix or 'suffix-less'} file; give {FORMS}.")


def _folder(spec: str, root: Path, option: str) -> ImageSet:
    paths = sorted(str(Path(d) / f) for d, _, files in os.walk(root) for f in files
                   if f.lower().endswith(IMAGE_EXTS))
    if not paths:
        listings = sorted(q.name for q in root.iterdir() if q.suffix.lower() in LISTING_EXTS)[:3]
        hint = f"; it has listing file(s) {listings}: pass one of them instead" if listings else ""
        raise FmgaugeError(f"{option} folder {root} holds no image files ({', '.join(IMAGE_EXTS)}){hint}.")
    ids = np.array([os.path.relpath(q, root) for q in paths], dtype=object)
    return ImageSet(spec, "folder", ids, paths=paths)


def _read_table(path: Path, option: str):
    import pandas as pd

    try:
        suf = path.suffix.lower()
        if suf == ".parquet":
            return pd.read_parquet(path)
        if suf == ".jsonl":
            return pd.read_json(path, lines=True, dtype=False)
        return pd.read_csv(path, sep="\t" if suf == ".tsv" else ",", dtype=str, keep_default_na=False)
    except Exception as e:  # pandas / pyarrow / json raise many types for a malformed file
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise FmgaugeError(f"{option} listing {path} could not be read ({type(e).__name__}: {msg}).") from None


def _listing(spec: str, path: Path, option: str, *, pmc: bool) -> ImageSet:
    if not path.is_file():
        raise FmgaugeError(f"{option} listing {str(path)!r} does not exist; give {FORMS}.")
    df = _read_table(path, option)
    col = "path" if "path" in df.columns else "image" if "image" in df.columns else None
    if col is None:
        want = "'image' (PMC-OA layout)" if pmc else "'path'"
        raise FmgaugeError(f"{option} listing {path} has no {want} column; it has {list(map(str, df.columns))}.")
    if len(df) == 0:
        raise FmgaugeError(f"{option} listing {path} holds no images (empty listing).")
    base = path.parent.resolve()
    roots = [base / "images", base] if (pmc or col == "image") and (base / "images").is_dir() else [base]
    rel = df[col].astype(str).tolist()
    paths = [_resolve(r, roots) for r in rel]
    probe = paths[:100]
    if not any(os.path.exists(q) for q in probe):
        raise FmgaugeError(f"{option} listing {path}: none of its first {len(probe)} images exist (e.g. "
                           f"{probe[0]!r}); relative paths are resolved against {', '.join(map(str, roots))}.")
    ids = np.array(df["id"].astype(str) if "id" in df.columns else rel, dtype=object)
    if len(set(ids)) != len(ids):
        dup = next(i for i, c in zip(*np.unique(ids, return_counts=True), strict=True) if c > 1)
        raise FmgaugeError(f"{option} listing {path} repeats id {dup!r}; ids (the 'id' column, else the paths) "
                           "must be unique.")
    cap = np.array(df["caption"].astype(str), dtype=object) if "caption" in df.columns else None
    src_col = next((c for c in SOURCE_COLUMNS if c in df.columns), None)
    src = np.array(df[src_col].astype(str), dtype=object) if src_col else None
    return ImageSet(spec, "pmc-oa" if pmc or col == "image" else "listing", ids, paths=paths, captions=cap,
                    source_ids=src)


def _resolve(rel: str, roots: list[Path]) -> str:
    p = Path(rel).expanduser()
    if p.is_absolute():
        return str(p)
    for r in roots[:-1]:
        if (r / p).exists():
            return str(r / p)
    return str(roots[-1] / p)


def _npz(spec: str, path: Path, split: str, option: str) -> ImageSet:
    if not path.is_file():
        raise FmgaugeError(f"{option} npz {str(path)!r} does not exist; give {FORMS}.")
    check_npz(path, what=option)
    try:
        with np.load(path, allow_pickle=False) as z:
            shapes = {k: z[k].shape for k in z.files if k.endswith("_images")}
    except Exception as e:  # zipfile / numpy format errors
        raise FmgaugeError(f"{option} {path} is not a readable npz ({type(e).__name__}: {e}).") from None
    have = [s for s in NPZ_SPLITS if f"{s}_images" in shapes] + sorted(
        k.removesuffix("_images") for k in shapes if k.removesuffix("_images") not in NPZ_SPLITS)
    if not have:
        raise FmgaugeError(f"{option} {path} has no '<split>_images' arrays (MedMNIST layout); it has keys "
                           f"{sorted(shapes) or 'none of that form'}.")
    splits = [split] if split else have
    bad = [s for s in splits if s not in have]
    if bad:
        raise FmgaugeError(f"{option} {path} has no split {bad[0]!r}; it has {have} (write {path.name}:<split>).")
    for s in splits:
        shp = shapes[f"{s}_images"]
        if len(shp) not in (3, 4) or (len(shp) == 4 and shp[3] not in (1, 3)):
            raise FmgaugeError(f"{option} {path}: {s}_images has shape {shp}; expected (N, H, W) or (N, H, W, 3).")
    ids = np.array([f"{s}/{i}" for s in splits for i in range(shapes[f"{s}_images"][0])], dtype=object)
    if len(ids) == 0:
        raise FmgaugeError(f"{option} {path}:{split or 'all'} holds no images.")
    return ImageSet(spec, "npz", ids, npz=str(path.resolve()), npz_keys=tuple(f"{s}_images" for s in splits))
