"""Planting methods and groups: full fine-tuning changes every weight while LoRA changes only the projections it
adapts, each method's default learning rate lands in the manifest, ``group_by`` never splits a unit, every planted
item is trained exactly its duplication count, and the cluster bootstrap of the power's AUROC intervals."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import SHARED_DATA
from fmgauge.contamination.benchmarks import load_benchmark
from fmgauge.contamination.plant import (
    DEFAULT_LR,
    LORA_TARGETS,
    PlantConfig,
    finetune,
    make_groups,
    plant,
    read_manifest,
    training_documents,
)
from fmgauge.core.stats import auc_ci
from fmgauge.core.text_models import load_text_model
from fmgauge.core.validation import FmgaugeError

WORDS = ["the", "of", "and", "in", "to", "a", "was", "is", "for", "on", "as", "by", "with", "that", "from", "at",
         "his", "it", "an", "were", "are", "which", "this", "be"]


def _sentences(n: int, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(WORDS, size=12)) + f" item {i}" for i in range(n)]


def _weights(model) -> dict[str, np.ndarray]:  # noqa: ANN001
    return {k: v.detach().float().numpy().copy() for k, v in model.state_dict().items()}


def test_default_lr_follows_the_method_unless_given():
    assert PlantConfig(method="full").lr == DEFAULT_LR["full"] == 3e-5
    assert PlantConfig().method == "full" and PlantConfig().lr == DEFAULT_LR["full"]
    assert PlantConfig(method="lora").lr == DEFAULT_LR["lora"] == 1e-3
    assert (PlantConfig().doc_items, PlantConfig().items_per_group) == (1, 64)  # measured in docs/benchmarks.md §4
    assert PlantConfig(method="full", lr=1e-4).lr == 1e-4
    assert PlantConfig.model_validate(PlantConfig(method="full").model_dump()).lr == 3e-5  # round-trips


@pytest.mark.parametrize("method", ["full", "lora"])
def test_full_changes_every_weight_lora_only_the_adapted_projections(tiny_dir, method):
    tm = load_text_model(str(tiny_dir), device="cpu")
    before = _weights(tm.model)
    docs = ["\n".join(_sentences(4, seed=s)) + "\n" for s in range(4)]
    model, losses = finetune(tm.model, tm.tokenizer, [docs], PlantConfig(method=method, batch_size=2),
                             progress=False)
    after = _weights(model)
    assert set(after) == set(before) and len(losses) == 2  # LoRA merged away: the same tensors as the base
    changed = {k for k in before if not np.array_equal(before[k], after[k])}
    if method == "full":
        assert changed == set(before)
    else:
        adapted = {k for k in before if k.rsplit(".", 2)[-2] in LORA_TARGETS}
        assert adapted and changed == adapted  # embeddings, norms and the LM head untouched
    assert not any(p.requires_grad for p in model.parameters()) and not model.training


def _pairs_csv(tmp: Path, n: int = 48) -> str:
    rows = ["body,pair"] + [f"{t},p{i // 2}" for i, t in enumerate(_sentences(n))]
    (tmp / "pairs.csv").write_text("\n".join(rows) + "\n")
    return f"csv:{tmp / 'pairs.csv'}?text_column=body"


def test_plant_full_records_method_lr_and_keeps_pairs_whole(tiny_dir, tmp_path, fmgauge_env):
    cfg = PlantConfig(model=str(tiny_dir), benchmark=_pairs_csv(tmp_path), split="all", items_per_group=6,
                      duplications=[1, 3], doc_items=2, method="full", group_by="pair", batch_size=2, device="cpu")
    out = plant(cfg, tmp_path / "planted", progress=False)
    man = read_manifest(out)
    assert man["config"]["method"] == "full" and man["config"]["lr"] == 3e-5
    assert man["config"]["group_by"] == "pair"
    keys = {g: v["keys"] for g, v in man["groups"].items()}
    assert all(len(k) == 3 for k in keys.values())  # 6 items = 3 whole pairs per group
    flat = [k for ks in keys.values() for k in ks]
    assert len(flat) == len(set(flat))  # no pair in two groups
    clean = load_benchmark(man["groups"]["clean"]["benchmark"], "all")
    assert Counter(clean.column("group")) == dict.fromkeys(keys["clean"], 2)
    assert man["documents"] == 3 * 1 + 3 * 3  # 6 items / 2 per document, seen 1 and 3 times


def test_every_planted_item_is_trained_exactly_its_duplication_count():
    texts = tuple(_sentences(60))
    bench = type("B", (), {"texts": texts})()
    cfg = PlantConfig(items_per_group=12, duplications=[1, 4, 16], doc_items=5)
    groups = make_groups(len(texts), cfg)
    seen = Counter(t for ep in training_documents(bench, groups, cfg) for doc in ep for t in doc.split("\n") if t)
    for g, idx in groups.items():
        want = int(g[3:]) if g.startswith("dup") else 0
        assert {seen[texts[i]] for i in idx} == {want}, g


@settings(max_examples=200, deadline=None)
@given(sizes=st.lists(st.integers(1, 5), min_size=1, max_size=60), n=st.integers(4, 8),
       dups=st.sampled_from([[1], [1, 4], [1, 4, 16]]), seed=st.integers(0, 10_000))
def test_groups_never_split_a_group_by_key(sizes, n, dups, seed):
    rng = np.random.default_rng(seed)
    keys = [f"k{u}" for u, s in enumerate(sizes) for _ in range(s)]
    keys = [keys[i] for i in rng.permutation(len(keys))]  # a key's items need not be adjacent
    cfg = PlantConfig(items_per_group=n, duplications=dups)
    try:
        groups = make_groups(len(keys), cfg, keys)
    except FmgaugeError as e:
        assert "Lower items_per_group" in str(e)
        return
    assert len(groups) == len(dups) + 2
    where: dict[str, set[str]] = {}
    for g, idx in groups.items():
        assert idx == sorted(idx) and n <= len(idx) <= n + max(sizes) - 1
        for i in idx:
            where.setdefault(keys[i], set()).add(g)
    assert all(len(gs) == 1 for gs in where.values())  # one group per key
    used = [i for idx in groups.values() for i in idx]
    assert len(used) == len(set(used))
    assert Counter(keys[i] for i in used) == {k: keys.count(k) for k in where}  # every used key whole


def test_groups_without_keys_are_the_interleave():
    cfg = PlantConfig(items_per_group=5, duplications=[1, 4])
    assert make_groups(40, cfg) == {g: list(range(k, 20, 4)) for k, g in enumerate(["dup1", "dup4", "clean",
                                                                                     "cohort"])}
    assert make_groups(40, cfg, [str(i) for i in range(40)]) == make_groups(40, cfg)
    with pytest.raises(FmgaugeError, match="form 2 groups of that column"):
        make_groups(40, cfg.model_copy(update={"group_by": "half"}), ["a"] * 20 + ["b"] * 20)


def test_benchmarks_carry_their_columns(tmp_path, monkeypatch):
    monkeypatch.setenv("FMGAUGE_DATA", str(SHARED_DATA))
    mrpc = load_benchmark("glue-mrpc", "dev", max_items=5)
    assert mrpc.column("#1 ID")[0] == mrpc.ids[0].split("-")[0]
    sub = mrpc.subset([3, 1])
    assert sub.column("#2 ID") == (mrpc.column("#2 ID")[3], mrpc.column("#2 ID")[1])
    slake = load_benchmark("slake-en", "test", max_items=20)
    assert len(set(slake.column("img_id"))) < 20  # several questions per image
    pairs = load_benchmark(_pairs_csv(tmp_path), "all")
    assert pairs.column("pair")[:3] == ("p0", "p0", "p1")
    with pytest.raises(FmgaugeError, match=r"has no such column; available columns: \['body', 'pair'\]"):
        pairs.column("pairs", option="group_by")
    (tmp_path / "gap.jsonl").write_text('{"text": "a", "pair": 1}\n{"text": "b"}\n')
    with pytest.raises(FmgaugeError, match="1 item.* no value in that column .*item 1"):
        load_benchmark(f"jsonl:{tmp_path / 'gap.jsonl'}", "all").column("pair")


def test_cluster_bootstrap_of_duplicated_items_equals_item_bootstrap():
    """Every item twice, resampled as pairs: the AUC of each resample equals the item resample's of the originals
    (same generator draws), so the interval is the original one; resampling the copies singly narrows it."""
    rng = np.random.default_rng(1)
    y = np.r_[np.ones(30), np.zeros(30)].astype(int)
    s = rng.normal(size=60) + 0.5 * y
    one = auc_ci(y, s, n_boot=300, seed=3)
    y2, s2, c2 = np.repeat(y, 2), np.repeat(s, 2), np.repeat(np.arange(60), 2)
    two = auc_ci(y2, s2, n_boot=300, seed=3, clusters=c2)
    assert (two.value, two.lo, two.hi) == pytest.approx((one.value, one.lo, one.hi))
    naive = auc_ci(y2, s2, n_boot=300, seed=3)
    assert naive.hi - naive.lo < 0.85 * (one.hi - one.lo)
    with pytest.raises(FmgaugeError, match="clusters has 3 labels for 60 items"):
        auc_ci(y, s, clusters=np.arange(3))


def test_power_json_of_a_group_by_plant_bootstraps_units(tiny_dir, tmp_path, fmgauge_env):
    """plant_power on a grouped plant: rows for each group, AUROCs in [0, 1] inside their CIs."""
    from fmgauge.contamination.plant import plant_power

    cfg = PlantConfig(model=str(tiny_dir), benchmark=_pairs_csv(tmp_path, 40), split="all", items_per_group=8,
                      duplications=[4], doc_items=4, method="full", lr=1e-2, group_by="pair", batch_size=2,
                      device="cpu")
    out = plant(cfg, tmp_path / "planted", progress=False)
    summary = plant_power(out, exchangeability_permutations=4, items_per_shard=4, roles=("planted",),
                          device="cpu", progress=False)
    rows = [r for r in summary["table"] if r["detector"] == "loss"]
    assert {r["group"] for r in rows} == {"dup4", "clean"} and {r["model"] for r in rows} == {"planted"}
    assert all(r["lo"] <= r["auroc"] <= r["hi"] for r in rows)
    assert json.loads((out / "power.json").read_text())["roles"] == ["planted"]
    with pytest.raises(FmgaugeError, match="roles must be"):
        plant_power(out, roles=("planted", "teacher"))
    both = plant_power(out, exchangeability_permutations=0, roles=("planted", "base"), device="cpu",
                       progress=False, n_boot=100)
    delta = {r["group"]: r for r in both["table"] if r["model"] == "planted − base" and r["detector"] == "loss"}
    planted = {r["group"]: r for r in both["table"] if r["model"] == "planted" and r["detector"] == "loss"}
    base = {r["group"]: r for r in both["table"] if r["model"] == "base" and r["detector"] == "loss"}
    for g in ("dup4", "clean"):
        assert delta[g]["auroc"] == pytest.approx(planted[g]["auroc"] - base[g]["auroc"])
        assert delta[g]["lo"] <= delta[g]["auroc"] <= delta[g]["hi"]
    assert not any(r["detector"] == "exchangeability" for r in both["table"])  # 0 permutations: skipped


def test_paired_effects_subtract_the_base_and_its_draw():
    """Δ = planted − base on the same items: a draw that already favours the members under the base model (the
    group draw's own offset) is subtracted; identical models give Δ = 0 exactly; pairs are resampled whole."""
    from fmgauge.contamination.power import paired_effects

    rng = np.random.default_rng(0)
    members_b, clean_b = rng.normal(0.4, 1, 64), rng.normal(0, 1, 64)  # a lucky draw: base AUROC above 0.5
    members_p = members_b + 3.0  # training lifts every member
    pairs = [f"p{i // 2}" for i in range(64)]
    e = paired_effects({"planted": members_p, "base": members_b}, {"planted": clean_b, "base": clean_b},
                       member_units=pairs, clean_units=pairs, n_boot=300)
    assert e["auroc_base"] > 0.55 and e["auroc_planted"] > 0.95 and e["units"] == [32, 32]
    assert e["delta_auroc"] == pytest.approx(e["auroc_planted"] - e["auroc_base"])
    assert e["delta_auroc_lo"] <= e["delta_auroc"] <= e["delta_auroc_hi"] and e["delta_auroc_lo"] > 0.2
    same = paired_effects({"planted": members_b, "base": members_b}, {"planted": clean_b, "base": clean_b},
                          n_boot=200)
    assert same["delta_auroc"] == same["delta_auroc_lo"] == same["delta_auroc_hi"] == 0.0
    assert (same["auroc_base_hi"] - same["auroc_base_lo"]) > 0.15  # the draw alone: a wide raw interval
    with pytest.raises(FmgaugeError, match="same items"):
        paired_effects({"planted": members_p, "base": members_b[:10]}, {"planted": clean_b, "base": clean_b})


def test_cli_plant_and_audit_read_a_headerless_benchmark(tiny_dir, tmp_path, fmgauge_env):
    """--no-header --text-column (and --group-by by position) reach the library on plant and audit."""
    from typer.testing import CliRunner

    from fmgauge.cli import app

    rows = [f"p{i // 2},{t}" for i, t in enumerate(_sentences(40))]  # column 0 = pair, column 1 = text
    (tmp_path / "raw.csv").write_text("\n".join(rows) + "\n")
    bench = f"csv:{tmp_path / 'raw.csv'}"
    runner = CliRunner()
    res = runner.invoke(app, ["contamination", "plant", "--model", str(tiny_dir), "--benchmark", bench, "--split",
                              "all", "--no-header", "--text-column", "1", "--group-by", "0", "--items-per-group",
                              "4", "--duplications", "2", "--method", "full", "--device", "cpu", "--out",
                              str(tmp_path / "planted"), "--no-power"])
    assert res.exit_code == 0, res.output
    man = read_manifest(tmp_path / "planted")
    assert man["config"]["benchmark"] == bench + "?text_column=1&header=none" and man["config"]["lr"] == 3e-5
    assert all(len(v["keys"]) == 2 for v in man["groups"].values())  # 4 items = 2 whole pairs
    (tmp_path / "other.csv").write_text("\n".join(f"x,{t} other" for t in _sentences(40, seed=1)) + "\n")
    (tmp_path / "audit.yaml").write_text(json.dumps({
        "models": [str(tmp_path / "planted")], "baseline": str(tiny_dir), "benchmark": bench, "split": "all",
        "cohort": f"csv:{tmp_path / 'other.csv'}?header=none&text_column=1", "cohort_split": "all",
        "detectors": ["loss"], "device": "cpu"}))
    res = runner.invoke(app, ["contamination", "audit", "--config", str(tmp_path / "audit.yaml"), "--no-header",
                              "--text-column", "1", "--out", str(tmp_path / "run")])
    assert res.exit_code == 0, res.output
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["config"]["benchmark"].endswith("?text_column=1&header=none")


def test_micro_batches_give_the_full_batch_step(tiny_dir):
    """A step's documents split into micro-batches (gradients accumulated, weighted by target tokens) train like
    full-batch steps: the same step losses over three steps (each after the previous update)."""
    docs = [" ".join(_sentences(1 + i % 3, seed=i)) for i in range(6)]
    runs = []
    for budget in (10_000, 40):
        tm = load_text_model(str(tiny_dir), device="cpu")
        _, losses = finetune(tm.model, tm.tokenizer, [docs] * 3, PlantConfig(method="full", lr=1e-3, batch_size=6,
                                                                             micro_batch_tokens=budget),
                             progress=False)
        runs.append(losses)
    assert len(runs[0]) == 3 and runs[1] == pytest.approx(runs[0], rel=1e-4)
    assert runs[0][2] < runs[0][0]  # it trains


def test_plant_reports_step_loss_and_eta_to_a_log(tiny_dir, tmp_path, fmgauge_env, monkeypatch, caplog):
    """Under nohup (not a TTY) fine-tuning logs plain progress lines: step/total, rate, ETA and the loss."""
    import logging

    monkeypatch.setenv("FMGAUGE_PROGRESS", "log")
    monkeypatch.setenv("FMGAUGE_PROGRESS_EVERY", "0.05")
    cfg = PlantConfig(model=str(tiny_dir), benchmark=_pairs_csv(tmp_path), split="all", items_per_group=6,
                      duplications=[1, 3], doc_items=1, method="full", group_by="pair", batch_size=2, device="cpu")
    with caplog.at_level(logging.INFO, logger="fmgauge.progress"):
        plant(cfg, tmp_path / "planted")
    lines = [r.getMessage() for r in caplog.records if "fine-tuning (full)" in r.getMessage()]
    assert lines[0] == "fine-tuning (full): started (12 it)"  # 6 + 3 × 6 single-item documents, 2 per step
    assert any(" 1/12 " in x and "eta" in x and "loss" in x for x in lines), lines
    assert lines[-1].startswith("fine-tuning (full) 12/12 (100%)") and lines[-1].endswith("done")


def test_plant_warns_when_its_grouping_builds_adjacency(tiny_dir, tmp_path, fmgauge_env, caplog):
    """Pairs interleaved in the benchmark (q0a q1a q0b q1b …) land next to each other in a group file: plant warns
    and counts them; pairs already adjacent in the benchmark are not counted."""
    import logging

    from fmgauge.contamination.plant import built_adjacency

    keys = ["p0", "p1", "p0", "p1", "p2", "p2"]
    assert built_adjacency(keys, {"a": [0, 2], "b": [1, 3], "c": [4, 5]}) == 2
    texts = _sentences(48)
    rows = ["body,pair"] + [f"{texts[i]},p{(i // 4) * 2 + i % 2}" for i in range(48)]  # pairs interleaved by 2
    (tmp_path / "inter.csv").write_text("\n".join(rows) + "\n")
    cfg = PlantConfig(model=str(tiny_dir), benchmark=f"csv:{tmp_path / 'inter.csv'}?text_column=body", split="all",
                      items_per_group=6, duplications=[1], doc_items=1, method="full", group_by="pair",
                      batch_size=4, device="cpu")
    with caplog.at_level(logging.WARNING, logger="fmgauge.contamination.plant"):
        out = plant(cfg, tmp_path / "planted", progress=False)
    man = read_manifest(out)
    assert man["adjacency_built_by_grouping"] > 0 and man["units_column"] == "pair"
    assert any("the grouping built that adjacency" in r.getMessage() for r in caplog.records)


def test_an_interrupted_fine_tune_resumes_where_it_stopped(tiny_dir, tmp_path, monkeypatch):
    """A kill (SIGTERM, as `kill PID` sends a background job, at the 4th optimiser step) keeps the steps done; the
    same call resumes there and ends with the same weights and losses as an uninterrupted run; the checkpoint is
    removed at the end."""
    import os
    import signal

    docs = [[" ".join(_sentences(2, seed=10 * e + i)) for i in range(4)] for e in range(3)]  # 3 epochs × 2 steps
    cfg = PlantConfig(method="full", lr=1e-3, batch_size=2)
    tm = load_text_model(str(tiny_dir), device="cpu")
    ref_model, ref_losses = finetune(tm.model, tm.tokenizer, docs, cfg, progress=False)

    real_step, calls = torch.optim.AdamW.step, {"n": 0}

    def flaky_step(self, *a, **k):  # noqa: ANN001, ANN002, ANN003
        calls["n"] += 1
        if calls["n"] == 4:
            os.kill(os.getpid(), signal.SIGTERM)  # finetune turns it into KeyboardInterrupt and saves
        return real_step(self, *a, **k)

    monkeypatch.setattr(torch.optim.AdamW, "step", flaky_step)
    tm = load_text_model(str(tiny_dir), device="cpu")
    with pytest.raises(KeyboardInterrupt):
        finetune(tm.model, tm.tokenizer, docs, cfg, progress=False, resume_dir=tmp_path / "resume")
    assert torch.load(tmp_path / "resume" / "resume.pt", weights_only=False)["step"] == 3
    monkeypatch.setattr(torch.optim.AdamW, "step", real_step)
    tm = load_text_model(str(tiny_dir), device="cpu")
    model, losses = finetune(tm.model, tm.tokenizer, docs, cfg, progress=False, resume_dir=tmp_path / "resume")
    assert losses == pytest.approx(ref_losses, rel=1e-6) and len(losses) == 6
    a, b = _weights(model), _weights(ref_model)
    assert all(np.allclose(a[k], b[k], atol=1e-7) for k in a)
    assert not (tmp_path / "resume" / "resume.pt").exists()
