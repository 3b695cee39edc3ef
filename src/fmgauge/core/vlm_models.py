"""Hugging Face vision-language models by name, for scoring answer tokens given an image and a question.

One function, :func:`load_vlm_model`, turns ``--model`` into a :class:`VisionLanguageModel` (model + processor +
family). Two families are supported, each through its own transformers class and processor:

- ``qwen-vl``: Qwen2.5-VL (``Qwen2_5_VLForConditionalGeneration``, ``Qwen2_5_VLProcessor``; config ``model_type``
  ``qwen2_5_vl``) and Qwen2-VL (``Qwen2VLForConditionalGeneration``, ``qwen2_vl``): image patches are spliced into
  the token sequence at ``<|image_pad|>`` placeholders (one per 2×2 merged patch), 3-D rotary positions;
- ``blip2``: BLIP-2 (``Blip2ForConditionalGeneration``, ``Blip2Processor``; ``model_type`` ``blip-2``) with an OPT
  (decoder-only) or a T5 (encoder-decoder) language model: ``num_query_tokens`` Q-Former outputs replace that many
  ``<image>`` tokens (``config.image_token_index``) placed before the text.

A name resolves, in order, to a registered short name (:data:`VLM_MODELS`), a local directory holding a
transformers ``config.json`` of one of the model types above, or a hub id (``org/repo``). No VLM weights ship in a
package: offline (``FMGAUGE_OFFLINE``, ``HF_HUB_OFFLINE`` or ``CI`` set), a registered name or hub id loads only
from the Hugging Face cache, and otherwise :func:`resolve_vlm_model` refuses in one line saying what to download
and to pass the directory. :func:`vlm_family` tells whether a ``--model`` is a VLM from its name or its
``config.json`` alone (no weights read; a hub id counts when it is registered here or its config is in the Hugging Face cache), so
commands can check model × data compatibility before any load.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch

from fmgauge.core.models import resolve_device, resolve_dtype
from fmgauge.core.progress import progress
from fmgauge.core.registry import Registry
from fmgauge.core.validation import FmgaugeError

log = logging.getLogger(__name__)

Family = Literal["qwen-vl", "blip2"]
MODEL_TYPES: dict[str, Family] = {"qwen2_5_vl": "qwen-vl", "qwen2_vl": "qwen-vl", "blip-2": "blip2"}


@dataclass(frozen=True)
class VLMSpec:
    """A registered VLM: hub id, family and what it is."""

    name: str
    hub_id: str
    family: Family
    description: str = ""


VLM_MODELS: Registry[VLMSpec] = Registry("vision-language model")
for _spec in (
    VLMSpec("qwen2.5-vl-3b", "Qwen/Qwen2.5-VL-3B-Instruct", "qwen-vl", "Qwen2.5-VL 3B Instruct (the paper's scored "
            "VLM family); chat template, dynamic resolution (28×28 px per image token)"),
    VLMSpec("qwen2.5-vl-7b", "Qwen/Qwen2.5-VL-7B-Instruct", "qwen-vl", "Qwen2.5-VL 7B Instruct"),
    VLMSpec("blip2-opt-2.7b", "Salesforce/blip2-opt-2.7b", "blip2", "BLIP-2, OPT-2.7B language model (the paper's "
            "external pre-domain baseline); 32 query tokens, 224 px"),
    VLMSpec("blip2-flan-t5-xl", "Salesforce/blip2-flan-t5-xl", "blip2", "BLIP-2, Flan-T5-XL encoder-decoder LM"),
):
    VLM_MODELS.add(_spec.name, _spec)


@dataclass
class VisionLanguageModel:
    """A loaded VLM (eval mode, on ``device``) with its processor."""

    model: Any  # Qwen2_5_VLForConditionalGeneration | Qwen2VLForConditionalGeneration | Blip2ForConditionalGeneration
    processor: Any  # its AutoProcessor (tokenizer + image processor [+ chat template])
    family: Family
    name: str  # the name asked for
    source: str  # directory or hub id the weights were read from
    device: torch.device

    @property
    def tokenizer(self) -> Any:
        return self.processor.tokenizer

    @property
    def identity(self) -> dict[str, str]:
        """What a cache key needs to know about the model."""
        return {"model": self.name, "source": self.source, "family": self.family}

    @property
    def encoder_decoder(self) -> bool:
        """True for BLIP-2 with a T5 language model (the answer is the decoder's sequence)."""
        return self.family == "blip2" and not self.model.config.use_decoder_only_language_model

    def text_model(self) -> Any:
        """The VLM's own causal language model as a :class:`~fmgauge.core.text_models.TextModel` (text-only input,
        the same weights and tokenizer), for the exchangeability test (see docs/contamination.md).

        Qwen-VL: the whole model fed token ids only (its 3-D rotary positions reduce to ordinary 1-D ones).
        BLIP-2 OPT: ``model.language_model``. BLIP-2 T5 has no left-to-right text likelihood: refused.
        """
        from fmgauge.core.text_models import TextModel

        if self.encoder_decoder:
            raise FmgaugeError(f"model {self.name!r} is BLIP-2 with an encoder-decoder (T5) language model: it gives "
                               "no left-to-right likelihood of a concatenated benchmark, so the exchangeability test "
                               "cannot run on it; use a BLIP-2 OPT model or a causal LM.")
        lm = self.model if self.family == "qwen-vl" else self.model.language_model
        return TextModel(lm, self.tokenizer, self.name, self.source, self.device)


def _config_model_type(path: Path) -> str | None:
    try:
        return json.loads((path / "config.json").read_text()).get("model_type")
    except (OSError, json.JSONDecodeError):
        return None


def vlm_family(name: str) -> Family | None:
    """The VLM family of ``--model`` (registered name, or a directory whose config.json is a supported VLM), or
    None when it is not a VLM (a causal LM name or directory, or a hub id not registered here). Reads no weights."""
    if not isinstance(name, str) or not name:
        return None
    if name in VLM_MODELS:
        return VLM_MODELS.get(name).family
    path = Path(name).expanduser()
    if path.is_dir():
        return MODEL_TYPES.get(_config_model_type(path) or "")
    for spec in VLM_MODELS.names():
        if VLM_MODELS.get(spec).hub_id == name:
            return VLM_MODELS.get(spec).family
    if "/" in name and not name.startswith((".", "/", "~")):  # a hub id: known only if its config is cached
        cached = _hf_cached_dir(name)
        if cached is not None:
            return MODEL_TYPES.get(_config_model_type(cached) or "")
    return None


def _offline() -> bool:
    from fmgauge.core.data import offline

    return offline()


def _hf_cached_dir(hub_id: str) -> Path | None:
    """The snapshot directory of ``hub_id`` in the Hugging Face cache, if its config.json is there."""
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:  # pragma: no cover - huggingface_hub ships with transformers
        return None
    hit = try_to_load_from_cache(hub_id, "config.json")
    return Path(hit).parent if isinstance(hit, str) else None


def resolve_vlm_model(name: str) -> tuple[str, bool]:
    """``name`` -> (directory or hub id to load, is_local). Offline with nothing local: one clear error."""
    if name in VLM_MODELS:
        hub_id = VLM_MODELS.get(name).hub_id
    else:
        path = Path(name).expanduser()
        if path.is_dir():
            mt = _config_model_type(path)
            if mt not in MODEL_TYPES:
                raise FmgaugeError(f"model directory {path} is not a supported vision-language model (config.json "
                                   f"model_type {mt!r}; supported: {sorted(MODEL_TYPES)}).")
            return str(path.resolve()), True
        if "/" not in name or name.startswith((".", "/", "~")):
            raise FmgaugeError(f"vision-language model {name!r} is neither a registered name {VLM_MODELS.names()} "
                               "nor a model directory.")
        hub_id = name
    cached = _hf_cached_dir(hub_id)
    if cached is not None:
        return str(cached), True
    if _offline():
        raise FmgaugeError(
            f"model {name!r} needs the weights of {hub_id}, which are not on this machine, and the hub is off "
            f"(offline mode): download them where there is internet (`huggingface-cli download {hub_id} "
            f"--local-dir DIR`), copy DIR here and pass --model DIR.")
    return hub_id, False


def _model_class(model_type: str) -> Any:
    import transformers

    return {"qwen2_5_vl": transformers.Qwen2_5_VLForConditionalGeneration,
            "qwen2_vl": transformers.Qwen2VLForConditionalGeneration,
            "blip-2": transformers.Blip2ForConditionalGeneration}[model_type]


def check_processor_matches(vm: VisionLanguageModel) -> None:
    """Refuse a processor whose image placeholders the model would not find (another checkpoint's processor, or a
    BLIP-2 checkpoint saved before ``image_token_index`` existed)."""
    cfg, proc, name = vm.model.config, vm.processor, vm.name
    if vm.family == "qwen-vl":
        if getattr(proc, "image_token_id", None) != cfg.image_token_id:
            raise FmgaugeError(f"processor/model mismatch in {name!r}: the processor's image token id is "
                               f"{getattr(proc, 'image_token_id', None)} but the model expects {cfg.image_token_id}.")
        if getattr(proc, "chat_template", None) is None:
            raise FmgaugeError(f"the processor of {name!r} has no chat template; Qwen-VL prompts are built with it "
                               "(save the processor with its chat_template.jinja).")
        return
    image_id = getattr(cfg, "image_token_index", None)
    if image_id is None or getattr(proc, "num_query_tokens", None) is None:
        raise FmgaugeError(f"BLIP-2 checkpoint {name!r} has no image_token_index in its config or no "
                           "num_query_tokens in its processor (saved by an old transformers); re-save it with a "
                           "current transformers or take the current hub revision.")
    tok_id = proc.tokenizer.convert_tokens_to_ids(str(proc.image_token))
    if tok_id != image_id or proc.num_query_tokens != cfg.num_query_tokens:
        raise FmgaugeError(f"processor/model mismatch in {name!r}: the processor puts {proc.num_query_tokens} "
                           f"image tokens of id {tok_id}, the model expects {cfg.num_query_tokens} of id {image_id}.")


def load_vlm_model(name: str, *, device: str = "auto", dtype: str = "float32") -> VisionLanguageModel:
    """Load a supported VLM + its processor on ``device`` (eval mode); see the module docstring for names."""
    import transformers

    source, local = resolve_vlm_model(name)
    dev = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, dev)
    only_local = local or _offline()
    try:
        cfg = transformers.AutoConfig.from_pretrained(source, local_files_only=only_local)
        if cfg.model_type not in MODEL_TYPES:
            raise FmgaugeError(f"model {name!r} ({source}) has model_type {cfg.model_type!r}; supported "
                               f"vision-language models: {sorted(MODEL_TYPES)}.")
        with progress(f"loading {name}"):
            processor = transformers.AutoProcessor.from_pretrained(source, local_files_only=only_local)
            model = _model_class(cfg.model_type).from_pretrained(source, dtype=torch_dtype,
                                                                 local_files_only=only_local)
    except (OSError, ValueError) as e:
        raise FmgaugeError(f"could not load vision-language model {name!r} from {source}: {e}") from e
    model.to(dev).eval()
    vm = VisionLanguageModel(model, processor, MODEL_TYPES[cfg.model_type], name, source, dev)
    check_processor_matches(vm)
    return vm
