"""Model names and devices: the one place that turns ``--model``, ``--device`` and ``--dtype`` into objects.

- :data:`MODELS` registers the short names of ARCHITECTURE.md ("Names"); :func:`resolve_model` also accepts an
  open_clip hub id (``hf-hub:org/repo``, or plain ``org/repo``), a local directory holding
  ``open_clip_config.json`` and weights, or an open_clip built-in architecture name (weights from ``pretrained``).
- :func:`resolve_device` maps ``auto|cpu|cuda|cuda:N|mps`` to a ``torch.device`` (auto: cuda, then mps, then cpu)
  and refuses a device this machine does not have; :func:`resolve_dtype` maps ``float32|float16|bfloat16|auto``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

from pydantic import AfterValidator

from fmgauge.core.registry import Registry
from fmgauge.core.validation import FmgaugeError, check_choice

if TYPE_CHECKING:
    import torch

DEVICE_CHOICES = ("auto", "cpu", "cuda", "cuda:<index>", "mps")
DTYPE_NAMES = ("float32", "float16", "bfloat16")  # torch dtypes of the same names
_DEVICE_RE = re.compile(r"auto|cpu|mps|cuda(:\d+)?")


@dataclass(frozen=True)
class ModelSpec:
    """What a model name resolves to."""

    name: str  # the name the user gave (registered short name, hub id or path)
    kind: str  # backend that loads it: "open_clip" (later: "hf-causal-lm", "sentence-transformers", ...)
    hub_id: str  # what the backend loads: "hf-hub:org/repo", "local-dir:/abs/path" or a built-in arch name
    description: str = ""
    offline: str | None = None  # how to run it without internet (e.g. a PyPI package); None = online only

    @property
    def remote(self) -> bool:
        """True when loading may download from the Hugging Face hub."""
        return self.hub_id.startswith("hf-hub:")


MODELS: Registry[ModelSpec] = Registry("model")
MODELS.add("biomedclip", ModelSpec(
    "biomedclip", "open_clip", "hf-hub:microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224",
    "BiomedCLIP: ViT-B/16 + PubMedBERT trained on PMC-15M figure-caption pairs (context length 256)"))
MODELS.add("siglip-b16", ModelSpec(
    "siglip-b16", "open_clip", "hf-hub:timm/ViT-B-16-SigLIP",
    "SigLIP ViT-B/16 trained on WebLI (sigmoid loss; context length 64)"))
MODELS.add("siglip-so400m", ModelSpec(
    "siglip-so400m", "open_clip", "hf-hub:timm/ViT-SO400M-14-SigLIP",
    "SigLIP shape-optimised ViT-SO400M/14 trained on WebLI (1152-d embeddings; context length 16)"))


def resolve_model(name: str) -> ModelSpec:
    """The :class:`ModelSpec` of a registered name, hub id, local directory or open_clip architecture.

    Order: registered name; ``hf-hub:``/``local-dir:`` prefix; an existing directory; ``org/repo`` (a hub id);
    an open_clip built-in architecture (e.g. ``ViT-B-32``, weights then come from a ``pretrained`` tag or file).
    Anything else is refused, suggesting near registered names.
    """
    try:
        return MODELS.get(name)
    except FmgaugeError as e:
        unknown = e  # raised below if no other reading of ``name`` fits
    if name.startswith(("hf-hub:", "local-dir:")):
        return ModelSpec(name, "open_clip", name)
    path = Path(name).expanduser()
    if path.is_dir():
        if not (path / "open_clip_config.json").is_file():
            raise FmgaugeError(
                f"model directory {path} has no open_clip_config.json; an open_clip model folder needs it "
                "beside its weights (open_clip_model.safetensors or open_clip_pytorch_model.bin)."
            )
        return ModelSpec(name, "open_clip", f"local-dir:{path.resolve()}")
    if "/" in name and not path.exists():
        return ModelSpec(name, "open_clip", f"hf-hub:{name}")
    if name in _open_clip_architectures():
        return ModelSpec(name, "open_clip", name, "open_clip built-in architecture")
    raise FmgaugeError(
        f"{unknown} A model may also be an open_clip hub id ('hf-hub:org/repo'), a local model directory, "
        "or an open_clip architecture name (open_clip.list_models())."
    )


def _open_clip_architectures() -> list[str]:
    try:
        import open_clip
    except ImportError:
        return []
    return open_clip.list_models()


def validate_device_name(device: str) -> str:
    """Check the form of a device name (not its availability); returns it."""
    if not isinstance(device, str) or not _DEVICE_RE.fullmatch(device):
        raise FmgaugeError(f"device must be one of {list(DEVICE_CHOICES)}, got {device!r}.")
    return device


DeviceName = Annotated[str, AfterValidator(validate_device_name)]
"""A config field holding a device name, checked for its form when the config is validated."""


def _mps_available() -> bool:
    import torch

    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def resolve_device(device: str = "auto") -> torch.device:
    """``auto|cpu|cuda|cuda:N|mps`` -> ``torch.device``; auto picks cuda, then mps, then cpu.

    Raises :class:`FmgaugeError` when the requested device is not available on this machine.
    """
    validate_device_name(device)
    import torch

    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps") if _mps_available() else torch.device("cpu")
    dev = torch.device(device)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise FmgaugeError(
                f"device {device!r} requested but CUDA is not available here (torch {torch.__version__}, "
                f"built for CUDA {torch.version.cuda}); use device 'cpu' or 'auto'."
            )
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise FmgaugeError(
                f"device {device!r} requested but this machine has {torch.cuda.device_count()} CUDA device(s) "
                f"(cuda:0..cuda:{torch.cuda.device_count() - 1})."
            )
    if dev.type == "mps" and not _mps_available():
        raise FmgaugeError(f"device {device!r} requested but Apple MPS is not available here; use 'cpu' or "
                           "'auto'.")
    return dev


def check_device_dtype(device: str | None, dtype: str | None = None, *,
                       names: tuple[str, str] = ("--device", "--dtype")) -> None:
    """``--device`` / ``--dtype`` as a command line gives them, checked (form and availability) before any model
    loads; a problem names the option (``names``; e.g. ``("device", "dtype")`` for values from a config file).
    ``None`` = unset."""
    if device is not None:
        try:
            resolve_device(device)
        except FmgaugeError as e:
            raise FmgaugeError(f"{names[0]}: {e}") from None
    if dtype is not None and dtype not in (*DTYPE_NAMES, "auto"):
        raise FmgaugeError(f"{names[1]} must be one of {', '.join([*DTYPE_NAMES, 'auto'])}, got {dtype!r}.")


def resolve_dtype(name: str, device: torch.device | None = None) -> torch.dtype:
    """``float32|float16|bfloat16|auto`` -> ``torch.dtype``; auto is float16 on CUDA, float32 elsewhere."""
    check_choice("dtype", name, [*DTYPE_NAMES, "auto"])
    import torch

    if name == "auto":
        return torch.float16 if device is not None and device.type == "cuda" else torch.float32
    return getattr(torch, name)
