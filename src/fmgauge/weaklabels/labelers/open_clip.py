"""open_clip zero-shot labeler (BiomedCLIP by default).

Notation: N images, K classes, T prompt templates, D embedding width. Zero-shot CLIP (Radford et al. 2021,
"Learning Transferable Visual Models From Natural Language Supervision", §3.1.4, with prompt ensembling):

    t_k = normalise( mean_j normalise(f_text(template_j.format(c=class_k))) )      (K, D)
    v_i = normalise(f_image(x_i))                                                   (N, D)
    p(k | x_i) = softmax_k( exp(logit_scale) · v_i · t_k )                          (N, K)

BiomedCLIP: Zhang et al. 2023, arXiv:2303.00915. SigLIP's ``logit_bias`` shifts every class alike and cancels in
the softmax. Images (N, C, H, W) uint8, C in (1, 3), become RGB PIL images fed to open_clip's eval transform.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from pydantic import Field, field_validator

from fmgauge.core.data import Dataset
from fmgauge.core.models import DeviceName, resolve_device, resolve_dtype
from fmgauge.core.open_clip_models import load_open_clip
from fmgauge.core.validation import FmgaugeError
from fmgauge.weaklabels.labelers.base import LABELERS, LabelerBase, LabelerKind, LabelerOutput, check_template

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)
DEFAULT_TEMPLATES = ("a medical image showing {c}.", "an image of {c}.", "a photo of {c}.")


class OpenClipLabeler(LabelerBase):
    kind: Literal["open_clip"] = "open_clip"
    model: str = Field("biomedclip", description="registered name (biomedclip, siglip-b16), open_clip hub id "
                       "'hf-hub:org/repo', local model directory, or open_clip architecture name")
    pretrained: str | None = Field(None, description="with an open_clip architecture name only: a pretrained "
                                   "tag (open_clip.list_pretrained()) or a checkpoint file")
    model_cfg: dict[str, Any] | None = Field(None, description="an open_clip model config (embed_dim, "
                                             "vision_cfg, text_cfg) to build a randomly initialised model from "
                                             "(tests, custom archs); no weights are loaded and `model` is unused")
    seed: int = Field(0, description="seed of the random initialisation when model_cfg is given")
    class_prompts: list[str] | None = Field(None, description="names put into the templates, one per class in "
                                            "class order, instead of the dataset's class names")
    templates: list[str] = Field(default_factory=lambda: list(DEFAULT_TEMPLATES), description="prompt "
                                 "templates containing '{c}'; class text embeddings are averaged over them "
                                 "(prompt ensembling)")
    context_length: int | None = Field(None, ge=1, description="tokenizer context length; None = the "
                                       "model's own (256 for BiomedCLIP, 64 for SigLIP)")
    batch_size: int = Field(64, ge=1, description="images (and prompts) per forward pass")
    device: DeviceName = Field("auto", description="auto|cpu|cuda|cuda:N|mps (auto: cuda, then mps, then cpu)")
    dtype: Literal["float32", "float16", "bfloat16", "auto"] = Field(
        "float32", description="weights and activations dtype (auto: float16 on CUDA, else float32)")

    @field_validator("templates")
    @classmethod
    def _check_templates(cls, v: list[str]) -> list[str]:
        if not v:
            raise FmgaugeError("templates must hold at least one prompt template such as 'an image of {c}.'.")
        return [check_template(t) for t in v]


    def describe(self) -> str:
        return "open_clip:random-init" if self.model_cfg is not None else f"open_clip:{self.model}"


FILE_LABELER_HINT = ("or run the model elsewhere and give its outputs to the file labeler ({kind: file, path: "
                     "outputs.csv} with columns id, p_<class>)")


def load_model(cfg: OpenClipLabeler, device: torch.device, dtype: torch.dtype) -> tuple[Any, Callable, Callable]:
    """(model in eval mode on ``device``, preprocess: PIL -> (3, S, S), tokenizer: list[str] -> (M, L)), loaded by
    :func:`fmgauge.core.open_clip_models.load_open_clip`."""
    return load_open_clip(cfg.model, model_cfg=cfg.model_cfg, seed=cfg.seed, pretrained=cfg.pretrained,
                          context_length=cfg.context_length, device=device, dtype=dtype,
                          alternative=FILE_LABELER_HINT)


def to_pil(img: np.ndarray):
    """(C, H, W) uint8 with C in (1, 3) -> RGB PIL image."""
    from PIL import Image

    return Image.fromarray(img[0] if img.shape[0] == 1 else img.transpose(1, 2, 0)).convert("RGB")


def encode_classes(model, tokenizer, class_names: list[str], templates: list[str], *,
                   device: torch.device, batch_size: int = 64) -> torch.Tensor:
    """(K, D) float32 class embeddings: normalised mean over templates of normalised prompt embeddings."""
    import torch

    with torch.inference_mode():
        prompts = [t.format(c=c) for c in class_names for t in templates]  # K*T, class-major
        tokens = tokenizer(prompts).to(device)  # (K*T, L)
        emb = torch.cat([model.encode_text(tokens[i:i + batch_size]).float()
                         for i in range(0, len(tokens), batch_size)])  # (K*T, D)
        emb = torch.nn.functional.normalize(emb, dim=-1).view(len(class_names), len(templates), -1)  # (K, T, D)
        return torch.nn.functional.normalize(emb.mean(1), dim=-1).cpu()  # (K, D)


def encode_images(model, preprocess: Callable, x: np.ndarray, *, device: torch.device, dtype: torch.dtype,
                  batch_size: int = 64) -> torch.Tensor:
    """(N, C, H, W) uint8 -> (N, D) float32 L2-normalised image embeddings, ``batch_size`` images at a time."""
    import torch

    from fmgauge.core.progress import track

    with torch.inference_mode():
        out = []
        for s in track(range(0, len(x), batch_size), "open_clip images", unit="batch"):
            batch = torch.stack([preprocess(to_pil(im)) for im in x[s:s + batch_size]])  # (B, 3, S, S)
            emb = model.encode_image(batch.to(device=device, dtype=dtype)).float()  # (B, D)
            out.append(torch.nn.functional.normalize(emb, dim=-1).cpu())
        return torch.cat(out)


def zero_shot_probs(img: torch.Tensor, txt: torch.Tensor, logit_scale: torch.Tensor) -> np.ndarray:
    """softmax(exp(logit_scale) · img @ txtᵀ): img (N, D), txt (K, D) normalised -> (N, K) float64."""
    import torch

    logits = logit_scale.detach().float().cpu().exp() * img @ txt.T  # (N, K)
    return torch.softmax(logits.double(), dim=-1).numpy()


def prompt_names(cfg: OpenClipLabeler, ds: Dataset) -> list[str]:
    """The K names put into the templates: ``class_prompts`` if given, else the dataset's class names."""
    if cfg.class_prompts is None:
        return list(ds.class_names)
    if len(cfg.class_prompts) != ds.n_classes:
        raise FmgaugeError(
            f"class_prompts has {len(cfg.class_prompts)} entries but dataset {ds.name!r} has {ds.n_classes} "
            f"classes {list(ds.class_names)}; give one prompt name per class, in that order."
        )
    return list(cfg.class_prompts)


def label_open_clip(cfg: OpenClipLabeler, ds: Dataset, split: str) -> LabelerOutput:
    """Zero-shot labels of ``ds``'s ``split``: probs (N, K) by the module docstring's formula, labels argmax."""
    sp = ds.split(split)
    if sp.x.ndim != 4 or sp.x.shape[1] not in (1, 3):
        raise FmgaugeError(f"open_clip needs images (N, C, H, W) with C in (1, 3); {ds.name}/{split} has "
                           f"shape {sp.x.shape}.")
    names = prompt_names(cfg, ds)
    device = resolve_device(cfg.device)
    dtype = resolve_dtype(cfg.dtype, device)
    model, preprocess, tokenizer = load_model(cfg, device, dtype)
    log.info("open_clip %s on %s (%s): %d images of %s/%s", cfg.describe(), device, dtype, len(sp), ds.name, split)
    txt = encode_classes(model, tokenizer, names, cfg.templates, device=device, batch_size=cfg.batch_size)
    img = encode_images(model, preprocess, sp.x, device=device, dtype=dtype, batch_size=cfg.batch_size)
    probs = zero_shot_probs(img, txt, model.logit_scale)
    return LabelerOutput(ids=sp.ids, probs=probs, labels=probs.argmax(1).astype(np.int64))


LABELERS.add("open_clip", LabelerKind(OpenClipLabeler, label_open_clip))
