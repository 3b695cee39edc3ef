"""Null calibration of every detector's p-value (issue 24): on scores no model has been exposed to, each test rejects
at α = 0.05 in 2–8 % of draws — the cohort tail test at 64 vs 64, 200 vs 200 and 64 vs 1,000 items, independent
or in correlated pairs; the exchangeability permutation p on skewed shard log-probs; top-K overlap — while the
tests they replace do not (the binomial tail test, relabelling single items of pairs, Student-t on few skewed
shards, the hypergeometric overlap). Then the audit of a never-exposed model on planted groups of a real corpus
gives no ``signal``, and the planted model is still flagged."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from scipy import stats as sps

from fmgauge.contamination.cohort import tail_enrichment, tail_pvalues, unit_codes
from fmgauge.contamination.exchangeability import blocks_of, permutation_p, scattered_units, sharded_t_test
from fmgauge.contamination.topk import hypergeom_overlap_p, overlap_pvalues

ALPHA, LO, HI = 0.05, 0.02, 0.08
SHARED_DATA = (Path(__file__).resolve().parents[1] / ".." / "shared" / "data").resolve()


def _draws(rng, nb: int, nc: int, draws: int, paired: bool) -> tuple[np.ndarray, np.ndarray]:
    """(draws, nb + nc) scores from one distribution; paired: items 2j, 2j+1 share a component (ρ = 0.7)."""
    n = nb + nc
    codes = np.arange(n) // 2 if paired else np.arange(n)
    z = rng.normal(size=(draws, n))
    if paired:
        z = np.sqrt(0.7) * rng.normal(size=(draws, n // 2))[:, codes] + np.sqrt(0.3) * z
    return z, codes


@pytest.mark.parametrize("nb,nc", [(64, 64), (200, 200), (64, 1000)])
def test_tail_test_holds_its_level_iid_and_in_pairs(nb, nc):
    rng = np.random.default_rng(nb + nc)
    mask = np.r_[np.ones(nb, bool), np.zeros(nc, bool)]
    for paired in (False, True):
        z, codes = _draws(rng, nb, nc, 400, paired)
        # each per-item detector (loss, zlib, Min-K%, Min-K%++) runs this same test on its own column; the columns
        # are correlated draws of one distribution here
        cols = {"loss": z} | ({"zlib": z + 0.3 * rng.normal(size=z.shape)} if nb == nc == 64 else {})
        for name, col in cols.items():
            rate = (tail_pvalues(col, mask, codes, n_perm=199)["p"] <= ALPHA).mean()
            assert LO <= rate <= HI, (nb, nc, paired, name, rate)
    if nb == nc == 64:  # where the old tests lose
        z, codes = _draws(rng, nb, nc, 400, True)
        items = (tail_pvalues(z, mask, None, n_perm=199)["p"] <= ALPHA).mean()
        assert items > HI  # relabelling single items of correlated pairs: the null is too narrow
        z, _ = _draws(rng, nb, nc, 400, False)
        tau = np.quantile(z[:, nb:], 0.95, axis=1)  # the old test: the cohort quantile taken as exact
        old = (sps.binom.sf((z[:, :nb] > tau[:, None]).sum(1) - 1, nb, 0.05) <= ALPHA).mean()
        assert old > 0.12


def test_tail_enrichment_known_answers_and_units():
    rng = np.random.default_rng(0)
    cohort = rng.normal(size=400)
    e = tail_enrichment(np.r_[rng.normal(size=80), rng.normal(5, 1, size=20)], cohort, q=0.95)
    assert e.k >= 20 and e.p == pytest.approx(1 / (e.permutations + 1)) and e.fraction_lo <= e.fraction <= e.fraction_hi
    assert e.threshold == np.sort(cohort)[379]  # the ⌈0.95 · 400⌉-th smallest cohort score
    assert e.expected == pytest.approx(21 / 401) and e.enrichment == pytest.approx(e.fraction / e.expected)
    assert tail_enrichment(rng.normal(size=100), cohort).p > 0.05
    # every benchmark item above every cohort item: the smallest p the relabellings can show
    top = tail_enrichment(np.arange(24) + 100.0, np.arange(24.0), n_perm=999)
    assert top.k == 24 and top.p == pytest.approx(1 / 1000)
    # units: pairs are relabelled whole and counted; a unit may not span benchmark and cohort
    pairs = [f"p{i // 2}" for i in range(24)]
    u = tail_enrichment(np.arange(24) + 100.0, np.arange(24.0), benchmark_units=pairs, cohort_units=pairs)
    assert (u.units_benchmark, u.units_cohort) == (12, 12)
    assert list(unit_codes(["a", "b", "a"], None, sizes=[3, 2])) == [0, 1, 0, 2, 3]


def test_exchangeability_permutation_p_holds_its_level_where_student_t_does_not():
    rng = np.random.default_rng(1)
    for S, m in ((16, 10), (8, 20)):
        x = -rng.lognormal(0.0, 1.0, size=(400, S, m + 1))  # skewed log-probs, canonical exchangeable with the rest
        rate = (permutation_p(x[..., 0], x[..., 1:], n_draws=499) <= ALPHA).mean()
        assert LO <= rate <= HI, (S, m, rate)
        t_rate = np.mean([sharded_t_test(v[:, 0] - v[:, 1:].mean(1))[1] <= ALPHA for v in x])
        assert t_rate > HI  # the Student-t reference over-rejects on skewed shards
    planted = x[:3].copy()
    planted[..., 0] = planted[..., 1:].max(-1) + 1.0  # canonical order above every permutation in every shard
    assert (permutation_p(planted[..., 0], planted[..., 1:], n_draws=999) <= 0.002).all()


def test_topk_overlap_permutation_p_holds_its_level():
    rng = np.random.default_rng(2)
    for n, k in ((64, 6), (200, 20)):
        a, b = rng.normal(size=(400, n)), rng.normal(size=(400, n))
        rate = (overlap_pvalues(a, b, k, n_perm=199) <= ALPHA).mean()
        assert LO <= rate <= HI, (n, k, rate)
    # the hypergeometric overlap p is conservative at small N: its few values put the exact level at 0.0086
    level = max(h for h in (hypergeom_overlap_p(o, 64, 6) for o in range(7)) if h <= ALPHA)
    assert level < LO and level == pytest.approx(0.008566, abs=1e-5)
    s = rng.normal(size=64)
    assert overlap_pvalues(s, s, 6, n_perm=999)[0] == pytest.approx(1 / 1000)


def test_blocks_are_runs_of_consecutive_equal_units():
    assert blocks_of(["a", "a", "b", "c", "c", "a"], 6) == [[0, 1], [2], [3, 4], [5]]
    assert blocks_of(None, 3) == [[0], [1], [2]]
    assert scattered_units(["a", "a", "b", "c", "c", "a"]) == 1


def test_exchangeability_permutes_whole_blocks(tiny_dir, fmgauge_env, monkeypatch):
    """Every scored order of a shard is a concatenation of its blocks, each block's items together and in order."""
    import fmgauge.contamination.exchangeability as exm
    from fmgauge.contamination.exchangeability import ExchangeabilityConfig, exchangeability_test
    from fmgauge.core.text_models import load_text_model

    seen = []
    real = exm.sequence_logprobs
    monkeypatch.setattr(exm, "sequence_logprobs", lambda model, seqs, **kw: (seen.append(seqs), real(model, seqs, **kw))[1])
    tm = load_text_model(str(tiny_dir), device="cpu")
    texts = [f"the item {i} of a pair" for i in range(12)]
    units = [f"u{i // 2}" for i in range(12)]
    res = exchangeability_test(tm, texts, ExchangeabilityConfig(shards=2, permutations=6, context=256, stride=128),
                               units=units, unit_name="pair", cache=False, progress=False)
    assert res.units == "blocks of pair" and res.n_blocks == 6 and res.shard_sizes == [6, 6]
    enc = tm.tokenizer([t + "\n" for t in texts], add_special_tokens=False)["input_ids"]
    for k, seqs in enumerate(seen):
        blocks = [tuple(enc[2 * b] + enc[2 * b + 1]) for b in range(3 * k, 3 * k + 3)]
        for row in seqs.tolist():
            parts, rest = [], tuple(row)
            while rest:
                nxt = next(b for b in blocks if rest[: len(b)] == b)
                parts.append(nxt)
                rest = rest[len(nxt):]
            assert sorted(parts) == sorted(blocks)
    assert 0 < res.p <= 1 and np.isfinite(res.p_t)


@pytest.fixture(scope="module")
def mrpc_plant(tmp_path_factory):
    """A tiny Llama trained on MRPC *train* sentences (never on dev), and a copy planted with MRPC dev sentences
    (grouped by pair, 32 items per group) at duplication 4 and 16; a second tiny LM as the external baseline."""
    from fmgauge.contamination.benchmarks import load_benchmark
    from fmgauge.contamination.plant import PlantConfig, finetune, plant
    from fmgauge.contamination.tiny import make_tiny_lm, make_tiny_tokenizer
    from fmgauge.core.text_models import load_text_model

    with pytest.MonkeyPatch.context() as mp:
        root = tmp_path_factory.mktemp("mrpc-plant")
        mp.setenv("FMGAUGE_DATA", str(SHARED_DATA))
        mp.setenv("FMGAUGE_CACHE", str(root / "cache"))
        train = load_benchmark("glue-mrpc-sentences", "train").texts[:800]
        dev = load_benchmark("glue-mrpc-sentences", "dev").texts
        tok = make_tiny_tokenizer([*train, *dev], vocab_size=400)
        paths = {}
        for name, seed, corpus in (("base", 0, train[:400]), ("baseline", 1, train[400:])):
            raw = make_tiny_lm(root / f"{name}-raw", [], context=256, hidden=64, seed=seed, tokenizer=tok)
            tm = load_text_model(str(raw), device="cpu")
            docs = [" ".join(corpus[a: a + 4]) for a in range(0, len(corpus), 4)]
            model, _ = finetune(tm.model, tm.tokenizer, [docs],
                                PlantConfig(method="full", lr=3e-3, batch_size=5, seed=seed), progress=False)
            model.save_pretrained(root / name)
            tm.tokenizer.save_pretrained(root / name)
            paths[name] = root / name
        cfg = PlantConfig(model=str(paths["base"]), benchmark="glue-mrpc-sentences", split="dev", items_per_group=32,
                          duplications=[4, 16], doc_items=1, method="full", lr=3e-3, batch_size=8, group_by="pair",
                          device="cpu")
        paths["planted"] = plant(cfg, root / "planted", progress=False)
        return paths


def _audit_verdicts(models, baseline, group, planted_dir, out):
    from fmgauge.contamination.audit import AuditConfig, run_audit

    groups = Path(planted_dir) / "groups"
    cfg = AuditConfig(models=[str(m) for m in models], baseline=str(baseline), benchmark=f"jsonl:{groups / group}.jsonl",
                      split="all", cohort=f"jsonl:{groups / 'cohort.jsonl'}", cohort_split="all", device="cpu",
                      detectors=["loss", "zlib", "mink", "minkpp", "exchangeability"],
                      exchangeability={"shards": 8, "permutations": 10, "context": 256, "stride": 128})
    return run_audit(cfg, out, progress=False, write_report=False)


def test_never_exposed_model_gets_no_signal_and_the_planted_one_does(mrpc_plant, fmgauge_env, tmp_path):
    from fmgauge.contamination.verdict import SIGNAL

    verdicts = []
    for group in ("dup4", "dup16"):
        res = _audit_verdicts([mrpc_plant["base"]], mrpc_plant["baseline"], group, mrpc_plant["planted"],
                              tmp_path / f"base-{group}")
        verdicts += res.verdicts().verdict.tolist()
        assert res.meta["units"]["benchmark"] == {"column": "group", "units": 16}  # pairs, from the group file
    assert len(verdicts) == 10 and SIGNAL not in verdicts, verdicts
    res = _audit_verdicts([mrpc_plant["planted"]], mrpc_plant["baseline"], "dup16", mrpc_plant["planted"],
                          tmp_path / "planted")
    v = res.verdicts().set_index("detector").verdict
    assert v["loss"] == SIGNAL and v["minkpp"] == SIGNAL, res.verdicts()
    man = json.loads((Path(mrpc_plant["planted"]) / "plant.json").read_text())
    assert man["units_column"] == "pair" and man["adjacency_built_by_grouping"] == 0  # MRPC pairs sit together
