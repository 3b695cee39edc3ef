"""GGUF export: fmgauge's codes in ggml blocks, read back by gguf-py and transformers, on a tiny llama.

Tolerances. A GGUF block stores fmgauge's codes exactly; only the per-block floats are rounded to fp16, a relative
error of at most u = 2**-11 each (round to nearest; the scales here are normal fp16 numbers). So

- a weight read back from the file equals the fp16-rounded reference ``fp16(s) * (q - z)`` (Q4_0, Q8_0) or
  ``fp16(s) * q + fp16(-s z)`` (Q4_1) up to float32 arithmetic, checked to 1e-6;
- against fmgauge's own dequantized weight ``s (q - z)`` the error is at most ``u |s| (|q| + |z|)`` elementwise
  (``u |s (q - z)|`` for the symmetric types), checked exactly;
- logits of the loaded model equal those of the in-memory model holding the fp16-rounded weights up to float32
  reordering (atol 1e-4 on logits of size ~1), and differ from the in-memory fmgauge-quantized model by a first-order
  sum of the weight errors: each of the 14 quantized Linears (2 blocks x q/k/v/o/gate/up/down) perturbs its output
  by at most ~2u relative (Q4_1's bound is ``2u`` of the group's range), and ``lm_head`` and the norms are exact F32,
  so ``max |Δ logits| <= 14 * 2u * max |logits|`` (about 1.4 % of the logit range) with room to spare.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

gguf = pytest.importorskip("gguf")
transformers = pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")

from conftest import SHARED_DATA  # noqa: E402
from fmgauge.core.validation import FmgaugeError  # noqa: E402
from fmgauge.quantization.formats.gguf import (  # noqa: E402
    BLOCK_TYPES,
    TYPE_SIZE,
    block_type,
    expected_tensor_bytes,
    gguf_type,
    pack_blocks,
    rope_row_order,
    write_gguf,
)
from fmgauge.quantization.grid import rtn  # noqa: E402

U = 2.0**-11  # unit roundoff of fp16
GRIDS = {"Q4_0": (4, True), "Q4_1": (4, False), "Q5_0": (5, True), "Q5_1": (5, False), "Q8_0": (8, True)}


def _bpe_tokenizer(vocab_size: int = 300):
    """A byte-level BPE trained on ~6 KB of WikiText-2 (valid), wrapped as a transformers fast tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    text = (SHARED_DATA / "wikitext2_tokenized" / "valid.txt").read_text(encoding="utf-8")[:6000]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(text.splitlines(), trainer)
    return transformers.PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|endoftext|>",
                                                eos_token="<|endoftext|>"), text


@pytest.fixture(scope="module")
def tiny():
    """(model, tokenizer, token ids): a 2-layer llama (hidden 64, 4 heads, 2 kv heads) with the BPE above."""
    tokenizer, text = _bpe_tokenizer()
    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(
        hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
        vocab_size=len(tokenizer), max_position_embeddings=128, tie_word_embeddings=False, initializer_range=0.1,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    model = transformers.LlamaForCausalLM(cfg).eval()
    ids = torch.tensor([tokenizer(text[:400])["input_ids"][:48]])
    return model, tokenizer, ids


def _quantize(model, bits: int, sym: bool) -> dict:
    """RTN (g32) of every Linear under model.layers; the model keeps fmgauge's dequantized weights (in place)."""
    qweights = {}
    for name, mod in model.named_modules():
        if name.startswith("model.layers") and isinstance(mod, torch.nn.Linear):
            qweights[name] = rtn(mod.weight.data, bits, 32, sym=sym)
            mod.weight.data = qweights[name].dequantize()
    return qweights


def _stored(qw, kind: str) -> torch.Tensor:
    """What a ggml block of ``kind`` holds, computed independently of the exporter (fp16-rounded floats)."""
    s16 = qw.scale.double().half().double()[:, qw.g_idx]
    q, z = qw.codes.double(), qw.zero.double()[:, qw.g_idx]
    if kind in ("Q4_1", "Q5_1"):
        return (s16 * q + (-(qw.scale.double() * qw.zero.double())).half().double()[:, qw.g_idx]).float()
    return (s16 * (q - z)).float()


@pytest.fixture(scope="module", params=sorted(GRIDS))
def exported(request, tiny, tmp_path_factory):
    """Per block type: quantize a copy of the tiny model, write GGUF (every other tensor kept in F32, so only the
    block scales are rounded), load it back with transformers."""
    import copy

    model, tokenizer, ids = tiny
    kind = request.param
    qmodel = copy.deepcopy(model)
    qweights = _quantize(qmodel, *GRIDS[kind])
    out = tmp_path_factory.mktemp(kind)
    path = write_gguf(qmodel, tokenizer, qweights, out / "model.gguf", dtype="float32", embeddings="keep")
    loaded = transformers.AutoModelForCausalLM.from_pretrained(out, gguf_file="model.gguf", dtype=torch.float32)
    return kind, qmodel, qweights, path, loaded.eval(), ids


def test_gguf_type_accepts_the_five_block_grids():
    assert gguf_type(4, 32, True) == "Q4_0"
    assert gguf_type(4, 32, False) == "Q4_1"
    assert gguf_type(5, 32, True) == "Q5_0" and gguf_type(5, 32, False) == "Q5_1"
    assert gguf_type(8, 32, True) == "Q8_0"


@pytest.mark.parametrize(("bits", "group", "sym", "nearest"), [
    (3, 128, False, "--bits 4 --group-size 32 --no-sym"),
    (4, 128, True, "--bits 4 --group-size 32 --sym"),
    (8, 32, False, "--bits 8 --group-size 32 --sym"),
    (2, -1, True, "--bits 4 --group-size 32 --sym"),
])
def test_gguf_type_refuses_other_grids_naming_the_nearest(bits, group, sym, nearest):
    with pytest.raises(FmgaugeError) as err:
        gguf_type(bits, group, sym)
    msg = str(err.value)
    assert "format gguf" in msg and "nearest valid setting" in msg and f"setting: {nearest};" in msg
    assert "\n" not in msg and "Q4_1 = --bits 4 --group-size 32 --no-sym" in msg


@pytest.mark.parametrize("kind", sorted(GRIDS))
def test_pack_blocks_matches_gguf_py_dequantize(kind):
    """gguf-py's reference dequantizer reads our bytes as fmgauge's grid (fp16 floats): checks layout/nibbles."""
    torch.manual_seed(1)
    bits, sym = GRIDS[kind]
    qw = rtn(torch.randn(8, 128), bits, 32, sym=sym)
    raw = pack_blocks(kind, qw.codes, qw.scale, qw.zero)
    assert raw.shape == (8, 128 // 32 * TYPE_SIZE[kind]) and raw.dtype == np.uint8
    back = gguf.quants.dequantize(raw, gguf.GGMLQuantizationType[kind])
    np.testing.assert_allclose(back, _stored(qw, kind).numpy(), rtol=0, atol=1e-6)
    # a single code moved: only its own element moves (element j low nibble, j + 16 high nibble of byte j; for the
    # 5-bit types bit 4 in bit j of qh: 15 -> 16 flips it)
    codes = qw.codes.clone()
    codes[3, 37] = 16 if bits == 5 else (int(codes[3, 37]) + 1) % 2**bits
    codes[3, 37] = 15 if bits == 5 and int(qw.codes[3, 37]) == 16 else codes[3, 37]
    moved = gguf.quants.dequantize(pack_blocks(kind, codes, qw.scale, qw.zero), gguf.GGMLQuantizationType[kind])
    assert np.argwhere(moved != back).tolist() == [[3, 37]]


def test_rope_row_order_is_llama_cpp_permute():
    """llama.cpp: w.reshape(n_head, 2, rows // n_head // 2, ...).swapaxes(1, 2).reshape(w.shape)."""
    w = np.arange(32 * 3).reshape(32, 3)
    ref = w.reshape(4, 2, 4, 3).swapaxes(1, 2).reshape(w.shape)
    assert (w[rope_row_order(32, 4).numpy()] == ref).all()


def test_loaded_weights_are_fmgauge_codes_with_fp16_scales(exported):
    kind, qmodel, qweights, _, loaded, _ = exported
    params = dict(loaded.named_parameters())
    for name, qw in qweights.items():
        got = params[f"{name}.weight"].detach()
        torch.testing.assert_close(got, _stored(qw, kind), rtol=0, atol=1e-6)
        s, q, z = qw.scale[:, qw.g_idx], qw.codes.float(), qw.zero[:, qw.g_idx]
        bound = U * s.abs() * ((q - z).abs() if BLOCK_TYPES[kind][1] else q.abs() + z.abs())
        assert ((got - qw.dequantize()).abs() <= bound * (1 + 1e-5) + 1e-9).all(), name
    fp = dict(qmodel.named_parameters())
    for name in ("model.embed_tokens.weight", "lm_head.weight", "model.norm.weight",
                 "model.layers.1.post_attention_layernorm.weight"):
        assert torch.equal(params[name].detach(), fp[name].detach())


def test_loaded_logits_match_the_quantized_model(exported):
    kind, qmodel, qweights, _, loaded, ids = exported
    with torch.no_grad():
        got = loaded(ids).logits
        want = qmodel(ids).logits
        rounded = {f"{n}.weight": _stored(qw, kind) for n, qw in qweights.items()}
        orig = {n: qmodel.get_parameter(n).data.clone() for n in rounded}
        for n, w in rounded.items():
            qmodel.get_parameter(n).data = w
        want16 = qmodel(ids).logits
        for n, w in orig.items():
            qmodel.get_parameter(n).data = w
    assert want.abs().max() > 0.3  # logits of a useful size, so the tolerances mean something
    torch.testing.assert_close(got, want16, rtol=0, atol=1e-4)
    err = (got - want).abs().max().item()
    assert err <= 14 * 2 * U * want.abs().max().item(), err


def test_file_metadata_and_size(exported):
    kind, qmodel, qweights, path, _, _ = exported
    reader = gguf.GGUFReader(path)

    def field(key):
        f = reader.fields[key]
        return f.contents()

    cfg = qmodel.config
    assert field("general.architecture") == "llama"
    assert field("llama.block_count") == 2 and field("llama.embedding_length") == 64
    assert field("llama.feed_forward_length") == 96 and field("llama.context_length") == 128
    assert field("llama.attention.head_count") == 4 and field("llama.attention.head_count_kv") == 2
    assert field("llama.rope.dimension_count") == 16 and field("llama.vocab_size") == cfg.vocab_size
    assert field("llama.rope.freq_base") == pytest.approx(10000.0)
    assert field("llama.attention.layer_norm_rms_epsilon") == pytest.approx(cfg.rms_norm_eps)
    assert field("general.file_type") == int(gguf.LlamaFileType[f"MOSTLY_{kind}"])
    assert field("tokenizer.ggml.model") == "gpt2" and field("tokenizer.ggml.pre") == "gpt-2"
    assert len(field("tokenizer.ggml.tokens")) == cfg.vocab_size and len(field("tokenizer.ggml.merges")) > 10
    assert field("tokenizer.ggml.bos_token_id") == cfg.bos_token_id
    types = {t.name: t.tensor_type.name for t in reader.tensors}
    assert types["blk.0.attn_q.weight"] == kind and types["blk.1.ffn_down.weight"] == kind
    assert types["token_embd.weight"] == "F32" and types["output.weight"] == "F32"
    assert len(types) == 2 + 2 * 9 + 1  # embeddings, output, output_norm; 7 Linears + 2 norms per block
    expected = expected_tensor_bytes(qmodel, qweights, dtype="float32", embeddings="keep")
    n_q = sum(qw.codes.numel() for qw in qweights.values())
    n_other = sum(p.numel() for p in qmodel.parameters()) - n_q
    assert expected == n_q // 32 * TYPE_SIZE[kind] + 4 * n_other
    assert sum(int(t.n_bytes) for t in reader.tensors) == expected
    size = path.stat().st_size
    assert expected < size < 1.06 * expected  # header: the 300-token vocabulary, merges, 32-byte alignment


def test_tokenizer_round_trips_through_gguf(tiny, exported):
    _, tokenizer, _ = tiny
    path = exported[3]
    back = transformers.AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    text = "The European lobster , Homarus gammarus , is blue 123 ."
    assert back(text)["input_ids"] == tokenizer(text)["input_ids"]


def test_refused_layers(tiny, tmp_path):
    import copy

    model, tokenizer, _ = tiny
    qmodel = copy.deepcopy(model)
    qweights = _quantize(qmodel, 4, False)
    name = "model.layers.0.mlp.up_proj"
    good = qweights[name]

    def refused(qw):
        with pytest.raises(FmgaugeError, match="format gguf") as err:
            write_gguf(qmodel, tokenizer, {**qweights, name: qw}, tmp_path / "x.gguf")
        assert not (tmp_path / "x.gguf").exists()
        return str(err.value)

    scaled = copy.copy(good)
    scaled.input_scale = torch.ones(good.codes.shape[1])
    assert "AWQ" in refused(scaled)
    mixed = copy.copy(good)
    mixed.bits = good.bits.clone()
    mixed.bits[0] = 3
    assert "mixes" in refused(mixed)
    actorder = copy.copy(good)
    actorder.g_idx = good.g_idx[torch.randperm(good.g_idx.numel(), generator=torch.Generator().manual_seed(0))]
    assert "act-order" in refused(actorder)
    w = qmodel.get_parameter(f"{name}.weight").data
    assert "nearest valid setting" in refused(rtn(w, 4, 64, sym=False))
    assert "nearest valid setting" in refused(rtn(w, 3, 32, sym=False))


def test_refuses_other_architectures(tmp_path):
    tokenizer, _ = _bpe_tokenizer(280)
    cfg = transformers.Qwen2Config(hidden_size=64, intermediate_size=96, num_hidden_layers=1, num_attention_heads=4,
                                   num_key_value_heads=2, vocab_size=len(tokenizer))
    model = transformers.Qwen2ForCausalLM(cfg)
    with pytest.raises(FmgaugeError, match=r"architecture 'qwen2' is not supported; only llama"):
        write_gguf(model, tokenizer, {}, tmp_path / "q.gguf")


def test_llama_cpp_python_if_available(exported):
    """Optional: llama.cpp itself loads the file (llama-cpp-python is usually not installed here)."""
    llama_cpp = pytest.importorskip("llama_cpp")
    kind, qmodel, _, path, loaded, ids = exported
    llm = llama_cpp.Llama(model_path=str(path), logits_all=True, verbose=False, n_ctx=64)
    llm.eval(ids[0].tolist())
    got = torch.tensor(np.array(llm.scores[: ids.shape[1]]))
    with torch.no_grad():
        want = loaded(ids).logits[0]
    assert (got - want).abs().max() < 0.05 * want.abs().max()


def test_sentencepiece_style_tokenizer_is_written_as_llama(tmp_path):
    """A BPE with byte fallback and Metaspace (how sentencepiece llama tokenizers look in tokenizer.json)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    text = (SHARED_DATA / "wikitext2_tokenized" / "valid.txt").read_text(encoding="utf-8")[:3000]
    trained = Tokenizer(models.BPE(unk_token="<unk>"))
    trained.pre_tokenizer = pre_tokenizers.Metaspace()
    trained.train_from_iterator(text.splitlines(), trainers.BpeTrainer(
        vocab_size=200, special_tokens=["<unk>", "<s>", "</s>"], show_progress=False))
    spec = json.loads(trained.to_str())["model"]
    vocab = dict(spec["vocab"])
    for i in range(256):  # sentencepiece's byte pieces, as llama tokenizers carry them
        vocab.setdefault(f"<0x{i:02X}>", len(vocab))
    merges = [tuple(m) if not isinstance(m, str) else tuple(m.split(" ")) for m in spec["merges"]]
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token="<unk>", byte_fallback=True))
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    tok.add_special_tokens(["<unk>", "<s>", "</s>"])
    tokenizer = transformers.PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>",
                                                     unk_token="<unk>")
    cfg = transformers.LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                                   num_key_value_heads=2, vocab_size=len(tokenizer) + 4)  # 4 padding rows
    model = transformers.LlamaForCausalLM(cfg)
    path = write_gguf(model, tokenizer, {}, tmp_path / "spm.gguf")
    reader = gguf.GGUFReader(path)
    tokens = reader.fields["tokenizer.ggml.tokens"].contents()
    types = reader.fields["tokenizer.ggml.token_type"].contents()
    assert reader.fields["tokenizer.ggml.model"].contents() == "llama"
    assert reader.fields["general.file_type"].contents() == 1  # nothing quantized: F16 matrices (MOSTLY_F16)
    assert len(tokens) == cfg.vocab_size and tokens[-1] == f"[PAD{cfg.vocab_size - 1}]" and types[-1] == 5
    assert types[tokens.index("<0x41>")] == 6 and types[tokens.index("<unk>")] == 2
    scores = reader.fields["tokenizer.ggml.scores"].contents()
    assert len(scores) == cfg.vocab_size
    first = "".join(merges[0])  # made by the first merge: the highest score a merged token gets
    assert scores[tokens.index(first)] == 0 and scores[tokens.index("".join(merges[5]))] == -5
    back = transformers.AutoTokenizer.from_pretrained(tmp_path, gguf_file="spm.gguf")
    sample = "The lobster is blue"
    assert back.convert_ids_to_tokens(back(sample, add_special_tokens=False)["input_ids"]) == tokenizer.tokenize(sample)


@pytest.fixture(scope="module")
def shipped(tiny, tmp_path_factory):
    """The default file (as `quantize run --format gguf` writes it): 16-bit matrices, output head quantized, the
    model in memory updated to what the file holds; Q4_0 codes."""
    import copy

    model, tokenizer, ids = tiny
    qmodel = copy.deepcopy(model)
    qweights = _quantize(qmodel, 4, True)
    path = write_gguf(qmodel, tokenizer, qweights, tmp_path_factory.mktemp("ship") / "model.gguf", update_model=True)
    return qmodel, qweights, path, ids


def test_default_file_quantizes_the_head_like_llama_quantize(shipped):
    """Untied tiny llama (width 64: not a multiple of 256): output Q8_0, token embedding in the file's type (Q4_0),
    norms F32; tensor bytes = what the plan says; the BPW read back is tensor bytes × 8 / elements."""
    from fmgauge.quantization.formats.gguf import file_sizes, head_types

    qmodel, qweights, path, _ = shipped
    reader = gguf.GGUFReader(path)
    types = {t.name: t.tensor_type.name for t in reader.tensors}
    assert types["output.weight"] == "Q8_0" and types["token_embd.weight"] == "Q4_0"
    assert types["blk.0.attn_norm.weight"] == "F32" and types["blk.0.ffn_down.weight"] == "Q4_0"
    tb = sum(int(t.n_bytes) for t in reader.tensors)
    assert tb == expected_tensor_bytes(qmodel, qweights)
    sizes = file_sizes(path)
    n = sum(p.numel() for p in qmodel.parameters())
    assert sizes["tensor_bytes"] == tb and sizes["n_elements"] == n and sizes["bpw"] == pytest.approx(8 * tb / n)
    assert sizes["file_bytes"] == path.stat().st_size
    assert head_types("Q4_0", 576, True) == ("Q8_0", "Q8_0")  # smollm2: tied, width 576
    assert head_types("Q4_0", 2048, True) == ("Q6_K", "Q6_K") and head_types("Q8_0", 2048, False) == ("Q8_0", "Q8_0")
    assert head_types("Q4_1", 4096, False) == ("Q4_1", "Q6_K")


def test_default_file_loads_as_the_model_in_memory(shipped):
    """With update_model the in-memory model holds the file's weights: transformers' GGUF reader gives its logits
    up to float32 reordering."""
    qmodel, _, path, ids = shipped
    loaded = transformers.AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32)
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids).logits, qmodel(ids).logits, rtol=0, atol=1e-4)


def test_q6_k_blocks_read_back_by_gguf_py():
    """Q6_K (the output head of widths that are multiples of 256): gguf-py's dequantizer reads the 6-bit grid back
    within one step of each sub-block (half a step, or a full one where a weight of the sign opposite to the largest
    one clips at +31, as ggml's symmetric blocks do); a layout error would misplace weights by ~30 steps."""
    from fmgauge.quantization.formats.gguf import quantize_q6_k, quantize_rows

    x = np.random.default_rng(0).standard_normal((3, 512)).astype(np.float32)
    raw = quantize_q6_k(x)
    assert raw.shape == (3, 2 * 210)
    back = gguf.quants.dequantize(raw, gguf.GGMLQuantizationType.Q6_K)
    step = np.abs(x.reshape(-1, 16)).max(1, keepdims=True) / 32  # sub-block step (before the int8 scale rounding)
    err = np.abs(back.reshape(-1, 16) - x.reshape(-1, 16))
    assert (err <= step * (1 + 2 / 127) + 1e-6).all() and np.median(err / step) < 0.3
    _, held = quantize_rows("Q6_K", x)
    np.testing.assert_array_equal(held, back)


@pytest.mark.parametrize("bits,kind", [(3, "Q3_K"), (6, "Q6_K")])
def test_kquant_grid_round_trips_bit_exactly(bits, kind):
    """fmgauge's K-quant grid (16-column sub-blocks, scales d · sc per 256 columns) written as ggml's Q3_K / Q6_K
    blocks reads back through gguf-py's reference dequantizer bit for bit; one moved code moves one element."""
    from fmgauge.quantization.grid import rtn_kquant

    torch.manual_seed(2)
    qw = rtn_kquant(torch.randn(4, 512) * torch.rand(1, 512), bits)
    assert block_type("x", qw) == kind
    raw = pack_blocks(kind, qw.codes, qw.scale, qw.zero)
    assert raw.shape == (4, 2 * {"Q3_K": 110, "Q6_K": 210}[kind])
    back = gguf.quants.dequantize(raw, gguf.GGMLQuantizationType[kind])
    np.testing.assert_array_equal(back, qw.dequantize().numpy())
    codes = qw.codes.clone()
    codes[1, 300] = (int(codes[1, 300]) + 1) % 2**bits
    moved = gguf.quants.dequantize(pack_blocks(kind, codes, qw.scale, qw.zero), gguf.GGMLQuantizationType[kind])
    assert np.argwhere(moved != back).tolist() == [[1, 300]] or float(qw.scale[1, 300 // 16]) == 0


def test_kquant_refuses_scales_off_the_lattice():
    from fmgauge.quantization.grid import rtn

    qw = rtn(torch.randn(4, 256), 3, 16, sym=True)  # a plain 3-bit g16 grid: scales not d · sc
    with pytest.raises(FmgaugeError, match="not on Q3_K's sub-scale lattice"):
        block_type("x", qw)


def test_gptq_on_the_kquant_grid_ships_as_q3_k(tmp_path):
    """`quantize run --method gptq --bits 4 --k-bits 3` on a tiny llama whose MLP width is 256: down_proj (input
    256) gets GPTQ on the fixed Q3_K grid, the others Q4_0; GGUF holds exactly those codes and transformers' GGUF
    reader gives the in-memory model's logits."""
    from fmgauge.quantization.formats.load import load_artifact
    from fmgauge.quantization.pipeline import RunConfig, run_quantization

    tok, text = _bpe_tokenizer()
    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(hidden_size=64, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4,
                                   num_key_value_heads=2, vocab_size=len(tok), max_position_embeddings=128,
                                   tie_word_embeddings=True, initializer_range=0.1)
    transformers.LlamaForCausalLM(cfg).save_pretrained(tmp_path / "fp")
    tok.save_pretrained(tmp_path / "fp")
    (tmp_path / "calib.txt").write_text(text)
    run = RunConfig.model_validate({"model": str(tmp_path / "fp"), "quant": {"method": "gptq", "bits": 4, "k_bits": 3},
                                    "calib": {"text": str(tmp_path / "calib.txt"), "n_samples": 4, "seqlen": 32}})
    res = run_quantization(run, tmp_path / "g", progress=False)
    assert res.record["export"]["format"] == "gguf"
    assert res.record["export"]["gguf_types"] == {"F32": 5, "Q3_K": 2, "Q4_0": 12, "Q8_0": 1}  # tied head Q8_0
    down = res.qweights["model.layers.1.mlp.down_proj"]
    reader = gguf.GGUFReader(tmp_path / "g" / "model.gguf")
    t = {x.name: x for x in reader.tensors}["blk.1.ffn_down.weight"]
    back = gguf.quants.dequantize(np.array(t.data), gguf.GGMLQuantizationType.Q3_K)
    np.testing.assert_array_equal(back.reshape(down.codes.shape), down.dequantize().numpy())
    tm, _ = load_artifact(tmp_path / "g")
    ids = torch.tensor([tok(text[:300])["input_ids"][:40]])
    with torch.no_grad():
        torch.testing.assert_close(tm.model(ids).logits, res.model(ids).logits, rtol=0, atol=1e-4)
