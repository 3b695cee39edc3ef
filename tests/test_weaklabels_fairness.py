"""Students that measure the labels: every student of every shipped study config meets the fairness properties.

The students are read from ``configs/weaklabels/*.yaml`` (each distinct student config once) and checked by
:mod:`fmgauge.weaklabels.fairness` — trained as the sweep trains them, in a paired design, every property a
non-inferiority check at 0.005 AUC over 8 seeds — on real data: images on a 1,000-item slice of the PneumoniaMNIST
pool, texts on a 1,000-item slice of the Medical Abstracts (neoplasms vs rest) pool, each scored on its test split
plus the rest of the pool (4,332 images, 1,888 texts).

Cost tiers: students cheap to train get every property (a 99%-accurate labeler never costs AUC at 50 and 400 gold
labels; the gold-only curve does not fall from 50 to 400; gold+weak AUC does not fall from an 85% to a 95% to a 99%
labeler at 50); mlp-w256 and cnn-w4 the near-perfect check at 400. The heavy students (cnn-w8/w16/w32, resnet, the
fine-tuned encoder) cost from ten seconds to minutes per trial on a CPU: ``benchmarks/bench_fairness.py --only
students`` measures them with the same design into ``benchmarks/results/fairness-students.json`` and the test
checks that record; a student not measured is in ``UNMEASURED`` with the reason, one measured and found unfair is
pinned in ``KNOWN_UNFAIR``. ``embed:`` students read a stand-in of the same shape (LSA of the TF-IDF vectors, 384
dimensions at unit norm). A negative control — logreg at C = 1000, converged but nearly unregularised — must fail,
so the design can fail.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from conftest import SHARED_DATA
from fmgauge.weaklabels.fairness import (
    Slice,
    check,
    image_slice,
    measure,
    plan,
    shipped_students,
    text_slices,
)
from fmgauge.weaklabels.students import StudentConfig

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs" / "weaklabels"
RECORD = Path(__file__).resolve().parents[1] / "benchmarks" / "results" / "fairness-students.json"
SEEDS = list(range(8))
POOL = 1000  # items in each modality's pool slice
N_SMALL, N_LARGE = 50, 400  # gold-set sizes
MID = ("mlp-w256", "cnn-w4")  # near-perfect check at N_LARGE only
HEAVY = ("cnn-w8", "cnn-w16", "cnn-w32", "resnet-w16", "minilm-l6-finetune")  # the benchmark measures them
UNMEASURED = {"minilm-l6-finetune": "fine-tuning a 22.7M-parameter encoder costs hours per design on a CPU"}
# measured and found unfair on this design (the record must keep saying so until the student is fixed)
KNOWN_UNFAIR = {  # by student id
    "resnet-w16,epochs=4.0": "60 optimizer steps on a 1,000-image pool leave ResNet-18 (w=16) unsettled: its seeds' "
                             "test AUCs range 0.76-0.96 and a 0.005 loss cannot be ruled out (docs/benchmarks.md §9)",
    "resnet-w16": "the same at 63 steps (epochs 8): seeds' test AUCs 0.77-0.96 (docs/benchmarks.md §9)",
}


STUDENTS = shipped_students(CONFIG_DIR)


def tier(st: StudentConfig) -> str:
    name = st.display_name().removeprefix("minilm-l6-") if st.features != "text" else st.display_name()
    return "heavy" if name in HEAVY else "mid" if name in MID else "full"


@pytest.fixture(scope="module")
def images(pneumonia) -> Slice:
    return image_slice(pneumonia, POOL)


@pytest.fixture(scope="module")
def texts() -> dict[str, Slice]:
    from fmgauge.core.data import load_dataset

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FMGAUGE_DATA", str(SHARED_DATA))
        return text_slices(load_dataset("medical-abstracts-neoplasms"), POOL)


def data_for(st: StudentConfig, images: Slice, texts: dict[str, Slice]) -> Slice:
    return images if st.features == "raw" else texts["tfidf" if st.features == "tfidf" else "embed"]


def test_every_shipped_student_is_covered():
    """Every shipped student is checked here, or by the benchmark's record, or named in UNMEASURED with why."""
    assert len(STUDENTS) >= 10 and {"logreg", "mlp", "cnn", "sk-logreg"} <= {s.kind for s in STUDENTS.values()}
    record = json.loads(RECORD.read_text()) if RECORD.exists() else {}
    for name, st in STUDENTS.items():
        if tier(st) == "heavy" and st.display_name() not in UNMEASURED:
            assert name in record, f"{name}: run `python benchmarks/bench_fairness.py --only students`"
            assert record[name]["student"] == st.model_dump(mode="json"), f"{name}: the record is for another config"
    assert set(UNMEASURED) <= {st.display_name() for st in STUDENTS.values()}, "UNMEASURED names a retired student"


LIVE = [name for name, st in STUDENTS.items() if tier(st) != "heavy"]


@pytest.mark.parametrize("name", LIVE)
def test_student_measures_the_labels(name, images, texts):
    st = STUDENTS[name]
    aucs = measure(st, data_for(st, images, texts), plan(N_SMALL, N_LARGE, full=tier(st) == "full"), SEEDS)
    assert not check(aucs), (name, check(aucs))


@pytest.mark.parametrize("name", [n for n, st in STUDENTS.items() if tier(st) == "heavy"])
def test_heavy_student_record_meets_the_properties(name):
    record = json.loads(RECORD.read_text()).get(name) if RECORD.exists() else None
    if record is None:
        assert STUDENTS[name].display_name() in UNMEASURED, name
        return
    aucs = {(c, int(n)): np.asarray(v) for c, n, v in record["aucs"]}
    assert len(next(iter(aucs.values()))) >= 5, "too few seeds to resolve 0.005 AUC"
    if name in KNOWN_UNFAIR:
        assert check(aucs), f"{name} now passes: drop it from KNOWN_UNFAIR and the docs' caveat"
    else:
        assert not check(aucs), (name, check(aucs))


def test_the_near_perfect_check_can_fail(images):
    """Negative control: a converged, nearly unregularised logistic regression (C = 1000) memorises the 1% of
    flipped labels, and the near-perfect check says so."""
    aucs = measure(StudentConfig(kind="logreg", c=1000.0), images, plan(N_SMALL, N_LARGE, full=False), SEEDS)
    assert any("near-perfect" in b for b in check(aucs)), {k: v.tolist() for k, v in aucs.items()}


def test_check_rules_out_a_loss_of_the_margin_and_flips_are_nested():
    """check() is non-inferiority at 0.005: a tight 0.002 loss passes, a 0.01 loss and a vague zero-mean
    difference fail; a better simulated labeler's flipped items are a subset of a worse one's."""
    from fmgauge.weaklabels.fairness import weak_labels

    rng = np.random.default_rng(0)
    base = 0.9 + 0.01 * rng.standard_normal(8)
    tight = base - 0.002 + 0.0005 * rng.standard_normal(8)
    assert check({("gold", 400): base, ("0.99", 400): tight}) == []
    assert check({("gold", 400): base, ("0.99", 400): base - 0.01})
    assert check({("gold", 400): base, ("0.99", 400): base + 0.02 * rng.standard_normal(8)})
    assert check({("gold", 50): base, ("gold", 400): base - 0.01})[0].startswith("gold-only curve falls")
    y = np.arange(200) % 2
    w85, w95 = weak_labels(y, 0.85, [0, 1]), weak_labels(y, 0.95, [0, 1])
    assert ((w85 != y).sum(1) == 30).all() and ((w95 != y).sum(1) == 10).all()
    assert np.all((w95 != y) <= (w85 != y))
