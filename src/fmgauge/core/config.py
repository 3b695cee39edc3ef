"""Typed configs and the one merge order every entry point uses: defaults < YAML file < CLI overrides.

Every YAML or validation problem becomes ONE line naming the file (or the option), the key and what was expected:
:func:`read_yaml` for YAML syntax, :func:`validation_message` for pydantic errors (tagged-union dumps included).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from fmgauge.core.validation import FmgaugeError

M = TypeVar("M", bound=BaseModel)


def read_yaml(path: str | Path, *, option: str = "config file") -> dict[str, Any]:
    """The mapping in the YAML file ``path``; a missing file, a directory, bad YAML or a non-mapping is refused in
    one line naming ``option`` and the file (YAML errors with their line and column)."""
    p = Path(path)
    if not p.exists():
        raise FmgaugeError(f"{option} {p} does not exist.")
    if p.is_dir():
        raise FmgaugeError(f"{option} {p} is a directory; give a YAML file.")
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise FmgaugeError(f"{option} {p} is not a UTF-8 text file; give a YAML file.") from None
    except PermissionError:
        raise FmgaugeError(f"{option} {p} cannot be read (permission denied).") from None
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as e:
        raise FmgaugeError(f"{option} {p} is not valid YAML: {yaml_problem(e)}.") from None
    if not isinstance(data, dict):
        raise FmgaugeError(f"{option} {p} must hold a mapping at top level, got "
                           f"{type(data).__name__} (write key: value lines).")
    return data


def yaml_problem(e: yaml.YAMLError) -> str:
    """``<problem> at line L, column C`` (1-based) of a YAML error, on one line."""
    mark = getattr(e, "problem_mark", None) or getattr(e, "context_mark", None)
    problem = getattr(e, "problem", None) or str(e).splitlines()[0]
    context = getattr(e, "context", None)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    text = f"{problem}{where}" + (f" ({context})" if context else "")
    return " ".join(text.split())


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


_TYPE_NAMES = {"int", "float", "str", "bool", "none", "dict", "list", "tuple", "set", "bytes"}


def error_key(loc: tuple) -> str:
    """A pydantic error location as a config key: ``labelers.0.noise`` (union-member, type and validator names,
    which pydantic puts in ``loc`` for unions, are dropped)."""
    parts = [str(p) for p in loc
             if not (isinstance(p, str) and (any(c in p for c in "[]()") or p in _TYPE_NAMES))]
    return ".".join(parts)


def validation_message(e: ValidationError, *, source: str | None = None,
                       options: Mapping[str, str] | None = None, limit: int = 3) -> str:
    """ONE line for a pydantic ``ValidationError``: ``<where> <key>: <what was expected> (got <value>)``; ...

    ``options`` maps a config key (``calib.n_samples``; a prefix such as ``accuracy`` also matches
    ``labelers.0.accuracy`` by its last part) to the command-line option that set it (``--n-samples``), which is
    then named instead of the key; ``source`` names the file or the thing validated (``in study.yaml``).
    At most ``limit`` problems are listed, then a count of the rest.
    """
    options = dict(options or {})
    parts = []
    errors, seen = [], {}
    for err in e.errors(include_url=False):  # a union's alternatives, one error each, become one "a or b"
        key = error_key(tuple(err.get("loc", ())))
        if key in seen:
            first = seen[key]
            first["msg"] = f"{first['msg']}, or {str(err.get('msg', '')).removeprefix('Input should be ')}"
            continue
        seen[key] = err = dict(err)
        errors.append(err)
    for err in errors[:limit]:
        key = error_key(tuple(err.get("loc", ())))
        last = key.rsplit(".", 1)[-1] if key else ""
        opt = options.get(key) or options.get(last)
        msg = " ".join(str(err.get("msg", "invalid")).split())
        msg = msg.removeprefix("Value error, ").rstrip(".")
        got = ""
        if key and "input" in err and err.get("type") != "missing" and repr(err["input"]) not in msg:
            got = f" (got {_short(err['input'])})"
        if opt:
            parts.append(f"{opt}: {msg}{got}")
        else:  # an empty key: a check of the whole config (its message says what)
            parts.append(f"{key}: {msg}{got}" if key else msg)
    more = f"; and {len(errors) - limit} more" if len(errors) > limit else ""
    head = f"invalid {e.title}" if source is None else f"invalid {source}"
    return f"{head}: " + "; ".join(parts) + more + "."


def load_config(model: type[M], path: str | Path | None = None, overrides: dict[str, Any] | None = None, *,
                options: Mapping[str, str] | None = None, option: str = "--config") -> M:
    """Build ``model`` from its defaults, then the YAML at ``path``, then ``overrides`` (None values = unset; a dict
    value updates the file's mapping under that key rather than replacing it).

    A problem is one line: a key set by an override is named by its command-line option (``options`` maps keys to
    options; default ``--<key-with-dashes>``), a key from the file by the file and the key.
    """
    data = read_yaml(path, option=option) if path is not None else {}
    given = {k: v for k, v in (overrides or {}).items() if v is not None}
    for k, v in given.items():  # a mapping override (quantize's calib/quant) updates the file's mapping key by key
        data[k] = {**data[k], **v} if isinstance(v, dict) and isinstance(data.get(k), dict) else v
    try:
        return model.model_validate(data)
    except ValidationError as e:
        names = {**{k: f"--{k.replace('_', '-')}" for k in given}, **(options or {})}
        named: dict[str, str] = {}
        from_file = False
        for err in e.errors():
            key = error_key(tuple(err["loc"]))
            top = key.split(".")[0]
            if top in given and key in names:
                named[key] = names[key]
            elif top in given and top in names and not isinstance(given[top], dict):  # a dict merges file + CLI
                named[key] = names[top]
            else:
                from_file = path is not None
        where = f"{model.__name__} in {path}" if from_file else model.__name__
        raise FmgaugeError(validation_message(e, source=where, options=named)) from None
