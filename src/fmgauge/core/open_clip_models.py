"""open_clip models by name: one loader shared by every subsystem that embeds images or prompts with a CLIP model.

:func:`load_open_clip` turns a model name into ``(model, preprocess, tokenizer)``: the model in eval mode on the
device, open_clip's eval transform (RGB PIL image -> (3, S, S) float tensor) and its tokenizer (list of M strings
-> (M, L) token ids). A name is a registered :data:`fmgauge.core.models.MODELS` entry of kind ``open_clip``
(``biomedclip``, ``siglip-b16``, ...), an open_clip hub id ``hf-hub:org/repo``, ``local-dir:<path>``, or an
open_clip architecture name with a ``pretrained`` tag or checkpoint file; a ``model_cfg`` (an open_clip model
config: embed_dim, vision_cfg, text_cfg) builds a randomly initialised model instead (tests, custom archs).

Offline (``FMGAUGE_OFFLINE``, ``HF_HUB_OFFLINE`` or ``CI`` set), hub weights load only from the Hugging Face cache
(:func:`in_hf_cache`); a missing download is one :class:`FmgaugeError` saying how to provide the weights.
Used by the weak-label open_clip labeler and the contamination image embedders.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fmgauge.core.datasets_base import offline
from fmgauge.core.models import ModelSpec, resolve_model
from fmgauge.core.progress import progress
from fmgauge.core.validation import FmgaugeError

if TYPE_CHECKING:
    import torch


def import_open_clip():
    """The ``open_clip`` module, or one clear error naming the extra that installs it."""
    try:
        import open_clip
    except ImportError as e:
        raise FmgaugeError("open_clip models need open_clip_torch: pip install 'fmgauge[vision]'.") from e
    return open_clip


def load_open_clip(model: str = "biomedclip", *, model_cfg: dict[str, Any] | None = None, seed: int = 0,
                   pretrained: str | None = None, context_length: int | None = None,
                   device: torch.device, dtype: torch.dtype, alternative: str = "") -> tuple[Any, Callable, Callable]:
    """(model in eval mode on ``device`` in ``dtype``, preprocess: PIL -> (3, S, S), tokenizer: list[str] -> (M, L)).

    ``model_cfg`` set: a model built from that config with weights drawn from ``torch.manual_seed(seed)`` (the
    global RNG is left untouched); ``model`` is then unused. ``context_length``: the tokenizer's (None = the
    model's own; longer than the model's is refused). ``alternative``: a sentence appended to the offline/download
    error telling the caller's user what else they can do.
    """
    oc = import_open_clip()
    if model_cfg is not None:
        net, preprocess, tokenizer = _from_cfg(oc, model_cfg, seed=seed, context_length=context_length)
    else:
        net, preprocess, tokenizer = _from_pretrained(oc, model, pretrained=pretrained,
                                                      context_length=context_length, alternative=alternative)
    ctx = getattr(net, "context_length", None)
    if context_length is not None and ctx is not None and context_length > ctx:
        raise FmgaugeError(f"context_length {context_length} exceeds the model's {ctx}; use <= {ctx}.")
    return net.to(device=device, dtype=dtype).eval(), preprocess, tokenizer


def _from_cfg(oc, model_cfg: dict[str, Any], *, seed: int, context_length: int | None
              ) -> tuple[Any, Callable, Callable]:
    import torch

    mc = copy.deepcopy(model_cfg)
    text_cfg = mc.get("text_cfg", {})
    custom_text = mc.pop("custom_text", False) or "hf_model_name" in text_cfg
    if "hf_model_name" in text_cfg:
        text_cfg.setdefault("hf_model_pretrained", False)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        try:
            net = (oc.CustomTextCLIP if custom_text else oc.CLIP)(**mc)
        except Exception as e:  # TypeError/KeyError/shape errors, varying with the config
            raise FmgaugeError(f"model_cfg is not a valid open_clip model config ({type(e).__name__}: {e}); "
                               "it needs embed_dim, vision_cfg and text_cfg as in open_clip/model_configs/*.json."
                               ) from e
    pp = oc.get_model_preprocess_cfg(net)
    preprocess = oc.image_transform(pp["size"], is_train=False, mean=pp.get("mean"), std=pp.get("std"))
    ctx = context_length or net.context_length
    hf_tok = text_cfg.get("hf_tokenizer_name")
    tokenizer = (oc.tokenizer.HFTokenizer(hf_tok, context_length=ctx) if hf_tok
                 else oc.SimpleTokenizer(context_length=ctx))
    return net, preprocess, tokenizer


def _from_pretrained(oc, model: str, *, pretrained: str | None, context_length: int | None, alternative: str
                     ) -> tuple[Any, Callable, Callable]:
    spec = resolve_model(model)
    if spec.kind != "open_clip":
        raise FmgaugeError(f"model {model!r} is a {spec.kind} model; an open_clip model is needed here.")
    is_arch = not spec.hub_id.startswith(("hf-hub:", "local-dir:"))
    if is_arch and pretrained is None:
        raise FmgaugeError(f"{model!r} is an open_clip architecture without weights: set pretrained to a "
                           f"tag ({oc.list_pretrained_tags_by_model(model)}) or a checkpoint file, or give "
                           "model_cfg.")
    remote = spec.remote or (is_arch and not Path(pretrained).expanduser().is_file())
    if spec.remote and offline() and not in_hf_cache(spec.hub_id):
        raise download_error(model, spec, pretrained, "offline mode is set and the model is not in the Hugging Face "
                             "cache", alternative)
    try:
        tag = pretrained if is_arch else None  # open_clip ignores it with hf-hub:/local-dir:
        with progress(f"loading {model}"):
            net, preprocess = oc.create_model_from_pretrained(spec.hub_id, pretrained=tag)
            tokenizer = oc.get_tokenizer(spec.hub_id, context_length=context_length)
    except Exception as e:  # network, hub and checkpoint errors come in many types
        if remote:
            reason = str(e).strip().splitlines()[-1] if str(e).strip() else repr(e)
            raise download_error(model, spec, pretrained, reason, alternative) from e
        raise FmgaugeError(f"could not load open_clip model {spec.hub_id!r}: {type(e).__name__}: {e}") from e
    return net, preprocess, tokenizer


def in_hf_cache(hub_id: str) -> bool:
    """Whether the open_clip config of ``hf-hub:org/repo`` is in the local Hugging Face cache (no network)."""
    from huggingface_hub import try_to_load_from_cache

    return isinstance(try_to_load_from_cache(hub_id.removeprefix("hf-hub:"), "open_clip_config.json"), str)


def download_error(model: str, spec: ModelSpec, pretrained: str | None, reason: str, alternative: str = ""
                   ) -> FmgaugeError:
    """The one-line error for weights that could not be downloaded: where from, why, and how to provide them."""
    where = spec.hub_id if spec.remote else f"open_clip tag {pretrained!r} of {spec.hub_id}"
    return FmgaugeError(
        f"could not download the weights of model {model!r} from {where}; this machine appears offline "
        f"({reason}). To provide them: run once with internet access to fill the Hugging Face cache "
        "($HF_HOME, default ~/.cache/huggingface), then offline runs find them there; or pass a local model "
        "directory (open_clip_config.json + weights) as model" + (f"; {alternative}" if alternative else "") + "."
    )
