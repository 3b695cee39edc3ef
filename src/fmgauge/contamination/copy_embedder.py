"""A copy-detection embedder trained by fmgauge on the user's own reference images (SSCD-style, offline).

SSCD (Pizzi et al., "A Self-Supervised Descriptor for Image Copy Detection", CVPR 2022) trains a CNN so that two
copies of one image (strong copy augmentations) embed close and every other image far: InfoNCE over the batch
(temperature 0.05) plus a differential-entropy (KoLeo) regulariser that pushes each embedding away from its
nearest non-matching neighbour, ``-λ · mean_i log ||z_i - z_nn(i)||``, which spreads the descriptors over the
sphere so that a fixed threshold means the same thing everywhere (SSCD's paper weight λ = 30; its authors advise
~10 for new set-ups, our default). fmgauge trains a small CNN the same way, on the CPU, on a sample of the
*reference* images (:mod:`~fmgauge.contamination.copy_augment` makes the copies), in minutes.

Why the reference only: InfoNCE treats every other image of the batch as a negative, so training on the
benchmark and the reference together would teach the network to push a benchmark image away from its own copy
in the reference, the very pair to be found; and the controls must stay exchangeable with the benchmark (neither
is seen in training).

Network (``width`` w, input ``size`` S, greyscale z-scored per image, so brightness and contrast are gone before
it sees the pixels): four 3 × 3 conv + BatchNorm + ReLU layers (1 → w, s 2; w → 2w, s 2; 2w → 4w, s 2;
4w → 4w), GeM pooling (p = 3), a linear projection to ``dim`` and L2 normalisation. The descriptor is made
exactly invariant to horizontal flips by summing the projections of the image and its mirror before normalising
(training uses the plain projection, at half the cost, with flips among the augmentations).

What it finds: copies under the transforms it was trained on (crops to ~70 % of the side at any offset, rotations
of a few degrees, shifts, flips, JPEG, contrast, brightness, blur, resampling), provided the original is in the
reference; the global descriptor ranks the copy among the top few neighbours, and the verification stage
(:mod:`~fmgauge.contamination.verify`) decides. What it cannot: transforms outside its training (large rotations,
vertical flips, heavy crops below ~60 %, overlays, colour inversions, montage panels cut from a figure), another
scan of the same patient, or "same modality" similarity (it is trained to *separate* different images of one
modality, which is what makes its threshold meaningful for copies and useless for source overlap).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from pydantic import BaseModel, Field

from fmgauge.contamination.copy_augment import AugmentConfig
from fmgauge.core.validation import FmgaugeError

log = logging.getLogger(__name__)
VERSION = 3


class CopyEmbedderConfig(BaseModel):
    """How the copy embedder is built and trained (module docstring)."""

    size: int = Field(64, ge=16, le=256, description="input side in pixels (images are resized, greyscale)")
    width: int = Field(16, ge=4, le=256, description="channels of the first conv layer (then 2w, 4w, 4w)")
    dim: int = Field(128, ge=8, le=2048, description="descriptor dimension")
    train_images: int = Field(10_000, ge=16, description="reference images sampled for training")
    epochs: int = Field(6, ge=1, le=1000, description="passes over the training sample")
    batch_size: int = Field(128, ge=8, le=4096, description="images per step (two copies each)")
    lr: float = Field(3e-3, gt=0, le=1, description="peak AdamW learning rate (1 warm-up epoch, cosine decay)")
    weight_decay: float = Field(1e-4, ge=0, le=1, description="AdamW weight decay")
    temperature: float = Field(0.05, gt=0, le=1, description="InfoNCE temperature (SSCD: 0.05)")
    entropy_weight: float = Field(10.0, ge=0, le=100, description="λ of the differential-entropy regulariser")
    seed: int = Field(0, description="seed of the training sample, the initialisation and the augmentations")
    threads: int | None = Field(None, ge=1, description="torch threads while training (None: torch's default)")
    augment: AugmentConfig = Field(default_factory=AugmentConfig)


def _net(cfg: CopyEmbedderConfig):
    import torch
    from torch import nn

    class GeM(nn.Module):
        def __init__(self, p: float = 3.0) -> None:
            super().__init__()
            self.p = nn.Parameter(torch.tensor(p))

        def forward(self, x):  # (B, C, H, W) -> (B, C)
            return x.clamp_min(1e-6).pow(self.p).mean((2, 3)).pow(1.0 / self.p)

    class CopyNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            w = cfg.width

            def block(i: int, o: int, s: int) -> list:
                return [nn.Conv2d(i, o, 3, s, 1, bias=False), nn.BatchNorm2d(o), nn.ReLU(inplace=True)]

            self.trunk = nn.Sequential(*block(1, w, 2), *block(w, 2 * w, 2), *block(2 * w, 4 * w, 2),
                                       *block(4 * w, 4 * w, 1))
            self.pool = GeM()
            self.proj = nn.Linear(4 * w, cfg.dim)

        def forward(self, x, symmetric: bool = True):  # (B, 1, S, S) z-scored -> (B, dim) unit rows
            if not symmetric:  # training: half the cost; flips come from the augmentations
                return nn.functional.normalize(self.proj(self.pool(self.trunk(x))), dim=1)
            both = torch.cat([x, x.flip(-1)])
            h = self.proj(self.pool(self.trunk(both)))  # (2B, dim)
            b = x.shape[0]
            return nn.functional.normalize(h[:b] + h[b:], dim=1)  # exactly invariant to a horizontal flip

    return CopyNet()


def standardise(x):
    """(B, 1, S, S) -> per-image robust z-scores: (x - median) / (1.4826 · MAD), clipped to ±4.

    Robust statistics keep the fill of a rotated or shifted copy (black corners) from rescaling the rest of a
    low-contrast image; a constant image stays 0.
    """
    import torch

    flat = x.flatten(1)
    med = flat.median(1).values.view(-1, 1, 1, 1)
    mad = (flat - med.view(-1, 1)).abs().median(1).values.view(-1, 1, 1, 1) * 1.4826
    scale = torch.maximum(mad, flat.std(1).view(-1, 1, 1, 1) * 0.1).clamp_min(1e-3)
    return ((x - med) / scale).clamp(-4, 4)


def to_grey_array(images: list, size: int) -> np.ndarray:
    """B RGB PIL images -> (B, size, size) uint8 greyscale, resized with an antialiasing bilinear filter."""
    from PIL import Image

    if not images:
        return np.zeros((0, size, size), np.uint8)
    return np.stack([np.asarray(im.convert("L").resize((size, size), Image.BILINEAR, reducing_gap=None))
                     for im in images])


def sscd_loss(z, temperature: float, entropy_weight: float):
    """SSCD's loss on (2B, D) unit rows where rows i and i + B are copies of one image.

    InfoNCE: for each row, -log( e^{s_pos/T} / (e^{s_pos/T} + Σ_{non-matches} e^{s/T}) ), averaged; entropy:
    -λ · mean log ||z_i - z_nn(i)|| with nn(i) the closest non-matching row. Returns (total, infonce, entropy).
    """
    import torch

    n = z.shape[0]
    b = n // 2
    sim = z @ z.T  # (2B, 2B)
    idx = torch.arange(n)
    partner = (idx + b) % n
    non = torch.ones_like(sim, dtype=torch.bool)
    non[idx, idx] = False
    non[idx, partner] = False
    logits = sim / temperature
    pos = logits[idx, partner]
    neg = logits.masked_fill(~non, float("-inf"))
    infonce = (torch.logsumexp(torch.cat([pos[:, None], neg], 1), 1) - pos).mean()
    nearest = sim.masked_fill(~non, -2.0).max(1).values
    entropy = -torch.log((2 - 2 * nearest).clamp_min(1e-8).sqrt()).mean() * entropy_weight
    return infonce + entropy, infonce, entropy


@dataclass
class CopyEmbedder:
    """The trained embedder as an :class:`~fmgauge.contamination.embedders.ImageEmbedder` (name ``copy``)."""

    path: Path  # model.pt written by train_copy_embedder
    cfg: CopyEmbedderConfig
    name: str = "copy"
    _net: object | None = field(default=None, repr=False)
    _digest: str = field(default="", repr=False)

    def identity(self) -> dict:
        if not self._digest:
            self._digest = hashlib.sha256(Path(self.path).read_bytes()).hexdigest()[:24]
        return {"kind": "copy", "weights": self._digest, "size": self.cfg.size, "version": VERSION}

    def check(self) -> None:
        if not Path(self.path).is_file():
            raise FmgaugeError(f"copy embedder weights {self.path} are missing; train them first.")

    def prepare(self) -> None:
        if self._net is not None:
            return
        import torch

        net = _net(self.cfg)
        net.load_state_dict(torch.load(self.path, map_location="cpu", weights_only=True))
        self._net = net.eval()

    def embed_arrays(self, grey: np.ndarray) -> np.ndarray:
        """(B, S, S) uint8 greyscale at ``cfg.size`` -> (B, dim) float32 unit rows."""
        import torch

        self.prepare()
        out = []
        with torch.inference_mode():
            for i in range(0, len(grey), 256):
                x = torch.from_numpy(grey[i:i + 256]).float().div_(255.0)[:, None]
                out.append(self._net(standardise(x)).numpy())
        return np.concatenate(out) if out else np.zeros((0, self.cfg.dim), np.float32)

    def embed(self, images: list) -> np.ndarray:
        """B RGB PIL images -> (B, dim) float32 unit rows."""
        return self.embed_arrays(to_grey_array(images, self.cfg.size)).astype(np.float32)


def _sample_rows(n: int, k: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(n, size=min(n, k), replace=False))


def _load_training_images(images, rows: np.ndarray, size: int, *, progress: bool) -> np.ndarray:
    """(M, size, size) uint8 of the rows that decode, read in runs of consecutive rows."""
    from fmgauge.core.progress import progress as tracker

    out = []
    with tracker("copy embedder: reading training images", len(rows), unit="image", enabled=progress) as bar:
        for i in range(0, len(rows), 256):
            part = rows[i:i + 256]
            for r in part:  # rows are sorted and sparse in a large reference: read one at a time
                im = images.load(int(r))
                if im is not None:
                    out.append(to_grey_array([im], size)[0])
            bar.advance(len(part))
    return np.stack(out) if out else np.zeros((0, size, size), np.uint8)


def train_copy_embedder(images, cfg: CopyEmbedderConfig | None = None, *, progress: bool = True) -> CopyEmbedder:
    """Train (or load from the cache, or resume) the copy embedder on a sample of ``images`` (an ImageSet).

    Cache: ``$FMGAUGE_CACHE/copy-embedders/<key>/`` with key = hash of (image-set fingerprint, ``cfg``); the
    finished ``model.pt`` and ``manifest.json`` (config, sample size, per-epoch losses, CPU and wall seconds); a
    ``checkpoint.pt`` after every epoch, so an interrupted training resumes at the next epoch.
    """
    import torch

    from fmgauge.core.cache import cache_root, stable_hash
    from fmgauge.core.progress import progress as tracker

    cfg = cfg or CopyEmbedderConfig()
    desc = {"images": images.fingerprint(), "config": cfg.model_dump(mode="json", exclude={"threads"}),
            "version": VERSION}
    root = cache_root() / "copy-embedders" / stable_hash(desc)
    model = root / "model.pt"
    if model.is_file():
        log.info("copy embedder: cached in %s", root)
        return CopyEmbedder(model, cfg)
    root.mkdir(parents=True, exist_ok=True)
    threads = torch.get_num_threads()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    try:
        t_wall, t_cpu = time.perf_counter(), time.process_time()
        rows = _sample_rows(len(images), cfg.train_images, cfg.seed)
        data = torch.from_numpy(_load_training_images(images, rows, cfg.size, progress=progress))
        if len(data) < 16:
            raise FmgaugeError(f"the copy embedder needs at least 16 readable reference images to train on; "
                               f"{len(data)} of {len(rows)} sampled could be read.")
        torch.manual_seed(cfg.seed)
        net = _net(cfg)
        opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        bs = min(cfg.batch_size, len(data))
        steps_per_epoch = len(data) // bs
        total = steps_per_epoch * cfg.epochs
        warm = steps_per_epoch

        def lr_at(step: int) -> float:
            if step < warm:
                return cfg.lr * (step + 1) / warm
            return cfg.lr * 0.5 * (1 + math.cos(math.pi * (step - warm) / max(1, total - warm)))

        gen = torch.Generator().manual_seed(cfg.seed)
        start_epoch, history = 0, []
        ckpt = root / "checkpoint.pt"
        if ckpt.is_file():
            state = torch.load(ckpt, map_location="cpu", weights_only=False)
            net.load_state_dict(state["model"])
            opt.load_state_dict(state["opt"])
            gen.set_state(state["gen"])
            start_epoch, history = state["epoch"], state["history"]
            log.info("copy embedder: resuming at epoch %d of %d", start_epoch + 1, cfg.epochs)
        from fmgauge.contamination.copy_augment import copy_augment

        net.train()
        with tracker("copy embedder: training", total, unit="step", enabled=progress) as bar:
            bar.advance(start_epoch * steps_per_epoch)
            for epoch in range(start_epoch, cfg.epochs):
                perm = torch.randperm(len(data), generator=gen)
                sums = np.zeros(3)
                for s in range(steps_per_epoch):
                    step = epoch * steps_per_epoch + s
                    for grp in opt.param_groups:
                        grp["lr"] = lr_at(step)
                    x = data[perm[s * bs:(s + 1) * bs]].float().div_(255.0)[:, None]  # (B, 1, S, S)
                    views = torch.cat([copy_augment(x, cfg.augment, gen), copy_augment(x, cfg.augment, gen)])
                    loss, nce, ent = sscd_loss(net(standardise(views), symmetric=False), cfg.temperature,
                                                cfg.entropy_weight)
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    vals = [loss.item(), nce.item(), ent.item()]
                    sums += vals
                    bar.advance(1, loss=vals[0], infonce=vals[1])
                history.append({"epoch": epoch + 1, "loss": sums[0] / steps_per_epoch,
                                "infonce": sums[1] / steps_per_epoch, "entropy": sums[2] / steps_per_epoch})
                _atomic_save({"model": net.state_dict(), "opt": opt.state_dict(), "gen": gen.get_state(),
                              "epoch": epoch + 1, "history": history}, ckpt)
        net.eval()
        manifest = {**desc, "trained_on": int(len(data)), "sampled": int(len(rows)), "history": history,
                    "wall_s": time.perf_counter() - t_wall, "cpu_s": time.process_time() - t_cpu,
                    "torch_threads": torch.get_num_threads(), "spec": images.spec}
        _atomic_save(net.state_dict(), model)
        (root / "manifest.json").write_text(json.dumps(manifest, indent=1, default=str))
        ckpt.unlink(missing_ok=True)
    finally:
        torch.set_num_threads(threads)
    return CopyEmbedder(model, cfg)


def _atomic_save(obj, path: Path) -> None:
    import torch

    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def training_manifest(embedder: CopyEmbedder) -> dict:
    """The manifest.json written beside the trained weights (losses, timings, sample size)."""
    f = Path(embedder.path).parent / "manifest.json"
    return json.loads(f.read_text()) if f.is_file() else {}
