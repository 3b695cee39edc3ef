"""One place for checking user input.

Every check raises :class:`FmgaugeError` (a ``ValueError``) whose message names the argument, what was expected and
what came, so nothing surfaces as a traceback from deep inside numpy or torch.
"""

from __future__ import annotations

import difflib
import string
from collections.abc import Iterable, Sequence

import numpy as np


class FmgaugeError(ValueError):
    """A problem with the user's input or environment, with a message that says how to fix it."""


def check_finite(name: str, x: np.ndarray) -> np.ndarray:
    """Refuse NaN/inf in ``x``; the message counts them and names the first bad row."""
    x = np.asarray(x)
    if np.issubdtype(x.dtype, np.floating) and not np.isfinite(x).all():
        bad = ~np.isfinite(x.reshape(len(x), -1)).all(axis=1) if x.ndim else np.array([True])
        rows = np.flatnonzero(bad)
        raise FmgaugeError(
            f"{name} contains {int((~np.isfinite(x)).sum())} NaN/inf values "
            f"(first bad rows: {rows[:5].tolist()}); clean or impute them before running."
        )
    return x


def check_same_length(**arrays: Sequence) -> int:
    """All arrays have the same first dimension; returns it."""
    lengths = {k: v.shape[0] if hasattr(v, "shape") else len(v) for k, v in arrays.items()}
    if len(set(lengths.values())) > 1:
        desc = " and ".join(f"{k} is length {n}" for k, n in lengths.items())
        raise FmgaugeError(f"length mismatch: {desc}; they must describe the same items.")
    return next(iter(lengths.values()))


def check_in_range(name: str, value: float, lo: float, hi: float, *, inclusive: bool = True) -> float:
    ok = lo <= value <= hi if inclusive else lo < value < hi
    if not ok:
        br = "[]" if inclusive else "()"
        raise FmgaugeError(f"{name} must be in {br[0]}{lo}, {hi}{br[1]}, got {value!r}.")
    return value


def check_labels(name: str, y: np.ndarray, n_classes: int) -> np.ndarray:
    """Integer labels in 0..n_classes-1, shape (N,)."""
    y = np.asarray(y)
    if y.ndim != 1:
        raise FmgaugeError(f"{name} must be a 1-D array of class indices, got shape {y.shape}.")
    if len(y) and (not np.issubdtype(y.dtype, np.integer) or y.min() < 0 or y.max() >= n_classes):
        raise FmgaugeError(
            f"{name} must hold integer class indices in 0..{n_classes - 1}, "
            f"got dtype {y.dtype} with values {np.unique(y)[:10].tolist()}."
        )
    return y


def check_two_classes(name: str, y: np.ndarray, n_classes: int, *, min_per_class: int = 1) -> None:
    """Every class appears at least ``min_per_class`` times (AUC is undefined otherwise)."""
    counts = np.bincount(np.asarray(y, dtype=int), minlength=n_classes)
    short = [k for k in range(n_classes) if counts[k] < min_per_class]
    if short:
        raise FmgaugeError(
            f"{name} has fewer than {min_per_class} item(s) of class(es) {short} "
            f"(class counts {counts.tolist()}); AUC is undefined. Use more gold items or a stratified draw."
        )


def check_ids_match(name: str, ids: Iterable[str], expected: Iterable[str], *, what: str) -> None:
    """Every id in ``expected`` is present in ``ids``; names the first few that are missing."""
    have = set(map(str, ids))
    missing = [i for i in map(str, expected) if i not in have]
    if missing:
        raise FmgaugeError(
            f"{name} lacks {len(missing)} id(s) of {what}; first missing: {missing[:5]}. "
            f"Its ids look like {sorted(have)[:3]}."
        )


def check_choice(name: str, value: str, choices: Iterable[str]) -> str:
    choices = list(choices)
    if value not in choices:
        raise FmgaugeError(f"{name} must be one of {choices}, got {value!r}.")
    return value


def close_matches(value: str, choices: Iterable[str]) -> list[str]:
    """Up to three of ``choices`` close to ``value`` (difflib ratio >= 0.6), closest first."""
    return difflib.get_close_matches(value, list(choices), n=3, cutoff=0.6)


def did_you_mean(value: str, choices: Iterable[str]) -> str:
    """`` Did you mean 'x'?`` for the choices close to ``value`` (empty when none is close)."""
    near = close_matches(value, choices)
    return f" Did you mean {' or '.join(map(repr, near))}?" if near else ""


def parse_options(query: str, options: dict[str, str], *, what: str) -> dict[str, str]:
    """``a=1&b=two`` -> ``{"a": "1", "b": "two"}``: the options after the ``?`` of a name like ``csv:f.csv?a=1``.

    Values are percent-decoded (``%26`` for a literal ``&``, ``%3D`` for ``=``); ``+`` stays a plus. ``options`` maps
    each accepted option to what it takes; unknown options (with a did-you-mean), repeated options and empty values
    are refused, naming ``what`` (e.g. "text dataset option") and the option.
    """
    from urllib.parse import unquote

    given: dict[str, str] = {}
    for part in query.split("&") if query else []:
        key, eq, value = part.partition("=")
        key, value = unquote(key).strip(), unquote(value)
        if key not in options:
            raise FmgaugeError(f"{what} {key!r} is unknown.{did_you_mean(key, options)} Options: "
                               + "; ".join(f"{k}: {v}" for k, v in options.items()) + ".")
        if not eq or not value.strip():
            raise FmgaugeError(f"{what} {key!r} needs a value ({key}=...): {options[key]}.")
        if key in given:
            raise FmgaugeError(f"{what} {key!r} is given twice ({given[key]!r} and {value!r}).")
        given[key] = value
    return given


def name_unknown(values: Iterable[str], choices: Iterable[str]) -> str:
    """``'sports' (did you mean 'sport'?), 'xyz'``: unknown names, each with its near choices."""
    choices = list(choices)
    parts = []
    for v in values:
        near = close_matches(v, choices)
        parts.append(repr(v) + (f" (did you mean {' or '.join(map(repr, near))}?)" if near else ""))
    return ", ".join(parts)


def check_template(name: str, template: object, *, required: Sequence[str], optional: Sequence[str] = (),
                   once: bool = False) -> str:
    """A ``str.format`` template holding every ``required`` slot (exactly once if ``once``), maybe the
    ``optional`` ones, and no other braces (``{{``/``}}`` write literal braces); returns it."""
    allowed = set(required) | set(optional)
    try:
        fields = [f for _, f, _, _ in string.Formatter().parse(template)] if isinstance(template, str) else None
    except ValueError:  # an unmatched brace
        fields = None
    ok = (fields is not None and all(f is None or f in allowed for f in fields)
          and all(fields.count(s) == 1 if once else s in fields for s in required))
    if not ok:
        slots = " and ".join(repr(f"{{{s}}}") for s in required) + (" once" if once else "")
        extra = f", optionally {' and '.join(repr(f'{{{s}}}') for s in optional)}" if optional else ""
        raise FmgaugeError(f"{name} must contain {slots}{extra}, and no other braces; got {template!r}.")
    return template
