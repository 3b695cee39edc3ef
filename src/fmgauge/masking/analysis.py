"""Analysis of a comparison: per-strategy mean +- CI, paired differences across seeds, a verdict, curves, tokens.

Input: the trial rows of :func:`fmgauge.masking.experiment.run_trial` (``kind`` = metrics | mlm_curve | ft_curve |
tokens). Pairs compare strategy B against strategy A on the *same seeds* (A listed first in the config): the per-seed
difference B - A gets a paired bootstrap CI and p-value (:func:`fmgauge.core.stats.paired_bootstrap`) and a paired
t-test (scipy ``ttest_rel``). A difference is called significant only when the bootstrap CI excludes 0 *and* the
t-test p < alpha; otherwise the verdict says so plainly ("no significant difference" is a result).
"""

from __future__ import annotations

import itertools
import logging
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats as sps

from fmgauge.core.stats import mean_ci, paired_bootstrap, sign_flip_test

log = logging.getLogger(__name__)
METRICS = ("f1", "acc")
ALPHA = 0.05


def metric_columns(df: pd.DataFrame) -> list[str]:
    return [c for c in df.columns if any(c.endswith(f"_{m}") for m in METRICS) and not c.startswith("dev_f1_")]


def per_strategy(metrics: pd.DataFrame, strategies: list[str]) -> list[dict[str, Any]]:
    rows = []
    for s in strategies:
        g = metrics[metrics.strategy == s]
        if g.empty:
            continue
        row: dict[str, Any] = {"strategy": s, "seeds": int(len(g))}
        for c in metric_columns(metrics):
            row[c] = mean_ci(g[c].to_numpy()).to_dict()
        row["mlm_rate"] = float(g["mlm_rate"].mean())
        row["mlm_seconds"] = float(g["mlm_seconds"].mean())
        row["ft_seconds"] = float(g["ft_seconds"].mean())
        rows.append(row)
    return rows


def paired(metrics: pd.DataFrame, a: str, b: str, column: str, *, n_boot: int = 10000) -> dict[str, Any] | None:
    """Difference b - a of ``column`` over the seeds both strategies finished."""
    pa = metrics[metrics.strategy == a].set_index("seed")[column]
    pb = metrics[metrics.strategy == b].set_index("seed")[column]
    seeds = sorted(set(pa.index) & set(pb.index))
    if len(seeds) < 2:
        return None
    xa, xb = pa.loc[seeds].to_numpy(float), pb.loc[seeds].to_numpy(float)
    boot = paired_bootstrap(xb, xa, n_boot=n_boot, seed=0)
    d = xb - xa
    t_p = float(sps.ttest_rel(xb, xa).pvalue) if np.std(d) > 0 else (1.0 if d.mean() == 0 else 0.0)
    flip = sign_flip_test(xb, xa)
    # the exact sign-flip test decides (a bootstrap over 2-5 pairs is overconfident); the CI must agree
    sig = (boot.mean_diff.lo > 0 or boot.mean_diff.hi < 0) and flip.p_value < ALPHA and t_p < ALPHA
    return {"a": a, "b": b, "metric": column, "seeds": seeds, "diffs": d.tolist(),
            "mean_diff": boot.mean_diff.to_dict(), "bootstrap_p": boot.p_value, "ttest_p": t_p,
            "sign_flip_p": flip.p_value, "min_p": flip.min_p, "mde": flip.mde,
            "significant": bool(sig), "wins": int((d > 0).sum()), "losses": int((d < 0).sum())}


def verdict(pairs: list[dict[str, Any]], primary: str) -> str:
    """Plain-words verdict on the primary metric for every pair involving the most recent strategy."""
    out = []
    for p in pairs:
        if p["metric"] != primary:
            continue
        md = p["mean_diff"]
        span = f"{md['value']:+.4f} [{md['lo']:+.4f}, {md['hi']:+.4f}]"
        n = len(p["seeds"])
        if p["significant"]:
            better = p["b"] if md["value"] > 0 else p["a"]
            worse = p["a"] if better == p["b"] else p["b"]
            out.append(f"{better} beats {worse} on {primary}: {p['b']} - {p['a']} = {span} over {n} paired seeds "
                       f"(paired t-test p = {p['ttest_p']:.3g}, bootstrap p = {p['bootstrap_p']:.3g}).")
        else:
            out.append(f"No significant difference between {p['b']} and {p['a']} on {primary}: {p['b']} - "
                       f"{p['a']} = {span} over {n} paired seeds (paired t-test p = {p['ttest_p']:.3g}, "
                       f"bootstrap p = {p['bootstrap_p']:.3g}; {p['wins']} wins / {p['losses']} losses).")
        if "min_p" in p and p["min_p"] >= ALPHA:
            need = int(np.floor(np.log2(2 / ALPHA))) + 1  # the fewest pairs whose 2 / 2**n < ALPHA
            out.append(f"With {n} paired seeds no test can reach p < {ALPHA:g}: the smallest exact sign-flip p is "
                       f"{p['min_p']:.3g}; run at least {need} seeds.")
        elif "mde" in p:
            out.append(f"These {n} seeds could detect a difference of about {p['mde']:.4f} (80% power).")
    return " ".join(out)


def curves(df: pd.DataFrame) -> dict[str, list[dict[str, Any]]]:
    """Seed-mean learning curves: MLM loss, fine-tuning loss and dev F1 by step, per strategy."""
    out: dict[str, list[dict[str, Any]]] = {}
    for kind, col, name in (("mlm_curve", "loss", "mlm_loss"), ("ft_curve", "loss", "ft_loss"),
                            ("ft_curve", "dev_f1", "dev_f1"), ("probe_curve", "dev_f1", "probe_dev_f1")):
        if col not in df:
            continue
        g = df[(df.kind == kind) & df[col].notna()]
        rows = []
        for (s, step), h in g.groupby(["strategy", "step"]):
            ci = mean_ci(h[col].to_numpy(float))
            rows.append({"strategy": s, "step": int(step), "value": ci.value, "lo": ci.lo, "hi": ci.hi,
                         "seeds": int(len(h))})
        out[name] = rows
    return out


def token_stats(df: pd.DataFrame, strategies: list[str], *, min_seen: int = 30, top: int = 25,
                decode: Any = None) -> dict[str, Any]:
    """Which token types each strategy masked most, from the masked/seen counts of the MLM stage (summed over seeds).

    Ranks token types (seen >= ``min_seen`` times) by Typhoon's realised masking rate when Typhoon ran (else the
    last strategy), and lists every strategy's realised rate for the same types, so the table reads "Typhoon vs
    random". ``decode(list[int]) -> list[str]`` names the types.
    """
    if "ids" not in df:
        return {}
    toks = df[df.kind == "tokens"]
    rates: dict[str, pd.Series] = {}
    seen_all: dict[str, pd.Series] = {}
    for s in strategies:
        g = toks[toks.strategy == s]
        if g.empty:
            continue
        masked, seen = pd.Series(dtype=float), pd.Series(dtype=float)
        for _, r in g.iterrows():
            masked = masked.add(pd.Series(r["masked"], index=r["ids"], dtype=float), fill_value=0)
            seen = seen.add(pd.Series(r["seen"], index=r["ids"], dtype=float), fill_value=0)
        rates[s] = masked / seen
        seen_all[s] = seen
    if not rates:
        return {}
    ref = "typhoon" if "typhoon" in rates else list(rates)[-1]
    eligible = seen_all[ref][seen_all[ref] >= min_seen].index
    final = None  # Typhoon's own end-of-stage rates (mean over seeds): no sampling noise, so rank by them
    g = toks[toks.strategy == ref]
    if "rate" in g and g["rate"].notna().all():
        parts = [pd.Series(r["rate"], index=r["ids"], dtype=float) for _, r in g.iterrows()]
        final = pd.concat(parts, axis=1).mean(axis=1)
    r = (final if final is not None else rates[ref]).loc[eligible].sort_values(ascending=False)
    most, least = r.index[:top].tolist(), r.index[-top:][::-1].tolist()

    def table(ids: list[int]) -> list[dict[str, Any]]:
        names = decode(ids) if decode else [str(i) for i in ids]
        return [{"token": n, "id": int(i), "seen": int(seen_all[ref][i]),
                 **({f"final_rate_{ref}": float(final[i])} if final is not None else {}),
                 **{f"rate_{s}": float(rates[s].get(i, np.nan)) for s in rates}} for n, i in zip(names, ids, strict=True)]

    spread = {s: {"p10": float(np.nanquantile(rates[s].loc[rates[s].index.intersection(eligible)], 0.1)),
                  "p90": float(np.nanquantile(rates[s].loc[rates[s].index.intersection(eligible)], 0.9))}
              for s in rates}
    return {"reference": ref, "min_seen": min_seen, "ranked_by": "final rate" if final is not None else "realised rate",
            "most": table(most), "least": table(least),
            "rate_quantiles": spread}


def classification_metrics(y: np.ndarray, pred: np.ndarray, n_labels: int) -> dict[str, float]:
    """Accuracy and F1 (positive class 1 when binary, macro otherwise)."""
    from sklearn.metrics import accuracy_score, f1_score

    avg = "binary" if n_labels == 2 else "macro"
    return {"acc": float(accuracy_score(y, pred)), "f1": float(f1_score(y, pred, average=avg, zero_division=0))}


def majority_baseline(task: Any, splits: list[str]) -> dict[str, dict[str, float]]:
    """F1/accuracy of always predicting the training majority class (what 'learned nothing' scores)."""
    maj = int(np.bincount(task.split("train").y).argmax())
    out = {}
    for s in splits:
        if s in task.splits:
            y = task.split(s).y
            out[s] = classification_metrics(y, np.full_like(y, maj), task.n_labels)
    return out


def analyse(cfg: Any, df: pd.DataFrame) -> dict[str, Any]:
    """Summary dict of a comparison (JSON-serialisable): strategies, pairs, verdict, curves, tokens, baselines."""
    metrics = df[df.kind == "metrics"] if "kind" in df else df.iloc[0:0]
    strategies = [s for s in cfg.strategies if s in set(metrics.get("strategy", []))]
    cols = metric_columns(metrics)
    pairs = [p for a, b in itertools.combinations(strategies, 2) for c in cols
             if (p := paired(metrics, a, b, c, n_boot=cfg.n_boot)) is not None]
    if strategies:  # pairs with the last-listed strategy (the candidate, e.g. typhoon) first
        pairs.sort(key=lambda p: p["b"] != strategies[-1])
    primary = "dev_f1" if "dev_f1" in cols else (cols[0] if cols else "")
    try:
        task = cfg.load_task()
        baseline = majority_baseline(task, cfg.eval_splits)
        sizes = {s: len(sp) for s, sp in task.splits.items()}
        notes = list(task.notes)
    except Exception as e:  # noqa: BLE001 - the report still renders from stored results
        log.warning("task %s not available for the baseline: %s", cfg.task, e)
        baseline, sizes, notes = {}, {}, []
    per = per_strategy(metrics, strategies)
    at_baseline = [r["strategy"] for r in per if primary in r and primary.split("_")[0] in baseline
                   and abs(r[primary]["value"] - baseline[primary.split("_")[0]]["f1" if primary.endswith("f1")
                                                                                 else "acc"]) < 0.005]
    initialised = sorted({x for v in metrics.get("initialised", []) for x in str(v).split(", ") if x})
    return {
        "task": cfg.task, "model": cfg.model, "task_sizes": sizes, "task_notes": notes,
        "strategies": per, "pairs": pairs, "primary": primary, "at_majority_baseline": at_baseline,
        "verdict": (verdict(pairs, primary) if pairs else "Fewer than 2 paired seeds finished: no comparison yet.")
        + (f" Caution: {', '.join(at_baseline)} score(s) within 0.005 of the majority-class baseline on {primary}, "
           "i.e. fine-tuning barely learned the task; a null result then says little about masking."
           if at_baseline else ""),
        "curves": curves(df), "tokens": token_stats(df, strategies, decode=_decoder(cfg.model)),
        "majority_baseline": baseline, "initialised": initialised,
        "trials_done": int(len(metrics)), "trials_planned": len(cfg.strategies) * len(cfg.seed_list()),
    }


def _decoder(model: str):
    try:
        from transformers import AutoTokenizer

        from fmgauge.core.text_models import resolve_text_model

        source, local = resolve_text_model(model)
        tok = AutoTokenizer.from_pretrained(source, local_files_only=local)
        return tok.convert_ids_to_tokens
    except Exception as e:  # noqa: BLE001 - token ids are shown instead of strings
        log.warning("could not load the tokenizer of %s to name token types: %s", model, e)
        return None
