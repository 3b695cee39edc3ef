"""Positive controls: plant a benchmark split into a causal LM at chosen duplication counts, keep matched clean
splits, and measure each detector's power before anyone trusts it.

Groups. Of the benchmark's distinct texts (first occurrences, canonical order), item ``i`` goes to group ``i mod G``
(interleaved, so every group is a matched sample of the same benchmark and keeps the canonical relative order), ``n``
items per group. Groups: one per duplication count ``d`` (``dup<d>``), then ``clean`` (never trained: the matched
non-members) and ``cohort`` (never trained: known non-members for the audit's cohort test). With ``group_by`` (a
benchmark column, e.g. the pair id the two questions of a paraphrase pair share) the interleave deals out whole
sets of items sharing a value instead of single items (:func:`make_groups`): a member and a clean item never share
one, and the power's bootstrap resamples those sets.

Training documents. A group's items are cut, in canonical order, into documents of ``doc_items`` items (default 1:
each item its own sequence, exactly as the detectors score it; with more, the separator is the exchangeability
test's, so the memorised order is the order the test checks); a document of group ``dup<d>`` appears ``d``
times, spread over ``max(d)`` epochs, shuffled within each epoch: one pass over the duplicated corpus, no further
epochs. Fine-tuning is causal-LM loss with AdamW at a constant learning rate (default per method,
:data:`DEFAULT_LR`), micro-batched under ``micro_batch_tokens`` with gradients accumulated, checkpointed for
resumption, one of:

- ``full`` (default): every weight trains (lr 3e-5);
- ``lora``: LoRA adapters (peft) on every attention and MLP projection, merged into the weights after training
  (lr 1e-3);
- ``last-layers``: only the last ``last_layers`` decoder layers and the final norm train (lr 1e-3).

Why these defaults (docs/benchmarks.md §4, "Power on a paraphrase corpus"): items packed 8 to a document are
learnt after other items, but scored alone; one item per document gives the per-item detectors (Min-K%++ above
all, whose lowest tokens are often an item's first ones) the signal the fine-tune put there.

The checkpoint (``save_pretrained``) and ``plant.json`` (config with the resolved lr, groups, ids, losses) go to
``out``; each group is also written as ``groups/<name>.jsonl`` (``id``, ``text``, and ``group``: the item's unit —
its ``group_by`` value or the benchmark's known structure), a benchmark the audit reads as ``jsonl:<path>``.
"""

from __future__ import annotations

import json
import logging
import signal
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from pydantic import BaseModel, Field, model_validator

from fmgauge.contamination.benchmarks import TextBenchmark, load_benchmark, units_of
from fmgauge.contamination.scoring import _progress
from fmgauge.core.cache import stable_hash
from fmgauge.core.files import read_back
from fmgauge.core.models import DeviceName
from fmgauge.core.validation import FmgaugeError

log = logging.getLogger(__name__)

Method = Literal["lora", "last-layers", "full"]
LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
#: AdamW learning rate of each method when ``lr`` is unset (full: 3e-5, one pass, as in issue 13's measurement).
#: Measured on smollm2-135m (docs/benchmarks.md §4): on SLAKE-en with packed documents the two give loss AUROCs
#: within each other's CIs; the paraphrase-corpus runs with one item per document use full at 3e-5.
DEFAULT_LR: dict[str, float] = {"lora": 1e-3, "last-layers": 1e-3, "full": 3e-5}


class PlantConfig(BaseModel):
    """What to plant, how often, and how to fine-tune."""

    model: str = Field("smollm2-135m", description="Causal LM to contaminate (name, directory or hub id).")
    benchmark: str = Field("slake-en", description="Benchmark name or <layout>:<path>.")
    split: str = Field("test", description="Benchmark split the groups are drawn from.")
    items_per_group: int = Field(64, ge=4, description="Items in each group (dup groups, clean, cohort).")
    duplications: list[int] = Field([1, 4, 16], description="Times each planted group is seen in training.")
    doc_items: int = Field(1, ge=1, description="Items concatenated (canonical order) per training document; 1 = "
                           "each item its own sequence, as the detectors score it (docs/benchmarks.md §4: packing "
                           "items weakens the per-item signal).")
    separator: str = Field("\n", description="Between items in a document (= the exchangeability separator).")
    method: Method = Field("full", description="full | lora | last-layers.")
    lora_r: int = Field(16, ge=1, description="LoRA rank.")
    lora_alpha: float = Field(32.0, description="LoRA scaling numerator (scale = alpha / r).")
    last_layers: int = Field(2, ge=1, description="Decoder layers trained by method last-layers.")
    lr: float | None = Field(None, gt=0, description="AdamW learning rate (constant); unset = the method's "
                             "default (DEFAULT_LR: lora and last-layers 1e-3, full 3e-5). Recorded resolved.")
    batch_size: int = Field(4, ge=1, description="Documents per optimiser step.")
    micro_batch_tokens: int = Field(512, ge=1, description="Padded tokens per forward/backward: a step's documents "
                                    "go through in chunks this large, gradients accumulated (weighted by tokens, so "
                                    "the step equals one full-batch step); bounds memory, not the result.")
    seed: int = Field(0, description="Seed of the document order and of LoRA init.")
    group_by: str | None = Field(None, description="Benchmark column whose equal values must stay in one group "
                                 "(e.g. a pair id); unset = every item is its own unit.")
    device: DeviceName = Field("auto", description="auto|cpu|cuda|mps.")
    dtype: str = Field("float32", description="Weights dtype for training (float32 on CPU).")

    @model_validator(mode="after")
    def _resolve_lr(self) -> PlantConfig:
        if self.lr is None:
            self.lr = DEFAULT_LR[self.method]
        return self


def unique_texts(bench: TextBenchmark) -> TextBenchmark:
    """The first occurrence of each distinct text, in canonical order (SLAKE repeats many question/answer pairs
    across images; a repeat in the clean group would be a planted item in disguise)."""
    seen: set[str] = set()
    keep = [i for i, t in enumerate(bench.texts) if not (t in seen or seen.add(t))]
    return bench.subset(keep)


def make_groups(n_total: int, cfg: PlantConfig, keys: Sequence[str] | None = None) -> dict[str, list[int]]:
    """Groups of benchmark indices (each sorted, canonical order): ``dup<d>`` for each d, ``clean``, ``cohort``.

    Units are the items (``keys`` None) or the sets of items sharing a key (``keys`` (n_total,) str, e.g. a pair
    id), taken in order of first appearance; each unit goes whole to the least-filled group that still has fewer
    than ``items_per_group`` items (ties: the first such group), until every group is full. With one item per unit
    this is the interleave item ``i`` -> group ``i mod G``; with keys a group holds at least ``items_per_group``
    items and at most ``items_per_group + (largest unit − 1)``, and no key is ever split across groups.
    """
    if any(d < 1 for d in cfg.duplications) or len(set(cfg.duplications)) != len(cfg.duplications):
        raise FmgaugeError(f"duplications must be distinct positive integers, got {cfg.duplications}.")
    names = [f"dup{d}" for d in cfg.duplications] + ["clean", "cohort"]
    n = cfg.items_per_group
    need = len(names) * n
    if n_total < need:
        raise FmgaugeError(f"the benchmark has {n_total} items; {len(names)} groups of {n} need "
                           f"{need}. Lower items_per_group or use a larger split.")
    if keys is not None and len(keys) != n_total:
        raise FmgaugeError(f"keys has {len(keys)} entries for {n_total} items.")
    units: dict[str, list[int]] = {}
    for i in range(n_total):
        units.setdefault(str(i) if keys is None else keys[i], []).append(i)
    groups: list[list[int]] = [[] for _ in names]
    for members in units.values():
        open_ = [g for g in range(len(names)) if len(groups[g]) < n]
        if not open_:
            break
        groups[min(open_, key=lambda g: len(groups[g]))].extend(members)
    if any(len(g) < n for g in groups):
        used = sum(map(len, groups))
        raise FmgaugeError(f"group_by {cfg.group_by!r}: the benchmark's {n_total} items form {len(units)} groups of "
                           f"that column; kept whole, they fill {sum(len(g) >= n for g in groups)} of {len(names)} "
                           f"groups of {n} items ({used} items placed). Lower items_per_group or use a larger split.")
    return {name: sorted(g) for name, g in zip(names, groups, strict=True)}


def training_documents(bench: TextBenchmark, groups: dict[str, list[int]], cfg: PlantConfig) -> list[list[str]]:
    """Per epoch, the documents (str) to train on: doc of group dup<d> appears in epochs 0..d−1, shuffled."""
    rng = np.random.default_rng(cfg.seed)
    docs: dict[int, list[str]] = {}
    for d in cfg.duplications:
        idx = groups[f"dup{d}"]
        docs[d] = [cfg.separator.join(bench.texts[i] for i in idx[a: a + cfg.doc_items]) + cfg.separator
                   for a in range(0, len(idx), cfg.doc_items)]
    epochs = []
    for e in range(max(cfg.duplications)):
        ep = [doc for d, ds in docs.items() if d > e for doc in ds]
        epochs.append([ep[j] for j in rng.permutation(len(ep))])
    return epochs


def _trainable(model: Any, cfg: PlantConfig) -> Any:
    if cfg.method == "full":
        for p in model.parameters():
            p.requires_grad_(True)
        return model
    if cfg.method == "last-layers":
        for p in model.parameters():
            p.requires_grad_(False)
        layers = model.get_decoder().layers
        for layer in list(layers)[-cfg.last_layers:]:
            for p in layer.parameters():
                p.requires_grad_(True)
        norm = getattr(model.get_decoder(), "norm", None)
        for p in (norm.parameters() if norm is not None else []):
            p.requires_grad_(True)
        return model
    from peft import LoraConfig, get_peft_model

    names = {n.rsplit(".", 1)[-1] for n, _ in model.named_modules()}
    targets = [t for t in LORA_TARGETS if t in names]
    if not targets:
        raise FmgaugeError(f"LoRA found none of {LORA_TARGETS} in the model; use method last-layers or full.")
    torch.manual_seed(cfg.seed)
    return get_peft_model(model, LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=0.0,
                                            target_modules=targets, task_type="CAUSAL_LM"))


def finetune(model: Any, tokenizer: Any, epochs: list[list[str]], cfg: PlantConfig, *,
             progress: bool = True, resume_dir: str | Path | None = None,
             checkpoint_seconds: float = 600.0) -> tuple[Any, list[float]]:
    """Fine-tune ``model`` on ``epochs`` (lists of documents) with ``cfg.method``; returns (model, step losses).

    The returned model is a plain transformers model (LoRA merged) in eval mode. ``resume_dir``: every
    ``checkpoint_seconds`` (and on Ctrl-C, SIGTERM or an error) the weights, the optimiser state, the step reached and the
    losses so far are written there (atomically); a later call with the same documents and config continues from
    the last checkpoint — the document order is fixed by ``cfg.seed``, so the resumed run is the same run — and the
    checkpoint is removed when training completes.
    """
    model = _trainable(model, cfg)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=0.0)
    dev = next(model.parameters()).device
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    losses: list[float] = []
    batches = [ep[a: a + cfg.batch_size] for ep in epochs for a in range(0, len(ep), cfg.batch_size)]
    ckpt = None if resume_dir is None else Path(resume_dir) / "resume.pt"
    key = stable_hash({"docs": batches, "config": cfg.model_dump(exclude={"device", "micro_batch_tokens"})})
    start = 0
    if ckpt is not None and ckpt.is_file():
        state = torch.load(ckpt, map_location=dev, weights_only=False)
        if state.get("key") == key:
            model.load_state_dict(state["model"])
            opt.load_state_dict(state["optimizer"])
            start, losses = int(state["step"]), list(state["losses"])
            log.info("fine-tuning resumes at step %d of %d from %s", start, len(batches), ckpt)
        else:
            log.warning("%s holds a checkpoint of another plant (documents or config differ); starting afresh", ckpt)

    def save(step: int) -> None:
        if ckpt is None or step <= start:
            return
        ckpt.parent.mkdir(parents=True, exist_ok=True)
        tmp = ckpt.with_suffix(".tmp")
        torch.save({"key": key, "step": step, "losses": losses, "model": model.state_dict(),
                    "optimizer": opt.state_dict()}, tmp)
        tmp.replace(ckpt)

    model.train()
    last = time.monotonic()
    step = start
    what = f"fine-tuning ({cfg.method})" + (f", resumed after step {start} of {len(batches)}" if start else "")
    with _progress(progress, what, len(batches) - start) as advance, _term_interrupts(ckpt is not None):
        try:
            for step in range(start, len(batches)):
                rows = tokenizer(batches[step], add_special_tokens=False)["input_ids"]
                n_targets = sum(max(0, len(r) - 1) for r in rows)  # the step's loss is the mean over these
                opt.zero_grad(set_to_none=True)
                total = 0.0
                for chunk in _micro_batches(rows, cfg.micro_batch_tokens):
                    ids, mask = _right_padded(chunk, pad)
                    ids, mask = ids.to(dev), mask.to(dev)
                    labels = ids.masked_fill(mask == 0, -100)
                    out = model(input_ids=ids, attention_mask=mask, labels=labels)
                    share = sum(max(0, len(r) - 1) for r in chunk) / max(1, n_targets)
                    (out.loss * share).backward()
                    total += out.loss.detach().item() * share
                opt.step()
                losses.append(total)
                advance(1, loss=float(np.mean(losses[-20:])))
                if ckpt is not None and time.monotonic() - last >= checkpoint_seconds:
                    save(step + 1)
                    last = time.monotonic()
        except BaseException:
            save(len(losses))  # Ctrl-C or an error: keep what was trained (steps completed so far)
            raise
    if ckpt is not None and ckpt.is_file():
        ckpt.unlink()
    if cfg.method == "lora":
        model = model.merge_and_unload()
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model, losses


@contextmanager
def _term_interrupts(enabled: bool) -> Iterator[None]:
    """While fine-tuning with a checkpoint: SIGTERM (``kill``; background jobs ignore SIGINT) raises
    KeyboardInterrupt, so the steps done are saved before the process ends. Main thread only."""
    if not enabled or threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    old = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


def _micro_batches(rows: list[list[int]], budget: int) -> list[list[list[int]]]:
    """Consecutive chunks of ``rows`` whose padded size (rows × longest) stays within ``budget`` tokens (a row
    longer than the budget goes alone)."""
    out: list[list[list[int]]] = []
    for r in rows:
        if out and (len(out[-1]) + 1) * max(len(r), *map(len, out[-1])) <= budget:
            out[-1].append(r)
        else:
            out.append([r])
    return out


def _right_padded(rows: list[list[int]], pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, L) ids and attention mask, right padding."""
    L = max(map(len, rows))
    ids = torch.full((len(rows), L), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), L), dtype=torch.long)
    for b, r in enumerate(rows):
        ids[b, : len(r)] = torch.tensor(r)
        mask[b, : len(r)] = 1
    return ids, mask


def plant(cfg: PlantConfig, out: str | Path, *, progress: bool = True) -> Path:
    """Fine-tune ``cfg.model`` on the planted groups of ``cfg.benchmark`` and save it with its manifest to ``out``.

    Returns ``out``; ``out/plant.json`` lists the groups (indices, ids, duplication), method, losses and time.
    """
    from fmgauge.core.text_models import load_text_model

    out = Path(out)
    bench = unique_texts(load_benchmark(cfg.benchmark, cfg.split))
    keys = None if cfg.group_by is None else bench.column(cfg.group_by, option="group_by")
    groups = make_groups(len(bench), cfg, keys)
    unit_col, unit_keys = units_of(bench, cfg.group_by, option="group_by")  # what the group files' `group` holds
    built = 0 if unit_keys is None else built_adjacency(unit_keys, groups)
    if built:
        log.warning("%d units of %r have their items next to each other in the group files but not in the "
                    "benchmark's canonical order: the grouping built that adjacency, which any LM finds "
                    "predictable; the exchangeability test on these files permutes whole units (their `group` "
                    "column), never single items.", built, unit_col)
    epochs = training_documents(bench, groups, cfg)
    tm = load_text_model(cfg.model, device=cfg.device, dtype=cfg.dtype)
    t0 = time.perf_counter()
    model, losses = finetune(tm.model, tm.tokenizer, epochs, cfg, progress=progress, resume_dir=out / ".resume")
    seconds = time.perf_counter() - t0
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tm.tokenizer.save_pretrained(out)
    (out / "groups").mkdir(exist_ok=True)
    manifest_groups = {}
    for g, idx in groups.items():
        dup = int(g[3:]) if g.startswith("dup") else 0
        rows = [{"id": bench.ids[i], "text": bench.texts[i]} | ({} if unit_keys is None else {"group": unit_keys[i]})
                for i in idx]
        (out / "groups" / f"{g}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        manifest_groups[g] = {"duplication": dup, "indices": idx, "ids": [bench.ids[i] for i in idx],
                              "n_items": len(idx),
                              "benchmark": f"jsonl:{(out / 'groups' / f'{g}.jsonl').resolve()}"}
        if unit_keys is not None:
            manifest_groups[g]["keys"] = list(dict.fromkeys(unit_keys[i] for i in idx))
    manifest = {"config": cfg.model_dump(), "base_model": tm.source, "groups": manifest_groups,
                "units_column": unit_col, "adjacency_built_by_grouping": built,
                "steps": len(losses), "losses": losses, "seconds": seconds,
                "documents": sum(map(len, epochs)), "threads": torch.get_num_threads()}
    (out / "plant.json").write_text(json.dumps(manifest, indent=1))
    log.info("planted %s into %s (%s, %d steps, %.0f s)", cfg.benchmark, out, cfg.method, len(losses), seconds)
    return out


def built_adjacency(keys: Sequence[str], groups: dict[str, list[int]]) -> int:
    """Units (of 2+ items) whose items are consecutive in their group's file but not in the benchmark's order."""
    by_unit: dict[str, list[int]] = {}
    for i, k in enumerate(keys):
        by_unit.setdefault(k, []).append(i)
    pos = {i: (g, j) for g, idx in groups.items() for j, i in enumerate(idx)}
    n = 0
    for items in by_unit.values():
        if len(items) < 2 or not all(i in pos for i in items):
            continue
        in_bench = items[-1] - items[0] + 1 == len(items)
        where = sorted(pos[i] for i in items)
        in_group = len({g for g, _ in where}) == 1 and where[-1][1] - where[0][1] + 1 == len(items)
        n += in_group and not in_bench
    return n


def read_manifest(path: str | Path) -> dict:
    p = Path(path) / "plant.json"
    if not p.is_file():
        raise FmgaugeError(f"{path} is not a plant output directory: it has no plant.json.")
    return read_back(p, lambda f: json.loads(f.read_text()), what="plant manifest",
                     fix=f"rerun `fmgauge contamination plant ... --out {path}` to rebuild the planted checkpoint.")


def plant_power(out: str | Path, *, k: float = 0.2, q: float = 0.95, exchangeability_permutations: int = 20,
                items_per_shard: int = 4, roles: Sequence[str] = ("planted", "base"), device: str = "auto",
                n_boot: int = 1000, progress: bool = True) -> dict:
    """Power of each detector on a :func:`plant` output: planted model vs its base model, every group.

    Per model and group: AUROC (95% bootstrap CI, resampling the group files' units when they have them) of each
    per-item detector, group (members) vs ``clean`` (matched non-members), the tail enrichment against the
    ``clean`` group with its permutation p-value (:func:`~fmgauge.contamination.cohort.tail_enrichment`, units
    relabelled whole), and the exchangeability test of the group (shards of ``items_per_shard`` items or units,
    whole units permuted; ``exchangeability_permutations=0`` skips it). Rows of ``clean`` vs ``cohort`` give the
    false-positive side. With both ``roles``, rows ``model = "planted − base"`` give each detector's AUROC and
    enrichment for the planted model minus the same for the base model on the same items, with the paired
    bootstrap interval of :mod:`~fmgauge.contamination.power` (the group draw's own deviation cancels). ``roles``:
    which models to measure. Written to ``out/power.json`` and returned.
    """
    from fmgauge.contamination.cohort import tail_enrichment
    from fmgauge.contamination.exchangeability import ExchangeabilityConfig, exchangeability_test
    from fmgauge.contamination.mink import detectors, item_scores, member_scores
    from fmgauge.contamination.power import paired_effects
    from fmgauge.contamination.scoring import token_stats
    from fmgauge.core.stats import auc_ci
    from fmgauge.core.text_models import load_text_model

    unknown = set(roles) - {"planted", "base"}
    if unknown or not roles:
        raise FmgaugeError(f"roles must be a non-empty subset of ['planted', 'base'], got {list(roles)}.")
    out = Path(out)
    man = read_manifest(out)
    groups = {g: load_benchmark(v["benchmark"], "all") for g, v in man["groups"].items()}
    dets = detectors(k)
    # units: the group files' `group` column (prefixed by the group: a value never spans groups anyway)
    units = {g: (None if b.unit_column is None else [f"{g}/{v}" for v in b.column(b.unit_column)])
             for g, b in groups.items()}
    rows, member = [], {}
    for role, name in (("planted", str(out)), ("base", man["base_model"])):
        if role not in roles:
            continue
        tm = load_text_model(name, device=device)
        scores = {g: item_scores(token_stats(tm, b.texts, progress=progress), b.texts, b.ids, ks=(k, 1.0))
                  for g, b in groups.items()}
        for g, b in groups.items():
            ref = "cohort" if g == "clean" else "clean"
            if g == "cohort":
                continue
            base = {"model": role, "group": g, "duplication": man["groups"][g]["duplication"], "vs": ref}
            for dname, det in dets.items():
                a, c = member_scores(scores[g], det), member_scores(scores[ref], det)
                member[(role, g, dname)] = (a, c)
                est = auc_ci(np.r_[np.ones(len(a)), np.zeros(len(c))].astype(int), np.r_[a, c], n_boot=500,
                             clusters=None if units[g] is None else np.r_[units[g], units[ref]])
                enr = tail_enrichment(a, c, q=q, benchmark_units=units[g], cohort_units=units[ref]) \
                    if len(c) >= int(np.ceil(1 / (1 - q))) else None
                rows.append(base | {"detector": dname, "auroc": est.value, "lo": est.lo, "hi": est.hi,
                                    "enrichment": enr.enrichment if enr else None,
                                    "enrichment_p": enr.p if enr else None})
            if exchangeability_permutations > 0:
                blocks = len(set(units[g])) if units[g] is not None else len(b)
                n_shards = max(2, min(blocks // 2, len(b) // items_per_shard))
                ex = exchangeability_test(tm, b.texts, ExchangeabilityConfig(
                    shards=n_shards, permutations=exchangeability_permutations, context=2048, stride=1024,
                    max_examples=len(b), separator=man["config"]["separator"]), units=units[g],
                    unit_name=None if units[g] is None else "group", progress=progress)
                rows.append(base | {"detector": "exchangeability", "auroc": None, "lo": None, "hi": None,
                                    "enrichment_p": None, "t": ex.t, "p": ex.p, "p_t": ex.p_t,
                                    "shards": n_shards, "permuted": ex.units})
        del tm
    if set(roles) == {"planted", "base"}:
        for g in groups:
            if g == "cohort":
                continue
            ref = "cohort" if g == "clean" else "clean"
            for dname in dets:
                (ap, cp), (ab, cb) = member[("planted", g, dname)], member[("base", g, dname)]
                eff = paired_effects({"planted": ap, "base": ab}, {"planted": cp, "base": cb},
                                     member_units=units[g], clean_units=units[ref], q=q, n_boot=n_boot)
                rows.append({"model": "planted − base", "group": g, "duplication": man["groups"][g]["duplication"],
                             "vs": ref, "detector": dname, "auroc": eff["delta_auroc"], "lo": eff["delta_auroc_lo"],
                             "hi": eff["delta_auroc_hi"], "enrichment": eff["delta_enrichment"],
                             "enrichment_lo": eff["delta_enrichment_lo"], "enrichment_hi": eff["delta_enrichment_hi"],
                             "enrichment_p": None})
    summary = {"plant": {k2: v for k2, v in man.items() if k2 != "losses"}, "k": k, "q": q, "roles": list(roles),
               "exchangeability_permutations": exchangeability_permutations, "n_boot": n_boot, "table": rows}
    (out / "power.json").write_text(json.dumps(summary, indent=1, default=float))
    return summary
