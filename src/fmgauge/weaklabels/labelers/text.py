"""What the zero-shot text labelers share: the texts of a split, and which classes they score.

One-vs-rest datasets (class names ``("not X", "X")``, e.g. ``medical-abstracts-neoplasms``) have a negative class
that a zero-shot model cannot describe well: sentence encoders embed "not X" close to "X", and a language model
asked "not X or X?" leans on the word "not". With ``rest_classes`` (the names of the classes that make up "not X",
given in the config or read from ``dataset.meta["rest_class_names"]``) the labeler scores X and each rest class as
its own class, takes the softmax over all of them, and reports P(not X) = the sum of the rest classes'
probabilities. The list may include X itself, which fixes X's place among the options: with the full multi-class
list in its original order, the one-vs-rest prompts equal the multi-class prompts, so the cached model scores are
shared (P(X) is then exactly the multi-class labeler's P(X)). Without rest classes, each labeler has a documented
fallback for the "not X" class.

What the labelers say about the classes resolves in one order (:func:`first_set`): the labeler config's explicit
fields (``templates``, ``class_descriptions``, ``negative_descriptions``, ``template``) > the dataset's meta
(``class_descriptions``, ``label_templates``, ``negative_descriptions``, ``prompt``, ``chat_prompt``: Medical
Abstracts carries its medical ones, a ``text:`` dataset those of its ``descriptions=`` file; see
:mod:`fmgauge.core.datasets_text`) > the labelers' neutral defaults ("a text about {c}.", "Here is a text. ...").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeVar

import numpy as np

from fmgauge.core.data import Dataset
from fmgauge.core.datasets_text import NEGATION
from fmgauge.core.validation import FmgaugeError
from fmgauge.weaklabels.text_embed import check_texts

T = TypeVar("T")


@dataclass(frozen=True)
class ScoredClasses:
    """The M >= K classes a labeler scores and how they map onto the dataset's K classes.

    ``names`` (M,) names of the scored classes; ``group`` (M,) the dataset class each one counts for;
    ``negative`` the dataset class named "not X" that has no rest classes and needs the labeler's fallback
    (None if there is none).
    """

    names: tuple[str, ...]
    group: tuple[int, ...]
    negative: int | None = None


def pool_classes(probs: np.ndarray, group: np.ndarray, n_classes: int) -> np.ndarray:
    """(N, M) probabilities over scored classes -> (N, K) over dataset classes (summed within ``group`` (M,))."""
    out = np.zeros((probs.shape[0], n_classes), dtype=np.float64)
    np.add.at(out.T, np.asarray(group), probs.T)
    return out


def split_texts(ds: Dataset, split: str, *, labeler: str) -> tuple[np.ndarray, np.ndarray]:
    """(ids (N,), texts (N,) str) of ``ds``'s ``split``; refuses image datasets clearly."""
    sp = ds.split(split)
    if sp.x.ndim != 1 or (len(sp.x) and not isinstance(sp.x[0], str)):
        raise FmgaugeError(f"the {labeler} labeler needs a text dataset (x: (N,) str); {ds.name}/{split} has x of "
                           f"shape {sp.x.shape} and dtype {sp.x.dtype}.")
    return sp.ids, check_texts(f"{ds.name}/{split} texts", sp.x)


def scored_classes(ds: Dataset, class_names: list[str] | None, rest_classes: list[str] | None, *,
                   field: str = "class_names") -> ScoredClasses:
    """The classes to score for ``ds``: its class names (or ``class_names``), one-vs-rest negatives expanded.

    ``class_names`` must hold one name per dataset class. ``rest_classes`` (or ``ds.meta["rest_class_names"]``)
    is only valid when exactly one class is named "not ...".
    """
    names = list(ds.class_names)
    if class_names is not None:
        if len(class_names) != ds.n_classes:
            raise FmgaugeError(
                f"{field} has {len(class_names)} entries but dataset {ds.name!r} has {ds.n_classes} classes "
                f"{names}; give one per class, in that order."
            )
        names = list(class_names)
    negatives = [k for k, c in enumerate(ds.class_names) if c.lower().startswith(NEGATION)]
    rest = rest_classes if rest_classes is not None else ds.meta.get("rest_class_names")
    if rest is not None:
        if len(negatives) != 1:
            raise FmgaugeError(
                f"rest_classes is for one-vs-rest datasets with one class named 'not X'; dataset {ds.name!r} has "
                f"classes {list(ds.class_names)}."
            )
        if not rest or any(not isinstance(r, str) or not r for r in rest):
            raise FmgaugeError(f"rest_classes must be a non-empty list of class names, got {rest!r}.")
        neg = negatives[0]
        if ds.n_classes != 2:
            raise FmgaugeError(f"rest_classes needs a binary one-vs-rest dataset; {ds.name!r} has classes "
                               f"{list(ds.class_names)}.")
        pos = 1 - neg
        if names[pos] not in rest:  # X first, then the rest classes
            rest = [names[pos], *rest]
        if len(set(rest)) != len(rest) or len(rest) < 2:
            raise FmgaugeError(f"rest_classes must name distinct classes other than {names[pos]!r}, got {rest!r}.")
        return ScoredClasses(names=tuple(rest), group=tuple(pos if r == names[pos] else neg for r in rest))
    return ScoredClasses(names=tuple(names), group=tuple(range(ds.n_classes)),
                         negative=negatives[0] if len(negatives) == 1 and ds.n_classes == 2 else None)


def negated(name: str) -> str:
    """'not neoplasms' -> 'neoplasms' (the X of a "not X" class name)."""
    return name[len(NEGATION):] if name.lower().startswith(NEGATION) else name


def first_set(*options: T | None) -> T:
    """The first option that is not None: a labeler config's explicit field > the dataset's meta > the default."""
    return next(o for o in options if o is not None)
