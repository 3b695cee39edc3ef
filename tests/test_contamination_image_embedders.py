"""open_clip image embedders: a tiny random-init model built from a config (shapes, unit rows, determinism, batch
invariance, an end-to-end overlap run), and the real loaders' one-line offline refusal."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("open_clip")

from conftest import SHARED_DATA
from fmgauge.contamination.embedders import OpenClipEmbedder, make_embedder  # noqa: E402
from fmgauge.contamination.image_overlap import ImageOverlapConfig, Inputs, run_image_overlap  # noqa: E402
from fmgauge.contamination.images import open_image_set, to_rgb  # noqa: E402
from fmgauge.core.validation import FmgaugeError  # noqa: E402
from test_open_clip_labeler import TINY  # noqa: E402

MEDMNIST = SHARED_DATA / "medmnist"


@pytest.fixture(scope="module")
def images() -> list:
    with np.load(MEDMNIST / "pneumoniamnist.npz") as z:
        return [to_rgb(Image.fromarray(a)) for a in z["val_images"][:24]]


def tiny(**kw) -> OpenClipEmbedder:
    return OpenClipEmbedder("tiny", model_cfg=TINY, device="cpu", **kw)


def test_tiny_open_clip_embeddings_are_unit_float32_and_deterministic(images):
    e = tiny().embed(images)
    assert e.shape == (24, TINY["embed_dim"]) and e.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(e, axis=1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(tiny().embed(images), e)
    assert not np.allclose(tiny(seed=1).embed(images), e)
    one_by_one = np.vstack([tiny().embed([im]) for im in images[:5]])
    np.testing.assert_allclose(one_by_one, e[:5], atol=1e-5)
    # mixed modes and sizes go through open_clip's eval transform
    mixed = [images[0].convert("L"), images[1].resize((61, 45)), images[2].convert("RGBA")]
    assert tiny().embed([to_rgb(m) for m in mixed]).shape == (3, TINY["embed_dim"])


def test_tiny_open_clip_end_to_end_finds_exact_copies(tmp_path, fmgauge_env, images):
    (tmp_path / "ref").mkdir()
    (tmp_path / "bench").mkdir()
    for i, im in enumerate(images[:16]):
        im.save(tmp_path / "ref" / f"r{i}.png")
    for i in (2, 5):
        images[i].save(tmp_path / "bench" / f"copy{i}.png")
    cfg = ImageOverlapConfig(benchmark=str(tmp_path / "bench"), reference=str(tmp_path / "ref"),
                             control=f"{MEDMNIST / 'breastmnist.npz'}:val", embedder="tiny")
    inputs = Inputs(open_image_set(cfg.benchmark), open_image_set(cfg.reference), open_image_set(cfg.control),
                    tiny())
    res = run_image_overlap(cfg, tmp_path / "run", inputs=inputs, progress=False)
    top1 = res.neighbours[(res.neighbours.set == "benchmark") & (res.neighbours["rank"] == 1)].set_index("id")
    assert top1.loc["copy2.png", "ref_id"] == "r2.png" and top1.loc["copy5.png", "ref_id"] == "r5.png"
    assert top1["similarity"].min() == pytest.approx(1.0, abs=1e-4)
    assert res.results["embedder"]["dim"] == TINY["embed_dim"]


@pytest.mark.parametrize("name, hub", [("siglip-b16", "timm/ViT-B-16-SigLIP"),
                                       ("siglip-so400m", "timm/ViT-SO400M-14-SigLIP"),
                                       ("biomedclip", "microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224")])
def test_real_loaders_refuse_offline_with_one_clear_message(name, hub, fmgauge_env, monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))  # an empty Hugging Face cache
    emb = make_embedder(name, device="cpu")
    assert emb.identity()["hub_id"] == f"hf-hub:{hub}"
    with pytest.raises(FmgaugeError) as e:
        emb.check()
    msg = str(e.value)
    assert "\n" not in msg and hub in msg and "local-dir:" in msg and "--embedder dct" in msg


def test_local_directory_embedder_is_checked(tmp_path):
    with pytest.raises(FmgaugeError, match="does not exist"):
        make_embedder(f"local-dir:{tmp_path / 'nope'}")
    (tmp_path / "m").mkdir()
    with pytest.raises(FmgaugeError, match="has no open_clip_config.json"):
        make_embedder(str(tmp_path / "m")).identity()
