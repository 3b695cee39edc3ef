"""Quantizer core: grids and RTN, GPTQ vs RTN, AWQ's search, sensitivity-guided variants, mixed precision, bad input."""

from __future__ import annotations

import pytest
import torch

from fmgauge.core.validation import FmgaugeError
from fmgauge.quantization.awq import output_error, search_scales
from fmgauge.quantization.calibration import capture, linear_layers
from fmgauge.quantization.gptq import Hessian, gptq_quantize
from fmgauge.quantization.grid import check_bits, fake_quantize, rtn
from fmgauge.quantization.methods import QuantConfig, quantize_weights
from fmgauge.quantization.mixed import allocate_bits
from fmgauge.quantization.text_data import calibration_sequences


def tiny_llama(seed: int = 0, hidden: int = 64, inter: int = 128, vocab: int = 128, layers: int = 2):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=vocab, hidden_size=hidden, intermediate_size=inter, num_hidden_layers=layers,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                      tie_word_embeddings=False)
    return LlamaForCausalLM(cfg).eval()


@pytest.fixture(scope="module")
def calibrated():
    """A tiny Llama, its calibration stats and the raw inputs X (n, d_in) of every Linear on the same data."""
    model = tiny_llama()
    seqs = torch.randint(0, 128, (6, 32), generator=torch.Generator().manual_seed(1))
    stats = capture(model, seqs, progress=False)
    xs: dict[str, list[torch.Tensor]] = {}
    layers = linear_layers(model)
    hooks = [m.register_forward_hook(lambda mod, i, o, n=n: xs.setdefault(n, []).append(i[0].reshape(-1, i[0].shape[-1])))
             for n, m in layers.items()]
    with torch.no_grad():
        model(seqs)
    for h in hooks:
        h.remove()
    X = {n: torch.cat(v) for n, v in xs.items()}
    return model, stats, X, layers


def out_err(dW: torch.Tensor, X: torch.Tensor) -> float:
    """‖ΔW Xᵀ‖²: the layer-output error on the calibration tokens."""
    return float((X @ dW.T).pow(2).sum())


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
@pytest.mark.parametrize("group_size", [32, -1])
@pytest.mark.parametrize("sym", [False, True])
def test_rtn_round_trip_is_on_grid(bits, group_size, sym):
    w = torch.randn(24, 96, generator=torch.Generator().manual_seed(bits)) * 0.05
    qw = rtn(w, bits, group_size, sym=sym)
    n_groups = 1 if group_size == -1 else 96 // group_size
    assert qw.scale.shape == (24, n_groups) and int(qw.bits.unique()) == bits
    assert qw.codes.min() >= 0 and qw.codes.max() <= 2**bits - 1
    assert len(qw.codes.unique()) <= 2**bits
    deq = qw.dequantize()
    code = deq / qw.scale[:, qw.g_idx] + qw.zero[:, qw.g_idx]  # back on the integer grid of its group
    assert torch.allclose(code, code.round(), atol=1e-3)
    assert ((deq - w).abs() <= qw.scale[:, qw.g_idx] / 2 + 1e-6).all()  # RTN error is at most half a step
    if bits == 8:
        assert (deq - w).abs().max() < 0.01


def test_ragged_groups_are_handled_or_refused():
    w = torch.randn(8, 80)
    qw = rtn(w, 4, 32)  # 80 = 32 + 32 + 16: a shorter last group
    assert qw.scale.shape == (8, 3) and int((qw.g_idx == 2).sum()) == 16
    with pytest.raises(FmgaugeError, match="does not divide the input width 80"):
        rtn(w, 4, 32, ragged=False)
    with pytest.raises(FmgaugeError, match="group_size"):
        rtn(w, 4, 0)


@pytest.mark.parametrize("bits", [1, 9, 3.5, True])
def test_bits_outside_range_refused(bits):
    with pytest.raises(FmgaugeError, match="bits must be an integer in 2..8"):
        check_bits(bits)
    with pytest.raises(ValueError, match="bits"):  # refused when the config is built, before any model loads
        QuantConfig(bits=bits)


def test_hessian_add_batch_is_the_running_average():
    x = torch.randn(50, 7)
    h = Hessian(7)
    for chunk in x.split([20, 5, 25]):
        h.add_batch(chunk)
    assert torch.allclose(h.H, 2 / 50 * x.T @ x, atol=1e-5)


@pytest.mark.parametrize("bits,group_size,actorder", [(3, 32, False), (3, -1, False), (4, 32, True), (2, 64, True)])
def test_gptq_output_error_below_rtn_on_every_layer(calibrated, bits, group_size, actorder):
    model, stats, X, layers = calibrated
    for name, mod in layers.items():
        W = mod.weight.data
        qg, _ = gptq_quantize(W, stats.layers[name].H, bits, group_size, actorder=actorder)
        qr = rtn(W, bits, group_size)
        e_g, e_r = out_err(qg.dequantize() - W, X[name]), out_err(qr.dequantize() - W, X[name])
        assert e_g < e_r, (name, e_g, e_r)
        code = qg.dequantize() / qg.scale[:, qg.g_idx] + qg.zero[:, qg.g_idx]  # GPTQ's output is on its grid
        assert torch.allclose(code, code.round(), atol=1e-3) and qg.codes.max() <= 2**bits - 1


def test_captured_hessian_matches_the_layer_inputs(calibrated):
    _, stats, X, _ = calibrated
    for name, st in stats.layers.items():
        x = X[name]
        assert torch.allclose(st.H, 2 / len(x) * x.T @ x, rtol=1e-4, atol=1e-5)
        assert torch.allclose(st.act_abs, x.abs().mean(0), atol=1e-5)
    groups = stats.input_groups()
    assert any(len(m) == 3 for m in groups.values()) and any(len(m) == 2 for m in groups.values())  # qkv, gate/up


@pytest.mark.parametrize("duo", [False, True])
def test_awq_scales_never_worse_than_alpha_zero(calibrated, duo):
    model, stats, X, layers = calibrated
    for leader, members in stats.input_groups().items():
        ws = [layers[n].weight.data for n in members]
        x = X[leader]
        res = search_scales(ws, stats.layers[leader].act_abs, [stats.layers[leader].H] * len(ws), 3, 32,
                            duo_scaling=duo)

        def block_mse(s, ws=ws, x=x):
            return sum(out_err(fake_quantize(w * s, 3, 32) / s - w, x) for w in ws)

        chosen = block_mse(res.scales)
        assert chosen <= block_mse(torch.ones(x.shape[1])) * (1 + 1e-5)  # α = 0 without duo scaling = RTN
        if not duo:  # the objective computed from H equals the MSE from the actual inputs (× 2/n)
            assert abs(res.identity_loss - 2 / len(x) * block_mse(torch.ones(x.shape[1]))) < 1e-4 * res.identity_loss
            assert abs(float(res.losses[0]) - res.identity_loss) < 1e-6 * res.identity_loss


def test_awq_scale_search_finds_a_planted_salient_channel():
    """One input channel 30× larger than the rest: AWQ must scale it up (α > 0) and beat RTN on the output."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(512, 64, generator=g)
    x[:, 5] *= 30
    w = torch.randn(32, 64, generator=g) * 0.02
    H = 2 / len(x) * x.T @ x
    res = search_scales([w], x.abs().mean(0), [H], 3, 64, duo_scaling=False)
    assert res.alpha is not None and res.alpha > 0 and int(res.scales.argmax()) == 5
    assert output_error(fake_quantize(w * res.scales, 3, 64) / res.scales - w, H) < 0.9 * res.identity_loss


@pytest.mark.parametrize("method", ["rtn", "gptq", "sens-gptq", "awq", "sens-awq", "mixed"])
def test_every_method_quantizes_every_layer_on_grid(calibrated, method):
    model, stats, X, layers = calibrated
    weights = {n: m.weight.data for n, m in layers.items()}
    cfg = QuantConfig(method=method, bits=3, group_size=32, mixed_fraction=0.25)
    qws, infos, summary = quantize_weights(weights, stats, cfg, progress=False)
    assert set(qws) == set(weights)
    for n, qw in qws.items():
        grid_w = qw.dequantize() * (qw.input_scale if qw.input_scale is not None else 1)
        code = grid_w / qw.scale[:, qw.g_idx] + qw.zero[:, qw.g_idx]
        assert torch.allclose(code, code.round(), atol=1e-3), n
        rel = (qw.dequantize() - weights[n]).norm() / weights[n].norm()
        assert rel < 0.6, (n, float(rel))
    if method == "mixed":
        assert 3.2 <= summary["avg_bits"] <= 3.25 + 1e-9
        assert any(set(qw.bits.tolist()) == {3, 4} for qw in qws.values())


def test_mixed_precision_upgrades_the_planted_sensitive_group():
    g = torch.Generator().manual_seed(0)
    weights = {"a": torch.randn(16, 128, generator=g), "b": torch.randn(16, 128, generator=g)}
    sens = {"a": torch.ones(128), "b": torch.ones(128)}
    sens["b"][64:96] = 1e4  # group 2 of layer b is far more loss-sensitive
    alloc = allocate_bits(weights, sens, 3, 32, high_bits=5, fraction=1 / 8)
    assert alloc.group_bits["b"].tolist() == [3, 3, 5, 3] and alloc.group_bits["a"].tolist() == [3, 3, 3, 3]
    assert alloc.avg_bits == pytest.approx(3 + 2 / 8)


def test_sens_gptq_uses_the_loss_weighted_hessian(calibrated):
    """With a Fisher-weighted H, sens-gptq's loss-weighted output error is below plain GPTQ's on most layers."""
    from fmgauge.quantization.methods import fisher_hessian

    model, stats, X, layers = calibrated
    wins = 0
    for name, mod in layers.items():
        W = mod.weight.data
        HF = fisher_hessian(stats.layers[name], 1.0)
        qs, _ = gptq_quantize(W, HF, 3, 32)
        qg, _ = gptq_quantize(W, stats.layers[name].H, 3, 32)
        wins += output_error(qs.dequantize() - W, HF) < output_error(qg.dequantize() - W, HF)
    assert wins >= len(layers) - 1


def test_model_without_linear_layers_refused():
    model = torch.nn.Sequential(torch.nn.Embedding(10, 4), torch.nn.LayerNorm(4))
    with pytest.raises(FmgaugeError, match="no torch.nn.Linear layers"):
        linear_layers(model)


def test_calibration_text_shorter_than_one_sequence_refused():
    with pytest.raises(FmgaugeError, match="shorter than one sequence"):
        calibration_sequences(torch.arange(100), 4, 512)
    seqs = calibration_sequences(torch.arange(1000), 4, 64, seed=3)
    assert seqs.shape == (4, 64) and ((seqs[:, 1:] - seqs[:, :-1]) == 1).all()


def test_grid_search_is_never_worse_than_min_max_and_follows_the_weights():
    """searched_grid includes the min-max grid among its candidates, so its weighted error per (row, group) is never
    larger; a column with a planted huge weight is fitted better than without the weights."""
    from fmgauge.quantization.grid import (
        dequantize_codes,
        grid_params,
        group_index,
        quantize_codes,
        searched_grid,
    )

    torch.manual_seed(0)
    w = torch.randn(16, 64) * 2
    w[:, 5] *= 4  # an outlier column: min-max wastes the range on it
    g = group_index(64, 32)
    weights = torch.ones(64)
    weights[7] = 1e4  # column 7 matters most

    def err(s, z, cw):
        q = quantize_codes(w, s, z, 3, g)
        e = (dequantize_codes(q, s, z, g) - w) ** 2 * cw
        return torch.zeros(16, 2).index_add_(1, g, e)

    s0, z0 = grid_params(w, 3, g, sym=True)
    s1, z1 = searched_grid(w, 3, g, sym=True, weights=weights)
    assert (err(s1, z1, weights) <= err(s0, z0, weights) + 1e-6).all()
    s2, z2 = searched_grid(w, 3, g, sym=True)
    col7 = lambda s, z: float(((dequantize_codes(quantize_codes(w, s, z, 3, g), s, z, g) - w)[:, 7] ** 2).sum())  # noqa: E731
    assert col7(s1, z1) <= col7(s2, z2)


def test_gptq_grid_search_lowers_the_output_error():
    """With H-weighted grids GPTQ's output error tr(ΔW H ΔWᵀ) drops on a layer with uneven input scales, and on the
    K-quant grid the searched scales stay on the d · sc lattice."""
    from fmgauge.quantization.grid import KQUANT_SUB, kquant_grid, snap_kquant_scales

    torch.manual_seed(0)
    W = torch.randn(32, 256)
    X = torch.randn(1024, 256) * (torch.rand(256) * 3 + 0.1)
    H = 2 * X.T @ X / 1024

    def err(qw):
        d = qw.dequantize() - W
        return float(torch.trace(d @ H @ d.T))

    plain, _ = gptq_quantize(W, H, 4, 32, sym=True)
    searched, _ = gptq_quantize(W, H, 4, 32, sym=True, search=True)
    assert err(searched) < err(plain)
    s, z, _ = kquant_grid(W, 3, weights=torch.diag(H), search=True)
    assert torch.equal(snap_kquant_scales(s, 31), s)
    k_plain, _ = gptq_quantize(W, H, 3, KQUANT_SUB, sym=True, grid=kquant_grid(W, 3)[:2])
    k_search, _ = gptq_quantize(W, H, 3, KQUANT_SUB, sym=True, grid=(s, z))
    assert err(k_search) < err(k_plain)
