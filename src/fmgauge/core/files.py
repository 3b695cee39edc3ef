"""The one error path for files fmgauge writes and reads back.

- :func:`check_output_dir` / :func:`check_output_file`: an output the user named (``--out``, ``--json``) is refused
  before any work when it cannot be written (a file where a directory is wanted, a read-only parent), naming the
  option, instead of failing after an hour of compute.
- :func:`read_back`: a run's results, summaries, stores and checkpoints read back through one call; a corrupt or
  partial file becomes one line naming the file, what broke and how to rebuild it.
- :func:`quarantine`: a corrupt *cache* file (content-addressed, recomputable) is moved aside with a warning so the
  caller recomputes it, never trusted and never fatal.
- :func:`load_npz`: ``.npz`` archives read without pickle, telling a text file named ``.npz`` from a real archive
  that holds object arrays.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from fmgauge.core.validation import FmgaugeError

log = logging.getLogger(__name__)
T = TypeVar("T")


def one_line(e: BaseException, limit: int = 160) -> str:
    """``Type: the message on one line`` of an exception, at most ``limit`` characters (a YAML error as its problem
    and line/column, not its multi-line excerpt)."""
    if hasattr(e, "problem_mark") and hasattr(e, "problem"):  # yaml.MarkedYAMLError
        from fmgauge.core.config import yaml_problem

        msg = yaml_problem(e)  # type: ignore[arg-type]
    else:
        msg = " ".join(str(e).split())
    text = f"{type(e).__name__}: {msg}" if msg else type(e).__name__
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _nearest_existing(path: Path) -> Path:
    p = path
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


def _writable_dir(d: Path) -> bool:
    return os.access(d, os.W_OK | os.X_OK)


def check_output_dir(path: str | os.PathLike, *, option: str = "--out") -> Path:
    """``path`` is a directory fmgauge can create or write into; refused otherwise, naming ``option``.

    Nothing is created: the check only looks (an existing directory must be writable; for a new one, its nearest
    existing ancestor must be a writable directory).
    """
    p = Path(path).expanduser()
    if p.exists():
        if not p.is_dir():
            raise FmgaugeError(f"{option} {p} is a file, not a directory; give a directory (it is created if "
                               "missing), or move the file away.")
        if not _writable_dir(p):
            raise FmgaugeError(f"{option} {p} is not writable; give a directory you can write to, or fix its "
                               "permissions.")
        return p
    anc = _nearest_existing(p.parent if p.parent != p else p)
    if not anc.is_dir():
        raise FmgaugeError(f"{option} {p} cannot be created: {anc} is a file, not a directory.")
    if not _writable_dir(anc):
        raise FmgaugeError(f"{option} {p} cannot be created: {anc} is not writable; give a directory you can write "
                           "to.")
    return p


def check_output_file(path: str | os.PathLike, *, option: str) -> Path:
    """``path`` is a file fmgauge can write (its directory exists or can be created, and is writable)."""
    p = Path(path).expanduser()
    if p.is_dir():
        raise FmgaugeError(f"{option} {p} is a directory; give a file name.")
    if p.exists() and not os.access(p, os.W_OK):
        raise FmgaugeError(f"{option} {p} is not writable; give another file, or fix its permissions.")
    check_output_dir(p.parent, option=f"{option} {p}: its directory")
    return p


def read_back(path: str | os.PathLike, read: Callable[[Path], T], *, what: str = "", fix: str) -> T:
    """``read(path)``, with any failure reported as one line naming ``path`` and ``fix`` (how to rebuild it).

    ``what`` describes the file ("the study's results table"); ``fix`` says what to run or do, e.g. "rerun
    `fmgauge weak-labels calibrate ...` with the same --out (saved trials are reused)". A missing file, an
    unreadable one and a corrupt/partial one each get their own wording. :class:`FmgaugeError` passes through.
    """
    p = Path(path)
    name = f"{what} {p}" if what else str(p)
    try:
        return read(p)
    except FmgaugeError:
        raise
    except FileNotFoundError:
        raise FmgaugeError(f"{name} does not exist; {fix}") from None
    except IsADirectoryError:
        raise FmgaugeError(f"{name} is a directory, not a file; {fix}") from None
    except PermissionError:
        raise FmgaugeError(f"{name} cannot be read (permission denied); fix its permissions.") from None
    except MemoryError:
        raise
    except Exception as e:  # noqa: BLE001 - any reader's way of saying "this file is damaged"
        raise FmgaugeError(f"{name} is corrupt or incomplete ({one_line(e)}); {fix}") from None


def quarantine(path: str | os.PathLike, error: BaseException | str, *, what: str = "cache file") -> Path:
    """Move a corrupt cache file aside (``<name>.corrupt-<unix time>``), warn, and return where it went.

    The caller then recomputes the entry as on a cache miss.
    """
    p = Path(path)
    dest = p.with_name(f"{p.name}.corrupt-{int(time.time())}")
    reason = error if isinstance(error, str) else one_line(error)
    try:
        os.replace(p, dest)
    except FileNotFoundError:
        return dest
    except OSError as e:
        raise FmgaugeError(f"{what} {p} is corrupt ({reason}) and cannot be moved aside ({one_line(e)}); delete it "
                           "and rerun.") from None
    log.warning("%s %s is corrupt (%s); moved it to %s and recomputing it", what, p, reason, dest.name)
    return dest


_NPZ_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")  # a zip archive (an empty one starts with the end record)


def check_npz(path: str | os.PathLike, *, what: str, fix: str = "") -> Path:
    """``path`` exists and is a zip archive (what ``numpy.savez`` writes); refused in one line naming ``what``
    otherwise. A text file named ``.npz`` is called a text file (numpy itself would call it pickled data)."""
    p = Path(path)
    fix = f" {fix}" if fix else ""
    try:
        with open(p, "rb") as f:
            head = f.read(64)
    except FileNotFoundError:
        raise FmgaugeError(f"{what} {p} does not exist.{fix}") from None
    except IsADirectoryError:
        raise FmgaugeError(f"{what} {p} is a directory, not a .npz file.{fix}") from None
    except PermissionError:
        raise FmgaugeError(f"{what} {p} cannot be read (permission denied).") from None
    if not head.startswith(_NPZ_MAGIC):
        if head.startswith(b"\x93NUMPY"):
            kind = "a single-array .npy file"
        elif not head:
            kind = "empty"
        else:
            text = head.decode("utf-8", "replace")
            printable = sum(c.isprintable() or c in "\r\n\t" for c in text) >= 0.9 * len(text)
            first = text.splitlines()[0][:40] if text.splitlines() else ""
            kind = f"a text file (it starts with {first!r})" if printable else "not a zip archive"
        raise FmgaugeError(f"{what} {p} is not a .npz archive: it is {kind}. Save arrays with numpy.savez(path, "
                           f"name=array, ...).{fix}")
    return p


def load_npz(path: str | os.PathLike, *, what: str, fix: str = "") -> dict[str, Any]:
    """All arrays of the ``.npz`` archive at ``path`` (no pickle), with one-line errors naming ``what``.

    A file that is not a zip archive (a CSV renamed .npz, a truncated download) is said to be so (:func:`check_npz`);
    an archive holding object arrays is said to need plain numeric/string arrays (fmgauge never unpickles user
    files); a damaged archive is called corrupt, with ``fix``.
    """
    import zipfile

    import numpy as np

    p = check_npz(path, what=what, fix=fix)
    fix = f" {fix}" if fix else ""
    try:
        with np.load(p, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except ValueError as e:
        if "pickle" in str(e):
            raise FmgaugeError(f"{what} {p} holds object (pickled) arrays, which fmgauge does not load; save plain "
                               "numeric and string arrays (e.g. ids.astype(str)).") from None
        raise FmgaugeError(f"{what} {p} is corrupt or incomplete ({one_line(e)}).{fix}") from None
    except (zipfile.BadZipFile, EOFError, OSError, KeyError) as e:
        raise FmgaugeError(f"{what} {p} is corrupt or incomplete ({one_line(e)}).{fix}") from None
