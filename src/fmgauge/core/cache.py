"""Content-addressed cache for expensive arrays (labeler outputs, embeddings, features).

Key = sha256 of a JSON description of (input identity, model identity, parameters). Arrays live in
``$FMGAUGE_CACHE`` (default ``~/.cache/fmgauge``) as ``<kind>/<key>.npz``, written atomically.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from fmgauge.core.files import quarantine

log = logging.getLogger(__name__)


def cache_root() -> Path:
    return Path(os.environ.get("FMGAUGE_CACHE", Path.home() / ".cache" / "fmgauge")).expanduser()


def stable_hash(obj: Any, n: int = 16) -> str:
    """Hex digest of a JSON-serialisable description; dict order does not matter."""
    blob = json.dumps(obj, sort_keys=True, default=str, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()[:n]


def file_fingerprint(path: str | os.PathLike) -> dict[str, Any]:
    """Identity of a file for cache keys: absolute path, size and mtime (cheap; no full read)."""
    p = Path(path).resolve()
    st = p.stat()
    return {"path": str(p), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def cache_file(kind: str, key: str) -> Path:
    """Where the arrays cached under ``key`` (= :func:`stable_hash` of their description) live."""
    return cache_root() / kind / f"{key}.npz"


def cached_arrays(
    kind: str, description: dict[str, Any], compute: Callable[[], dict[str, np.ndarray]]
) -> dict[str, np.ndarray]:
    """Return the arrays cached under ``description``, computing and storing them on a miss."""
    path = cache_file(kind, stable_hash(description))
    if path.exists():
        log.debug("cache hit %s", path)
        try:
            with np.load(path, allow_pickle=False) as z:
                return {k: z[k] for k in z.files}
        except Exception as e:  # noqa: BLE001 - truncated/corrupt: a cache entry is recomputed, never fatal
            quarantine(path, e)
    arrays = compute()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}.npz")
    np.savez(tmp, **arrays)
    os.replace(tmp, path)
    (path.with_suffix(".json")).write_text(json.dumps(description, sort_keys=True, default=str, indent=1))
    return arrays
