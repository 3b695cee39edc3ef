"""llama.cpp as engine and peer: importance-matrix files, and (where `make llama` has built llama.cpp) llama-quantize
accepting them, llama.cpp scoring fmgauge's windows as transformers does, and `compare --peers llama.cpp` end to end.

The tests that run llama.cpp skip without a build (CI has none: it takes ~20 min to compile); the file-format tests
always run.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fmgauge.core.validation import FmgaugeError
from fmgauge.quantization.formats.imatrix import entries_from_stats, gguf_names, read_imatrix, write_imatrix

gguf = pytest.importorskip("gguf")
transformers = pytest.importorskip("transformers")


def _llama_or_skip():
    from fmgauge.quantization.llamacpp import find_llama

    try:
        return find_llama()
    except FmgaugeError as e:
        pytest.skip(f"no llama.cpp build ({e})")


@pytest.mark.parametrize("suffix", ["gguf", "dat"])
def test_imatrix_reads_back_the_values_written(tmp_path, suffix):
    """Both layouts give back the per-column means (to float32), the GGUF one with llama.cpp's metadata keys."""
    rng = np.random.default_rng(0)
    means = {"blk.0.attn_q.weight": rng.random(64), "blk.1.ffn_down.weight": rng.random(96) * 1e-6,
             "blk.0.ffn_up.weight": np.zeros(64)}
    path = write_imatrix(tmp_path / f"m.{suffix}", means, n_tokens=1000, chunk_size=512, dataset="wiki")
    back, meta = read_imatrix(path)
    assert set(back) == set(means)
    for k, v in means.items():
        np.testing.assert_allclose(back[k], v, rtol=2e-7, atol=1e-30)
    if suffix == "gguf":
        assert meta["general.type"] == "imatrix" and meta["imatrix.chunk_count"] == 2
        assert meta["imatrix.chunk_size"] == 512 and meta["imatrix.datasets"] == ["wiki"]
        reader = gguf.GGUFReader(path)
        t = {x.name: x for x in reader.tensors}
        assert list(t["blk.0.attn_q.weight.in_sum2"].shape) == [64, 1] and "general.architecture" not in reader.fields
        np.testing.assert_allclose(np.array(t["blk.0.attn_q.weight.in_sum2"].data).reshape(-1),
                                   (means["blk.0.attn_q.weight"] * 1000).astype(np.float32))
        assert float(np.array(t["blk.0.attn_q.weight.counts"].data).reshape(-1)[0]) == 1000
    else:
        assert meta == {"layout": "legacy", "chunk_count": 2, "dataset": "wiki"}


def test_imatrix_refuses_bad_values(tmp_path):
    for bad in (np.array([1.0, -1.0]), np.array([np.nan, 1.0]), np.ones((2, 2))):
        with pytest.raises(FmgaugeError, match="finite non-negative vector"):
            write_imatrix(tmp_path / "x.gguf", {"blk.0.attn_q.weight": bad}, n_tokens=10, chunk_size=5)
    with pytest.raises(FmgaugeError, match="nothing to write"):
        write_imatrix(tmp_path / "x.gguf", {}, n_tokens=10, chunk_size=5)


def test_entries_from_a_capture_use_llama_cpp_names():
    """E[x²] and S_j of every captured Linear, keyed by the GGUF tensor name llama-quantize looks up."""
    from fmgauge.quantization.calibration import CalibStats, LayerStats

    names = ["model.layers.0.self_attn.q_proj", "model.layers.1.mlp.down_proj"]
    layers = {n: LayerStats(n, 4, 4, sq=torch.tensor([1.0, 2, 3, 4]), fisher=torch.tensor([4.0, 3, 2, 1]))
              for n in names}
    stats = CalibStats(layers, 10, 1, 10, True, False, 1.0)
    assert gguf_names(names, 2) == {names[0]: "blk.0.attn_q.weight", names[1]: "blk.1.ffn_down.weight"}
    act = entries_from_stats(stats, "act2", 2)
    sens = entries_from_stats(stats, "fisher", 2)
    assert act["blk.1.ffn_down.weight"].tolist() == [1, 2, 3, 4] and sens["blk.0.attn_q.weight"].tolist() == [4, 3, 2, 1]
    layers[names[0]].fisher = None
    with pytest.raises(FmgaugeError, match="gradients=True"):
        entries_from_stats(stats, "fisher", 2)


@pytest.fixture(scope="module")
def tiny_gguf(tmp_path_factory):
    """The tiny llama of test_quantization_gguf written as an F32 GGUF (llama-quantize's input), with its ids."""
    from fmgauge.quantization.formats.gguf import write_gguf
    from test_quantization_gguf import _bpe_tokenizer

    tok, text = _bpe_tokenizer()
    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
                                   num_key_value_heads=2, vocab_size=len(tok), max_position_embeddings=128,
                                   tie_word_embeddings=False, initializer_range=0.1, bos_token_id=tok.bos_token_id,
                                   eos_token_id=tok.eos_token_id)
    model = transformers.LlamaForCausalLM(cfg).eval()
    out = tmp_path_factory.mktemp("llama")
    path = write_gguf(model, tok, {}, out / "fp.gguf", dtype="float32", embeddings="keep")
    ids = torch.tensor(tok(text)["input_ids"][:400])
    return model, tok, path, ids


def test_llama_quantize_accepts_fmgauge_imatrix(tiny_gguf, tmp_path):
    """Where llama.cpp is built: llama-quantize loads fmgauge's imatrix (every Linear, by GGUF name) and writes a
    file; the importance weights change the result (a planted extreme weight on some columns)."""
    from fmgauge.quantization import llamacpp

    llama = _llama_or_skip()
    model, _, fp, _ = tiny_gguf
    names = gguf_names([n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear) and "layers" in n], 2)
    widths = {n: model.get_submodule(n).in_features for n in names}
    rng = np.random.default_rng(0)
    means = {g: rng.random(widths[n]) * np.where(np.arange(widths[n]) % 7 == 0, 1e4, 1.0) for n, g in names.items()}
    imat = write_imatrix(tmp_path / "imatrix.gguf", means, n_tokens=512, chunk_size=128)
    plain = llamacpp.quantize(llama, fp, tmp_path / "q.gguf", "Q4_0", threads=1)
    weighted = llamacpp.quantize(llama, fp, tmp_path / "qi.gguf", "Q4_0", imatrix=imat, threads=1)
    log = (tmp_path / "qi.quantize.log").read_text()
    assert f"loaded {len(means)} importance matrix entries" in log
    assert plain["seconds"] > 0 and weighted["cpu_seconds"] >= 0
    a = {t.name: np.array(t.data) for t in gguf.GGUFReader(tmp_path / "q.gguf").tensors}
    b = {t.name: np.array(t.data) for t in gguf.GGUFReader(tmp_path / "qi.gguf").tensors}
    assert any(not np.array_equal(a[g], b[g]) for g in means)


def test_llama_cpp_scores_fmgauge_windows_like_transformers(tiny_gguf, tmp_path):
    """Where llama.cpp is built: per-window NLLs of the F32 file through llama.cpp equal transformers' on the same
    ids and windows to float32 accumulation (1e-3 nats)."""
    from fmgauge.quantization import llamacpp
    from fmgauge.quantization.evaluate import EvalConfig, perplexity

    llama = _llama_or_skip()
    model, _, fp, ids = tiny_gguf
    cfg = EvalConfig(context=64, max_windows=4)
    want = perplexity(model, ids, cfg, progress=False)
    from fmgauge.quantization.text_data import eval_windows

    wins = eval_windows(ids, 64, 64)[:4]
    got = llamacpp.score(llama, fp, ids, wins, tmp_path, n_ctx=64, threads=1)
    np.testing.assert_allclose(got["window_nll"], want.window_nll, atol=1e-3)


def test_compare_with_llama_cpp_peer_end_to_end(tmp_path, tiny_gguf):
    """Where llama.cpp is built: `compare --peers llama.cpp` on a tiny BPE llama: the F32 reference, llama-quantize
    rows (Q4_K_M) without / with llama-imatrix's and fmgauge's S_j importance matrices (Q4_K falls back on width 64
    and the row says so), fmgauge's own Q4_0 GGUF, all scored by llama.cpp on the same windows, with paired tests."""
    import json

    from fmgauge.quantization.compare import CompareConfig, compare

    _llama_or_skip()
    model, tok, _, _ = tiny_gguf
    model.save_pretrained(tmp_path / "fp")
    tok.save_pretrained(tmp_path / "fp")
    from test_quantization_gguf import _bpe_tokenizer

    _, text = _bpe_tokenizer()
    (tmp_path / "text.txt").write_text(text)
    cfg = CompareConfig.model_validate({
        "model": str(tmp_path / "fp"), "methods": ["rtn"], "bits": [4], "group_sizes": [32],
        "calib": {"text": str(tmp_path / "text.txt"), "n_samples": 4, "seqlen": 64},
        "eval": {"text": str(tmp_path / "text.txt"), "context": 64, "max_windows": 6, "kl_windows": 0},
        "peers": ["llama.cpp"], "llama_types": ["Q4_K_M"], "llama_imatrix": ["none", "llama", "fisher"]})
    res = compare(cfg, tmp_path / "run", progress=False)
    data = json.loads((res.run_dir / "llama_cpp.json").read_text())
    rows = {(r["method"], r["imatrix"]): r for r in data["rows"]}
    assert ("fp (F32 GGUF)", "–") in rows and ("rtn (fmgauge GGUF)", "–") in rows
    for m in ("none", "llama-imatrix (E[x²])", "fmgauge S_j"):
        assert np.isfinite(rows[("lq Q4_K_M", m)]["ppl"])
    assert "Q4_K -> Q5_0" in rows[("lq Q4_K_M", "none")]["fallbacks"]  # width 64: no 256-blocks
    fm = rows[("rtn (fmgauge GGUF)", "–")]
    assert fm["on_disk_mb"] > 0 and 4 < fm["file_bpw"] < 9
    pairs = {(p["A"], p["B"]) for p in data["paired"]}
    assert ("lq Q4_K_M + fmgauge S_j", "lq Q4_K_M + llama-imatrix (E[x²])") in pairs
    assert any(a == "rtn (fmgauge GGUF)" for a, _ in pairs)
    assert not (res.run_dir / "llama.cpp" / "fp-f32.gguf").exists()  # the 4-byte reference is not kept
    assert "llama.cpp rows" in (res.run_dir / "report.md").read_text()
