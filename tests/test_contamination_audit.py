"""Positive and negative controls end to end: plant SLAKE items into a tiny Llama, audit planted vs clean splits,
and check that a signal the baseline reproduces is called "signal not specific"."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from conftest import SHARED_DATA
from fmgauge.contamination.audit import AuditConfig, run_audit
from fmgauge.contamination.benchmarks import load_benchmark
from fmgauge.contamination.plant import (
    PlantConfig,
    finetune,
    make_groups,
    plant,
    read_manifest,
    training_documents,
)
from fmgauge.contamination.tiny import make_tiny_lm
from fmgauge.contamination.topk import hypergeom_overlap_p, pairwise_overlap
from fmgauge.contamination.verdict import NO_SIGNAL, NOT_SPECIFIC, SIGNAL, adjust_pvalues, verdict
from fmgauge.core.text_models import load_text_model
from fmgauge.core.validation import FmgaugeError

EX = {"shards": 6, "permutations": 10, "context": 256, "stride": 128}


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    """A tiny Llama (BPE on SLAKE-en train) with 24 SLAKE-en test items planted 32 times; clean + cohort groups."""
    with pytest.MonkeyPatch.context() as mp:
        root = tmp_path_factory.mktemp("plant")
        mp.setenv("FMGAUGE_DATA", str(SHARED_DATA))
        mp.setenv("FMGAUGE_CACHE", str(root / "cache"))
        train = load_benchmark("slake-en", "train")
        base = make_tiny_lm(root / "base", train.texts[:800], context=256, vocab_size=300, hidden=64)
        cfg = PlantConfig(model=str(base), benchmark="slake-en", split="test", items_per_group=24, duplications=[32],
                          doc_items=8, method="full", lr=1e-2, batch_size=3, device="cpu")
        out = plant(cfg, root / "planted", progress=False)
        # a "domain" baseline: the same base model trained on SLAKE *train* items (same template, other items)
        tm = load_text_model(str(base), device="cpu")
        docs = ["\n".join(train.texts[a: a + 8]) + "\n" for a in range(0, 8 * 40, 8)]
        model, _ = finetune(tm.model, tm.tokenizer, [docs], cfg, progress=False)
        model.save_pretrained(root / "domain")
        tm.tokenizer.save_pretrained(root / "domain")
        mrpc = load_benchmark("glue-mrpc", "dev", max_items=24)
        (root / "mrpc.jsonl").write_text("".join(json.dumps({"id": i, "text": t}) + "\n"
                                                 for i, t in zip(mrpc.ids, mrpc.texts, strict=True)))
        return {"out": out, "base": base, "domain": root / "domain", "mrpc": root / "mrpc.jsonl", "root": root}


def _audit(planted, benchmark: str, cohort: str, baseline: str, out, detectors=None, group_by="none"):
    """group_by none: single items, as these verdict tests were written (24 items of this fixture form 14 SLAKE
    image units, too few for the unit-aware tests' power; those are tested in test_contamination_calibration)."""
    cfg = AuditConfig(models=[str(planted["out"])], baseline=baseline, benchmark=benchmark, split="all",
                      cohort=cohort, cohort_split="all", exchangeability=EX, device="cpu", group_by=group_by,
                      detectors=detectors or ["loss", "zlib", "mink", "minkpp", "exchangeability"])
    return run_audit(cfg, out, progress=False)


def test_plant_groups_are_interleaved_and_disjoint(planted):
    man = read_manifest(planted["out"])
    idx = {g: v["indices"] for g, v in man["groups"].items()}
    assert set(idx) == {"dup32", "clean", "cohort"} and all(len(v) == 24 for v in idx.values())
    assert idx["dup32"][:3] == [0, 3, 6] and idx["clean"][:3] == [1, 4, 7]  # indices into the distinct texts
    texts = {g: {json.loads(x)["text"] for x in (planted["out"] / "groups" / f"{g}.jsonl").open()} for g in idx}
    assert not (texts["dup32"] & texts["clean"]) and not (texts["dup32"] & texts["cohort"])
    assert man["documents"] == 3 * 32  # 24 items / 8 per document, 32 copies
    assert man["losses"][-1] < 0.5 * man["losses"][0]
    with pytest.raises(FmgaugeError, match="need 300"):
        make_groups(100, PlantConfig(items_per_group=100, duplications=[1]))


def test_training_documents_keep_canonical_order():
    bench = type("B", (), {"texts": tuple(f"item {i}" for i in range(16))})()
    cfg = PlantConfig(items_per_group=4, duplications=[1, 2], doc_items=2)
    groups = make_groups(16, cfg)
    assert groups["dup1"] == [0, 4, 8, 12] and groups["cohort"] == [3, 7, 11, 15]
    epochs = training_documents(bench, groups, cfg)
    dup2 = ["item 1\nitem 5\n", "item 9\nitem 13\n"]
    assert sorted(epochs[0]) == sorted(["item 0\nitem 4\n", "item 8\nitem 12\n", *dup2])
    assert sorted(epochs[1]) == dup2  # duplication 2: a second epoch of the dup2 documents only


def test_audit_flags_planted_split_not_clean(planted, fmgauge_env, tmp_path):
    groups = planted["out"] / "groups"
    res = _audit(planted, f"jsonl:{groups / 'dup32.jsonl'}", f"jsonl:{groups / 'cohort.jsonl'}",
                 str(planted["base"]), tmp_path / "planted")
    v = res.verdicts().set_index("detector").verdict
    assert v["minkpp"] == SIGNAL and v["loss"] == SIGNAL and v["exchangeability"] == SIGNAL
    clean = _audit(planted, f"jsonl:{groups / 'clean.jsonl'}", f"jsonl:{groups / 'cohort.jsonl'}",
                   str(planted["base"]), tmp_path / "clean")
    assert (clean.verdicts().verdict == NO_SIGNAL).all(), clean.verdicts()
    # the report is written from the result
    assert (tmp_path / "planted" / "report.html").read_text().count("<img") >= 3
    summary = json.loads((tmp_path / "planted" / "summary.json").read_text())
    assert {t["detector"] for t in summary["tests"]} >= {"minkpp", "exchangeability"}


def test_signal_reproduced_by_baseline_is_not_specific(planted, fmgauge_env, tmp_path):
    """Cohort from another domain (MRPC): every SLAKE-trained model finds the benchmark more familiar."""
    groups = planted["out"] / "groups"
    res = _audit(planted, f"jsonl:{groups / 'dup32.jsonl'}", f"jsonl:{planted['mrpc']}", str(planted["domain"]),
                 tmp_path / "shift", detectors=["loss", "exchangeability"])
    v = res.verdicts().set_index("detector").verdict
    assert v["loss"] == NOT_SPECIFIC  # the domain baseline reproduces the loss enrichment
    assert v["exchangeability"] == SIGNAL  # but not the memorised canonical order


def test_verdict_rules_and_corrections():
    assert verdict(0.01, 0.5) == SIGNAL and verdict(0.01, 0.01) == NOT_SPECIFIC and verdict(0.2, 0.01) == NO_SIGNAL
    with pytest.raises(FmgaugeError, match="baseline"):
        verdict(0.01, None)
    p = np.array([0.01, 0.04, 0.03, 0.5])
    np.testing.assert_allclose(adjust_pvalues(p, "holm"), [0.04, 0.09, 0.09, 0.5])
    np.testing.assert_allclose(adjust_pvalues(p, "bh"), [0.04, 0.04 * 4 / 3, 0.04 * 4 / 3, 0.5])
    np.testing.assert_allclose(adjust_pvalues(p, "bonferroni"), [0.04, 0.16, 0.12, 1.0])


def test_topk_known_answers():
    rng = np.random.default_rng(0)
    s = rng.normal(size=50)
    ov = pairwise_overlap({"a": s, "b": s + 1e-3 * rng.normal(size=50), "c": rng.normal(size=50)}, 5)
    ab = next(o for o in ov if (o.model_a, o.model_b) == ("a", "b"))
    assert ab.overlap == 5 and ab.p_hypergeom == pytest.approx(1 / math.comb(50, 5))
    assert ab.p == pytest.approx(1 / 10_000)  # no reassignment of b's scores reaches it: the smallest p
    assert hypergeom_overlap_p(0, 50, 5) == 1.0
    with pytest.raises(FmgaugeError, match="same items"):
        pairwise_overlap({"a": s, "b": s[:10]}, 3)


def test_bad_audit_inputs_refused(planted, fmgauge_env, tmp_path):
    groups = planted["out"] / "groups"
    with pytest.raises(FmgaugeError, match="known non-members"):
        _audit(planted, f"jsonl:{groups / 'clean.jsonl'}", f"jsonl:{groups / 'clean.jsonl'}",
               str(planted["base"]), tmp_path / "x")
    with pytest.raises(FmgaugeError, match="baseline"):
        run_audit(AuditConfig(models=["m"], baseline="m", benchmark=f"jsonl:{groups / 'clean.jsonl'}", split="all",
                              cohort=f"jsonl:{groups / 'cohort.jsonl'}", cohort_split="all"), tmp_path / "y")


def test_plant_power_separates_members_from_clean(planted, fmgauge_env):
    from fmgauge.contamination.plant import plant_power

    s = plant_power(planted["out"], exchangeability_permutations=5, device="cpu", progress=False)
    row = {(r["model"], r["group"], r["detector"]): r for r in s["table"]}
    assert row[("planted", "dup32", "minkpp")]["lo"] > 0.5  # members beat the matched clean items
    assert row[("planted", "clean", "minkpp")]["lo"] < 0.5 < row[("planted", "clean", "minkpp")]["hi"]
    assert row[("base", "dup32", "minkpp")]["lo"] < 0.5  # the un-fine-tuned model cannot tell them apart
    assert (planted["out"] / "power.json").is_file()


def test_audit_includes_image_overlap_beside_the_text_detectors(planted, fmgauge_env, tmp_path):
    """config.images runs the image side into <run>/image-overlap; the report shows benchmark and control flags
    side by side and links the gallery. A bad image input is refused before any model loads."""
    from PIL import Image

    med = SHARED_DATA / "medmnist"
    with np.load(med / "pneumoniamnist.npz") as z:
        (tmp_path / "imgs").mkdir()
        for i, a in enumerate(z["train_images"][:3]):  # exact copies of reference images
            Image.fromarray(a).save(tmp_path / "imgs" / f"copy{i}.png")
    images = {"benchmark": str(tmp_path / "imgs"), "reference": f"{med / 'pneumoniamnist.npz'}:train",
              "control": f"{med / 'breastmnist.npz'}:test", "embedder": "dct"}
    cfg = AuditConfig(models=[str(planted["out"])], baseline=str(planted["base"]), benchmark="slake-en",
                      split="test", max_items=24, cohort="glue-mrpc", cohort_split="dev", cohort_max_items=24,
                      detectors=["loss"], device="cpu", images=images)
    res = run_audit(cfg, tmp_path / "audit", progress=False)
    b = res.image_overlap["benchmark"]["flagged"]
    assert (b["k"], b["n"]) == (3, 3) and res.image_overlap["control"]["flagged"]["k"] == 0
    md = (tmp_path / "audit" / "report.md").read_text()
    assert "Image-side near-neighbour overlap" in md and "image-overlap/gallery.html" in md
    assert "Images: 3 / 3 flagged" in md and "vs control 0 / 156" in md
    assert (tmp_path / "audit" / "image-overlap" / "gallery.html").is_file()
    assert json.loads((tmp_path / "audit" / "summary.json").read_text())["image_overlap"]["tau"] == res.image_overlap["tau"]
    bad = cfg.model_copy(update={"models": ["no-such-model"],
                                 "images": cfg.images.model_copy(update={"embedder": "siglip-b61"})})
    with pytest.raises(FmgaugeError, match="Did you mean 'siglip-b16'"):
        run_audit(bad, tmp_path / "audit2", progress=False)


def test_exchangeability_shards_follow_the_benchmarks_blocks(fmgauge_env):
    """SLAKE-En test (1,061 items) is 96 runs of questions about one image: the default 50 shards (Oren's) become
    24 shards of ~4 image blocks, said in a warning; 50 shards asked for explicitly are refused before any load."""
    from fmgauge.contamination.audit import _units

    bench, cohort = load_benchmark("slake-en", "test"), load_benchmark("vqamed2019", "test", max_items=50)
    cfg = AuditConfig(models=["m"], baseline="b", benchmark="slake-en", cohort="vqamed2019")
    u = _units(bench, cohort, cfg)
    assert cfg.exchangeability.shards == 24 and u["benchmark"][0] == "img_id" and "96 blocks" in u["warnings"][-1]
    explicit = AuditConfig(models=["m"], baseline="b", benchmark="slake-en", cohort="vqamed2019",
                           exchangeability={"shards": 50})
    with pytest.raises(FmgaugeError, match="50 shards need at least 100 blocks of related items"):
        _units(bench, cohort, explicit)
    items = AuditConfig(models=["m"], baseline="b", benchmark="slake-en", cohort="vqamed2019", group_by="none",
                        exchangeability={"shards": 50})
    assert _units(bench, cohort, items)["benchmark"] == (None, None)  # single items: 1,061 of them, 50 shards fit
