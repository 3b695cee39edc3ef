"""Deployable checkpoints: `quantize run --format …` end to end on a tiny Llama, read back by the consuming library.

compressed-tensors stores fmgauge's grid exactly; unquantized tensors and scales are saved in 16 bits and the model
in memory is rounded the same way on export, so the reloaded logits (computed in fp32) equal the in-memory quantized
model's bit for bit; AWQ exports fold 1/s into the previous op (norms, up_proj / v_proj rows),
exact in real arithmetic, so there the tolerance is float32 rounding (1e-4 on logits of size ~1).
"""

from __future__ import annotations

import json

import pytest
import torch

from fmgauge.core.validation import FmgaugeError
from fmgauge.quantization.formats import check_format, check_model, resolve_format
from fmgauge.quantization.formats.load import artifact_format, load_artifact
from fmgauge.quantization.methods import QuantConfig
from fmgauge.quantization.pipeline import RunConfig, run_quantization

CALIB = {"n_samples": 4, "seqlen": 32}
IDS = torch.randint(0, 256, (2, 24), generator=torch.Generator().manual_seed(0))


@pytest.fixture(autouse=True)
def _env(fmgauge_env):
    return fmgauge_env


def _run(tiny_dir, out, fmt, **quant):
    cfg = RunConfig.model_validate({"model": str(tiny_dir), "quant": {"group_size": 32, **quant}, "calib": CALIB,
                                    "format": fmt})
    return run_quantization(cfg, out, progress=False)


def _logits(model):
    with torch.no_grad():
        return model(IDS).logits


@pytest.mark.parametrize("quant", [{"method": "rtn", "bits": 4, "sym": True}, {"method": "gptq", "bits": 3, "sym": False},
                                   {"method": "rtn", "bits": 2, "group_size": -1}, {"method": "gptq", "bits": 8}])
def test_compressed_tensors_reloads_exactly(tiny_dir, tmp_path, quant):
    res = _run(tiny_dir, tmp_path / "ct", "compressed-tensors", **quant)
    assert artifact_format(tmp_path / "ct") == "compressed-tensors"
    cfg = json.loads((tmp_path / "ct" / "config.json").read_text())["quantization_config"]
    w = cfg["config_groups"]["group_0"]["weights"]
    assert (cfg["quant_method"], cfg["format"], w["num_bits"]) == ("compressed-tensors", "pack-quantized", quant["bits"])
    assert cfg["ignore"] == ["lm_head"]
    tm, loader = load_artifact(tmp_path / "ct")
    assert "compressed-tensors" in loader
    assert torch.equal(_logits(tm.model), _logits(res.model))
    # every quantized Linear is stored packed, not as a float weight
    from safetensors import safe_open

    with safe_open(tmp_path / "ct" / "model.safetensors", "pt") as f:
        keys = set(f.keys())
    assert "model.layers.0.mlp.down_proj.weight_packed" in keys and "model.layers.0.mlp.down_proj.weight" not in keys
    assert ("model.layers.0.mlp.down_proj.weight_zero_point" in keys) == (not quant.get("sym", True))  # default sym
    with safe_open(tmp_path / "ct" / "model.safetensors", "pt") as f:  # unquantized tensors and scales in 16 bits
        assert f.get_tensor("model.embed_tokens.weight").dtype == torch.float16
        assert f.get_tensor("model.layers.0.mlp.down_proj.weight_scale").dtype == torch.float16


@pytest.mark.parametrize("sym", [True, False])
def test_per_layer_mixed_precision_ships_as_one_config_group_per_bit_width(tiny_dir, tmp_path, sym):
    """mixed by whole layers: 2-bit layers with the most sensitive quarter of the weights at 4 bits, stored as two
    compressed-tensors config groups targeting their layers by name; the reload equals the in-memory model."""
    res = _run(tiny_dir, tmp_path / "ct", None, method="mixed", mixed_base="rtn", bits=2, high_bits=4,
               mixed_fraction=0.25, mixed_unit="layer", sym=sym)
    bits = {n: int(q.bits[0]) for n, q in res.qweights.items()}
    assert all(len(q.bits.unique()) == 1 for q in res.qweights.values())  # one width per layer
    assert set(bits.values()) == {2, 4}
    up = sum(res.qweights[n].codes.numel() for n, b in bits.items() if b == 4)
    assert 0 < up <= 0.25 * sum(q.codes.numel() for q in res.qweights.values())  # the budget holds
    cfg = json.loads((tmp_path / "ct" / "config.json").read_text())["quantization_config"]
    groups = {g["weights"]["num_bits"]: set(g["targets"]) for g in cfg["config_groups"].values()}
    assert groups == {b: {n for n, x in bits.items() if x == b} for b in (2, 4)}
    tm, _ = load_artifact(tmp_path / "ct")
    assert torch.equal(_logits(tm.model), _logits(res.model))
    if sym:  # the user's path
        from transformers import AutoModelForCausalLM

        model = AutoModelForCausalLM.from_pretrained(tmp_path / "ct", dtype=torch.float32).eval()
        assert torch.equal(_logits(model), _logits(res.model))


def test_symmetric_checkpoint_loads_through_from_pretrained(tiny_dir, tmp_path):
    """The path a user takes: AutoModelForCausalLM.from_pretrained(dir), transformers' compressed-tensors quantizer."""
    from transformers import AutoModelForCausalLM

    res = _run(tiny_dir, tmp_path / "ct", "compressed-tensors", method="rtn", bits=4, sym=True)
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "ct", dtype=torch.float32).eval()
    assert torch.equal(_logits(model), _logits(res.model))


def test_default_run_deploys_through_plain_from_pretrained(tiny_dir, tmp_path):
    """`quantize run` with no grid options on the tiny model (widths 64 and 96): group size 32 (the largest of
    128/64/32 dividing every width, stated in the record), a symmetric grid, compressed-tensors in 16 bits, smaller
    than the fp16 model, and plain from_pretrained(dir) loads it (in its saved dtype, and in fp32 bit for bit)."""
    from transformers import AutoModelForCausalLM

    cfg = RunConfig.model_validate({"model": str(tiny_dir), "quant": {"method": "rtn"}, "calib": CALIB})
    res = run_quantization(cfg, tmp_path / "d", progress=False)
    r = res.record
    assert (r["config"]["group_size"], r["config"]["sym"], r["export"]["format"]) == (32, True, "compressed-tensors")
    assert r["defaults"]["group_size"] == 32 and "largest of 128/64/32" in r["defaults"]["group_size_rule"]
    n = sum(p.numel() for p in res.model.parameters())
    assert r["export"]["n_params"] == n and r["export"]["on_disk_mb"] * 1e6 < 2 * n  # below the 16-bit model
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "d").eval()
    assert model.dtype == torch.float16
    with torch.no_grad():
        assert torch.allclose(model(IDS).logits.float(), _logits(res.model), atol=0.05)
    model32 = AutoModelForCausalLM.from_pretrained(tmp_path / "d", dtype=torch.float32).eval()
    assert torch.equal(_logits(model32), _logits(res.model))


def test_packed_size_is_bits_per_weight_plus_scales(tiny_dir, tmp_path):
    """Size bookkeeping = written bytes: 3-bit codes + fp16 scale + packed 3-bit zero per group, every other
    parameter in 16 bits; the printed bits per weight is the file's tensor bytes × 8 / parameters."""
    res = _run(tiny_dir, tmp_path / "ct", "compressed-tensors", method="rtn", bits=3, sym=False)
    params = dict(res.model.named_parameters())
    q_bytes = sum(3 / 8 * q.codes.numel() + 2 * q.scale.numel() + 3 / 8 * q.scale.numel() + 16
                  for q in res.qweights.values())
    other = sum(2 * p.numel() for n, p in params.items() if n.rsplit(".", 1)[0] not in res.qweights)
    ex = res.record["export"]
    on_disk = ex["files"]["model.safetensors"]
    header = 8 + int.from_bytes((tmp_path / "ct" / "model.safetensors").read_bytes()[:8], "little")  # JSON index
    assert on_disk - header == ex["tensor_bytes"]
    assert on_disk - header == pytest.approx(q_bytes + other, rel=0.03)
    assert ex["on_disk_mb"] == pytest.approx(on_disk / 1e6)
    assert ex["bits_per_weight"] == pytest.approx(8 * (on_disk - header) / sum(p.numel() for p in params.values()))


@pytest.mark.parametrize("method", ["awq", "sens-awq"])
def test_awq_scales_fold_into_the_previous_op(tiny_dir, tmp_path, method):
    """The exported AWQ model (norms / up_proj rows absorb 1/s; o_proj under GQA has no scale, as in AutoAWQ)
    computes what fmgauge's unfolded model computes (up to the 16-bit storage of the rescaled norms: fp16 rounding,
    2**-11 relative, hence 3e-3 on logits of size ~0.3); the file reloads bit for bit as the model in memory."""
    ref = _run(tiny_dir, tmp_path / "fm", "fmgauge", method=method, bits=4, sym=True)
    assert any(q.input_scale is not None and not torch.all(q.input_scale == 1) for q in ref.qweights.values())
    assert all(ref.qweights[n].input_scale is None for n in ref.qweights if n.endswith("o_proj"))  # 4 heads, 2 kv
    res = _run(tiny_dir, tmp_path / "ct", "compressed-tensors", method=method, bits=4)
    assert res.record["export"]["awq_scales_folded"]
    tm, _ = load_artifact(tmp_path / "ct")
    assert torch.equal(_logits(tm.model), _logits(res.model))
    assert torch.allclose(_logits(tm.model), _logits(ref.model), atol=3e-3, rtol=0)
    norms = [n for n, _ in ref.model.named_modules() if n.endswith("layernorm")]
    assert any(not torch.allclose(tm.model.get_submodule(n).weight, ref.model.get_submodule(n).weight)
               for n in norms)  # the scales really moved into the norms


def test_fold_covers_o_proj_without_gqa(tmp_path):
    """With as many kv heads as heads, o_proj's scale folds into v_proj's rows (exact up to rounding)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from fmgauge.quantization.formats.fold import fold_input_scales
    from fmgauge.quantization.grid import rtn

    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                         num_attention_heads=2, num_key_value_heads=2)).eval()
    qweights = {}
    for n, m in model.named_modules():
        if isinstance(m, torch.nn.Linear) and n.startswith("model.layers"):
            s = torch.rand(m.in_features) + 0.5
            if n.endswith(("k_proj", "v_proj")):  # a group shares its scale
                s = qweights[n.replace(n.rsplit(".", 1)[1], "q_proj")].input_scale
            if n.endswith("gate_proj") is False and n.endswith("up_proj"):
                s = qweights[n.replace("up_proj", "gate_proj")].input_scale
            qw = rtn(m.weight.data * s, 4, 32)
            qw.input_scale = s
            qweights[n] = qw
            m.weight.data = qw.dequantize()
    ids = torch.randint(0, 64, (1, 12))
    want = _logits_of(model, ids)
    folded = fold_input_scales(model, qweights)
    assert all(q.input_scale is None for q in folded.values())
    for n, q in folded.items():
        assert torch.allclose(model.get_submodule(n).weight, q.dequantize())
    assert torch.allclose(_logits_of(model, ids), want, atol=1e-4, rtol=1e-4)


def _logits_of(model, ids):
    with torch.no_grad():
        return model(ids).logits


def test_rtn_runs_no_calibration_pass(tiny_dir, tmp_path, monkeypatch):
    import fmgauge.quantization.pipeline as pipeline

    def no_capture(*a, **k):
        raise AssertionError("RTN must not run a calibration pass")

    monkeypatch.setattr(pipeline, "capture", no_capture)
    res = _run(tiny_dir, tmp_path / "q", None, method="rtn", bits=4)
    assert "usage" not in res.record["calibration"] and res.record["export"]["format"] == "compressed-tensors"


def test_format_refusals_name_the_format_and_nearest_setting():
    cases = [("gguf", {"bits": 3, "group_size": 128}, "nearest valid setting: --bits 4 --group-size 32"),
             ("compressed-tensors", {"method": "mixed", "bits": 3}, "nearest valid setting: --mixed-unit layer"),
             ("gguf", {"method": "mixed", "bits": 4, "group_size": 32, "mixed_unit": "layer"},
              "use --format compressed-tensors (one config group per bit width)"),
             ("gguf", {"actorder": True, "bits": 4, "group_size": 32}, "nearest valid setting: --no-actorder"),
             ("compressed-tensors", {"actorder": True}, "--format gptq")]
    for fmt, quant, phrase in cases:
        with pytest.raises(FmgaugeError, match=f"format {fmt}") as e:
            check_format(fmt, QuantConfig(**quant))
        assert phrase in str(e.value), (fmt, quant, str(e.value))
    with pytest.raises(FmgaugeError, match="nearest valid setting: --group-size 32 or -1"):
        check_model("compressed-tensors", QuantConfig(group_size=64), {"a": 64, "b": 96}, "llama")
    with pytest.raises(FmgaugeError, match="architecture 'qwen2' is not supported"):
        check_model("gguf", QuantConfig(bits=4, group_size=32, sym=True), {"a": 64}, "qwen2")


def test_default_format_falls_back_with_the_reason():
    fmt, note = resolve_format(None, QuantConfig(group_size=64), {"a": 64, "b": 96}, "llama")
    assert fmt == "fmgauge" and "does not divide 96" in note
    fmt, note = resolve_format(None, QuantConfig(method="mixed"), {"a": 64}, "llama")
    assert fmt == "fmgauge" and "--mixed-unit layer" in note
    with pytest.raises(FmgaugeError, match="pass --format fmgauge explicitly"):  # quantize run: no silent fallback
        resolve_format(None, QuantConfig(group_size=64), {"a": 64, "b": 96}, "llama", fallback=False)
    for per_layer in ({"mixed_unit": "layer"}, {"group_size": -1}):  # one bit width per Linear: it ships
        assert resolve_format(None, QuantConfig(method="mixed", **per_layer), {"a": 256}, "llama")[0] == (
            "compressed-tensors")
    assert resolve_format(None, QuantConfig(), {"a": 256}, "llama") == ("compressed-tensors", None)


def test_explicit_format_that_does_not_fit_is_refused_before_calibration(tiny_dir, tmp_path, monkeypatch):
    import fmgauge.quantization.pipeline as pipeline

    monkeypatch.setattr(pipeline, "capture", lambda *a, **k: pytest.fail("calibrated before refusing"))
    with pytest.raises(FmgaugeError, match="group size 64 does not divide 96"):
        _run(tiny_dir, tmp_path / "q", "compressed-tensors", method="gptq", group_size=64, bits=4)


def test_consecutive_calibration_windows_are_the_start_of_the_stream():
    from fmgauge.quantization.text_data import calibration_sequences

    stream = torch.arange(1000)
    c = calibration_sequences(stream, 5, 32, sampling="consecutive")
    assert torch.equal(c, stream[:160].reshape(5, 32))
    r = calibration_sequences(stream, 5, 32, seed=0)
    assert not torch.equal(r, c) and r.shape == c.shape
    with pytest.raises(FmgaugeError, match="consecutive windows of 32 need 3200"):
        calibration_sequences(stream, 100, 32, sampling="consecutive")


@pytest.mark.parametrize("method,sym", [("rtn", True), ("awq", False)])
def test_gguf_run_and_eval_end_to_end(tmp_path, method, sym):
    """`quantize run --format gguf` on a tiny Llama with a byte-level BPE, read back by transformers' GGUF reader:
    the logits of the file that ships match the in-memory model's within fp16 scale rounding (GGUF stores fp16
    block scales: ≤ 2⁻¹¹ relative per weight, 14 quantized Linears; bound as in test_quantization_gguf)."""
    import transformers

    from test_quantization_gguf import _bpe_tokenizer

    tok, _ = _bpe_tokenizer()
    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
                                   num_key_value_heads=2, vocab_size=len(tok), max_position_embeddings=128,
                                   tie_word_embeddings=False, initializer_range=0.1)
    transformers.LlamaForCausalLM(cfg).save_pretrained(tmp_path / "fp")
    tok.save_pretrained(tmp_path / "fp")
    res = _run(tmp_path / "fp", tmp_path / "g", "gguf", method=method, bits=4, sym=sym)
    assert artifact_format(tmp_path / "g") == "gguf" and "model.gguf" in res.record["export"]["files"]
    tm, loader = load_artifact(tmp_path / "g")
    assert "GGUF" in loader
    ids = IDS % len(tok)
    with torch.no_grad():
        got, want = tm.model(ids).logits, res.model(ids).logits
    assert (got - want).abs().max() <= 14 * 2 * 2**-11 * want.abs().max()


def test_gptq_act_order_defaults_to_the_gptq_format_and_reloads(tiny_dir, tmp_path):
    """act-order's permuted g_idx only fits GPTQ (desc_act); without gptqmodel here, eval reads the directory with
    fmgauge's independent unpacker (and says so). GPTQ stores fp16 scales: the same fp16 bound as GGUF."""
    res = _run(tiny_dir, tmp_path / "g", None, method="gptq", bits=4, actorder=True)
    assert res.record["export"]["format"] == "gptq" and artifact_format(tmp_path / "g") == "gptq"
    qc = json.loads((tmp_path / "g" / "config.json").read_text())["quantization_config"]
    assert qc["quant_method"] == "gptq" and qc["desc_act"] and qc["bits"] == 4
    tm, loader = load_artifact(tmp_path / "g")
    assert "GPTQ" in loader
    got, want = _logits(tm.model), _logits(res.model)
    assert (got - want).abs().max() <= 14 * 2 * 2**-11 * want.abs().max()


@pytest.mark.parametrize(("fmt", "quant"), [("gptq", {"method": "gptq", "bits": 4, "actorder": True}),
                                            ("fmgauge", {"method": "rtn", "bits": 3})])
def test_size_bookkeeping_is_the_written_bytes(tiny_dir, tmp_path, fmt, quant):
    """The gptq and fmgauge formats (compressed-tensors and GGUF: the tests above and test_quantization_gguf): the
    files the record lists are every weight file in the directory with its size on disk, MB is their sum, and the
    tensor bytes are the files minus their headers (8 bytes + the JSON index), so bits per weight counts what ships."""
    res = _run(tiny_dir, tmp_path / fmt, fmt, **quant)
    ex = res.record["export"]
    out = tmp_path / fmt
    shipped = {p.name: p.stat().st_size for p in out.iterdir() if p.suffix in (".safetensors", ".gguf", ".bin", ".pt")}
    assert ex["files"] == shipped and shipped
    assert ex["on_disk_mb"] == pytest.approx(sum(shipped.values()) / 1e6)
    payload = 0
    for name in shipped:
        raw = (out / name).read_bytes()
        payload += len(raw) - 8 - int.from_bytes(raw[:8], "little")
    assert ex["tensor_bytes"] == payload
    n = sum(p.numel() for p in res.model.parameters())
    assert ex["bits_per_weight"] == pytest.approx(8 * payload / n)
