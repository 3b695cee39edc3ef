"""GPTQ export: write_gptq -> read_gptq gives back fmgauge's grid exactly, the tensors follow the GPTQ layout
(checked with an independent unpacker written from the spec), the file is as small as the bits say, bad grids are
refused in one line, and (where gptqmodel + optimum are installed) transformers loads the directory."""

from __future__ import annotations

import json
import struct

import pytest
import torch

from fmgauge.core.validation import FmgaugeError
from fmgauge.quantization.formats.gptq import check_gptq, load_gptq_float, read_gptq, write_gptq
from fmgauge.quantization.grid import QuantizedWeight, rtn


def tiny_llama():
    """A tiny random Llama (hidden 64, intermediate 96, 2 layers, 4 heads, 2 kv heads, vocab 256) + tokenizer."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    vocab = {"[UNK]": 0, **{f"w{i}": i + 1 for i in range(255)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", eos_token="[UNK]")
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=256, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                      tie_word_embeddings=False)
    return LlamaForCausalLM(cfg).eval(), fast


@pytest.fixture(scope="module")
def tiny():
    return tiny_llama()


def block_linears(model):
    return {n: m for n, m in model.named_modules() if isinstance(m, torch.nn.Linear) and n.startswith("model.layers.")}


def quantize_all(model, bits, group_size, sym, *, act_order=False):
    """RTN grids of every Linear under model.layers; act_order: quantize columns in a random order (GPTQ's
    desc_act), so g_idx[j] = (position of column j in that order) // group_size."""
    out = {}
    gen = torch.Generator().manual_seed(1)
    for name, m in block_linears(model).items():
        w = m.weight.data
        if not act_order:
            out[name] = rtn(w, bits, group_size, sym=sym)
            continue
        perm = torch.randperm(w.shape[1], generator=gen)
        q = rtn(w[:, perm], bits, group_size, sym=sym)  # contiguous groups in permuted order
        codes, g_idx = torch.empty_like(q.codes), torch.empty_like(q.g_idx)
        codes[:, perm], g_idx[perm] = q.codes, q.g_idx
        out[name] = QuantizedWeight(codes, q.scale, q.zero, g_idx, q.bits, sym)
        assert torch.allclose(out[name].dequantize()[:, perm], q.dequantize())
    return out


# ---- an independent reference unpacker, straight from the spec ------------------------------------------------


def ref_unpack_words(words: torch.Tensor, bits: int) -> torch.Tensor:
    """Unpack int32 words along dim 0: (W, n) -> (W * 32 / bits, n) values."""
    w = words.long() & 0xFFFFFFFF
    if bits in (2, 4, 8):  # value j of word k holds bits [bits*j, bits*(j+1))
        per = 32 // bits
        vals = [(w >> (bits * j)) & (2**bits - 1) for j in range(per)]
        return torch.stack(vals, dim=1).reshape(-1, w.shape[1])
    assert bits == 3  # 32 values in 3 words: 10 | 2+1 split | 10 | 1+2 split | 10
    a, b, c = w[0::3], w[1::3], w[2::3]
    vals = [(a >> (3 * i)) & 7 for i in range(10)]
    vals.append(((a >> 30) & 3) | ((b & 1) << 2))
    vals += [(b >> (3 * i + 1)) & 7 for i in range(10)]
    vals.append(((b >> 31) & 1) | ((c & 3) << 1))
    vals += [(c >> (3 * i + 2)) & 7 for i in range(10)]
    return torch.stack(vals, dim=1).reshape(-1, w.shape[1])


def safetensors_header(path):
    raw = path.read_bytes()
    n = struct.unpack("<Q", raw[:8])[0]
    return json.loads(raw[8:8 + n]), len(raw) - 8 - n  # header, bytes of tensor data


CASES = [(b, g, s) for b in (2, 3, 4, 8) for g in (32, -1) for s in (True, False)]


@pytest.mark.parametrize(("bits", "group_size", "sym"), CASES)
def test_roundtrip_layout_and_size(tiny, tmp_path, bits, group_size, sym):
    from safetensors.torch import load_file

    model, tok = tiny
    qweights = quantize_all(model, bits, group_size, sym)
    out = write_gptq(model, tok, qweights, tmp_path / "gptq")

    # read back: fmgauge's grid exactly (scales to fp16)
    back = read_gptq(out)
    assert sorted(back) == sorted(qweights)
    for name, qw in qweights.items():
        r = back[name]
        assert torch.equal(r.codes, qw.codes) and r.codes.dtype == torch.uint8
        assert torch.equal(r.zero, qw.zero) and torch.equal(r.g_idx, qw.g_idx)
        assert torch.equal(r.scale, qw.scale.half().float()) and torch.equal(r.bits, qw.bits) and r.sym == sym

    # config: what transformers' GPTQConfig / optimum read
    qc = json.loads((out / "config.json").read_text())["quantization_config"]
    fmt = "gptq" if sym else "gptq_v2"
    assert {k: qc[k] for k in ("quant_method", "bits", "group_size", "desc_act", "sym", "checkpoint_format")} == {
        "quant_method": "gptq", "bits": bits, "group_size": group_size, "desc_act": False, "sym": sym,
        "checkpoint_format": fmt}
    assert qc["block_name_to_quantize"] == "model.layers" and "modules_in_block_to_quantize" not in qc
    assert json.loads((out / "quantize_config.json").read_text()) == qc
    assert (out / "tokenizer.json").exists()

    # tensors: dtypes, shapes, and the spec's bit layout checked by the reference unpacker
    t = load_file(out / "model.safetensors")
    for name, qw in qweights.items():
        d_out, d_in = qw.codes.shape
        n_groups = 1 if group_size == -1 else d_in // group_size
        assert f"{name}.weight" not in t
        qweight, qzeros, scales, g_idx = (t[f"{name}.{s}"] for s in ("qweight", "qzeros", "scales", "g_idx"))
        assert qweight.dtype == qzeros.dtype == g_idx.dtype == torch.int32 and scales.dtype == torch.float16
        assert qweight.shape == (d_in * bits // 32, d_out) and qzeros.shape == (n_groups, d_out * bits // 32)
        assert scales.shape == (n_groups, d_out) and g_idx.shape == (d_in,)
        assert torch.equal(ref_unpack_words(qweight, bits), qw.codes.t().long())  # packed along the input dim
        zeros = ref_unpack_words(qzeros.t().contiguous(), bits).t()  # packed along the output dim
        true_zero = qw.zero.t().long()
        assert torch.equal(zeros, (true_zero - 1) & (2**bits - 1) if sym else true_zero)  # v1 stores zero - 1
        assert torch.equal(g_idx.long(), qw.g_idx) and torch.equal(scales, qw.scale.t().half())
    assert {k for k in t if not k.startswith("model.layers.") or "layernorm" in k} == {
        k for k in model.state_dict() if not k.startswith("model.layers.") or "layernorm" in k}

    # size: packed codes at bits/8 bytes, fp16 scales, bits-bit zeros, int32 g_idx, the rest as saved (fp32)
    header, size = safetensors_header(out / "model.safetensors")  # (the JSON header, ~100 B a tensor, apart)
    q_bytes = sum(bits * qw.codes.numel() / 8 + 2 * qw.scale.numel() + bits * qw.zero.numel() / 8
                  + 4 * qw.g_idx.numel() for qw in qweights.values())
    other = sum(p.numel() * p.element_size() for n, p in model.state_dict().items()
                if n.removesuffix(".weight") not in qweights)
    assert size == pytest.approx(q_bytes + other, rel=0.03)
    q_only = sum(b - a for k, v in header.items() if k != "__metadata__" and k.rsplit(".", 1)[0] in qweights
                 for a, b in [v["data_offsets"]])
    assert q_only == pytest.approx(q_bytes, rel=1e-9)


def test_act_order_g_idx_roundtrip_and_float_model(tiny, tmp_path):
    model, tok = tiny
    qweights = quantize_all(model, 4, 32, False, act_order=True)
    assert not torch.equal(next(iter(qweights.values())).g_idx, torch.arange(64) // 32)
    out = write_gptq(model, tok, qweights, tmp_path / "act")
    qc = json.loads((out / "config.json").read_text())["quantization_config"]
    assert qc["desc_act"] is True and qc["group_size"] == 32
    back = read_gptq(out)
    for name, qw in qweights.items():
        assert torch.equal(back[name].codes, qw.codes) and torch.equal(back[name].g_idx, qw.g_idx)
        assert torch.equal(back[name].zero, qw.zero)

    # the plain float model from the directory = fmgauge's dequantized model (scales rounded to fp16)
    fm = load_gptq_float(out)
    ids = torch.randint(0, 256, (2, 12), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        got = fm(ids).logits
        for name, m in block_linears(model).items():
            w0 = m.weight.data.clone()
            m.weight.data = back[name].dequantize()
            back[name].w0 = w0
        want = model(ids).logits
        for name, m in block_linears(model).items():
            m.weight.data = back[name].w0
    assert torch.allclose(got, want, atol=1e-5)


def test_subset_of_layers_names_modules_in_block(tiny, tmp_path):
    model, tok = tiny
    qweights = {n: q for n, q in quantize_all(model, 4, 32, True).items() if "mlp" in n}
    out = write_gptq(model, None, qweights, tmp_path / "sub")
    qc = json.loads((out / "config.json").read_text())["quantization_config"]
    assert qc["modules_in_block_to_quantize"] == [sorted(qweights)]
    from safetensors.torch import load_file

    t = load_file(out / "model.safetensors")
    assert "model.layers.0.self_attn.q_proj.weight" in t and "model.layers.0.mlp.up_proj.qweight" in t


def _one(model, **kw):
    w = block_linears(model)["model.layers.0.mlp.up_proj"].weight.data
    return {"model.layers.0.mlp.up_proj": rtn(w, **kw)}


@pytest.mark.parametrize(("args", "nearest"), [((5, 32, True), "bits=4"), ((6, 32, False), "bits=8"),
                                               ((1, 32, True), "bits=2"), ((4, 48, True), "group_size=64"),
                                               ((4, 0, True), "group_size=-1"), ((4, 32, 1), "sym=")])
def test_check_gptq_refuses_with_nearest_setting(args, nearest):
    with pytest.raises(FmgaugeError, match="format gptq") as e:
        check_gptq(*args)
    assert "nearest valid setting" in str(e.value) and nearest in str(e.value) and "\n" not in str(e.value)
    check_gptq(3, -1, False)


def test_refused_grids(tiny, tmp_path):
    model, tok = tiny
    w = block_linears(model)["model.layers.0.mlp.up_proj"].weight.data
    bad = {
        "5-bit": _one(model, bits=5, group_size=32),
        "input_scale": {k: QuantizedWeight(q.codes, q.scale, q.zero, q.g_idx, q.bits, q.sym, torch.ones(64))
                        for k, q in _one(model, bits=4, group_size=32).items()},
        "mixed bits": {"model.layers.0.mlp.up_proj": rtn(w, 4, 32, group_bits=torch.tensor([2, 4]))},
        "mixed group sizes": {**_one(model, bits=4, group_size=32),
                                  "model.layers.0.mlp.gate_proj": rtn(
                                      block_linears(model)["model.layers.0.mlp.gate_proj"].weight.data, 4, 16)},
        "lm_head": {"lm_head": rtn(model.lm_head.weight.data, 4, 32)},
        "v1 with zero 0": {"model.layers.0.mlp.up_proj": QuantizedWeight(
            *(lambda q: (q.codes, q.scale, torch.zeros_like(q.zero), q.g_idx, q.bits))(rtn(w, 4, 32)))},
    }
    for what, qw in bad.items():
        kw = {"checkpoint_format": "gptq"} if what.startswith("v1") else {}
        with pytest.raises(FmgaugeError, match="format gptq") as e:
            write_gptq(model, tok, qw, tmp_path / what.replace(" ", "_"), **kw)
        assert "nearest valid setting" in str(e.value), what
        assert not (tmp_path / what.replace(" ", "_")).exists(), what  # refused before anything is written


def test_transformers_loads_the_directory(tiny, tmp_path):
    """Where a GPTQ consumer is installed (gptqmodel + optimum), transformers' GPTQ integration loads the export
    on CPU and gives fmgauge's logits (to fp16 kernel precision)."""
    pytest.importorskip("gptqmodel")
    pytest.importorskip("optimum")
    from transformers import AutoModelForCausalLM

    model, tok = tiny
    ids = torch.randint(0, 256, (1, 16), generator=torch.Generator().manual_seed(0))
    for sym in (True, False):
        out = write_gptq(model, tok, quantize_all(model, 4, 32, sym), tmp_path / f"hf{sym}")
        hf = AutoModelForCausalLM.from_pretrained(out, device_map="cpu")
        with torch.no_grad():
            got, want = hf(ids).logits.float(), load_gptq_float(out)(ids).logits
        assert (got - want).abs().max() < 2e-3 * want.abs().max(), sym  # fp16 kernels: seen <= 4e-4
