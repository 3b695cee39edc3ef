"""Dataset registry and loaders.

A dataset resolves by name through :data:`DATASETS` and loads into a :class:`Dataset`: named splits of inputs
``x`` — images (N, C, H, W) uint8, features (N, D) float32 (e.g. a frozen foundation model's embeddings), or
texts (N,) str (object dtype, see :mod:`fmgauge.core.datasets_text`) — labels ``y`` (N,) int and string ids ``"<split>/<index>"``.

Data directories are searched in order: ``$FMGAUGE_DATA``, ``./data``, ``../shared/data``. When a file is
missing the error lists every place tried and how to provide it; online, loaders for public datasets may download
into ``$FMGAUGE_DATA`` (never in silence, never when ``HF_HUB_OFFLINE``/``FMGAUGE_OFFLINE`` is set).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fmgauge.core.registry import Registry
from fmgauge.core.validation import FmgaugeError, check_finite, check_same_length


@dataclass(frozen=True)
class Split:
    """One split: ``x`` images (N, C, H, W) uint8 or features (N, D) float32, ``y`` (N,) int64, ``ids`` (N,) str."""

    x: np.ndarray
    y: np.ndarray
    ids: np.ndarray

    def __len__(self) -> int:
        return len(self.y)


@dataclass(frozen=True)
class Dataset:
    name: str
    class_names: tuple[str, ...]
    splits: dict[str, Split]
    source: str = ""
    description: str = ""
    meta: dict = field(default_factory=dict)

    @property
    def n_classes(self) -> int:
        return len(self.class_names)

    def split(self, name: str) -> Split:
        if name not in self.splits:
            raise FmgaugeError(f"dataset {self.name!r} has no split {name!r}; it has {sorted(self.splits)}.")
        return self.splits[name]


DatasetLoader = Callable[[], Dataset]
DATASETS: Registry[DatasetLoader] = Registry("dataset")


def data_dirs() -> list[Path]:
    """The data directories in search order: $FMGAUGE_DATA, ./data, ../shared/data."""
    dirs = []
    if os.environ.get("FMGAUGE_DATA"):
        dirs.append(Path(os.environ["FMGAUGE_DATA"]).expanduser())
    dirs += [Path("data"), Path("..") / "shared" / "data"]
    return [d.resolve() for d in dirs]


def offline() -> bool:
    return any(os.environ.get(v, "") not in ("", "0") for v in ("FMGAUGE_OFFLINE", "HF_HUB_OFFLINE", "CI"))


def find_data_file(*relative: str, how_to_get: str) -> Path:
    """First existing ``<dir>/<relative>`` over :func:`data_dirs` and each candidate relative path."""
    tried = []
    for d in data_dirs():
        for rel in relative:
            p = d / rel
            if p.exists():
                return p
            tried.append(str(p))
    raise FmgaugeError(
        "data file not found. Looked in:\n  " + "\n  ".join(tried) + f"\nTo provide it: {how_to_get}"
    )


def load_dataset(name: str) -> Dataset:
    """A registered dataset, an image folder ``folder:<path>``, a MedMNIST-layout image file ``npz:<path.npz>``, a
    feature file ``features:<path.npz>`` or a text table ``text:<path.csv|tsv|jsonl>[?option=value&...]``
    (columns text, label, optional split; options positive, text_column, label_column, descriptions, header: see
    :mod:`fmgauge.core.datasets_text`)."""
    if name.startswith("folder:"):
        return load_image_folder(Path(name.split(":", 1)[1]))
    if name.startswith("features:"):
        return load_feature_file(Path(name.split(":", 1)[1]))
    if name.startswith("npz:"):
        path = Path(name.split(":", 1)[1])
        if not path.exists():
            raise FmgaugeError(f"image file {path} does not exist (npz: expects a MedMNIST-layout .npz with "
                               "<split>_images and <split>_labels arrays).")
        return read_medmnist_npz(path, f"npz:{path.name}")
    if name.startswith("text:"):
        from fmgauge.core.datasets_text import load_text_name

        return load_text_name(name.split(":", 1)[1])
    return DATASETS.get(name)()


def load_feature_file(path: Path) -> Dataset:
    """Precomputed features: an npz with ``<split>_features`` (N, D) and ``<split>_labels`` (N,) per split, and
    optionally ``class_names`` (K,). NaN/inf features are refused (naming the split and the first bad rows)."""
    from fmgauge.core.files import load_npz

    z = load_npz(path, what="feature file")
    names = sorted(k[: -len("_features")] for k in z if k.endswith("_features"))
    if not names:
        raise FmgaugeError(f"{path} holds no '<split>_features' arrays; it has {list(z)}.")
    splits = {}
    for s in names:
        if f"{s}_labels" not in z:
            raise FmgaugeError(f"{path} has {s}_features but no {s}_labels.")
        x = check_finite(f"{path.name}: {s}_features", np.asarray(z[f"{s}_features"], dtype=np.float32))
        if x.ndim != 2:
            raise FmgaugeError(f"{path.name}: {s}_features must be 2-D (N, D), got shape {x.shape}.")
        y = np.asarray(z[f"{s}_labels"]).reshape(-1).astype(np.int64)
        check_same_length(**{f"{s}_features": x, f"{s}_labels": y})
        splits[s] = Split(x=x, y=y, ids=np.array([f"{s}/{i}" for i in range(len(y))]))
    k = int(max(sp.y.max() for sp in splits.values())) + 1
    classes = tuple(map(str, z["class_names"])) if "class_names" in z else tuple(str(i) for i in range(k))
    return Dataset(name=f"features:{path.name}", class_names=classes, splits=splits, source=str(path.resolve()))


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


# ------------------------------------------------------------------------------------------ image folder

def load_image_folder(root: Path, *, size: int | None = None) -> Dataset:
    """Images listed in ``<root>/labels.csv`` with columns ``path,label[,split]``.

    ``path`` is relative to ``root``; ``label`` is a class name (class order = sorted names) or an integer;
    ``split`` defaults to ``train``. Images are converted to RGB and, if ``size`` is given, resized to size x size.
    """
    import pandas as pd
    from PIL import Image

    csv = root / "labels.csv"
    if not csv.exists():
        raise FmgaugeError(f"image folder {root} needs a labels.csv with columns path,label[,split]; not found.")
    df = pd.read_csv(csv)
    missing = {"path", "label"} - set(df.columns)
    if missing:
        raise FmgaugeError(f"{csv} lacks column(s) {sorted(missing)}; it has {list(df.columns)}.")
    if "split" not in df:
        df["split"] = "train"
    names = sorted(df["label"].astype(str).unique())
    if all(n.isdigit() for n in names):  # integer labels: numeric order ("10" after "9"), not string order
        names = sorted(names, key=int)
    index = {c: i for i, c in enumerate(names)}
    splits = {}
    for split, part in df.groupby("split", sort=False):
        imgs = []
        for rel in part["path"]:
            p = root / rel
            if not p.exists():
                raise FmgaugeError(f"{csv}: image {rel!r} listed for split {split!r} does not exist under {root}.")
            im = Image.open(p).convert("RGB")
            if size:
                im = im.resize((size, size))
            imgs.append(np.asarray(im))
        shapes = {a.shape for a in imgs}
        if len(shapes) > 1:
            raise FmgaugeError(f"{root}: images have different sizes {sorted(shapes)[:3]}; pass size=… to resize.")
        y = np.array([index[str(v)] for v in part["label"]])
        sp = split_from_arrays(str(split), np.stack(imgs), y)
        splits[str(split)] = Split(x=sp.x, y=sp.y, ids=np.array([f"{split}/{r}" for r in part["path"]]))
    return Dataset(name=f"folder:{root}", class_names=tuple(names), splits=splits, source=str(root))


# The paper's online benchmarks (PCAM, ISIC, NIH-CXR) and the text datasets register themselves on import.
from fmgauge.core import datasets_online, datasets_text  # noqa: E402,F401
