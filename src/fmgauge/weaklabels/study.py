"""The crossover study: ``calibrate(config)`` labels the pool, runs the sweep, analyses it and writes the report.

Run directory (``runs/<name>/``): config.yaml, trials.sqlite, results.parquet, summary.json, report.html,
report.md, figures/. Re-running the same study resumes: finished trials and labeler outputs are reused.
"""

from __future__ import annotations

import logging
import platform
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, field_validator

import fmgauge
from fmgauge.core.cache import stable_hash
from fmgauge.core.data import Dataset, load_dataset
from fmgauge.core.runner import BackendConfig, RunStats, Trial, run_trials
from fmgauge.core.stats import auc, mean_ci, wilson_ci
from fmgauge.core.store import RunStore
from fmgauge.core.validation import FmgaugeError
from fmgauge.weaklabels.crossover import empirical_crossover, rate_only_crossover
from fmgauge.weaklabels.labelers import LabelerConfig, labeler_cache_key, run_labeler
from fmgauge.weaklabels.students import StudentConfig, n_params
from fmgauge.weaklabels.sweep import CONDITIONS, check_n_gold, run_trial

log = logging.getLogger(__name__)


class StudyConfig(BaseModel):
    """A weak-label crossover study (one dataset, one or more labelers, several students)."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field("study", description="study name (the run directory defaults to runs/<name>)")
    dataset: str = Field(..., description="registered dataset name, or folder:<path>")
    pool_split: str = Field("train", description="split whose items form the pool and gold candidates")
    test_split: str = Field("test", description="held-out split for test AUC; never used for training")
    labelers: list[LabelerConfig] = Field(..., min_length=1, description="weak labelers to compare")
    students: list[StudentConfig] = Field(..., min_length=1, description="student architectures")
    n_gold: list[int] = Field([10, 20, 50, 100, 200, 500, 1000], description="gold-set sizes (increasing)")
    seeds: int | list[int] = Field(5, description="number of seeds (0..n-1) or an explicit list")
    conditions: list[str] = Field(list(CONDITIONS), description="subset of gold, gold+weak, weak")
    n_boot: int = Field(200, ge=0, description="bootstrap resamples for each trial's test-AUC CI")
    seed_batch: int | None = Field(None, ge=1, description="seeds trained together per trial (None: all)")

    @field_validator("n_gold")
    @classmethod
    def _grid(cls, v: list[int]) -> list[int]:
        if len(v) < 2 or sorted(set(v)) != v:
            raise ValueError(f"n_gold must hold at least 2 distinct sizes in increasing order, got {v}")
        return v

    @field_validator("conditions")
    @classmethod
    def _conds(cls, v: list[str]) -> list[str]:
        bad = [c for c in v if c not in CONDITIONS]
        if bad or "gold" not in v:
            raise ValueError(f"conditions must include 'gold' and be among {list(CONDITIONS)}, got {v}")
        return v

    def seed_list(self) -> list[int]:
        return list(range(self.seeds)) if isinstance(self.seeds, int) else list(self.seeds)


@dataclass
class StudyResult:
    """Everything a report needs; ``summary`` is what summary.json holds."""

    run_dir: Path
    summary: dict[str, Any]
    results: pd.DataFrame
    stats: RunStats | None = None


def labeler_metrics(y: np.ndarray, out_probs: np.ndarray, out_labels: np.ndarray, k: int) -> dict[str, Any]:
    """Accuracy (Wilson CI), AUC of the labeler's probabilities and the confusion matrix C[y, ŷ] on the pool."""
    correct = int((out_labels == y).sum())
    conf = np.zeros((k, k), dtype=int)
    np.add.at(conf, (y, out_labels), 1)
    scores = out_probs[:, 1] if k == 2 else out_probs
    return {
        "accuracy": wilson_ci(correct, len(y)).to_dict(),
        "auc": auc(y, scores) if len(np.unique(y)) > 1 else None,
        "confusion": conf.tolist(),
        "noise_rate_per_class": (1 - np.diag(conf) / np.clip(conf.sum(1), 1, None)).tolist(),
    }


def plan_trials(cfg: StudyConfig, weak_keys: dict[str, str]) -> list[Trial]:
    """All trials of the sweep. ``weak_keys`` maps labeler display name -> cache key of its pool outputs."""
    seeds = cfg.seed_list()
    step = cfg.seed_batch or len(seeds)
    chunks = [seeds[i:i + step] for i in range(0, len(seeds), step)]
    base = {"dataset": cfg.dataset, "pool_split": cfg.pool_split, "test_split": cfg.test_split,
            "n_boot": cfg.n_boot}
    trials = []
    for st in cfg.students:
        sd = st.model_dump()
        for chunk in chunks:
            for n in cfg.n_gold:
                trials.append(Trial({**base, "student": sd, "condition": "gold", "n_gold": n, "seeds": chunk,
                                     "labeler": None, "weak_key": None}))
            for lab, key in weak_keys.items():
                if "gold+weak" in cfg.conditions:
                    trials += [Trial({**base, "student": sd, "condition": "gold+weak", "n_gold": n,
                                      "seeds": chunk, "labeler": lab, "weak_key": key}) for n in cfg.n_gold]
                if "weak" in cfg.conditions:
                    trials.append(Trial({**base, "student": sd, "condition": "weak", "n_gold": 0, "seeds": chunk,
                                         "labeler": lab, "weak_key": key}))
    return trials


def analyse(cfg: StudyConfig, results: pd.DataFrame, labelers: dict[str, dict]) -> dict[str, Any]:
    """Curves (seed mean ± CI per student × condition × n_gold) and crossovers per labeler × student."""
    grid = np.asarray(cfg.n_gold, dtype=float)
    curves, crossovers = [], []
    for (lab, student, cond, n), g in results.groupby(["labeler", "student", "condition", "n_gold"], dropna=False):
        ci = mean_ci(g["auc"].to_numpy())
        curves.append({"labeler": None if pd.isna(lab) else lab, "student": student, "condition": cond,
                       "n_gold": int(n), "auc": ci.value, "lo": ci.lo, "hi": ci.hi, "seeds": len(g)})
    gold = results[results.condition == "gold"].pivot_table(index="seed", columns=["student", "n_gold"], values="auc")
    for lab, meta in labelers.items():
        acc = meta["metrics"]["accuracy"]["value"]
        mixed = results[(results.condition == "gold+weak") & (results.labeler == lab)]
        mixed = mixed.pivot_table(index="seed", columns=["student", "n_gold"], values="auc")
        weak_only = results[(results.condition == "weak") & (results.labeler == lab)]
        for st in cfg.students:
            name = st.display_name()
            row: dict[str, Any] = {"labeler": lab, "student": name}
            g_curve = gold[name][cfg.n_gold].to_numpy()  # (S, G)
            rate = rate_only_crossover(grid, g_curve.mean(0), acc)
            row["rate_only"], row["rate_only_text"] = rate.to_dict(), rate.describe()
            if not mixed.empty:
                delta = mixed[name][cfg.n_gold].to_numpy() - g_curve
                emp = empirical_crossover(grid, delta)
                row["empirical"] = emp.to_dict()
                row["empirical_text"] = emp.describe()
                row["delta_at_max"] = mean_ci(delta[:, -1]).to_dict()
                row["delta_at_min"] = mean_ci(delta[:, 0]).to_dict()
                row["min_delta"] = float(delta.mean(0).min())
            w = weak_only[weak_only.student == name]["auc"].to_numpy()
            if len(w):
                row["weak_only_auc"] = mean_ci(w).to_dict()
            crossovers.append(row)
    return {"curves": curves, "crossovers": crossovers}


def _git_hash() -> str | None:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                              cwd=Path(__file__).parent).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def label_all(cfg: StudyConfig, ds: Dataset) -> tuple[dict[str, dict], dict[str, str]]:
    """Run (or load from cache) every labeler on the pool; returns per-labeler metadata and cache keys."""
    pool = ds.split(cfg.pool_split)
    meta, keys = {}, {}
    for lab in cfg.labelers:
        name = lab.display_name()
        if name in meta:
            raise FmgaugeError(f"two labelers are named {name!r}; give each a distinct name.")
        log.info("labelling %d pool items with %s (cached after the first run)", len(pool), name)
        out = run_labeler(lab, ds, cfg.pool_split)
        keys[name] = stable_hash(labeler_cache_key(lab, ds, cfg.pool_split))
        meta[name] = {"config": lab.model_dump(), "simulated": lab.simulated,
                      "metrics": labeler_metrics(pool.y, out.probs, out.labels, ds.n_classes)}
    return meta, keys


def calibrate(
    cfg: StudyConfig, run_dir: str | Path | None = None, *, backend: BackendConfig | None = None,
    progress: bool = True, report: bool = True,
) -> StudyResult:
    """Run the crossover study ``cfg`` into ``run_dir`` (default runs/<name>), resuming if it exists."""
    from fmgauge.weaklabels.report import write_report

    run_dir = Path(run_dir or Path("runs") / cfg.name)
    ds = load_dataset(cfg.dataset)
    pool, test = ds.split(cfg.pool_split), ds.split(cfg.test_split)
    check_n_gold(cfg.n_gold, len(pool), ds.n_classes)
    if len(np.unique(test.y)) < 2:
        raise FmgaugeError(f"test split {cfg.test_split!r} holds a single class; AUC is undefined.")
    shape = tuple(pool.x.shape[1:])
    params = {s.display_name(): n_params(s, shape, ds.n_classes) for s in cfg.students}  # refuses misfits early
    store = RunStore(run_dir)
    store.save_config(cfg.model_dump(mode="json"))
    t0 = time.time()
    labelers, keys = label_all(cfg, ds)
    trials = plan_trials(cfg, keys)
    log.info("%d trials (%d seeds each at most)", len(trials), cfg.seed_batch or len(cfg.seed_list()))
    stats = run_trials(trials, run_trial, store, backend=backend, description=f"{cfg.name}: trials",
                       progress=progress)
    results = store.results({t.id for t in trials}).drop(columns=["trial_id"])
    results = results.sort_values(["labeler", "student", "condition", "n_gold", "seed"], na_position="first")
    results = results.reset_index(drop=True)
    store.write_results(results)
    summary = {
        "meta": {"fmgauge": fmgauge.__version__, "git": _git_hash(), "python": platform.python_version(),
                 "created": time.strftime("%Y-%m-%dT%H:%M:%S"), "seconds": round(time.time() - t0, 1),
                 "seeds": cfg.seed_list(), "run": stats.to_dict()},
        "config": cfg.model_dump(mode="json"),
        "dataset": {"name": ds.name, "source": ds.source, "classes": list(ds.class_names),
                    "pool": len(pool), "test": len(test),
                    "pool_class_counts": np.bincount(pool.y, minlength=ds.n_classes).tolist()},
        "students": {s.display_name(): {"params": params[s.display_name()], **s.model_dump()}
                     for s in cfg.students},
        "labelers": labelers,
        **analyse(cfg, results, labelers),
    }
    store.write_json("summary.json", summary)
    store.close()
    result = StudyResult(run_dir, summary, results, stats)
    if report:
        write_report(result)
    return result


def load_result(run_dir: str | Path) -> StudyResult:
    """A finished study's result, read back from its run directory."""
    run_dir = Path(run_dir)
    for f in ("summary.json", "results.parquet"):
        if not (run_dir / f).exists():
            raise FmgaugeError(f"{run_dir} has no {f}: run `fmgauge weak-labels calibrate` into it first.")
    store = RunStore(run_dir)
    summary = store.read_json("summary.json")
    store.close()
    return StudyResult(run_dir, summary, pd.read_parquet(run_dir / "results.parquet"))
