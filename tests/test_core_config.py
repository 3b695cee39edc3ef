"""core.config: one merge order (defaults < YAML < overrides, None = unset) and errors naming field and file."""

from __future__ import annotations

import pytest
from pydantic import BaseModel, Field

from fmgauge.core.config import load_config, read_yaml
from fmgauge.core.validation import FmgaugeError


class StudyConfig(BaseModel):
    dataset: str = Field("pneumoniamnist", description="dataset name")
    n_gold: int = Field(100, description="gold items")
    noise: float = Field(0.1, description="label noise")
    seeds: list[int] = Field(default_factory=lambda: [0, 1, 2], description="seeds")


def write(tmp_path, text: str):
    path = tmp_path / "study.yaml"
    path.write_text(text)
    return path


def test_defaults_only():
    assert load_config(StudyConfig) == StudyConfig()


def test_merge_order_defaults_then_yaml_then_overrides(tmp_path):
    path = write(tmp_path, "n_gold: 50\nnoise: 0.3\n")
    cfg = load_config(StudyConfig, path, {"noise": 0.2, "n_gold": None, "dataset": None})
    assert cfg.dataset == "pneumoniamnist"  # default (override None = unset)
    assert cfg.n_gold == 50  # YAML (override None = unset)
    assert cfg.noise == 0.2  # override beats YAML
    assert cfg.seeds == [0, 1, 2]


def test_falsy_overrides_are_set_not_unset(tmp_path):
    path = write(tmp_path, "n_gold: 50\nnoise: 0.3\nseeds: [4]\n")
    cfg = load_config(StudyConfig, path, {"n_gold": 0, "noise": 0.0, "seeds": []})
    assert (cfg.n_gold, cfg.noise, cfg.seeds) == (0, 0.0, [])


def test_invalid_field_names_field_and_file(tmp_path):
    path = write(tmp_path, "n_gold: lots\n")
    with pytest.raises(FmgaugeError) as err:
        load_config(StudyConfig, path)
    msg = str(err.value)
    assert f"invalid StudyConfig in {path}" in msg
    assert "n_gold:" in msg and "'lots'" in msg


def test_invalid_override_without_file():
    with pytest.raises(FmgaugeError) as err:
        load_config(StudyConfig, None, {"noise": "high"})
    assert "invalid StudyConfig:" in str(err.value) and "noise:" in str(err.value)


def test_bad_files(tmp_path):
    with pytest.raises(FmgaugeError, match="does not exist"):
        load_config(StudyConfig, tmp_path / "nope.yaml")
    with pytest.raises(FmgaugeError, match="mapping at top level, got list"):
        read_yaml(write(tmp_path, "- a\n- b\n"))
    assert read_yaml(write(tmp_path, "")) == {}
