"""The comparison: for each masking strategy x seed, an MLM stage on the task's text, then fine-tuning and evaluation.

One trial = (strategy, seed): load the masked LM (:func:`load_mlm`), continue MLM training on the task's training
text with the strategy's collator (HF ``Trainer``), turn the adapted encoder into a sequence(-pair) classifier,
fine-tune it, and score the dev and test splits (F1 of the positive class and accuracy; macro-F1 for K > 2).
Trials run through :func:`fmgauge.core.runner.run_trials`, so a killed comparison resumes where it stopped.
:func:`compare` then pairs the strategies seed by seed (:mod:`fmgauge.masking.analysis`) and writes the report.
"""

from __future__ import annotations

import logging
import os
import platform
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, field_validator

import fmgauge
from fmgauge.core.models import DeviceName
from fmgauge.core.progress import progress as progress_tracker
from fmgauge.core.runner import BackendConfig, RunStats, Trial, run_trials
from fmgauge.core.store import RunStore
from fmgauge.core.validation import FmgaugeError
from fmgauge.masking.analysis import analyse, classification_metrics
from fmgauge.masking.strategies import STRATEGIES, MaskingConfig, make_strategy

log = logging.getLogger(__name__)


class CompareConfig(BaseModel):
    """A multi-seed comparison of masking strategies on one task and model."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field("masking", description="study name (run directory defaults to runs/<name>)")
    task: str = Field("mrpc", description="mrpc | glue:<name> | path to a GLUE-style TSV/CSV file or folder")
    model: str = Field("minilm-l6", description="masked LM: registered name, local directory or hub id")
    strategies: list[str] = Field(["random", "whole-word", "typhoon"], min_length=1,
                                  description="masking strategies to compare (see STRATEGIES)")
    seeds: int | list[int] = Field(5, description="number of seeds (0..n-1) or an explicit list")
    masking: MaskingConfig = Field(default_factory=MaskingConfig, description="masking rate / policy / Typhoon")
    max_length: int = Field(128, ge=8, description="tokens per (pair) example; longer ones are truncated")
    mlm_steps: int = Field(200, ge=1, description="MLM optimiser steps on the task's training text")
    mlm_batch: int = Field(16, ge=1, description="MLM batch size (reference: 16)")
    mlm_lr: float = Field(1e-4, gt=0, description="MLM learning rate, AdamW (reference: 1e-4)")
    mlm_weight_decay: float = Field(1e-2, ge=0, description="MLM weight decay (reference: 1e-2)")
    ft_mode: str = Field("full", pattern="^(full|probe)$",
                         description="full: fine-tune the whole adapted encoder with a new classification head; "
                                     "probe: freeze it and fit a logistic regression on mean-pooled sentence "
                                     "features ([u, v, |u-v|, u*v] for pairs) - far cheaper, for CPU budgets")
    probe_c: float | None = Field(None, gt=0, description="probe: inverse L2 strength of the logistic regression "
                                                           "(None: chosen by 5-fold CV on the probe's training set "
                                                           "from 1e-3, 1e-2, 1e-1, 1)")
    ft_pooler: str = Field("init", pattern="^(init|checkpoint)$",
                           description="full: the classifier's pooler, which a masked-LM checkpoint does not hold - "
                                       "'init' (transformers' default: freshly initialised) or 'checkpoint' (copied "
                                       "from the original checkpoint, e.g. BERT's NSP-trained pooler; on minilm-l6 "
                                       "it made fine-tuning collapse to the majority class)")
    ft_epochs: float = Field(3.0, gt=0, description="fine-tuning epochs over the (possibly subsampled) train split")
    ft_train_size: int | None = Field(None, ge=2, description="stratified subsample of train for fine-tuning "
                                                              "(None: all of it)")
    ft_batch: int = Field(32, ge=1, description="fine-tuning batch size (HF BERT MRPC recipe: 32)")
    ft_lr: float = Field(2e-5, gt=0, description="fine-tuning learning rate (HF BERT MRPC recipe: 2e-5)")
    ft_warmup: float = Field(0.1, ge=0, lt=1, description="share of fine-tuning steps with linear LR warm-up")
    ft_evals: int = Field(4, ge=1, description="dev evaluations along fine-tuning (learning curve; last = final)")
    eval_splits: list[str] = Field(["dev", "test"], min_length=1, description="splits scored after fine-tuning")
    eval_max: int | None = Field(None, ge=10, description="score at most this many items per eval split: a fixed "
                                                          "stratified subsample, the same for every trial (None: all)")
    label_column: str | None = Field(None, description="label column of a TSV/CSV task (default: auto)")
    text_columns: list[str] | None = Field(None, min_length=1, max_length=2, description="sentence column(s) of "
                                           "a TSV/CSV task: [a] or [a, b] for sentence pairs (default: auto)")
    header: bool = Field(True, description="the TSV/CSV task files have a header row (false: columns are named by "
                                           "position '0', '1', ...; name them with text_columns and label_column)")
    device: DeviceName = Field("auto", description="auto | cpu | cuda | mps")
    dtype: str = Field("float32", description="float32 | float16 | bfloat16 | auto")
    n_boot: int = Field(10000, ge=100, description="paired bootstrap resamples")

    @field_validator("strategies")
    @classmethod
    def _known(cls, v: list[str]) -> list[str]:
        for s in v:
            STRATEGIES.get(s)  # raises with did-you-mean
        if len(set(v)) != len(v):
            raise ValueError(f"strategies must be distinct, got {v}")
        return v

    def load_task(self):  # noqa: ANN201 - TextTask
        from fmgauge.masking.tasks import load_task

        cols = None if self.text_columns is None else (self.text_columns[0], (self.text_columns + [None])[1])
        return load_task(self.task, label_column=self.label_column, text_columns=cols, header=self.header)

    def seed_list(self) -> list[int]:
        return list(range(self.seeds)) if isinstance(self.seeds, int) else list(self.seeds)

    def trial_part(self) -> dict[str, Any]:
        """What a trial depends on (not the strategy list, seeds, name or bootstrap settings; ``text_columns`` and
        ``header`` only when not the default, so runs made before the fields existed still resume)."""
        part = self.model_dump(mode="json", exclude={"name", "strategies", "seeds", "n_boot"})
        if part.get("text_columns") is None:
            part.pop("text_columns", None)
        if part.get("header") is True:
            part.pop("header", None)
        return part


@dataclass
class CompareResult:
    run_dir: Path
    summary: dict[str, Any]
    results: pd.DataFrame
    stats: RunStats | None = None


# ------------------------------------------------------------------------------------------ pieces

def load_mlm(name: str, *, device: str = "auto", dtype: str = "float32"):  # -> TextModel
    """The masked LM ``name`` via :func:`fmgauge.core.text_models.load_text_model` with a usable mask token.

    Checkpoints without an MLM head (minilm-l6) get one initialised; it is listed in ``.initialised``. An
    architecture transformers has no masked-LM class for (e.g. a causal LM) is refused with a clear error.
    """
    from fmgauge.core.text_models import load_text_model, resolve_text_model

    try:
        tm = load_text_model(name, task="masked-lm", device=device, dtype=dtype)
    except FmgaugeError as e:
        source, _ = resolve_text_model(name)
        kind = _config_class(source)
        raise FmgaugeError(
            f"model {name!r} ({kind}) has no masked-LM head and transformers cannot initialise one for this "
            "architecture; masked-LM adaptation needs an encoder such as BERT, RoBERTa or DistilBERT "
            f"(e.g. minilm-l6, bert-base-uncased). Loader said: {e}") from e
    if getattr(tm.tokenizer, "mask_token_id", None) is None:
        raise FmgaugeError(f"model {name!r}: its tokenizer has no mask token, so it cannot do masked-LM training.")
    return tm


def _config_class(source: str) -> str:
    try:
        from transformers import AutoConfig

        return type(AutoConfig.from_pretrained(source)).__name__
    except Exception:  # noqa: BLE001 - only used to decorate an error message
        return "unknown architecture"


def tokenize_split(tokenizer: Any, split: Any, max_length: int, *, offsets: bool = False) -> list[dict]:
    """Tokenise a :class:`TextSplit` (pairs when ``text_b`` is set) into a list of feature dicts."""
    enc = tokenizer(split.text_a, split.text_b, truncation=True, max_length=max_length,
                    return_special_tokens_mask=True, return_offsets_mapping=offsets)
    keys = list(enc.keys())
    return [{k: enc[k][i] for k in keys} for i in range(len(split.text_a))]


def stratified_indices(y: np.ndarray, n: int | None, seed: int) -> np.ndarray:
    """Indices of a class-stratified subsample of size ``n`` (all, sorted, if n is None or >= len(y))."""
    if n is None or n >= len(y):
        return np.arange(len(y))
    from sklearn.model_selection import train_test_split

    idx, _ = train_test_split(np.arange(len(y)), train_size=n, stratify=y, random_state=seed)
    return np.sort(idx)


def _training_args(out: str, *, seed: int, device: str, **kw: Any):
    from transformers import TrainingArguments

    return TrainingArguments(
        output_dir=out, seed=seed, data_seed=seed, save_strategy="no", report_to=[], disable_tqdm=True,
        dataloader_num_workers=0, remove_unused_columns=False, use_cpu=device == "cpu", **kw)


class _ListDataset:
    def __init__(self, items: list[dict]) -> None:
        self.items = items

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict:
        return self.items[i]


def _step_progress(tracker: Any):
    """A HF ``TrainerCallback`` counting optimizer steps on ``tracker`` (:func:`fmgauge.core.progress.progress`)
    and showing the last logged training loss: on a non-TTY a log line with step/total, rate, ETA and loss."""
    from transformers import TrainerCallback

    class StepProgress(TrainerCallback):
        def on_step_end(self, args, state, control, **kw):  # noqa: ANN001 - HF signature
            tracker.advance(1)

        def on_log(self, args, state, control, logs=None, **kw):  # noqa: ANN001 - HF signature
            if logs and "loss" in logs:
                tracker.update(loss=float(logs["loss"]))

    return StepProgress()


# ------------------------------------------------------------------------------------------ one trial

def run_trial(config: dict) -> list[dict]:
    """One (strategy, seed) trial; returns result rows.

    Row kinds: ``metrics`` (one: dev/test F1 and accuracy, timings, realised masking rate, initialised tensors),
    ``mlm_curve`` / ``ft_curve`` / ``probe_curve`` (learning curves) and ``tokens`` (masked / seen counts per
    token type over the MLM stage; Typhoon also stores its final rates).
    """
    import torch
    import transformers
    from transformers import DataCollatorWithPadding, PrinterCallback, Trainer, TrainerCallback

    from fmgauge.core.models import resolve_device
    from fmgauge.core.text_models import load_text_model

    cfg = CompareConfig.model_validate({**config["study"], "strategies": [config["strategy"]]})
    strategy, seed = config["strategy"], int(config["seed"])
    device = resolve_device(cfg.device)
    transformers.set_seed(seed)
    task = cfg.load_task()
    train = task.split("train")
    tm = load_mlm(cfg.model, device=cfg.device, dtype=cfg.dtype)
    tok, model = tm.tokenizer, tm.model
    whole_word = strategy == "whole-word"
    mlm_items = tokenize_split(tok, train, cfg.max_length, offsets=whole_word and tok.is_fast)
    setup = make_strategy(strategy, tok, cfg.masking, [it["input_ids"] for it in mlm_items], seed)
    rows: list[dict] = []
    base = {"strategy": strategy, "seed": seed}

    # ---- MLM stage
    t0 = time.perf_counter()
    if setup.state is not None and cfg.masking.warm_batches:
        rng = np.random.default_rng(seed)
        pick = rng.choice(len(mlm_items), size=min(len(mlm_items), cfg.masking.warm_batches * cfg.mlm_batch),
                          replace=False)
        warm = [setup.collator([mlm_items[j] for j in pick[i:i + cfg.mlm_batch]])
                for i in range(0, len(pick), cfg.mlm_batch)]
        setup.state.warm_start(model, [{k: v.to(device) for k, v in b.items()} for b in warm])
        setup.collator.masked_counts_[:] = 0
        setup.collator.seen_counts_[:] = 0
    with tempfile.TemporaryDirectory(prefix="fmgauge-masking-") as tmp:
        args = _training_args(
            f"{tmp}/mlm", seed=seed, device=device.type, max_steps=cfg.mlm_steps,
            per_device_train_batch_size=cfg.mlm_batch, learning_rate=cfg.mlm_lr,
            weight_decay=cfg.mlm_weight_decay, logging_steps=max(1, cfg.mlm_steps // 20), lr_scheduler_type="constant")
        model.train()
        with progress_tracker(f"masking {strategy} seed {seed}: MLM", total=cfg.mlm_steps, unit="step") as p:
            trainer = Trainer(model=model, args=args, train_dataset=_ListDataset(mlm_items),
                              data_collator=setup.collator, callbacks=[*setup.callbacks, _step_progress(p)])
            trainer.remove_callback(PrinterCallback)
            trainer.train()
        mlm_seconds = time.perf_counter() - t0
        rows += [{**base, "kind": "mlm_curve", "step": h["step"], "loss": h["loss"]}
                 for h in trainer.state.log_history if "loss" in h]
        masked, seen = setup.masked_counts()
        ids = np.flatnonzero(seen)
        tok_row = {**base, "kind": "tokens", "ids": ids.tolist(), "masked": masked[ids].tolist(),
                   "seen": seen[ids].tolist()}
        if setup.state is not None:
            tok_row["rate"] = np.round(setup.state.rates()[ids], 6).tolist()
            typhoon_updates = setup.state.steps_
        else:
            typhoon_updates = 0
        rows.append(tok_row)
        head = {**base, "kind": "metrics", "mlm_seconds": mlm_seconds, "mlm_rate":
                float(masked.sum() / max(1, seen.sum())), "initialised": ", ".join(tm.initialised),
                "typhoon_updates": typhoon_updates, "threads": torch.get_num_threads()}
        if cfg.ft_mode == "probe":
            t1 = time.perf_counter()
            scores, curve = probe_eval(model, tok, task, cfg, seed, device)
            rows += [{**base, **c} for c in curve]
            rows.append({**head, **scores, "ft_seconds": time.perf_counter() - t1})
            return rows
        model.save_pretrained(f"{tmp}/adapted")
        tok.save_pretrained(f"{tmp}/adapted")
        del trainer, model, setup

        # ---- fine-tuning
        t1 = time.perf_counter()
        transformers.set_seed(seed)
        clf_tm = load_text_model(f"{tmp}/adapted", task="sequence-classification", device=cfg.device,
                                 dtype=cfg.dtype, num_labels=task.n_labels)
        clf = clf_tm.model
        carried = carry_untouched(clf, clf_tm.initialised, cfg) if cfg.ft_pooler == "checkpoint" else []
        keep = stratified_indices(train.y, cfg.ft_train_size, seed)
        ft_items = [{k: v for k, v in it.items() if k in ("input_ids", "attention_mask", "token_type_ids")}
                    | {"labels": int(train.y[i])} for i, it in ((i, mlm_items[i]) for i in keep)]
        evals = {s: _eval_items(tok, task.split(s), cfg.max_length, cfg.eval_max) for s in cfg.eval_splits}
        steps_per_epoch = int(np.ceil(len(ft_items) / cfg.ft_batch))
        total = max(1, int(round(cfg.ft_epochs * steps_per_epoch)))
        eval_at = sorted({int(round(total * (k + 1) / cfg.ft_evals)) for k in range(cfg.ft_evals - 1)})

        class EvalAt(TrainerCallback):
            def on_step_end(self, args, state, control, **kw):  # noqa: ANN001 - HF signature
                if state.global_step in eval_at:
                    control.should_evaluate = True

        def metrics(p) -> dict[str, float]:  # noqa: ANN001 - EvalPrediction
            return classification_metrics(p.label_ids, np.argmax(p.predictions, -1), task.n_labels)

        dev_name = "dev" if "dev" in evals else cfg.eval_splits[0]
        args = _training_args(
            f"{tmp}/ft", seed=seed, device=device.type, max_steps=total, per_device_train_batch_size=cfg.ft_batch,
            per_device_eval_batch_size=64, learning_rate=cfg.ft_lr, warmup_steps=int(cfg.ft_warmup * total),
            weight_decay=0.01, logging_steps=max(1, total // 20), eval_strategy="no")
        with progress_tracker(f"masking {strategy} seed {seed}: fine-tune", total=total, unit="step") as p:
            ft = Trainer(model=clf, args=args, train_dataset=_ListDataset(ft_items),
                         eval_dataset=_ListDataset(evals[dev_name][0]), data_collator=DataCollatorWithPadding(tok),
                         compute_metrics=metrics, callbacks=[EvalAt(), _step_progress(p)])
            ft.remove_callback(PrinterCallback)
            ft.train()
        for h in ft.state.log_history:
            if "loss" in h:
                rows.append({**base, "kind": "ft_curve", "step": h["step"], "loss": h["loss"]})
            if "eval_f1" in h:
                rows.append({**base, "kind": "ft_curve", "step": h["step"], "dev_f1": h["eval_f1"],
                             "dev_acc": h["eval_acc"]})
        out = {**head, "ft_steps": total, "ft_train_size": len(ft_items), "ft_from_checkpoint": ", ".join(carried)}
        for s, (items, y) in evals.items():
            pred = np.argmax(ft.predict(_ListDataset(items)).predictions, -1)
            m = classification_metrics(y, pred, task.n_labels)
            out[f"{s}_f1"], out[f"{s}_acc"] = m["f1"], m["acc"]
            if s == dev_name:
                rows.append({**base, "kind": "ft_curve", "step": total, "dev_f1": m["f1"], "dev_acc": m["acc"]})
        out["ft_seconds"] = time.perf_counter() - t1
    rows.append(out)
    return rows


def carry_untouched(clf: Any, initialised: tuple[str, ...], cfg: CompareConfig) -> list[str]:
    """Copy into ``clf`` the pre-trained tensors the masked-LM checkpoint could not hold (e.g. BERT's pooler).

    The MLM stage never trains them, so the original checkpoint's values are the adapted model's values; without
    this they would be initialised at random before fine-tuning. Returns the names copied (the new classification
    head stays initialised).
    """
    import torch

    from fmgauge.core.text_models import load_text_model

    if not initialised:
        return []
    base = load_text_model(cfg.model, task="sequence-classification", device=cfg.device, dtype=cfg.dtype,
                           num_labels=clf.config.num_labels)
    have = dict(base.model.named_parameters())
    names = [n for n in initialised if n in have and n not in base.initialised]
    params = dict(clf.named_parameters())
    with torch.no_grad():
        for n in names:
            params[n].copy_(have[n])
    return names


def sentence_features(encoder: Any, tok: Any, texts: list[str], max_length: int, device: Any, *,
                      batch: int = 64, tracker: Any = None) -> np.ndarray:
    """Mean-pooled last hidden states (N, d) of ``texts`` (batched by length to limit padding); ``tracker`` (a
    :func:`fmgauge.core.progress.progress` tracker counting texts) advances batch by batch."""
    import torch

    with torch.no_grad():
        return _pool(encoder, tok, texts, max_length, device, batch, tracker)


def _pool(encoder: Any, tok: Any, texts: list[str], max_length: int, device: Any, batch: int,
          tracker: Any = None) -> np.ndarray:
    order = np.argsort([len(t) for t in texts], kind="stable")
    out = np.zeros((len(texts), encoder.config.hidden_size), dtype=np.float32)
    encoder.eval()
    for i in range(0, len(order), batch):
        idx = order[i:i + batch]
        enc = tok([texts[j] for j in idx], truncation=True, max_length=max_length, padding=True,
                  return_tensors="pt").to(device)
        h = encoder(**enc).last_hidden_state  # (B, T, d)
        m = enc["attention_mask"].unsqueeze(-1).to(h.dtype)  # (B, T, 1)
        out[idx] = ((h * m).sum(1) / m.sum(1).clamp(min=1)).float().cpu().numpy()
        if tracker is not None:
            tracker.advance(len(idx))
    return out


def probe_eval(model: Any, tok: Any, task: Any, cfg: CompareConfig, seed: int, device: Any
               ) -> tuple[dict[str, float], list[dict[str, Any]]]:
    """Frozen-encoder probe: logistic regression on sentence(-pair) features; scores + a dev learning curve.

    Pair features are [u, v, |u - v|, u * v] (Conneau et al. 2017 / SBERT). The probe trains on a stratified
    ``ft_train_size`` subsample of train (seeded); the curve refits it on 1/4 and 1/2 of that subsample.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    encoder = model.base_model

    def feats(split: Any, idx: np.ndarray, p: Any) -> np.ndarray:
        u = sentence_features(encoder, tok, [split.text_a[i] for i in idx], cfg.max_length, device, tracker=p)
        if split.text_b is None:
            return u
        v = sentence_features(encoder, tok, [split.text_b[i] for i in idx], cfg.max_length, device, tracker=p)
        return np.hstack([u, v, np.abs(u - v), u * v])

    train = task.split("train")
    keep = stratified_indices(train.y, cfg.ft_train_size, seed)
    picks = {s: stratified_indices(task.split(s).y, cfg.eval_max, 0) for s in cfg.eval_splits}
    n_texts = sum(len(i) * (1 if task.split(s).text_b is None else 2)
                  for s, i in [("train", keep), *picks.items()])
    with progress_tracker(f"masking probe seed {seed}: features", total=n_texts, unit="text") as p:
        x_tr, y_tr = feats(train, keep, p), train.y[keep]
        evals = {s: (feats(task.split(s), idx, p), task.split(s).y[idx]) for s, idx in picks.items()}

    c_value = cfg.probe_c
    if c_value is None:  # pick the L2 strength by CV on the probe's own training items (never dev/test)
        from sklearn.model_selection import GridSearchCV, StratifiedKFold

        grid = GridSearchCV(make_pipeline(StandardScaler(), LogisticRegression(max_iter=3000)),
                            {"logisticregression__C": [1e-3, 1e-2, 1e-1, 1.0]},
                            cv=StratifiedKFold(5, shuffle=True, random_state=seed)).fit(x_tr, y_tr)
        c_value = float(grid.best_params_["logisticregression__C"])

    def fit(x: np.ndarray, y: np.ndarray):
        return make_pipeline(StandardScaler(), LogisticRegression(C=c_value, max_iter=3000)).fit(x, y)

    clf = fit(x_tr, y_tr)
    scores: dict[str, float] = {"ft_train_size": int(len(y_tr)), "ft_steps": 0, "probe_c": c_value}
    for s, (x, y) in evals.items():
        m = classification_metrics(y, clf.predict(x), task.n_labels)
        scores[f"{s}_f1"], scores[f"{s}_acc"] = m["f1"], m["acc"]
    dev = "dev" if "dev" in evals else cfg.eval_splits[0]
    curve = []
    for frac in (0.25, 0.5, 1.0):
        sub = stratified_indices(y_tr, max(task.n_labels * 2, int(round(frac * len(y_tr)))), seed)
        c = clf if frac == 1.0 else fit(x_tr[sub], y_tr[sub])
        m = classification_metrics(evals[dev][1], c.predict(evals[dev][0]), task.n_labels)
        curve.append({"kind": "probe_curve", "step": int(len(sub)), "dev_f1": m["f1"], "dev_acc": m["acc"]})
    return scores, curve


def _eval_items(tok: Any, split: Any, max_length: int, max_items: int | None = None
                ) -> tuple[list[dict], np.ndarray]:
    """Feature dicts sorted by length (less padding per batch) and their labels in the same order.

    ``max_items``: a stratified subsample drawn with a fixed seed (0), so every trial scores the same items."""
    items = tokenize_split(tok, split, max_length)
    keep = stratified_indices(split.y, max_items, 0)
    order = keep[np.argsort([len(items[i]["input_ids"]) for i in keep], kind="stable")]
    feats = [{k: items[i][k] for k in ("input_ids", "attention_mask", "token_type_ids") if k in items[i]}
             | {"labels": int(split.y[i])} for i in order]
    return feats, split.y[order]


# ------------------------------------------------------------------------------------------ study

def plan_trials(cfg: CompareConfig) -> list[Trial]:
    part = cfg.trial_part()
    return [Trial({"study": part, "strategy": s, "seed": k}) for s in cfg.strategies for k in cfg.seed_list()]


def compare(cfg: CompareConfig, run_dir: str | Path | None = None, *, backend: BackendConfig | None = None,
            progress: bool = True, report: bool = True) -> CompareResult:
    """Run (or resume) the comparison ``cfg`` in ``run_dir`` (default runs/<name>); analyse and report it."""
    if len(cfg.seed_list()) < 2:
        raise FmgaugeError(f"a paired comparison needs at least 2 seeds, got {cfg.seed_list()}.")
    task = cfg.load_task()  # fail early on a bad task, before any model load or trial
    missing = [s for s in ["train", *cfg.eval_splits] if s not in task.splits]
    if missing:
        raise FmgaugeError(f"task {cfg.task!r} has splits {sorted(task.splits)}, not {missing}: give a folder with "
                           "train/dev/test files, or set eval_splits (--config) to splits it has.")
    load_mlm(cfg.model, device=cfg.device, dtype=cfg.dtype)  # and on a model without an MLM head
    run_dir = Path(run_dir or Path("runs") / cfg.name)
    store = RunStore(run_dir)
    store.save_config(cfg.model_dump(mode="json"))
    trials = plan_trials(cfg)
    t0 = time.time()
    stats = run_trials(trials, run_trial, store, backend=backend, description=f"{cfg.name}: strategy x seed",
                       progress=progress)
    df = store.results({t.id for t in trials})
    store.close()
    summary = analyse(cfg, df)
    summary["meta"] = {
        "fmgauge": fmgauge.__version__, "config": cfg.model_dump(mode="json"), "seeds": cfg.seed_list(),
        "run": {**stats.to_dict(), "wall_seconds_this_call": time.time() - t0},
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                    "threads_per_trial": (backend or BackendConfig()).threads_per_worker,
                    "workers": (backend or BackendConfig()).workers},
        "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    return finish(run_dir, df, summary, stats=stats, report=report)


def finish(run_dir: Path, df: pd.DataFrame, summary: dict, *, stats: RunStats | None = None, report: bool = True
           ) -> CompareResult:
    """Write results.parquet, summary.json and the report of a comparison."""
    from fmgauge.masking.report import write_report

    store = RunStore(run_dir)
    scalar = df[df["kind"].isin(["metrics", "mlm_curve", "ft_curve"])].dropna(axis=1, how="all")
    store.write_results(scalar.drop(columns=[c for c in ("ids", "masked", "seen", "rate") if c in scalar]))
    store.write_json("summary.json", summary)
    store.close()
    res = CompareResult(run_dir, summary, df, stats)
    if report:
        write_report(res)
    return res


def load_result(run_dir: str | Path) -> CompareResult:
    """A finished comparison from its run directory (no retraining)."""
    run_dir = Path(run_dir)
    store = RunStore(run_dir)
    cfg = CompareConfig.model_validate(store.load_config())
    df = store.results()  # every finished trial of this run directory (ids may predate a config field)
    old = store.read_json("summary.json") if (run_dir / "summary.json").exists() else {}
    store.close()
    if df.empty:
        raise FmgaugeError(f"{run_dir} holds no finished trials of its config yet.")
    summary = analyse(cfg, df)
    summary["meta"] = old.get("meta", {"config": cfg.model_dump(mode="json"), "seeds": cfg.seed_list()})
    return CompareResult(run_dir, summary, df)
