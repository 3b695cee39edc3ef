"""The crossover study: ``calibrate(config)`` labels the pool, runs the sweep, analyses it and writes the report.

Run directory (``runs/<name>/``): config.yaml, splits.json (pool and test ids), trials.sqlite, results.parquet,
summary.json, report.html, report.md, figures/. Re-running the same study resumes: finished trials and labeler
outputs are reused.
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
from fmgauge.core.progress import progress as progress_tracker
from fmgauge.core.progress import track
from fmgauge.core.runner import BackendConfig, RunStats, Trial, run_trials
from fmgauge.core.stats import auc, mean_ci, wilson_ci
from fmgauge.core.store import RunStore
from fmgauge.core.validation import FmgaugeError
from fmgauge.weaklabels.confusion import labeler_summary
from fmgauge.weaklabels.crossover import empirical_crossover, rate_only_crossover
from fmgauge.weaklabels.decide import PROXY_KINDS, RULES_VERSION
from fmgauge.weaklabels.features import input_shape, represent
from fmgauge.weaklabels.labelers import LabelerConfig, LabelerOutput, labeler_cache_key, run_labeler
from fmgauge.weaklabels.labelers.simulated import SimulatedLabeler
from fmgauge.weaklabels.noise import cleanlab_noise, projected_crossover, transition_matrix
from fmgauge.weaklabels.rule_eval import evaluate as evaluate_rules
from fmgauge.weaklabels.rule_eval import proxy_features, run_rule_trial
from fmgauge.weaklabels.students import (
    CONVEX_STUDENTS,
    SOLVED_STUDENTS,
    TEXT_STUDENTS,
    StudentConfig,
    n_params,
)
from fmgauge.weaklabels.sweep import CONDITIONS, check_n_gold, gold_order, run_trial

log = logging.getLogger(__name__)


class StudyConfig(BaseModel):
    """A weak-label crossover study (one dataset, one or more labelers, several students)."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field("study", description="study name (the run directory defaults to runs/<name>)")
    dataset: str = Field(..., description="registered dataset name, folder:<path>, npz:<path.npz> (MedMNIST "
                         "layout), features:<path.npz> or text:<path>[?positive=X&...] (core.data.load_dataset)")
    pool_split: str = Field("train", description="split whose items form the pool and gold candidates")
    test_split: str = Field("test", description="held-out split for test AUC; never used for training")
    labelers: list[LabelerConfig] = Field(..., min_length=1, description="weak labelers to compare")
    students: list[StudentConfig] = Field(..., min_length=1, description="student architectures")
    n_gold: list[int] = Field([10, 20, 50, 100, 200, 500, 1000], description="gold-set sizes (increasing)")
    seeds: int | list[int] = Field(5, description="number of seeds (0..n-1) or an explicit list")
    conditions: list[str] = Field(["gold", "gold+weak", "weak"], description="subset of gold, gold+weak, weak, "
                                  "gold+weak-elr (gold+weak trained with early-learning regularisation)")
    n_boot: int = Field(200, ge=0, description="bootstrap resamples for each trial's test-AUC CI")
    seed_batch: int | None = Field(None, ge=1, description="seeds trained together per trial (None: all)")
    matched_rate: bool = Field(False, description="add the matched-rate noise study: for every real labeler, "
                               "simulated random / class-conditional (its T) / instance noise at its error rate")
    rule_eval: bool = Field(True, description="operate the decision rules on every seed's gold set at every n_gold "
                            "(up to rule_max_gold) and score them against the sweep's realised ΔAUC "
                            "(weaklabels.rule_eval)")
    rule_max_gold: int | None = Field(None, ge=1, description="largest gold-set size at which the rules are "
                                      "evaluated (None: every n_gold of the grid)")
    rule_eval_controls: bool = Field(False, description="also evaluate the rules on the matched-rate controls "
                                     "(simulated; 3x the rule trials)")
    rule_pool_max: int | None = Field(2000, ge=10, description="pool items the pool rules train on (None: all)")
    rule_pool_repeats: int = Field(2, ge=1, description="repeats of stratified K-fold in the cv-delta rule")
    rule_proxy: StudentConfig | None = Field(None, description="the proxy student the rules train (None: "
                                             "decide's default; see weaklabels.decide)")
    cleanlab: bool = Field(True, description="estimate each labeler's noise matrix with cleanlab (no gold)")

    @field_validator("seeds")
    @classmethod
    def _seeds(cls, v: int | list[int]) -> int | list[int]:
        if isinstance(v, int) and v < 1:
            raise ValueError(f"seeds must be a number of seeds >= 1 or a list of seeds, got {v}")
        if isinstance(v, list) and (not v or len(set(v)) != len(v) or min(v) < 0):
            raise ValueError(f"seeds must be a non-empty list of distinct non-negative integers, got {v}")
        return v

    @field_validator("rule_proxy")
    @classmethod
    def _proxy(cls, v: StudentConfig | None) -> StudentConfig | None:
        if v is not None and v.kind not in PROXY_KINDS:
            raise ValueError(f"rule_proxy must be a student of kind {list(PROXY_KINDS)}, got {v.kind!r}")
        return v

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


def labeler_metrics(y: np.ndarray, out_probs: np.ndarray, out_labels: np.ndarray, k: int,
                    class_names: tuple[str, ...] | None = None) -> dict[str, Any]:
    """The labeler on the pool's true labels: accuracy (Wilson CI) beside the majority-class rate, balanced accuracy,
    per-class recall and precision, AUC of its probabilities, the confusion matrix C[y, ŷ], and a plain warning when
    its accuracy is at or below the majority-class rate (:class:`.confusion.LabelerSummary`)."""
    correct = int((out_labels == y).sum())
    conf = np.zeros((k, k), dtype=int)
    np.add.at(conf, (y, out_labels), 1)
    scores = out_probs[:, 1] if k == 2 else out_probs
    s = labeler_summary(y, out_labels, k, class_names=class_names, truth=True)
    return {
        "accuracy": wilson_ci(correct, len(y)).to_dict(),
        "majority_rate": s.majority_rate.value, "majority_class": s.majority_class,
        "balanced_accuracy": s.balanced_accuracy.to_dict(),
        "recall": [e.to_dict() for e in s.recall], "precision": [e.to_dict() for e in s.precision],
        "warning": s.warning(),
        "auc": auc(y, scores) if len(np.unique(y)) > 1 else None,
        "confusion": conf.tolist(),
        "noise_rate_per_class": (1 - np.diag(conf) / np.clip(conf.sum(1), 1, None)).tolist(),
    }


def plan_trials(cfg: StudyConfig, weak_keys: dict[str, dict[int, str]]) -> list[Trial]:
    """All trials of the sweep. ``weak_keys`` maps labeler display name -> seed -> cache key of its pool outputs
    (the same key for every seed of a real labeler; one noise draw per seed for a simulated one)."""
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
                                     "labeler": None, "weak_keys": None}))
            for lab, by_seed in weak_keys.items():
                keys = [by_seed[s] for s in chunk]
                for cond in ("gold+weak", "gold+weak-elr"):
                    if cond in cfg.conditions:
                        trials += [Trial({**base, "student": sd, "condition": cond, "n_gold": n,
                                          "seeds": chunk, "labeler": lab, "weak_keys": keys}) for n in cfg.n_gold]
                if "weak" in cfg.conditions:
                    trials.append(Trial({**base, "student": sd, "condition": "weak", "n_gold": 0, "seeds": chunk,
                                         "labeler": lab, "weak_keys": keys}))
    return trials


def plan_rule_trials(cfg: StudyConfig, weak_keys: dict[str, dict[int, str]], n_classes: int,
                     n_pool: int) -> list[Trial]:
    """The decision-rule trials: per labeler × proxy representation × n_gold (every size of the grid up to
    rule_max_gold, from 2 per class — ``decide`` needs them — to the pool size less 10, leaving a pool) × seed.
    The matched-rate controls join only with ``rule_eval_controls``."""
    if not cfg.rule_eval or "gold+weak" not in cfg.conditions:
        return []
    own = {lab.display_name() for lab in cfg.labelers}
    weak_keys = {k: v for k, v in weak_keys.items() if k in own or cfg.rule_eval_controls}
    feats = list(dict.fromkeys(proxy_features(s.features) for s in cfg.students))
    base = {"kind": "rule", "dataset": cfg.dataset, "pool_split": cfg.pool_split, "test_split": cfg.test_split,
            "pool_max": cfg.rule_pool_max, "pool_repeats": cfg.rule_pool_repeats,
            "proxy": None if cfg.rule_proxy is None else cfg.rule_proxy.model_dump()}
    return [Trial({**base, "labeler": lab, "features": f, "n_gold": n, "seed": s, "weak_key": by_seed[s],
                   "version": RULES_VERSION})
            for lab, by_seed in weak_keys.items() for f in feats for n in cfg.n_gold
            if 2 * n_classes <= n <= (cfg.rule_max_gold or n) and n <= n_pool - 10 for s in cfg.seed_list()]


def study_trial(config: dict) -> list[dict]:
    """The study's trial function: a decision-rule trial or a sweep trial, by ``config['kind']``."""
    return run_rule_trial(config) if config.get("kind") == "rule" else run_trial(config)


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
            elr = results[(results.condition == "gold+weak-elr") & (results.labeler == lab) & (results.student == name)]
            if not elr.empty:
                e = elr.pivot_table(index="seed", columns="n_gold", values="auc")[cfg.n_gold].to_numpy() - g_curve
                row["elr_empirical"] = empirical_crossover(grid, e).to_dict()
                row["elr_empirical_text"] = empirical_crossover(grid, e).describe()
                row["elr_delta_at_max"] = mean_ci(e[:, -1]).to_dict()
            w = weak_only[weak_only.student == name]["auc"].to_numpy()
            if len(w):
                row["weak_only_auc"] = mean_ci(w).to_dict()
            crossovers.append(row)
    return {"curves": curves, "crossovers": crossovers}


def explain(cfg: StudyConfig, ds: Dataset, results: pd.DataFrame, labelers: dict[str, dict],
            outputs: dict[str, LabelerOutput], *, progress: bool = True) -> dict[str, Any]:
    """The matched-rate comparison, the projection predictor and cleanlab (``outputs``: each labeler's pool
    outputs; the first seed's draw for a simulated one)."""
    pool = ds.split(cfg.pool_split)
    grid = np.asarray(cfg.n_gold, dtype=float)
    matched, projection, noise = [], [], {}
    gold = results[results.condition == "gold"].pivot_table(index="seed", columns=["student", "n_gold"], values="auc")
    weak_only = results[results.condition == "weak"].groupby(["labeler", "student"])["auc"].mean()
    gold100 = gold_order(pool.y, 0, ds.n_classes)[:100]  # seed 0's first 100 gold items
    for lab, meta in track(labelers.items(), f"{cfg.name}: noise structure (cleanlab, projection)",
                           unit="labeler", enabled=progress):
        out = outputs[lab]
        t_pool = transition_matrix(pool.y, out.labels, ds.n_classes)
        if meta.get("matched_to") is None:
            noise[lab] = {"transition_pool": t_pool.tolist(), "transition_gold100": transition_matrix(
                pool.y[gold100], out.labels[gold100], ds.n_classes).tolist()}
            if cfg.cleanlab and len(np.unique(out.labels)) == ds.n_classes:
                noise[lab]["cleanlab"] = cleanlab_noise(pool.x, out.labels, ds.n_classes)
            cc = f"{lab} ~ class-conditional"
            for st in cfg.students:
                name = st.display_name()
                loss = 0.0  # instance-dependent AUC loss, measured when the matched-rate study ran
                if (lab, name) in weak_only.index and (cc, name) in weak_only.index:
                    loss = float(weak_only[(cc, name)] - weak_only[(lab, name)])
                proj = projected_crossover(grid, gold[name][cfg.n_gold].to_numpy().mean(0), len(pool), t_pool,
                                           loss)
                projection.append({"labeler": lab, "student": name, **proj})
    for base in [lab for lab, m in labelers.items() if m.get("matched_to") is None and not m["simulated"]]:
        kinds = {"own": base, **{k: f"{base} ~ {k}" for k in MATCHED}}
        if not all(v in labelers for v in kinds.values()):
            continue
        d = results[results.condition == "gold+weak"].merge(
            results[results.condition == "gold"][["student", "n_gold", "seed", "auc"]],
            on=["student", "n_gold", "seed"], suffixes=("", "_gold"))
        d["delta"] = d["auc"] - d["auc_gold"]
        for (st, n), g in d[d.labeler.isin(kinds.values())].groupby(["student", "n_gold"]):
            row: dict[str, Any] = {"labeler": base, "student": st, "n_gold": int(n)}
            for k, name in kinds.items():
                ci = mean_ci(g[g.labeler == name]["delta"].to_numpy())
                row[k] = ci.to_dict()
            row["sign_flip"] = bool(np.sign(row["own"]["value"]) != np.sign(row["random"]["value"]))
            row["significant_flip"] = bool(row["sign_flip"] and min(row["own"]["lo"] * row["own"]["hi"],
                                                                     row["random"]["lo"] * row["random"]["hi"]) > 0)
            matched.append(row)
    return {"matched": matched, "projection": projection, "noise": noise}


def _git_hash() -> str | None:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                              cwd=Path(__file__).parent).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


MATCHED = ("random", "class-conditional", "instance")


def matched_labelers(name: str, accuracy: float, t: np.ndarray) -> list[SimulatedLabeler]:
    """The matched-rate study's simulated labelers for a real labeler (``name``, its accuracy and T)."""
    return [
        SimulatedLabeler(name=f"{name} ~ random", noise="random", accuracy=accuracy, seed=0),
        SimulatedLabeler(name=f"{name} ~ class-conditional", noise="class-conditional",
                         transition=t.tolist(), accuracy=accuracy, seed=0),
        SimulatedLabeler(name=f"{name} ~ instance", noise="instance", accuracy=accuracy, seed=0),
    ]


def label_all(cfg: StudyConfig, ds: Dataset, *, progress: bool = True) -> tuple[dict[str, dict], dict[str, dict[int, str]],
                                                     dict[str, LabelerOutput]]:
    """Run (or load from cache) every labeler on the pool, plus the matched-rate labelers when asked.

    A simulated labeler is drawn once per sweep seed (``draw`` = the seed), so each seed trains on its own noise
    realisation. Returns per-labeler metadata (config, metrics of the first seed's draw, and for matched labelers
    ``matched_to``/``noise``), the cache keys of the pool outputs per seed, and the outputs of the first seed.
    """
    pool = ds.split(cfg.pool_split)
    seeds = cfg.seed_list()
    meta: dict[str, dict] = {}
    keys: dict[str, dict[int, str]] = {}
    outs: dict[str, LabelerOutput] = {}

    def add(lab, extra: dict) -> LabelerOutput:
        name = lab.display_name()
        if name in meta:
            raise FmgaugeError(f"two labelers are named {name!r}; give each a distinct name.")
        draws = {s: lab.model_copy(update={"draw": s}) for s in seeds} if lab.simulated else {s: lab for s in seeds}
        log.info("labelling %d pool items with %s%s (cached after the first run)", len(pool), name,
                 f", one noise draw per seed ({len(seeds)})" if lab.simulated else "")
        first = None
        keys[name] = {}
        # a simulated labeler's draws (an instance-noise one fits its reference model per draw) show as steps;
        # a model labeler shows its own batches
        with progress_tracker(f"{cfg.name}: {name} draws", total=len(draws), unit="draw",
                              enabled=progress and lab.simulated) as p:
            for s, d in draws.items():
                out = run_labeler(d, ds, cfg.pool_split)
                first = first or out
                keys[name][s] = stable_hash(labeler_cache_key(d, ds, cfg.pool_split))
                p.advance(1)
        meta[name] = {"config": lab.model_dump(), "simulated": lab.simulated, **extra,
                      "metrics": labeler_metrics(pool.y, first.probs, first.labels, ds.n_classes, ds.class_names)}
        outs[name] = first
        return first

    for lab in cfg.labelers:
        out = add(lab, {})
        if cfg.matched_rate and not lab.simulated:
            acc = float((out.labels == pool.y).mean())
            t = transition_matrix(pool.y, out.labels, ds.n_classes)
            for sim in matched_labelers(lab.display_name(), acc, t):
                add(sim, {"matched_to": lab.display_name(), "noise": sim.noise})
    return meta, keys, outs


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
    names = [s.display_name() for s in cfg.students]
    if len(set(names)) < len(names):
        dup = sorted({n for n in names if names.count(n) > 1})
        raise FmgaugeError(f"students {dup} appear twice; give each a distinct `name`.")
    params = {}  # refuses misfits (conv students on features, raw features of texts) before any labelling
    for s in cfg.students:
        x_pool, _ = represent(ds, s.features, cfg.pool_split, cfg.test_split)
        if (s.kind in TEXT_STUDENTS) != (s.features == "text"):
            raise FmgaugeError(f"student {s.display_name()!r}: kind {s.kind!r} with features {s.features!r}; "
                               f"students {list(TEXT_STUDENTS)} read texts (features: text) and only they do.")
        if "gold+weak-elr" in cfg.conditions and s.kind in (*CONVEX_STUDENTS, *SOLVED_STUDENTS, *TEXT_STUDENTS):
            raise FmgaugeError(f"condition gold+weak-elr trains minibatch torch students only (mlp, cnn, resnet); "
                               f"student {s.display_name()!r} is {s.kind!r}.")
        if hasattr(x_pool, "toarray") and s.kind not in CONVEX_STUDENTS:
            raise FmgaugeError(f"student {s.display_name()!r}: features {s.features!r} are sparse; only "
                               f"{list(CONVEX_STUDENTS)} students take them (e.g. kind: sk-logreg, features: tfidf).")
        params[s.display_name()] = n_params(s, input_shape(x_pool), ds.n_classes)
    store = RunStore(run_dir)
    store.save_config(cfg.model_dump(mode="json"))
    # the exact pool/test membership (text datasets draw it with a seed): gold sets are drawn from the pool ids
    store.write_json("splits.json", {"dataset": ds.name, "source": ds.source, "meta": ds.meta,
                                     "pool": pool.ids.tolist(), "test": test.ids.tolist()})
    t0 = time.time()
    labelers, keys, outputs = label_all(cfg, ds, progress=progress)
    trials = plan_trials(cfg, keys)
    rule_trials = plan_rule_trials(cfg, keys, ds.n_classes, len(pool))
    log.info("%d sweep trials (%d seeds each at most) and %d decision-rule trials", len(trials),
             cfg.seed_batch or len(cfg.seed_list()), len(rule_trials))
    stats = run_trials(trials + rule_trials, study_trial, store, backend=backend,
                       description=f"{cfg.name}: trials", progress=progress)
    results = store.results({t.id for t in trials}).drop(columns=["trial_id"])
    results = results.sort_values(["labeler", "student", "condition", "n_gold", "seed"], na_position="first")
    results = results.reset_index(drop=True)
    store.write_results(results)
    rule_rows = pd.DataFrame()
    if rule_trials:
        rule_rows = store.results({t.id for t in rule_trials}).drop(columns=["trial_id"])
        rule_rows = rule_rows.sort_values(["labeler", "features", "n_gold", "seed", "rule"]).reset_index(drop=True)
        rule_rows.to_parquet(run_dir / "rules.parquet", index=False)
    rule_eval, cells = evaluate_rules(results, rule_rows, {s.display_name(): s.features for s in cfg.students},
                                      cfg.seed_list())
    if cells is not None:
        cells.to_parquet(run_dir / "rule_cells.parquet", index=False)
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
        **explain(cfg, ds, results, labelers, outputs, progress=progress),
        "rule_eval": rule_eval,
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
    fix = (f"rebuild it with `fmgauge weak-labels calibrate --config {run_dir / 'config.yaml'} --out {run_dir}` "
           "(saved trials are reused, not rerun).")
    try:
        summary = store.read_json("summary.json", fix=fix)
        results = store.read_parquet("results.parquet", fix=fix)
    finally:
        store.close()
    return StudyResult(run_dir, summary, results)
