"""open_clip zero-shot labeler on a tiny randomly initialised model and 40 PneumoniaMNIST images; core.models."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fmgauge.core.data import Dataset, Split, load_dataset
from fmgauge.core.models import MODELS, resolve_device, resolve_dtype, resolve_model
from fmgauge.core.validation import FmgaugeError

pytest.importorskip("open_clip")

from fmgauge.weaklabels.labelers import open_clip as oc_labeler  # noqa: E402
from fmgauge.weaklabels.labelers import run_labeler  # noqa: E402
from fmgauge.weaklabels.labelers.open_clip import (  # noqa: E402
    OpenClipLabeler,
    encode_classes,
    label_open_clip,
    load_model,
)

TINY = {  # ~1.7M parameters, almost all in the 49408-token embedding
    "embed_dim": 16,
    "vision_cfg": {"image_size": 28, "layers": 1, "width": 32, "head_width": 16, "patch_size": 7},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}


@pytest.fixture(scope="module")
def small() -> Dataset:
    """40 train images of PneumoniaMNIST (1, 28, 28) uint8: the first 20 of each class."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FMGAUGE_DATA", "/work/shared/data")
        ds = load_dataset("pneumoniamnist")
    sp = ds.split("train")
    idx = np.sort(np.concatenate([np.flatnonzero(sp.y == k)[:20] for k in range(ds.n_classes)]))
    sub = Split(x=sp.x[idx], y=sp.y[idx], ids=sp.ids[idx])
    return Dataset(name="pneumoniamnist-40", class_names=ds.class_names, splits={"train": sub}, source=ds.source)


def tiny(**kw) -> OpenClipLabeler:
    return OpenClipLabeler(model_cfg=TINY, device="cpu", batch_size=16, **kw)


@pytest.fixture(scope="module")
def base_out(small):
    return label_open_clip(tiny(), small, "train")


def test_output_shapes_probs_and_argmax(small, base_out):
    n, k = len(small.split("train")), small.n_classes
    assert base_out.probs.shape == (n, k) and base_out.labels.shape == (n,)
    np.testing.assert_array_equal(base_out.ids, small.split("train").ids)
    np.testing.assert_allclose(base_out.probs.sum(1), 1.0, atol=1e-9)
    assert (base_out.probs >= 0).all()
    np.testing.assert_array_equal(base_out.labels, base_out.probs.argmax(1))


def test_deterministic(small, base_out):
    again = label_open_clip(tiny(), small, "train")
    np.testing.assert_array_equal(again.probs, base_out.probs)
    other_seed = label_open_clip(tiny(seed=1), small, "train")
    assert not np.allclose(other_seed.probs, base_out.probs)


@pytest.mark.parametrize("batch_size", [1, 7, 64])
def test_batch_size_does_not_change_result(small, base_out, batch_size):
    out = label_open_clip(tiny().model_copy(update={"batch_size": batch_size}), small, "train")
    np.testing.assert_allclose(out.probs, base_out.probs, atol=1e-5)


def test_repeated_template_equals_single(small):
    one = label_open_clip(tiny(templates=["an image of {c}."]), small, "train")
    two = label_open_clip(tiny(templates=["an image of {c}.", "an image of {c}."]), small, "train")
    np.testing.assert_allclose(two.probs, one.probs, atol=1e-6)


def test_prompt_ensembling_is_normalised_mean():
    model, _, tokenizer = load_model(tiny(), torch.device("cpu"), torch.float32)
    names, a, b = ["normal", "pneumonia"], "an image of {c}.", "a chest x-ray showing {c}."
    ea = encode_classes(model, tokenizer, names, [a], device=torch.device("cpu"))  # (K, D), unit rows
    eb = encode_classes(model, tokenizer, names, [b], device=torch.device("cpu"))
    eab = encode_classes(model, tokenizer, names, [a, b], device=torch.device("cpu"))
    assert eab.shape == (2, TINY["embed_dim"])
    torch.testing.assert_close(eab, torch.nn.functional.normalize(ea + eb, dim=-1), atol=1e-6, rtol=0)
    assert not torch.allclose(ea, eb, atol=1e-3)  # the templates differ, so the mean is a real average


def test_class_prompts_used_and_length_checked(small, base_out):
    renamed = label_open_clip(tiny(class_prompts=["healthy lungs", "lung infection"]), small, "train")
    assert not np.allclose(renamed.probs, base_out.probs)
    with pytest.raises(FmgaugeError, match="class_prompts has 3 entries but dataset .* has 2 classes"):
        label_open_clip(tiny(class_prompts=["a", "b", "c"]), small, "train")


@pytest.mark.parametrize("bad", [[], ["no placeholder"], ["{c} and {d}"]])
def test_bad_templates_refused(bad):
    with pytest.raises(ValueError, match="template"):
        OpenClipLabeler(templates=bad)


def test_context_length_longer_than_model_refused(small):
    with pytest.raises(FmgaugeError, match="context_length 32 exceeds the model's 16"):
        label_open_clip(tiny(context_length=32), small, "train")


def test_describe():
    assert OpenClipLabeler().describe() == "open_clip:biomedclip"
    assert tiny().describe() == "open_clip:random-init"


def test_run_labeler_caches(small, monkeypatch, tmp_path):
    monkeypatch.setenv("FMGAUGE_CACHE", str(tmp_path))
    calls = []
    real = oc_labeler.load_model
    monkeypatch.setattr(oc_labeler, "load_model", lambda *a, **k: calls.append(1) or real(*a, **k))
    cfg = {"kind": "open_clip", "model_cfg": TINY, "device": "cpu", "batch_size": 16}
    first = run_labeler(cfg, small, "train")
    second = run_labeler(cfg, small, "train")
    assert len(calls) == 1
    np.testing.assert_array_equal(first.probs, second.probs)
    np.testing.assert_array_equal(first.ids, second.ids)
    run_labeler({**cfg, "templates": ["an image of {c}."]}, small, "train")
    assert len(calls) == 2  # another config is another cache entry


def _isolate_hf_cache(monkeypatch, tmp_path):
    import huggingface_hub.constants as hfc

    monkeypatch.setattr(hfc, "HF_HUB_CACHE", str(tmp_path / "hf"))  # never find a real cached copy


def test_biomedclip_offline_clear_error(small, monkeypatch, tmp_path):
    _isolate_hf_cache(monkeypatch, tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(FmgaugeError, match="could not download .*BiomedCLIP.*appears offline.*file labeler"):
        label_open_clip(OpenClipLabeler(device="cpu"), small, "train")


def test_hub_failure_is_one_clear_error(small, monkeypatch, tmp_path):
    """Offline env vars unset but the hub refuses (as without network): open_clip's error is translated."""
    import huggingface_hub.constants as hfc

    _isolate_hf_cache(monkeypatch, tmp_path)
    for var in ("HF_HUB_OFFLINE", "FMGAUGE_OFFLINE", "CI"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(hfc, "HF_HUB_OFFLINE", True)  # fail fast instead of waiting on the network
    with pytest.raises(FmgaugeError, match="could not download .*siglip-b16.*appears offline") as e:
        label_open_clip(OpenClipLabeler(model="siglip-b16", device="cpu"), small, "train")
    assert isinstance(e.value.__cause__, Exception)


def test_architecture_without_weights_refused(small):
    with pytest.raises(FmgaugeError, match="architecture without weights"):
        label_open_clip(OpenClipLabeler(model="ViT-B-32", device="cpu"), small, "train")


# ----------------------------------------------------------------------------------------- core.models

def test_resolve_device_cpu_and_auto():
    assert resolve_device("cpu") == torch.device("cpu")
    if not torch.cuda.is_available() and not torch.backends.mps.is_available():
        assert resolve_device("auto") == torch.device("cpu")
        assert resolve_device() == torch.device("cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
@pytest.mark.parametrize("dev", ["cuda", "cuda:0"])
def test_resolve_device_cuda_refused(dev):
    with pytest.raises(FmgaugeError, match="CUDA is not available"):
        resolve_device(dev)


@pytest.mark.parametrize("dev", ["gpu", "cuda:x", "CPU", ""])
def test_resolve_device_bad_name(dev):
    with pytest.raises(FmgaugeError, match="device must be one of"):
        resolve_device(dev)


def test_resolve_dtype():
    assert resolve_dtype("float32") is torch.float32
    assert resolve_dtype("bfloat16") is torch.bfloat16
    assert resolve_dtype("auto", torch.device("cpu")) is torch.float32
    assert resolve_dtype("auto", torch.device("cuda")) is torch.float16
    with pytest.raises(FmgaugeError, match="dtype must be one of"):
        resolve_dtype("float8")


def test_resolve_model(tmp_path):
    assert {"biomedclip", "siglip-b16"} <= set(MODELS.names())
    spec = resolve_model("biomedclip")
    assert spec.kind == "open_clip" and spec.remote and spec.offline is None
    assert spec.hub_id == "hf-hub:microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224"
    assert resolve_model("hf-hub:org/repo").hub_id == "hf-hub:org/repo"
    assert resolve_model("org/repo").hub_id == "hf-hub:org/repo"
    assert resolve_model("ViT-B-32").hub_id == "ViT-B-32"
    (tmp_path / "open_clip_config.json").write_text("{}")
    assert resolve_model(str(tmp_path)).hub_id == f"local-dir:{tmp_path.resolve()}"
    with pytest.raises(FmgaugeError, match="Did you mean 'biomedclip'"):
        resolve_model("biomedclp")
