"""Image embedders for the overlap detector: an offline DCT embedding and open_clip models (SigLIP, BiomedCLIP).

Every embedder maps a list of B RGB PIL images to (B, D) float32 rows of unit L2 norm, so inner product is cosine
similarity. :data:`EMBEDDERS` registers the names; :func:`make_embedder` also accepts an open_clip hub id
(``hf-hub:org/repo``), ``local-dir:<path>`` or a local model directory. Making an embedder loads nothing;
:meth:`check` refuses what cannot load (unknown name, weights missing offline) before any image is embedded, and
:meth:`prepare` loads the weights.

The ``dct`` embedder (offline, no weights): greyscale (ITU-R 601 luma) -> resize to ``size`` x ``size``
(bilinear, antialiased) -> z-score the pixels -> orthonormal 2-D DCT-II -> the ``block`` x ``block``
lowest-frequency coefficients without the DC term -> L2-normalise (D = block² - 1; 63 by default). It is the
real-valued core of the perceptual hash (pHash, Zauner 2010) without the binarisation.

What it can find: copies of an image that were resized or re-encoded (JPEG), had brightness or contrast changed
(an affine change of the pixel values leaves the embedding unchanged up to clipping), or were slightly cropped
(a few % per side) or rotated (a few degrees) - measured on MedMNIST in tests/test_contamination_images.py.
What it cannot find: heavy crops, flips, large rotations, another scan of the same patient, or semantic
similarity ("also a chest X-ray"). Its cosine between *different* images of one modality is high (0.9+ between
chest X-rays), so with an out-of-domain control most same-modality images clear τ: read its flags as "same
modality and layout" unless the similarity is near 1, and adjudicate them in the gallery. For source overlap
beyond near-duplicates use a SigLIP / BiomedCLIP embedder.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from fmgauge.core.registry import Registry
from fmgauge.core.validation import FmgaugeError

log = logging.getLogger(__name__)


class ImageEmbedder(Protocol):
    name: str

    def identity(self) -> dict: ...  # what the cache key needs: the embedding function, not the device

    def check(self) -> None: ...  # refuse what cannot load, without loading it

    def prepare(self) -> None: ...  # load weights (no-op for dct)

    def embed(self, images: list) -> np.ndarray: ...  # B RGB PIL images -> (B, D) float32, unit rows


def l2_normalise(x: np.ndarray) -> np.ndarray:
    """Rows of ``x`` (N, D) scaled to unit L2 norm as float32; all-zero rows stay zero."""
    x = np.asarray(x, dtype=np.float32)
    n = np.linalg.norm(x, axis=1, keepdims=True)
    return np.divide(x, n, out=np.zeros_like(x), where=n > 0)


@dataclass
class DCTEmbedder:
    """The offline near-duplicate embedder of the module docstring: D = block² - 1 low-frequency DCT terms."""

    size: int = 32  # side of the greyscale grid the image is resized to (pixels)
    block: int = 8  # side of the low-frequency DCT block kept
    name: str = "dct"

    def __post_init__(self) -> None:
        if not 2 <= self.block <= self.size:
            raise FmgaugeError(f"dct block must be in 2..size ({self.size}), got {self.block}.")

    @property
    def dim(self) -> int:
        return self.block * self.block - 1

    def identity(self) -> dict:
        return {"kind": "dct", "size": self.size, "block": self.block, "version": 1}

    def check(self) -> None:
        return None

    def prepare(self) -> None:
        return None

    def embed(self, images: list) -> np.ndarray:
        """B RGB PIL images -> (B, block² - 1) float32 unit rows (a constant image gives a zero row)."""
        from PIL import Image
        from scipy.fft import dctn

        if not images:
            return np.zeros((0, self.dim), np.float32)
        g = np.stack([np.asarray(im.convert("L").resize((self.size, self.size), Image.BILINEAR), np.float64)
                      for im in images])  # (B, S, S)
        g -= g.mean(axis=(1, 2), keepdims=True)
        sd = g.std(axis=(1, 2), keepdims=True)
        g = np.divide(g, sd, out=np.zeros_like(g), where=sd > 1e-8)
        d = dctn(g, axes=(1, 2), norm="ortho")[:, :self.block, :self.block].reshape(len(images), -1)[:, 1:]
        return l2_normalise(d)  # (B, block² - 1)


@dataclass
class OpenClipEmbedder:
    """Image tower of an open_clip model: ``normalise(f_image(preprocess(x)))``, (B, D) float32.

    ``model``: a registered name (``siglip-b16``, ``siglip-so400m``, ``biomedclip``), ``hf-hub:org/repo``,
    ``local-dir:<path>`` or a local directory with ``open_clip_config.json`` and weights. ``model_cfg``: an
    open_clip model config to build a randomly initialised model from (tests); then ``model`` is only a label.
    Loading goes through the shared loader :func:`fmgauge.core.open_clip_models.load_open_clip`.
    """

    model: str
    model_cfg: dict[str, Any] | None = None
    seed: int = 0
    device: str = "auto"
    dtype: str = "float32"
    name: str = ""
    _loaded: tuple | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self.name = self.name or self.model

    def identity(self) -> dict:
        if self.model_cfg is not None:
            return {"kind": "open_clip", "model_cfg": self.model_cfg, "seed": self.seed, "dtype": self.dtype}
        from fmgauge.core.models import resolve_model

        return {"kind": "open_clip", "hub_id": resolve_model(self.model).hub_id, "dtype": self.dtype}

    def check(self) -> None:
        """Refuse an unknown model, a missing local directory or weights absent offline; loads nothing."""
        from fmgauge.core.data import offline
        from fmgauge.core.models import resolve_device, resolve_model

        resolve_device(self.device)
        if self.model_cfg is not None:
            return
        try:
            import open_clip  # noqa: F401
        except ImportError:
            raise FmgaugeError(f"embedder {self.model!r} needs open_clip_torch: pip install 'fmgauge[vision]'; "
                               "or use --embedder dct (offline, no weights).") from None
        spec = resolve_model(self.model)
        if spec.kind != "open_clip":
            raise FmgaugeError(f"embedder {self.model!r} is a {spec.kind} model; an image embedder needs open_clip.")
        if spec.remote and offline():
            from fmgauge.core.open_clip_models import in_hf_cache

            if not in_hf_cache(spec.hub_id):
                raise FmgaugeError(
                    f"embedder {self.model!r} needs the weights of {spec.hub_id}, which are not in the Hugging Face "
                    "cache and this machine is offline (HF_HUB_OFFLINE / FMGAUGE_OFFLINE / CI set). Download them "
                    f"once with internet access (python -c \"import open_clip; open_clip.create_model_from_pretrained("
                    f"'{spec.hub_id}')\"), or download the repo {spec.hub_id.removeprefix('hf-hub:')} "
                    "(open_clip_config.json + weights) to a folder and pass --embedder local-dir:<folder>; or use "
                    "--embedder dct (offline).")

    def prepare(self) -> None:
        if self._loaded is not None:
            return
        from fmgauge.core.models import resolve_device, resolve_dtype
        from fmgauge.core.open_clip_models import load_open_clip

        self.check()
        device = resolve_device(self.device)
        dtype = resolve_dtype(self.dtype, device)
        model, preprocess, _ = load_open_clip(self.model, model_cfg=self.model_cfg, seed=self.seed, device=device,
                                              dtype=dtype, alternative="or use --embedder dct (offline)")
        self._loaded = (model, preprocess, device, dtype)
        log.info("open_clip embedder %s on %s (%s)", self.name, device, dtype)

    def embed(self, images: list) -> np.ndarray:
        """B RGB PIL images -> (B, D) float32 unit rows through the model's eval transform and image tower."""
        import torch

        self.prepare()
        model, preprocess, device, dtype = self._loaded
        if not images:  # (0, D): D from one grey probe image
            from PIL import Image

            return self.embed([Image.new("RGB", (32, 32), (128, 128, 128))])[:0]
        with torch.inference_mode():
            batch = torch.stack([preprocess(im) for im in images]).to(device=device, dtype=dtype)  # (B, 3, S, S)
            emb = model.encode_image(batch).float()  # (B, D)
        return l2_normalise(emb.cpu().numpy())


EMBEDDERS: Registry[Any] = Registry("embedder")
EMBEDDERS.add("dct", lambda **kw: DCTEmbedder())
for _name in ("siglip-b16", "siglip-so400m", "biomedclip"):
    EMBEDDERS.add(_name, lambda _n=_name, **kw: OpenClipEmbedder(_n, **kw))


def make_embedder(name: str, *, device: str = "auto", dtype: str = "float32") -> ImageEmbedder:
    """The embedder called ``name`` (registered, ``hf-hub:``/``local-dir:`` id or a local open_clip directory).

    Unknown names are refused with the registered names and a did-you-mean; nothing is loaded.
    """
    if name in EMBEDDERS:
        emb = EMBEDDERS.get(name)(device=device, dtype=dtype)
    elif name.startswith(("hf-hub:", "local-dir:")) or Path(name).expanduser().is_dir():
        if name.startswith("local-dir:") and not Path(name.removeprefix("local-dir:")).expanduser().is_dir():
            raise FmgaugeError(f"--embedder {name!r}: the directory {name.removeprefix('local-dir:')!r} does not "
                               "exist; it must hold open_clip_config.json and the weights.")
        emb = OpenClipEmbedder(name, device=device, dtype=dtype)
    else:
        try:
            EMBEDDERS.get(name)
        except FmgaugeError as e:
            raise FmgaugeError(f"--embedder: {e} Or an open_clip hub id 'hf-hub:org/repo' or a local model "
                               "directory ('local-dir:<path>').") from None
    return emb
