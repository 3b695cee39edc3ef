"""MedMNIST datasets (official npz layout) and the image-array helpers other image loaders share.

Registered in :data:`~fmgauge.core.datasets_base.DATASETS`: ``pneumoniamnist``, ``breastmnist``, ``retinamnist``
and ``retinamnist-binary`` (grade 0 vs grade >= 1). Images (N, C, H, W) uint8, labels (N,) int64.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fmgauge.core.datasets_base import DATASETS, Dataset, Split, data_dirs, find_data_file, offline
from fmgauge.core.validation import FmgaugeError


def to_nchw(images: np.ndarray) -> np.ndarray:
    """(N, H, W) or (N, H, W, C) uint8 -> (N, C, H, W) uint8."""
    if images.ndim == 3:
        return images[:, None]
    if images.ndim == 4 and images.shape[-1] in (1, 3):
        return np.ascontiguousarray(images.transpose(0, 3, 1, 2))
    raise FmgaugeError(f"images must be (N, H, W) or (N, H, W, C) with C in (1, 3), got shape {images.shape}.")


def split_from_arrays(split: str, images: np.ndarray, labels: np.ndarray) -> Split:
    y = np.asarray(labels).reshape(len(labels), -1)
    if y.shape[1] != 1:
        raise FmgaugeError(f"split {split!r}: expected one label per image, got labels of shape {labels.shape}.")
    ids = np.array([f"{split}/{i}" for i in range(len(y))])
    return Split(x=to_nchw(np.asarray(images, dtype=np.uint8)), y=y[:, 0].astype(np.int64), ids=ids)


# ---------------------------------------------------------------------------------------------- MedMNIST

MEDMNIST_CLASSES: dict[str, tuple[str, ...]] = {
    "pneumoniamnist": ("normal", "pneumonia"),
    "breastmnist": ("malignant", "normal or benign"),
    "retinamnist": ("grade 0", "grade 1", "grade 2", "grade 3", "grade 4"),
    "dermamnist": (
        "actinic keratosis", "basal cell carcinoma", "benign keratosis", "dermatofibroma",
        "melanoma", "melanocytic nevus", "vascular lesion",
    ),
}


def load_medmnist_npz(flag: str, *, size: int = 28) -> Dataset:
    """Load ``<flag>.npz`` (official MedMNIST layout: ``{train,val,test}_{images,labels}``).

    Searched as ``medmnist/<flag>.npz`` and ``<flag>.npz`` in every data directory; online, downloaded with the
    ``medmnist`` package into ``$FMGAUGE_DATA/medmnist``.
    """
    fname = f"{flag}.npz" if size == 28 else f"{flag}_{size}.npz"
    try:
        path = find_data_file(
            f"medmnist/{fname}", fname,
            how_to_get=f"put {fname} (official MedMNIST npz) in <data dir>/medmnist/, or set FMGAUGE_DATA to a "
            f"folder holding medmnist/{fname}; online, `pip install 'fmgauge[online]'` lets fmgauge download it.",
        )
    except FmgaugeError:
        if offline():
            raise
        path = _download_medmnist(flag, size)
    return read_medmnist_npz(path, flag, MEDMNIST_CLASSES.get(flag))


def read_medmnist_npz(path: Path, name: str, classes: tuple[str, ...] | None = None) -> Dataset:
    """An image dataset from an npz in the MedMNIST layout: ``{train,val,test}_images`` (N, H, W[, C]) uint8 and
    ``{split}_labels`` (N, 1), optionally ``class_names`` (K,); train and test are required. Also what
    ``npz:<path>`` datasets load."""
    from fmgauge.core.files import check_npz

    check_npz(path, what=f"dataset {name}")
    with np.load(path, allow_pickle=False) as z:
        if classes is None and "class_names" in z:
            classes = tuple(map(str, z["class_names"]))
        missing = [k for k in ("train_images", "train_labels", "test_images", "test_labels") if k not in z]
        if missing:
            raise FmgaugeError(f"{path} is not a MedMNIST npz: missing keys {missing}; it has {z.files}.")
        splits = {
            s: split_from_arrays(s, z[f"{s}_images"], z[f"{s}_labels"])
            for s in ("train", "val", "test")
            if f"{s}_images" in z
        }
    classes = classes or tuple(str(c) for c in range(int(max(sp.y.max() for sp in splits.values())) + 1))
    return Dataset(name=name, class_names=classes, splits=splits, source=str(path))


def _download_medmnist(flag: str, size: int) -> Path:
    try:
        import medmnist
    except ImportError as e:
        raise FmgaugeError(f"{flag}.npz not found locally; install `medmnist` (pip install 'fmgauge[online]') "
                           "to download it, or place the npz in a data directory.") from e
    root = (data_dirs()[0] / "medmnist")
    root.mkdir(parents=True, exist_ok=True)
    info = medmnist.INFO[flag]
    cls = getattr(medmnist, info["python_class"])
    try:
        cls(split="test", root=str(root), download=True, size=size)
    except Exception as e:  # network errors vary by library version
        raise FmgaugeError(f"downloading MedMNIST {flag!r} (size {size}) into {root} failed: {e}") from e
    fname = f"{flag}.npz" if size == 28 else f"{flag}_{size}.npz"
    return root / fname


def relabel(ds: Dataset, name: str, groups: list[list[int]], class_names: tuple[str, ...], desc: str) -> Dataset:
    """Merge original classes into new ones: ``groups[k]`` lists the original classes of new class k."""
    lut = np.full(max(max(g) for g in groups) + 1, -1, dtype=np.int64)
    for k, g in enumerate(groups):
        lut[g] = k
    splits = {s: Split(x=sp.x, y=lut[sp.y], ids=sp.ids) for s, sp in ds.splits.items()}
    return Dataset(name=name, class_names=class_names, splits=splits, source=ds.source, description=desc)


DATASETS.add("pneumoniamnist", lambda: load_medmnist_npz("pneumoniamnist"))
DATASETS.add("breastmnist", lambda: load_medmnist_npz("breastmnist"))
DATASETS.add("retinamnist", lambda: load_medmnist_npz("retinamnist"))
DATASETS.add(
    "retinamnist-binary",
    lambda: relabel(load_medmnist_npz("retinamnist"), "retinamnist-binary", [[0], [1, 2, 3, 4]],
                    ("no retinopathy", "retinopathy"), "RetinaMNIST, DR grade 0 vs grade >= 1"),
)
