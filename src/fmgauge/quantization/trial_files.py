"""What a comparison run keeps per trial besides its row: the row name of a quantization configuration and the
per-window NLLs (``windows/<trial id>.json``) the paired tests read. Shared by ``compare`` and ``llama_peer``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from fmgauge.core.files import read_back
from fmgauge.core.store import RunStore


def method_name(qc) -> str:  # noqa: ANN001  (QuantConfig)
    """The row name of a configuration: the method, with the K-quant type when ``k_bits`` gives the layers of
    widths that are multiples of 256 a GGUF K-quant grid (``sens-gptq+Q3_K``), and whether the grids were searched."""
    from fmgauge.quantization.grid import KQUANT_TYPES

    name = qc.method if qc.k_bits is None else f"{qc.method}+{KQUANT_TYPES[qc.k_bits][0]}"
    return f"{name} (searched grid)" if qc.grid_search else name


def windows_path(root: Path, tid: str) -> Path:
    """Where a trial's per-window NLLs are kept: ``windows/<trial id>.json``, characters other than letters, digits
    and ``._+-`` replaced by ``_`` (portable file names)."""
    import re

    return Path(root) / "windows" / f"{re.sub(r'[^A-Za-z0-9._+-]', '_', tid)}.json"


def save_windows(store: RunStore, tid: str, nll: list[float]) -> None:
    path = windows_path(store.root, tid)
    path.parent.mkdir(exist_ok=True)
    path.write_text(json.dumps(nll))


def load_windows(root: Path, tid: str) -> np.ndarray | None:
    path = windows_path(root, tid)
    if not path.exists():
        return None
    return np.array(read_back(path, lambda p: json.loads(p.read_text()), what="per-window NLL", fix=(
        f"delete it and its trial ({tid}) is rerun by `fmgauge quantize compare ... --out {root}`.")))
