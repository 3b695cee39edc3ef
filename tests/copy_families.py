"""Planted copies for the copy-detection tests and `benchmarks/bench_image_overlap.py`: one place for the families.

Made with PIL, not with fmgauge's own augmentation code (`contamination.copy_augment` trains the embedder), so the
detector is measured on transforms it was not built from.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageEnhance

FAMILIES = ("crop", "rotation", "contrast", "jpeg", "hflip", "exact")
HARDER = ("crop", "rotation", "contrast", "jpeg")  # 'harder': all four at once


def plant(a: np.ndarray, family: str, rng: np.random.Generator) -> np.ndarray:
    """A copy of the (H, W) uint8 image ``a``: one of :data:`FAMILIES`, or 'harder' (the steps of :data:`HARDER`
    in turn). Draws from ``rng`` in the order the steps run."""
    im = Image.fromarray(a)
    w, h = im.size
    for f in HARDER if family == "harder" else (family,):
        if f == "crop":  # 80-90 % of the side at a random offset, resized back
            fr = rng.uniform(0.8, 0.9)
            cw, ch = round(fr * w), round(fr * h)
            x, y = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
            im = im.crop((x, y, x + cw, y + ch)).resize((w, h), Image.BILINEAR)
        elif f == "rotation":  # 2-5 degrees either way, black corners
            im = im.rotate(float(rng.choice([-1, 1]) * rng.uniform(2, 5)), resample=Image.BILINEAR)
        elif f == "contrast":  # ±10-20 %
            im = ImageEnhance.Contrast(im).enhance(float(rng.choice([rng.uniform(0.8, 0.9),
                                                                     rng.uniform(1.1, 1.2)])))
        elif f == "jpeg":
            buf = io.BytesIO()
            im.save(buf, "JPEG", quality=40)
            im = Image.open(io.BytesIO(buf.getvalue())).convert("L")
        elif f == "hflip":
            im = im.transpose(Image.FLIP_LEFT_RIGHT)
    return np.asarray(im)
