"""Dataset registry and loaders.

A dataset resolves by name through :data:`DATASETS` and loads into a :class:`Dataset`: named splits of inputs
``x`` — images (N, C, H, W) uint8, features (N, D) float32 (e.g. a frozen foundation model's embeddings), or
texts (N,) str (object dtype, see :mod:`fmgauge.core.datasets_text`) — labels ``y`` (N,) int and string ids ``"<split>/<index>"``.

Data directories are searched in order: ``$FMGAUGE_DATA``, ``./data``, ``../shared/data``. When a file is
missing the error lists every place tried and how to provide it; online, loaders for public datasets may download
into ``$FMGAUGE_DATA`` (never in silence, never when ``HF_HUB_OFFLINE``/``FMGAUGE_OFFLINE`` is set).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

# The shared types, the registry and the data-directory search live in datasets_base (which every loader module
# imports); they are re-exported here, the module users import.
from fmgauge.core.datasets_base import (  # noqa: F401
    DATASETS,
    Dataset,
    DatasetLoader,
    Split,
    data_dirs,
    find_data_file,
    offline,
)
from fmgauge.core.datasets_medmnist import (  # noqa: F401
    MEDMNIST_CLASSES,
    load_medmnist_npz,
    read_medmnist_npz,
    relabel,
    split_from_arrays,
    to_nchw,
)
from fmgauge.core.validation import FmgaugeError, check_finite, check_same_length


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
