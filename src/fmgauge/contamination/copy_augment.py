"""Copy augmentations for training the copy embedder: what a figure goes through between two publications.

Notation: ``x`` (B, 1, S, S) float32 greyscale in [0, 1]; every function returns a tensor of the same shape, one
independent random draw per image from ``generator``. The families (defaults in :class:`AugmentConfig`):

- **geometry** (one affine warp per image, bilinear, black fill as a rotated or shifted figure gets): crop to a
  random square window of side ``crop_min``..1 of the image at a random offset (then resized back, i.e. a zoom of
  1..1/crop_min), rotation by ±``rotate_deg``, a shift of ±``shift`` of the side, horizontal flip with
  probability ``flip_p``;
- **photometric**: contrast × [1 - ``contrast``, 1 + ``contrast``] about the image mean, brightness ± ``brightness``,
  gamma;
- **resampling and JPEG**: with probability ``jpeg_p`` the image is resized to a random side in
  ``jpeg_sides``, JPEG-compressed at a quality in ``jpeg_quality`` (greyscale baseline JPEG: 8 × 8 block DCT,
  quantisation by the IJG luminance table scaled to the quality, rounding, inverse DCT; the entropy coder is
  lossless and left out) and resized back; with probability ``blur_p`` a light Gaussian blur;
- a little Gaussian pixel noise.

SSCD (Pizzi et al., CVPR 2022) trains with the same kinds of transforms (its "strong blur" setting: crops,
flips, rotations, blur, JPEG, colour changes); overlays of text/emoji are left out: medical figures rarely get them.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from pydantic import BaseModel, Field

# IJG (libjpeg) standard luminance quantisation table, Annex K of ITU-T T.81
_JPEG_LUMA = torch.tensor([
    [16, 11, 10, 16, 24, 40, 51, 61], [12, 12, 14, 19, 26, 58, 60, 55], [14, 13, 16, 24, 40, 57, 69, 56],
    [14, 17, 22, 29, 51, 87, 80, 62], [18, 22, 37, 56, 68, 109, 103, 77], [24, 35, 55, 64, 81, 104, 113, 92],
    [49, 64, 78, 87, 103, 121, 120, 101], [72, 92, 95, 98, 112, 100, 103, 99]], dtype=torch.float32)


class AugmentConfig(BaseModel):
    """Strengths of the copy augmentations (module docstring)."""

    crop_min: float = Field(0.7, gt=0.2, le=1.0, description="smallest crop side, as a fraction of the image side")
    rotate_deg: float = Field(10.0, ge=0, le=45, description="rotation drawn uniformly in ±this many degrees")
    shift: float = Field(0.06, ge=0, le=0.3, description="extra shift, fraction of the side, each axis")
    flip_p: float = Field(0.5, ge=0, le=1, description="probability of a horizontal flip")
    contrast: float = Field(0.4, ge=0, lt=1, description="contrast factor drawn in 1 ± this")
    brightness: float = Field(0.15, ge=0, le=0.5, description="brightness shift drawn in ± this (of the 0..1 range)")
    gamma: float = Field(0.3, ge=0, lt=1, description="gamma drawn in exp(± this)")
    jpeg_p: float = Field(0.6, ge=0, le=1, description="probability of resampling + JPEG")
    jpeg_quality: tuple[int, int] = Field((25, 95), description="JPEG quality range (IJG scale 1..100)")
    jpeg_sides: tuple[int, int] = Field((24, 64), description="side range the image is JPEG-compressed at (pixels)")
    blur_p: float = Field(0.3, ge=0, le=1, description="probability of a Gaussian blur (sigma 0.3..1.2 px)")
    noise: float = Field(0.01, ge=0, le=0.2, description="std of added Gaussian pixel noise (0..1 range)")


def _u(n: int, lo: float, hi: float, g: torch.Generator) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(n, generator=g)


def geometric(x: torch.Tensor, cfg: AugmentConfig, g: torch.Generator) -> torch.Tensor:
    """Crop-and-zoom, rotation, shift and flip as one affine warp per image; (B, 1, S, S) -> (B, 1, S, S)."""
    b = x.shape[0]
    side = _u(b, cfg.crop_min, 1.0, g)  # crop side / image side: the output shows a window of this size
    room = 1.0 - side  # the window's centre may move this far (in units of half the side) and stay inside
    cx, cy = _u(b, -1, 1, g) * room, _u(b, -1, 1, g) * room
    cx, cy = cx + _u(b, -2, 2, g) * cfg.shift, cy + _u(b, -2, 2, g) * cfg.shift
    th = torch.deg2rad(_u(b, -cfg.rotate_deg, cfg.rotate_deg, g))
    flip = torch.where(torch.rand(b, generator=g) < cfg.flip_p, -1.0, 1.0)
    cos, sin = torch.cos(th) * side, torch.sin(th) * side
    # output (u, v) in [-1, 1] -> input: centre + side * R(θ) (flip·u, v)
    theta = torch.stack([torch.stack([cos * flip, -sin, cx], 1), torch.stack([sin * flip, cos, cy], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def photometric(x: torch.Tensor, cfg: AugmentConfig, g: torch.Generator) -> torch.Tensor:
    """Contrast about the mean, brightness and gamma; clipped to [0, 1]."""
    b = x.shape[0]
    mean = x.mean((1, 2, 3), keepdim=True)
    c = _u(b, 1 - cfg.contrast, 1 + cfg.contrast, g).view(b, 1, 1, 1)
    y = ((x - mean) * c + mean + _u(b, -cfg.brightness, cfg.brightness, g).view(b, 1, 1, 1)).clamp(0, 1)
    return y.pow(torch.exp(_u(b, -cfg.gamma, cfg.gamma, g)).view(b, 1, 1, 1))


def _dct_matrix(n: int = 8) -> torch.Tensor:
    k = torch.arange(n, dtype=torch.float32)
    m = torch.cos(math.pi * (2 * k[None, :] + 1) * k[:, None] / (2 * n)) * math.sqrt(2 / n)
    m[0] /= math.sqrt(2)
    return m  # (n, n) orthonormal DCT-II


def jpeg_quant_table(quality: torch.Tensor) -> torch.Tensor:
    """(B,) qualities 1..100 -> (B, 8, 8) luminance quantisers (IJG scaling: 5000/q below 50, 200 - 2q above)."""
    q = quality.float().clamp(1, 100)
    scale = torch.where(q < 50, 5000.0 / q, 200.0 - 2.0 * q)
    return ((_JPEG_LUMA[None] * scale.view(-1, 1, 1) + 50.0) / 100.0).floor().clamp(1, 255)


def jpeg(x: torch.Tensor, quality: torch.Tensor) -> torch.Tensor:
    """Baseline greyscale JPEG of (B, 1, H, W) in [0, 1] at (B,) qualities: 8 × 8 DCT quantisation, 8-bit output.

    H and W are padded to multiples of 8 by edge replication (as encoders do) and cropped back.
    """
    b, _, h, w = x.shape
    ph, pw = -h % 8, -w % 8
    p = F.pad(x, (0, pw, 0, ph), mode="replicate") * 255.0 - 128.0  # (B, 1, H', W')
    hh, ww = p.shape[2] // 8, p.shape[3] // 8
    blocks = p.view(b, hh, 8, ww, 8).permute(0, 1, 3, 2, 4)  # (B, hh, ww, 8, 8)
    d = _dct_matrix()
    coef = d @ blocks @ d.T
    qt = jpeg_quant_table(quality).view(b, 1, 1, 8, 8)
    rec = d.T @ (torch.round(coef / qt) * qt) @ d
    out = rec.permute(0, 1, 3, 2, 4).reshape(b, 1, hh * 8, ww * 8)[:, :, :h, :w]
    return (torch.round(out + 128.0).clamp(0, 255)) / 255.0


def _blur(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Per-image separable Gaussian blur of (B, 1, S, S) with (B,) sigmas (pixels), radius 3."""
    r = 3
    t = torch.arange(-r, r + 1, dtype=torch.float32)
    k = torch.exp(-t[None] ** 2 / (2 * sigma[:, None] ** 2))
    k = k / k.sum(1, keepdim=True)  # (B, 7)
    b = x.shape[0]
    y = F.pad(x, (r, r, r, r), mode="replicate").transpose(0, 1)  # (1, B, S+6, S+6)
    y = F.conv2d(y, k.view(b, 1, 1, -1), groups=b)
    y = F.conv2d(y, k.view(b, 1, -1, 1), groups=b)
    return y.transpose(0, 1)


def resample_jpeg_blur(x: torch.Tensor, cfg: AugmentConfig, g: torch.Generator) -> torch.Tensor:
    """With probability jpeg_p: down/up-sampling through a random side with JPEG on the way; then maybe a blur."""
    b, _, s, _ = x.shape
    out = x.clone()
    pick = torch.rand(b, generator=g) < cfg.jpeg_p
    if pick.any():
        side = int(torch.randint(cfg.jpeg_sides[0], cfg.jpeg_sides[1] + 1, (1,), generator=g))  # one side per call
        q = torch.randint(cfg.jpeg_quality[0], cfg.jpeg_quality[1] + 1, (int(pick.sum()),), generator=g)
        y = F.interpolate(x[pick], size=(side, side), mode="bilinear", antialias=True, align_corners=False)
        y = jpeg(y.clamp(0, 1), q)
        out[pick] = F.interpolate(y, size=(s, s), mode="bilinear", align_corners=False)
    blur = torch.rand(b, generator=g) < cfg.blur_p
    if blur.any():
        out[blur] = _blur(out[blur], _u(int(blur.sum()), 0.3, 1.2, g))
    return out


def copy_augment(x: torch.Tensor, cfg: AugmentConfig, g: torch.Generator) -> torch.Tensor:
    """One random copy of each image of (B, 1, S, S) in [0, 1]: geometry, photometry, resampling/JPEG, noise."""
    y = resample_jpeg_blur(photometric(geometric(x, cfg, g), cfg, g), cfg, g)
    if cfg.noise > 0:
        y = y + cfg.noise * torch.randn(y.shape, generator=g)
    return y.clamp(0, 1)
