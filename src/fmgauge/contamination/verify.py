"""Copy verification: align two images by a dense search over similarity transforms + flip, score by correlation.

Copy-detection pipelines re-rank a global shortlist with a geometric check (keypoints + RANSAC on photographs).
Keypoint detectors find almost nothing on a 28 × 28 MedMNIST image, so fmgauge checks a candidate pair the dense
way: it searches every transform of a grid and keeps the best normalised cross-correlation (NCC).

Notation: A (P, S, S) the query images (benchmark or control), B (P, S, S) their candidates from the reference,
both greyscale, resized to S = ``size``, z-scored and lightly blurred (``blur`` = 0.6 px, so JPEG and resampling
noise costs a copy less correlation; docs/benchmarks.md section 10 compares it with no blur). A template T_g is A's central window of side w =
``window`` · S, sampled (bilinear) under each transform g = (flip f, rotation θ, scale σ): the point (u, v) of a
w × w patch of B (pixel offsets from the patch centre) is read from A at

    centre(A) + R(-θ) · (f · u, v) / σ                      f ∈ {1, -1}, θ ∈ ±rotate_deg, σ ∈ [1/max_scale, max_scale]

and compared with every w × w patch of B (every integer shift; ``unfold``), NCC(T_g, patch) = <T̃_g, p̃> with both
centred and unit-norm. The score is max over g and shifts, in [-1, 1]: 1 means B holds an affine-intensity copy of
A's window under that transform (so contrast, brightness and gamma-free copies align exactly; JPEG and
resampling lower it slightly). A coarse grid (``rotations`` × ``scales`` × 2 flips) is followed by a local
refinement around its best transform (θ ± half a step and σ ± half a step, then ±0.5 px), so the score of a true copy is
not limited by the grid's spacing.

What it finds: crops at any offset that keep the template's source (A's central window spans 75 % / σ of A's
side: 60 % for a copy zoomed 1.25×, so any crop to 80 % or more contains it), zooms within ``max_scale``, rotations
within ±``rotate_deg``, shifts within ±(S - w)/2 px, horizontal flips,
contrast/brightness changes, JPEG and resampling. What it cannot: vertical flips and larger rotations (outside
the grid), crops so tight that A's central window is cut, local edits that change the window's content (overlays,
inpainting), non-affine intensity changes (inversion scores -1, so it is not a match), and anything that is not
the same picture (another scan of the same patient scores like any unrelated image of the modality). The score
of unrelated images of one modality is high on tiny smooth images (0.95–0.98 between chest X-rays at 28 px), so
the threshold must come from a same-modality control (:mod:`~fmgauge.contamination.image_overlap`).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np
from pydantic import BaseModel, Field

log = logging.getLogger(__name__)
PARAMS = ("flip", "angle_deg", "scale", "dx", "dy")  # columns of VerifyResult.params


class VerifyConfig(BaseModel):
    """The transform grid and window of the verification stage (module docstring)."""

    size: int = Field(32, ge=12, le=128, description="side the two images are compared at (pixels)")
    window: float = Field(0.75, gt=0.2, le=0.95, description="side of A's central window, fraction of S")
    rotate_deg: float = Field(10.0, ge=0, le=45, description="rotations searched: ± this many degrees")
    rotate_step: float = Field(2.5, gt=0, le=45, description="coarse rotation step (degrees)")
    max_scale: float = Field(1.45, ge=1.0, le=3.0, description="zooms searched: 1/this .. this")
    scale_steps: int = Field(9, ge=1, le=64, description="coarse zoom steps (log-spaced)")
    blur: float = Field(0.6, ge=0, le=4, description="Gaussian blur (sigma, pixels at size) of both images before "
                        "comparing: JPEG and resampling noise costs a copy less correlation")
    flips: bool = Field(True, description="also search the horizontally flipped image")
    refine: bool = Field(True, description="refine the best coarse transform locally (θ, σ, sub-pixel shift)")
    batch_pairs: int = Field(64, ge=1, le=100_000, description="pairs per batched computation (memory bound)")


@dataclass
class VerifyResult:
    """Per pair: ``score`` (P,) float32 best NCC; ``params`` (P, 5) float32 = flip (±1), θ (degrees), σ, and the
    shift (dx, dy) in pixels at ``size`` of B's patch centre from B's centre."""

    score: np.ndarray
    params: np.ndarray


def grey_stack(images: list, size: int) -> np.ndarray:
    """B RGB PIL images -> (B, size, size) float32 greyscale in 0..255 (antialiased bilinear resize)."""
    from PIL import Image

    if not images:
        return np.zeros((0, size, size), np.float32)
    return np.stack([np.asarray(im.convert("L").resize((size, size), Image.BILINEAR, reducing_gap=None),
                                np.float32) for im in images])


def zscore(x):
    """(P, S, S) tensor -> per-image zero mean, unit std."""
    x = x - x.mean((1, 2), keepdim=True)
    return x / x.std((1, 2), keepdim=True).clamp_min(1e-6)


def gaussian_blur(x, sigma: float):
    """(P, S, S) tensor blurred by a separable Gaussian of ``sigma`` pixels (edges replicated); 0: unchanged."""
    import torch
    import torch.nn.functional as F

    if sigma <= 0:
        return x
    r = max(1, int(math.ceil(3 * sigma)))
    t = torch.arange(-r, r + 1, dtype=x.dtype)
    k = torch.exp(-t ** 2 / (2 * sigma ** 2))
    k = k / k.sum()
    y = F.pad(x[:, None], (r, r, r, r), mode="replicate")
    return F.conv2d(F.conv2d(y, k.view(1, 1, 1, -1)), k.view(1, 1, -1, 1))[:, 0]


def coarse_grid(cfg: VerifyConfig) -> np.ndarray:
    """(G, 3) rows (flip, θ degrees, σ) of the coarse search."""
    n_rot = int(math.floor(cfg.rotate_deg / cfg.rotate_step + 1e-9))
    rots = np.arange(-n_rot, n_rot + 1) * cfg.rotate_step
    scales = np.exp(np.linspace(-math.log(cfg.max_scale), math.log(cfg.max_scale), cfg.scale_steps)) \
        if cfg.scale_steps > 1 else np.ones(1)
    flips = (1.0, -1.0) if cfg.flips else (1.0,)
    return np.array([(f, t, s) for f in flips for t in rots for s in scales], np.float32)


def _sample_points(params, w: int, size: int):
    """params (P, G, 5) (flip, θ, σ, ox, oy) -> grid_sample coordinates (P, G·w, w, 2) into A.

    (ox, oy) is a sub-pixel offset of the template's centre in A (pixels). A (1, G, 5) ``params`` gives
    (1, G·w, w, 2), to be expanded over the pairs.
    """
    import torch

    c = torch.arange(w, dtype=params.dtype) - (w - 1) / 2
    v, u = torch.meshgrid(c, c, indexing="ij")  # (w, w) B-patch pixel offsets
    f, th, s, ox, oy = params.unbind(-1)  # (P, G) each
    th = torch.deg2rad(th)
    # A-point = R(-θ) (f u, v) / σ + o, written as a 2 x 2 matrix per transform applied to (u, v)
    cs, sn = torch.cos(th) / s, torch.sin(th) / s
    m = torch.stack([f * cs, sn, -f * sn, cs], -1)  # (P, G, 4): xa = m0 u + m1 v, ya = m2 u + m3 v
    uv = torch.stack([u.reshape(-1), v.reshape(-1)], 0)  # (2, w²)
    xa = m[..., 0:2] @ uv + ox[..., None]  # (P, G, w²)
    ya = m[..., 2:4] @ uv + oy[..., None]
    p, g = params.shape[:2]
    return (torch.stack([xa, ya], -1) / (size / 2)).reshape(p, g * w, w, 2)  # align_corners=False coordinates


def _best(a, patches, params, w: int, size: int):
    """Best NCC of A's templates under ``params`` (P, G, 5) or (1, G, 5) (shared by all pairs) over B's
    ``patches`` (P, w², L): (score (P,), transform index (P,), patch position (P,))."""
    import torch
    import torch.nn.functional as F

    p, g = len(a), params.shape[1]
    pts = _sample_points(params, w, size)
    if pts.shape[0] != p:
        pts = pts.expand(p, -1, -1, -1)
    t = F.grid_sample(a[:, None], pts, mode="bilinear", padding_mode="border",
                      align_corners=False)[:, 0].reshape(p, g, w * w)  # (P, G, w²)
    t = t - t.mean(-1, keepdim=True)
    t = t / t.norm(dim=-1, keepdim=True).clamp_min(1e-6)
    ncc = torch.bmm(t, patches)  # (P, G, L)
    best = ncc.flatten(1).max(1)
    return best.values, best.indices // ncc.shape[2], best.indices % ncc.shape[2]


def verify_pairs(a: np.ndarray, b: np.ndarray, cfg: VerifyConfig | None = None) -> VerifyResult:
    """Verify P pairs: ``a`` (P, S, S) queries, ``b`` (P, S, S) candidates (greyscale at ``cfg.size``)."""
    import torch
    import torch.nn.functional as F

    cfg = cfg or VerifyConfig()
    n = len(a)
    score = np.zeros(n, np.float32)
    params = np.zeros((n, 5), np.float32)
    if n == 0:
        return VerifyResult(score, params)
    s = cfg.size
    w = max(3, int(round(cfg.window * s)))
    npos = s - w + 1  # patch positions per axis
    grid = torch.from_numpy(coarse_grid(cfg))  # (G, 3)
    g0 = torch.cat([grid, torch.zeros(len(grid), 2)], 1)  # (G, 5) with no sub-pixel offset
    rot_h = cfg.rotate_step / 2
    sc_h = math.exp(math.log(cfg.max_scale) / max(cfg.scale_steps - 1, 1))  # half a log-step
    # refinement, in two small local grids: (θ ± half a step, σ ± half a step), then (± 0.5 px sub-pixel offset)
    rot_scale = torch.tensor([(dt, ds, 0.0, 0.0) for dt in (-rot_h, 0.0, rot_h) for ds in (1 / sc_h, 1.0, sc_h)])
    subpixel = torch.tensor([(0.0, 1.0, ox, oy) for ox in (-0.5, 0.0, 0.5) for oy in (-0.5, 0.0, 0.5)])
    with torch.inference_mode():
        for i in range(0, n, cfg.batch_pairs):
            at = gaussian_blur(zscore(torch.from_numpy(np.ascontiguousarray(a[i:i + cfg.batch_pairs], np.float32))),
                               cfg.blur)
            bt = gaussian_blur(zscore(torch.from_numpy(np.ascontiguousarray(b[i:i + cfg.batch_pairs], np.float32))),
                               cfg.blur)
            p = len(at)
            patches = F.unfold(bt[:, None], w)  # (P, w², L)
            patches = patches - patches.mean(1, keepdim=True)
            patches = patches / patches.norm(dim=1, keepdim=True).clamp_min(1e-6)
            val, gi, li = _best(at, patches, g0[None], w, s)
            best = g0[gi]  # (P, 5)
            if cfg.refine:
                for local in (rot_scale, subpixel):
                    cand = best[:, None].repeat(1, len(local), 1)  # (P, L, 5)
                    cand[..., 1] += local[:, 0]
                    cand[..., 2] *= local[:, 1]
                    cand[..., 3] += local[:, 2]
                    cand[..., 4] += local[:, 3]
                    v2, g2, l2 = _best(at, patches, cand, w, s)
                    better = v2 > val
                    val = torch.where(better, v2, val)
                    best = torch.where(better[:, None], cand[torch.arange(p), g2], best)
                    li = torch.where(better, l2, li)
            # B's matched patch is centred d = (dx, dy) px from B's centre, and A's point x maps to B at
            # c_B + t + M (x - c_A) with M = σ F R(θ) and t = d - M o (o: the template's sub-pixel offset in A)
            d = torch.stack([(li % npos).float() - (npos - 1) / 2, (li // npos).float() - (npos - 1) / 2], 1)
            m = linear_part(best[:, 0], best[:, 1], best[:, 2])  # (P, 2, 2)
            t = d - (m @ best[:, 3:5, None])[..., 0]
            score[i:i + p] = _exact_ncc(at, bt, best, li, w, s)
            params[i:i + p] = torch.cat([best[:, :3], t], 1).numpy()
    return VerifyResult(score, params)


def _exact_ncc(at, bt, best, li, w: int, size: int) -> np.ndarray:
    """The NCC of each pair's best (template, patch) recomputed in float64: (P,) float32.

    An exact copy then scores 1 within 1e-7, so the near-identical cut-off (1 - 1e-6) does not depend on float32
    rounding of a sum of w² products.
    """
    import torch
    import torch.nn.functional as F

    p = len(at)
    t = F.grid_sample(at[:, None].double(), _sample_points(best[:, None].double(), w, size).double(),
                      mode="bilinear", padding_mode="border", align_corners=False)[:, 0].reshape(p, w * w)
    patches = F.unfold(bt[:, None].double(), w)[torch.arange(p), :, li]  # (P, w²)
    t = t - t.mean(1, keepdim=True)
    patches = patches - patches.mean(1, keepdim=True)
    ncc = (t * patches).sum(1) / (t.norm(dim=1) * patches.norm(dim=1)).clamp_min(1e-12)
    return ncc.float().numpy()


def linear_part(flip, angle_deg, scale):
    """(P,) flip, θ, σ tensors -> (P, 2, 2) M = σ F R(θ), F = diag(flip, 1), acting on (x, y) pixel offsets."""
    import torch

    th = torch.deg2rad(angle_deg)
    c, s = torch.cos(th) * scale, torch.sin(th) * scale
    return torch.stack([torch.stack([flip * c, -flip * s], -1), torch.stack([s, c], -1)], -2)


def align(b: np.ndarray, params: np.ndarray, *, size: int, out: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """B resampled into A's frame under a verified transform: (B aligned (out, out), valid mask (out, out) bool).

    ``b`` (H, W) greyscale at any size; ``params`` (5,) from :func:`verify_pairs` run at ``size``; ``out`` is the
    side of the result (default H). A's pixel x maps to B at c_B + t + M (x - c_A) (see :func:`verify_pairs`),
    which in grid_sample's normalised coordinates is x_B = M x_A + 2 t / size.
    """
    import torch
    import torch.nn.functional as F

    out = out or b.shape[0]
    f, th, s, tx, ty = (torch.tensor([float(v)]) for v in params)
    m = linear_part(f, th, s)[0]
    theta = torch.cat([m, torch.stack([2 * tx / size, 2 * ty / size])], 1)[None].float()  # (1, 2, 3)
    grid = F.affine_grid(theta, [1, 1, out, out], align_corners=False)
    src = torch.from_numpy(np.ascontiguousarray(b, np.float32))[None, None]
    warped = F.grid_sample(src, grid, mode="bilinear", padding_mode="zeros", align_corners=False)[0, 0]
    ones = F.grid_sample(torch.ones_like(src), grid, mode="bilinear", padding_mode="zeros", align_corners=False)[0, 0]
    return warped.numpy(), ones.numpy() > 0.999


# --------------------------------------------------------------------------------------- cached, by query chunk

@dataclass
class Verified:
    """Every (query, candidate) pair verified for one image set: ``rows`` (Q,) query rows, ``cands`` (Q, C) reference
    rows (-1 = none), ``score`` (Q, C) float32 (-inf where no candidate), ``params`` (Q, C, 5)."""

    rows: np.ndarray
    cands: np.ndarray
    score: np.ndarray
    params: np.ndarray

    def best(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per query: (best score (Q,), its reference row (Q,), its params (Q, 5))."""
        j = np.argmax(self.score, axis=1) if self.score.shape[1] else np.zeros(len(self.rows), int)
        q = np.arange(len(self.rows))
        if not self.score.shape[1]:
            return np.full(len(q), -np.inf, np.float32), np.full(len(q), -1), np.zeros((len(q), 5), np.float32)
        return self.score[q, j], self.cands[q, j], self.params[q, j]


def verify_candidates(queries, rows: np.ndarray, reference, cands: np.ndarray, cfg: VerifyConfig, *,
                      chunk: int = 512, label: str = "images", progress: bool = True) -> Verified:
    """Verify each query row against its candidate reference rows, cached and resumable by query chunk.

    ``queries`` / ``reference`` are ImageSets; ``rows`` (Q,) decoded query rows; ``cands`` (Q, C) reference rows
    (-1 for none). Chunk c (``chunk`` queries) is stored in ``$FMGAUGE_CACHE/verify/<key>/<hash>.npz`` where key
    hashes (both sets' fingerprints, ``cfg``) and hash the chunk's rows and candidates, so a re-run with the same
    shortlist verifies nothing and an interrupted one resumes at the first missing chunk.
    """
    import os

    from fmgauge.core.cache import cache_root, stable_hash
    from fmgauge.core.progress import progress as tracker

    rows = np.asarray(rows, np.int64)
    cands = np.asarray(cands, np.int64).reshape(len(rows), -1)
    q, c = cands.shape
    score = np.full((q, c), -np.inf, np.float32)
    params = np.zeros((q, c, 5), np.float32)
    root = cache_root() / "verify" / stable_hash({"queries": queries.fingerprint(), "reference": reference.fingerprint(),
                                                "cfg": cfg.model_dump(mode="json"), "version": 1})
    root.mkdir(parents=True, exist_ok=True)
    todo = []
    for s in range(0, q, chunk):
        r, k = rows[s:s + chunk], cands[s:s + chunk]
        f = root / f"{stable_hash({'rows': r.tolist(), 'cands': k.tolist()}, 24)}.npz"
        if f.is_file():
            with np.load(f) as z:
                score[s:s + chunk], params[s:s + chunk] = z["score"], z["params"]
        else:
            todo.append((s, f))
    n_pairs = sum(int((cands[s:s + chunk] >= 0).sum()) for s, _ in todo)
    with tracker(f"verifying {label}", n_pairs, unit="pair", enabled=progress and bool(todo)) as bar:
        for s, f in todo:
            r, k = rows[s:s + chunk], cands[s:s + chunk]
            qi, ci = np.nonzero(k >= 0)
            a = load_grey(queries, r, cfg.size)  # (Qc, S, S)
            uniq, inv = np.unique(k[qi, ci], return_inverse=True)
            b = load_grey(reference, uniq, cfg.size)
            res = verify_pairs(a[qi], b[inv], cfg)
            sc = np.full(k.shape, -np.inf, np.float32)
            pr = np.zeros((*k.shape, 5), np.float32)
            sc[qi, ci], pr[qi, ci] = res.score, res.params
            tmp = f.with_name(f".{f.stem}.tmp{os.getpid()}.npz")
            np.savez(tmp, score=sc, params=pr)
            os.replace(tmp, f)
            score[s:s + chunk], params[s:s + chunk] = sc, pr
            bar.advance(len(qi))
    return Verified(rows, cands, score, params)


def load_grey(images, rows: np.ndarray, size: int) -> np.ndarray:
    """(len(rows), size, size) float32 greyscale of ImageSet rows (an unreadable row gives a flat image)."""
    out = np.zeros((len(rows), size, size), np.float32)
    for i, r in enumerate(rows):
        im = images.load(int(r))
        if im is not None:
            out[i] = grey_stack([im], size)[0]
    return out
