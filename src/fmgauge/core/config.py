"""Typed configs and the one merge order every entry point uses: defaults < YAML file < CLI overrides."""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from fmgauge.core.validation import FmgaugeError

M = TypeVar("M", bound=BaseModel)


def read_yaml(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    if not p.exists():
        raise FmgaugeError(f"config file {p} does not exist.")
    data = yaml.safe_load(p.read_text()) or {}
    if not isinstance(data, dict):
        raise FmgaugeError(f"config file {p} must hold a mapping at top level, got {type(data).__name__}.")
    return data


def load_config(model: type[M], path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> M:
    """Build ``model`` from its defaults, then the YAML at ``path``, then ``overrides`` (None values = unset)."""
    data = read_yaml(path) if path is not None else {}
    data.update({k: v for k, v in (overrides or {}).items() if v is not None})
    try:
        return model.model_validate(data)
    except ValidationError as e:
        where = f" in {path}" if path else ""
        lines = [f"  {'.'.join(map(str, err['loc']))}: {err['msg']} (got {err.get('input')!r})" for err in e.errors()]
        raise FmgaugeError(f"invalid {model.__name__}{where}:\n" + "\n".join(lines)) from None
