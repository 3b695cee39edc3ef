"""What a decision says: each rule's verdict and the numbers behind it, and the whole decision in plain words.

A rule ends in ``use-weak-labels``, ``gold-only`` or ``uncertain``; an uncertain verdict also carries the side its
point estimate leans to and acts as the decision's **fallback** (``lean``: that side; ``weak``: the weak labels;
``labeler``: the weak labels iff the labeler ranks the gold items acceptably; ``auto``: the lean once the gold set
holds ``LEAN_FROM`` items of its rarer class, else the weak labels iff they agree with a gold-trained model across the
pool above ``AGREE_BAR`` or the labeler ranks the gold items ``AUTO_MARGIN`` better than the gold-only estimate).
The paired rules commit only from ``COMMIT_FROM`` items of the rarer class.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from fmgauge.core.stats import Estimate
from fmgauge.weaklabels.confusion import LabelerSummary

Verdict = Literal["use-weak-labels", "gold-only", "uncertain"]
Lean = Literal["use-weak-labels", "gold-only"]
Fallback = Literal["lean", "weak", "labeler", "auto"]
FALLBACKS = ("auto", "labeler", "weak", "lean")
RULES = ("accuracy", "auc", "cv-delta", "delta-worth", "weak-student", "projection")
POOL_RULES = ("cv-delta", "delta-worth", "weak-student", "projection")
ACCEPTABLE_AUC = 0.7  # the labeler fallback keeps the weak labels of a labeler ranking the gold items this well
AGREE_BAR = 0.52  # the auto fallback below LEAN_FROM: the weak labels agree with a gold-trained model across the pool
AUTO_MARGIN = 0.1  # ... or the labeler ranks the gold items this much better than the gold-only estimate
COMMIT_FROM = 3  # the paired rules commit only from this many gold items of the rarer class (rules.paired_verdict)
LEAN_FROM = 20  # the auto fallback follows the paired estimate's lean from this many gold items of the rarer class
MAX_MORE = 100_000  # "more labels" beyond this is reported as "more than" (the two estimates are ~equal)
RULE_TEXT = {
    "accuracy": "gold-only AUC vs labeler accuracy on the pool (the paper's rule)",
    "auc": "gold-only AUC vs labeler AUC (like-for-like)",
    "cv-delta": "cross-validated ΔAUC = AUC(gold+weak) − AUC(gold) on the gold set",
    "delta-worth": "cv-delta, unless the labeler's confusion shows its labels are worth nothing (the interval of "
                   "Youden's J = 1 − ρ0 − ρ1 at or below 0, i.e. balanced accuracy ≤ 0.5 on a binary task)",
    "weak-student": "weak-trained student's AUC on the gold set vs gold-only AUC",
    "projection": "the gold-only learning curve's crossover n* with the weak-trained AUC, against m",
}


def fallback_choice(fallback: Fallback, lean: Lean, ranks: bool, min_class: int) -> Lean:
    """What an uncertain verdict acts as under ``fallback``: its ``lean`` (``lean``, or ``auto`` from ``LEAN_FROM``
    gold items of the rarer class on), the weak labels (``weak``), else the weak labels iff the labeler cleared the
    fallback's bar on the gold items (``ranks``, :func:`fmgauge.weaklabels.rules.labeler_ranks`)."""
    if fallback == "lean" or (fallback == "auto" and min_class >= LEAN_FROM):
        return lean
    return "use-weak-labels" if fallback == "weak" or ranks else "gold-only"


@dataclass(frozen=True)
class RuleVerdict:
    """One rule's verdict and the numbers behind it."""

    rule: str
    verdict: Verdict
    lean: Lean  # the side the point estimate favours: what ``uncertain`` falls back to under fallback "lean"
    labeler: Estimate  # the number standing for the weak labels: accuracy, AUC, gold+weak or weak-student AUC
    gap: float  # gold-only − weak side (> 0: weak labels expected to hurt); projection: ln(m / n*)
    gap_ci: tuple[float, float] | None  # paired rules: CI of the gap
    more_gold: int | None  # uncertain only: about how many more gold labels would decide
    crossover: float | None  # estimated n* where the gold-only curve reaches the weak side (None: unreachable)
    fallback: Fallback = "lean"
    worthless: bool = False  # delta-worth: the interval of the labeler's Youden's J = 1 − ρ0 − ρ1 is at most 0
    ranks: bool = True  # the labeler clears the fallback's bar on the gold items (rules.labeler_ranks)
    min_class: int = 0  # gold items of the rarer class: from LEAN_FROM on, fallback "auto" acts on the lean

    @property
    def choice(self) -> Lean:
        """What a user following this rule does: the verdict, or when uncertain its fallback."""
        if self.verdict != "uncertain":
            return self.verdict  # type: ignore[return-value]
        return fallback_choice(self.fallback, self.lean, self.ranks, self.min_class)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["labeler"] = self.labeler.to_dict()
        d["choice"] = self.choice
        return d


def _n(v: float) -> str:
    if not math.isfinite(v):
        return "∞"
    return f"{v:,.0f}" if v >= 10 else f"{v:.1f}"


@dataclass(frozen=True)
class Decision:
    """What ``fmgauge weak-labels decide`` prints: the verdict of each rule and the numbers behind it."""

    n_gold: int
    class_counts: list[int]
    gold_auc: Estimate  # gold-only AUC by leave-pair-out (Newcombe interval)
    rules: dict[str, RuleVerdict]
    primary: str
    learning_curve: list[tuple[int, Estimate]] = field(default_factory=list)  # (n, LPO AUC) used for n*
    pool_size: int = 0  # pool items the pool rules trained on (after subsampling)
    population: int = 0  # items the labeler labelled (pool + gold)
    labeler_summary: LabelerSummary | None = None
    n_eff: Estimate | None = None  # what the weak labels are worth in clean labels: N·(1 − ρ0 − ρ1)²
    crossover: float | None = None  # n* where the gold-only curve reaches the weak-trained AUC
    crossover_ci: tuple[float, float] | None = None
    weighted: bool = False  # the gold items carried design weights (a stratified gold sample)
    agreement: float | None = None  # AUC of a gold-trained proxy's pool scores against the weak labels (rules.pool_agreement)

    @property
    def verdict(self) -> Verdict:
        return self.rules[self.primary].verdict

    @property
    def choice(self) -> Lean:
        return self.rules[self.primary].choice

    def to_dict(self) -> dict[str, Any]:
        return {"verdict": self.verdict, "choice": self.choice, "primary_rule": self.primary,
                "fallback": self.rules[self.primary].fallback,
                "n_gold": self.n_gold, "class_counts": self.class_counts, "gold_auc": self.gold_auc.to_dict(),
                "pool_size": self.pool_size, "population": self.population, "weighted": self.weighted,
                "labeler_summary": None if self.labeler_summary is None else self.labeler_summary.to_dict(),
                "n_eff": None if self.n_eff is None else self.n_eff.to_dict(), "agreement": self.agreement,
                "crossover": self.crossover, "crossover_ci": self.crossover_ci,
                "rules": {k: v.to_dict() for k, v in self.rules.items()},
                "learning_curve": [[n, e.to_dict()] for n, e in self.learning_curve],
                "summary": self.plain()}

    def plain(self) -> list[str]:
        """The answer in plain words: the verdict at the user's m, what the weak labels are worth, where they stop
        helping."""
        r = self.rules[self.primary]
        if r.verdict == "uncertain":
            auc = self.rules.get("auc")
            its = f", its AUC on them {auc.labeler.value:.3f} vs gold-only {self.gold_auc.value:.3f}" if auc else ""
            agreed = ("no pool to read" if self.agreement is None else f"agreement {self.agreement:.3f} with a model "
                      "trained on your gold labels, across the pool")
            if r.fallback == "auto":
                agrees = self.agreement is not None and self.agreement > AGREE_BAR
                ranking = (f"weak labels kept: they agree with your gold labels ({agreed}, above {AGREE_BAR})"
                           if agrees else "weak labels kept: the labeler ranks your gold items more than "
                           f"{AUTO_MARGIN} better than a model trained on them{its}") if r.ranks else (
                    f"weak labels dropped: they do not agree with your gold labels ({agreed}, bar {AGREE_BAR}) and "
                    f"the labeler does not rank your gold items more than {AUTO_MARGIN} better than a model trained "
                    f"on them{its}")
            else:
                ranking = (f"the labeler ranks your gold items acceptably{its}: weak labels kept" if r.ranks else
                           f"the labeler does not rank your gold items acceptably{its}, below {ACCEPTABLE_AUC} and "
                           "not above gold-only: weak labels dropped")
            why = {"lean": " (the side its estimate leans to)",
                   "weak": " (the weak labels are free: kept unless shown to hurt)",
                   "labeler": f" ({ranking})",
                   "auto": (f" (your gold set holds {r.min_class} items of its rarer class; from {LEAN_FROM} on, the "
                            "side its estimate leans to is the better guess)" if r.min_class >= LEAN_FROM else
                            f" (with {r.min_class} items of the rarer class the rule's paired estimate is mostly "
                            f"noise, so this decides: {ranking})")}
            acts = f"acting on it: {r.choice}" + why[r.fallback]
            head = (f"With your {self.n_gold} gold labels: uncertain — {acts}; the {r.rule} rule leans "
                    f"{r.lean}.")
            if r.fallback in ("auto", "labeler") and r.min_class < LEAN_FROM:
                head += (f" This is a rule of thumb measured on the study suite: from {LEAN_FROM} gold items of each "
                         "class the paired estimate itself decides (`fmgauge weak-labels sample-gold` picks items the "
                         "labeler calls rare), so label more and decide again.")
        else:
            head = {"use-weak-labels": f"With your {self.n_gold} gold labels: use the weak labels (train on gold + "
                                       f"weak); the {r.rule} rule is confident they help.",
                    "gold-only": f"With your {self.n_gold} gold labels: train on gold only; " + (
                        "the labeler is shown to be no better than chance at telling the classes apart (the interval "
                        "of 1 − ρ0 − ρ1 lies at or below 0): its labels are worth nothing." if r.worthless else
                        f"the {r.rule} rule is confident the weak labels hurt.")}[r.verdict]
        out = [head]
        if self.n_eff is not None and math.isfinite(self.n_eff.value):
            out.append(f"By their confusion the weak labels are worth about {_n(self.n_eff.value)} clean labels "
                       f"[{_n(self.n_eff.lo)}, {_n(self.n_eff.hi)}] (label-space projection: "
                       f"N·(1 − ρ0 − ρ1)² over {self.population:,} weak labels; blind to errors that depend on the "
                       f"item, which the next line measures).")
        elif self.labeler_summary is not None and self.labeler_summary.unusable:
            out.append(f"What the weak labels are worth in clean labels: unknown — {self.labeler_summary.unusable}.")
        if self.agreement is not None:
            out.append(f"Across the {self.pool_size:,} pool items a model trained on your gold labels agrees with the "
                       f"weak labels at AUC {self.agreement:.3f} (0.5: unrelated to your classes; below 0.5: the "
                       "labeler labels another concept; it can only be as high as that model is good).")
        if self.crossover is not None or self.crossover_ci is not None:
            ci = "" if self.crossover_ci is None else f" [{_n(self.crossover_ci[0])}, {_n(self.crossover_ci[1])}]"
            ws = self.rules.get("weak-student")
            lvl = f" (where gold-only training reaches the weak-trained AUC {ws.labeler.value:.3f})" if ws else ""
            if self.crossover is None:
                out.append(f"They stop helping beyond any gold set the learning curve reaches{lvl}: n* unknown, "
                           f"large{ci} (rough extrapolation).")
            elif self.crossover <= self.n_gold:
                out.append(f"They have stopped helping: gold-only training is already at their level at your "
                           f"{self.n_gold} labels{lvl}; n* ≈ {_n(self.crossover)}{ci}.")
            else:
                out.append(f"They stop helping at about n* ≈ {_n(self.crossover)} gold labels{ci}{lvl}; a rough "
                           f"extrapolation of the gold-only learning curve.")
        return out

    def explain(self) -> str:
        """Plain words: the answer, the labeler's quality, then one line per rule."""
        lines = list(self.plain())
        if self.labeler_summary is not None:
            lines += self.labeler_summary.lines()
        for r in self.rules.values():
            tag = " (primary)" if r.rule == self.primary else ""
            if r.rule == "projection":
                xo = "unknown (large)" if r.crossover is None else f"{_n(r.crossover)}"
                head = f"[projection rule{tag}] n* {xo} against your {self.n_gold} gold labels: {r.verdict}"
            elif r.rule in ("cv-delta", "delta-worth", "weak-student"):
                what = "weak-trained AUC" if r.rule == "weak-student" else "gold+weak AUC"
                ci = f" [{-r.gap_ci[1]:+.3f}, {-r.gap_ci[0]:+.3f}]" if r.gap_ci else ""
                head = (f"[{r.rule} rule{tag}] gold-only AUC {self.gold_auc} vs {what} {r.labeler}: "
                        f"difference {-r.gap:+.3f}{ci}: {r.verdict}")
                if r.rule == "delta-worth" and r.worthless:
                    head += (" (the labeler is shown to be no better than chance, the interval of 1 − ρ0 − ρ1 at or "
                             "below 0: its labels are worth nothing)")
            else:
                what = "accuracy on the pool" if r.rule == "accuracy" else "AUC"
                lab = "unusable" if not math.isfinite(r.labeler.value) else str(r.labeler)
                head = f"[{r.rule} rule{tag}] gold-only AUC {self.gold_auc} vs labeler {what} {lab}: {r.verdict}"
            if r.verdict == "uncertain":
                head += f" (leaning {r.lean}; acting on it: {r.choice})"
                if r.rule != "projection":  # its interval on n* says nothing about how many labels would settle it
                    more = (f"more than {MAX_MORE}" if r.more_gold is None else f"about {r.more_gold}")
                    head += f" — label {more} more gold items to decide"
            lines.append(head)
        return "\n".join(lines)
