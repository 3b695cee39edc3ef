"""Every shipped study config validates, and names only registered datasets, labeler kinds and students."""

from __future__ import annotations

from pathlib import Path

import pytest

from fmgauge.core.config import load_config
from fmgauge.core.data import DATASETS
from fmgauge.weaklabels.study import StudyConfig

CONFIGS = sorted((Path(__file__).parents[1] / "configs" / "weaklabels").glob("*.yaml"))


def test_configs_are_shipped():
    names = {p.stem for p in CONFIGS}
    assert {"demo", "demo-text", "pneumoniamnist", "breastmnist", "retinamnist", "retinamnist-binary",
            "medical-abstracts"} <= names


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_config_validates(path):
    cfg = load_config(StudyConfig, path)
    assert cfg.dataset in DATASETS
    names = [s.display_name() for s in cfg.students]
    assert len(set(names)) == len(names), "two students share a display name"
    if not path.stem.endswith("biomedclip"):  # offline configs: simulated labelers or packaged text models
        from fmgauge.core.text_models import TEXT_MODELS

        for lab in cfg.labelers:
            assert lab.kind == "simulated" or getattr(lab, "model", None) in TEXT_MODELS, lab


def test_text_demo_spans_ten_x_parameters():
    from fmgauge.weaklabels.students import n_params

    cfg = load_config(StudyConfig, Path(__file__).parents[1] / "configs" / "weaklabels" / "demo-text.yaml")
    dims = {"embed:minilm-l6": (384,), "tfidf": (20_000,)}  # tfidf: at least this many terms on the pool
    params = [n_params(s, dims[s.features], 2) for s in cfg.students]
    assert max(params) / min(params) >= 10


def test_demo_spans_six_students_and_ten_x_parameters():
    from fmgauge.weaklabels.students import n_params

    cfg = load_config(StudyConfig, Path(__file__).parents[1] / "configs" / "weaklabels" / "demo.yaml")
    params = [n_params(s, (1, 28, 28), 2) for s in cfg.students]
    assert len(params) >= 6 and max(params) / min(params) >= 10


MASKING = sorted((Path(__file__).parents[1] / "configs" / "masking").glob("*.yaml"))


@pytest.mark.parametrize("path", MASKING, ids=lambda p: p.stem)
def test_masking_config_validates(path):
    from fmgauge.core.text_models import TEXT_MODELS
    from fmgauge.masking.experiment import CompareConfig

    cfg = load_config(CompareConfig, path)
    assert cfg.model in TEXT_MODELS and len(cfg.seed_list()) >= 2
    assert {p.stem for p in MASKING} >= {"mrpc-minilm-cpu", "mrpc-minilm-ft", "mrpc-minilm-full"}
