"""Task-specific masking for masked-LM adaptation: Typhoon (gradient-based rates) vs random and whole-word masking.

Library entry points (each CLI command calls one of these):

- :class:`TyphoonState`, :class:`TyphoonCollator`, :class:`TyphoonCallback` — drop Typhoon into a HF ``Trainer``.
- :data:`STRATEGIES` / :func:`make_strategy` — random, whole-word and typhoon behind one registry.
- :func:`load_task` — GLUE MRPC offline, any GLUE-style TSV/CSV, HF GLUE online.
- :func:`compare` — the multi-seed, paired comparison (MLM stage -> fine-tune -> dev/test) with its report.

Heavy modules (torch, transformers) load on first use, so ``import fmgauge.masking`` stays cheap.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "TyphoonState": "typhoon", "TyphoonCollator": "typhoon", "TyphoonCallback": "typhoon",
    "typhoon_rates": "typhoon", "normalise_rates": "typhoon", "rescale_weights": "typhoon",
    "expected_rate": "typhoon", "mask_positions": "typhoon",
    "STRATEGIES": "strategies", "MaskingConfig": "strategies", "make_strategy": "strategies",
    "load_task": "tasks", "TextTask": "tasks",
    "CompareConfig": "experiment", "CompareResult": "experiment", "compare": "experiment",
    "load_result": "experiment", "load_mlm": "experiment",
}
__all__ = [*_EXPORTS, "rebuild_report"]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"fmgauge.masking.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'fmgauge.masking' has no attribute {name!r}")


def rebuild_report(run_dir: Any) -> Any:
    """Re-analyse a comparison's stored trials and rewrite its report (no retraining); returns the HTML path."""
    from fmgauge.masking.experiment import finish, load_result

    res = load_result(run_dir)
    return finish(res.run_dir, res.results, res.summary).run_dir / "report.html"
