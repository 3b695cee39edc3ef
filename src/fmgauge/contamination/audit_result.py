"""What an audit produces (:class:`AuditResult`) and how models are named in its outputs (:func:`label`).

Its own module so that the audit (:mod:`~fmgauge.contamination.audit`, which computes it) and the report
(:mod:`~fmgauge.contamination.report`, which renders it) both import it and neither imports the other's caller:
the dependency runs audit -> report -> audit_result.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd


@dataclass
class AuditResult:
    """Everything the report needs. ``tests``: one row per detector × model (audited and baseline)."""

    config: dict
    tests: pd.DataFrame
    enrichment: pd.DataFrame
    overlaps: pd.DataFrame
    sweep: pd.DataFrame  # AUROC benchmark vs cohort per model, detector column and k
    exchangeability: dict[str, dict]
    scores: pd.DataFrame
    run_dir: Path | None = None
    meta: dict = field(default_factory=dict)
    image_overlap: dict | None = None  # results.json of the image-side run (config.images), None without images

    def verdicts(self) -> pd.DataFrame:
        """Audited models only: model, detector, p, p_adjusted, baseline_p, verdict."""
        t = self.tests[self.tests.role == "audited"]
        return t[["model", "detector", "statistic", "p", "p_adjusted", "baseline_p", "verdict"]].reset_index(drop=True)

    def to_dict(self) -> dict:
        return {"config": self.config, "tests": records(self.tests), "enrichment": records(self.enrichment),
                "overlaps": records(self.overlaps), "sweep": records(self.sweep),
                "exchangeability": self.exchangeability, "meta": self.meta, "image_overlap": self.image_overlap}


def records(df: pd.DataFrame) -> list[dict]:
    """Rows of ``df`` as dicts, non-finite floats as None (JSON has no NaN)."""
    return [{k: (None if isinstance(v, float) and not np.isfinite(v) else v) for k, v in r.items()}
            for r in df.to_dict("records")]


def label(model: str) -> str:
    """Short display name of a model spec (a directory's last component)."""
    p = Path(model)
    return p.name if (p.is_absolute() or model.startswith(".")) else model
