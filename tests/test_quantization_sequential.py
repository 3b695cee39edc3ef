"""Sequential (block-by-block) quantization: block inputs reproduce the model, each block is calibrated on the
outputs of the quantized blocks before it, and the sensitivity weights are the full-precision gradient norms."""

from __future__ import annotations

import pytest
import torch

from fmgauge.core.validation import FmgaugeError
from fmgauge.quantization.calibration import capture, linear_layers
from fmgauge.quantization.gptq import gptq_quantize
from fmgauge.quantization.methods import QuantConfig
from fmgauge.quantization.sequential import block_inputs, decoder_blocks, quantize_sequential, run_block
from test_quantization_core import tiny_llama


def tiny_gemma3(seed: int = 0):
    """Two layers, one sliding-window (window 8 < sequence length) and one global: different masks per block."""
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    torch.manual_seed(seed)
    cfg = Gemma3TextConfig(vocab_size=128, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                           num_attention_heads=4, num_key_value_heads=2, head_dim=16, sliding_window=8,
                           layer_types=["sliding_attention", "full_attention"], max_position_embeddings=128)
    return Gemma3ForCausalLM(cfg).eval()


SEQS = torch.randint(0, 128, (6, 24), generator=torch.Generator().manual_seed(3))


@pytest.mark.parametrize("make", [tiny_llama, tiny_gemma3])
def test_block_inputs_reproduce_the_models_hidden_states(make):
    model = make()
    inputs = block_inputs(model, SEQS, batch_size=4)
    assert [tuple(h.shape[:2]) for h in inputs.hidden] == [(4, 24), (2, 24)]
    _, blocks = decoder_blocks(model)
    with torch.no_grad():
        ref = model(SEQS, output_hidden_states=True).hidden_states
        for h, ids in zip(inputs.hidden, inputs.seq_ids, strict=True):
            for i, block in enumerate(blocks):
                h = run_block(block, h, inputs.kwargs[tuple(h.shape[:2])][i])
                if i < len(blocks) - 1:  # hidden_states[i + 1] is block i's output; the last one is after the norm
                    torch.testing.assert_close(h, ref[i + 1][ids], atol=1e-5, rtol=1e-4)
    assert all(b.forward.__func__ is type(b).forward for b in blocks)  # the recorders are gone


def _recording_gptq(seen: dict):
    def quantize_group(weights, stats):  # noqa: ANN001
        out = {}
        for n, w in weights.items():
            seen[n] = {"H": stats[n].H.clone(), "HF": None if stats[n].HF is None else stats[n].HF.clone()}
            out[n] = (gptq_quantize(w, stats[n].H, 3, 32)[0], {})
        return out

    return quantize_group


def test_each_block_is_calibrated_on_the_quantized_blocks_before_it():
    model = tiny_llama(layers=3)
    fp = capture(model, SEQS, gradients=False, progress=False)
    seen: dict = {}
    res, _ = quantize_sequential(model, SEQS, _recording_gptq(seen), batch_size=4, progress=False)
    assert set(res) == set(linear_layers(model))
    after = capture(model, SEQS, gradients=False, progress=False)  # the final, quantized model
    for i in range(3):
        q = f"model.layers.{i}.self_attn.q_proj"  # reads the block input (through the layer norm)
        torch.testing.assert_close(seen[q]["H"], after.layers[q].H, atol=1e-4, rtol=1e-4)
        if i == 0:
            torch.testing.assert_close(seen[q]["H"], fp.layers[q].H, atol=1e-4, rtol=1e-4)
        else:  # the quantized prefix changed what block i sees
            assert float((seen[q]["H"] - fp.layers[q].H).abs().max()) > 1e-3
    for q in ("model.layers.1.self_attn.k_proj", "model.layers.1.self_attn.v_proj"):
        assert seen[q]["H"].data_ptr() == seen["model.layers.1.self_attn.q_proj"]["H"].data_ptr() or \
            torch.equal(seen[q]["H"], seen["model.layers.1.self_attn.q_proj"]["H"])  # one H per input group
    for n, (qw, _) in res.items():  # the model holds the quantized weights
        torch.testing.assert_close(dict(model.named_modules())[n].weight.data, qw.dequantize())


def test_weighted_pass_uses_the_full_precision_gradient_norms():
    model = tiny_llama()
    fp = capture(model, SEQS, gradients=True, progress=False)
    assert fp.layers["model.layers.0.mlp.down_proj"].gnorm.shape == tuple(SEQS.shape)
    seen: dict = {}
    quantize_sequential(model, SEQS, _recording_gptq(seen), fp_stats=fp, weighted=True, batch_size=4,
                        progress=False)
    for n in ("model.layers.0.self_attn.q_proj", "model.layers.0.mlp.down_proj"):  # block 0: FP inputs, same H_F
        torch.testing.assert_close(seen[n]["HF"], fp.layers[n].HF, atol=1e-4, rtol=1e-3)
    with pytest.raises(FmgaugeError, match="gradients"):
        quantize_sequential(tiny_llama(), SEQS, _recording_gptq({}), weighted=True, progress=False)
    with pytest.raises(FmgaugeError, match="same calibration sequences"):
        quantize_sequential(tiny_llama(), SEQS[:4], _recording_gptq({}), fp_stats=fp, weighted=True, progress=False)


def test_sequential_defaults_follow_the_reference_implementations():
    assert QuantConfig(method="gptq").sequential_ and QuantConfig(method="sens-gptq").sequential_
    assert not QuantConfig(method="awq").sequential_ and not QuantConfig(method="rtn", sequential=True).sequential_
    assert not QuantConfig(method="gptq", sequential=False).sequential_
    assert QuantConfig(method="sens-awq", sequential=True).weighted
