"""Loaders for the weak-label paper's three benchmarks: PCAM, ISIC 2018 and NIH ChestX-ray14.

Registered in :data:`fmgauge.core.datasets_base.DATASETS` on import (splits ``train``/``val``/``test``, ``y`` (N,) int64):

- ``pcam``: PatchCamelyon, ``x`` (N, 3, 96, 96) uint8; 0 = 'lymph node', 1 = 'lymph node containing metastatic
  tumor tissue' (CLIP_benchmark names). At most 20,000 items per split, seeded and stratified (the full train split
  is 262,144 patches, 7.2 GB); ``pcam-full`` keeps every item.
- ``isic``: ISIC 2018 / HAM10000 as MedMNIST DermaMNIST at 224, ``x`` (N, 3, 224, 224), 7 classes in MedMNIST's
  order; ``isic-binary``: melanoma (1) vs every other lesion (0).
- ``nih-cxr``: NIH ChestX-ray14 as MedMNIST ChestMNIST at 224, ``x`` (N, 1, 224, 224); the 14 findings are
  multi-label, the task is binary: 1 = any finding, 0 = no finding. At most 20,000 items per split like ``pcam``;
  ``nih-cxr-full`` keeps every item.

Local layout, under any data directory (``$FMGAUGE_DATA``, ``./data``, ``../shared/data``)::

    pcam/camelyonpatch_level_2_split_{train,valid,test}_{x,y}.h5   # torchvision's PCAM layout, unzipped:
                                                                   # x (N, 96, 96, 3) uint8, y (N, 1, 1, 1)
    medmnist/dermamnist_224.npz                                    # MedMNIST layout, labels (N, 1)
    medmnist/chestmnist_224.npz                                    # MedMNIST layout, labels (N, 14) 0/1

Online (``pip install 'fmgauge[online]'``, no ``FMGAUGE_OFFLINE``/``HF_HUB_OFFLINE``/``CI``), missing files are
downloaded into ``$FMGAUGE_DATA`` (else ``./data``); offline, one :class:`FmgaugeError` lists every place tried.
"""

from __future__ import annotations

import logging
import zipfile
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np

from fmgauge.core.datasets_base import DATASETS, Dataset, Split, data_dirs, find_data_file, offline
from fmgauge.core.datasets_medmnist import _download_medmnist, load_medmnist_npz, relabel, to_nchw
from fmgauge.core.validation import FmgaugeError

log = logging.getLogger(__name__)

DEFAULT_MAX_PER_SPLIT = 20_000
ONLINE_HINT = ("online, `pip install 'fmgauge[online]'` and unset FMGAUGE_OFFLINE/HF_HUB_OFFLINE/CI: fmgauge then "
               "downloads it into $FMGAUGE_DATA/{sub} (./data/{sub} if FMGAUGE_DATA is unset)")
PCAM_CLASSES = ("lymph node", "lymph node containing metastatic tumor tissue")
PCAM_SPLITS = {"train": "train", "val": "valid", "test": "test"}  # our split name -> tag in the h5 file names
PCAM_FILES = [f"camelyonpatch_level_2_split_{t}_{xy}.h5" for t in PCAM_SPLITS.values() for xy in "xy"]
CHEST_FINDINGS = (  # medmnist INFO['chestmnist']['label'] order
    "atelectasis", "cardiomegaly", "effusion", "infiltration", "mass", "nodule", "pneumonia", "pneumothorax",
    "consolidation", "edema", "emphysema", "fibrosis", "pleural", "hernia",
)


def stratified_subset(y: np.ndarray, max_n: int | None, *, seed: int) -> np.ndarray:
    """Sorted indices of ``min(N, max_n)`` items of ``y`` (N,), class proportions kept (all if ``max_n`` is None)."""
    if max_n is None or len(y) <= max_n:
        return np.arange(len(y))
    from sklearn.model_selection import train_test_split

    keep, _ = train_test_split(np.arange(len(y)), train_size=max_n, stratify=y, random_state=seed)
    return np.sort(keep)


def _gather(n: int, keep: np.ndarray, read: Callable[[int, int, np.ndarray], np.ndarray], block: int = 1024):
    """Rows ``keep`` (sorted) of an (n, ...) array, read in order block by block: ``read(a, b, local)`` returns
    rows ``a + local`` of block ``[a, b)``, so only the kept rows are ever held in memory."""
    parts = []
    for a in range(0, n, block):
        b = min(n, a + block)
        local = keep[np.searchsorted(keep, a):np.searchsorted(keep, b)] - a
        parts.append(read(a, b, local))
    return np.concatenate(parts)


def _npz_rows(path: Path, key: str, keep: np.ndarray) -> np.ndarray:
    """Rows ``keep`` of array ``key`` in the npz at ``path``, streamed from the zip (the file may be compressed)."""
    with zipfile.ZipFile(path) as zf, zf.open(f"{key}.npy") as f:
        version = np.lib.format.read_magic(f)
        read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, fortran, dtype = read_header(f)
        if fortran:
            raise FmgaugeError(f"{path}: {key} is stored in Fortran order; re-save it with np.savez (C order).")
        row, row_bytes = tuple(shape[1:]), int(np.prod(shape[1:])) * dtype.itemsize
        return _gather(shape[0], keep, lambda a, b, s: np.frombuffer(
            f.read((b - a) * row_bytes), dtype).reshape((b - a, *row))[s])


def _split(name: str, x: np.ndarray, y: np.ndarray, keep: np.ndarray) -> Split:
    """Split whose ids keep the original row index, ``"<split>/<row>"``, so subsets stay traceable."""
    return Split(x=to_nchw(x), y=y[keep].astype(np.int64), ids=np.array([f"{name}/{i}" for i in keep]))


# -------------------------------------------------------------------------------------------------- PCAM

def _pcam_dir() -> Path:
    how = ("download the six PCAM files camelyonpatch_level_2_split_{train,valid,test}_{x,y}.h5.gz "
           "(https://github.com/basveeling/pcam, Zenodo record 2546921), gunzip them into <data dir>/pcam/; "
           + ONLINE_HINT.format(sub="pcam") + " via torchvision (needs h5py and gdown; ~7.5 GB).")
    try:
        folder = find_data_file(f"pcam/{PCAM_FILES[0]}", how_to_get=how).parent
    except FmgaugeError:
        if offline():
            raise
        folder = data_dirs()[0] / "pcam"
    missing = [f for f in PCAM_FILES if not (folder / f).exists()]
    if missing and offline():
        raise FmgaugeError(f"PCAM folder {folder} lacks {missing}. To provide them: {how}")
    if missing:
        _download_pcam(folder.parent)
    return folder


def _download_pcam(root: Path) -> None:
    try:
        import gdown  # noqa: F401  (torchvision's Google-Drive download needs it)
        import h5py  # noqa: F401
        from torchvision.datasets import PCAM
    except ImportError as e:
        raise FmgaugeError(f"downloading PCAM needs torchvision, h5py and gdown ({e.name} is missing): "
                           "pip install 'fmgauge[online,vision]' h5py gdown, or place the files by hand.") from e
    log.warning("downloading PCAM (~7.5 GB from Google Drive) into %s", root / "pcam")
    for split in PCAM_SPLITS:
        try:
            PCAM(str(root), split=split, download=True)
        except Exception as e:  # Google Drive quota / network errors vary
            raise FmgaugeError(f"downloading PCAM {split!r} into {root / 'pcam'} failed: {e}. Fetch the .h5.gz files "
                               "from Zenodo record 2546921 and gunzip them there instead.") from e
    for f in PCAM_FILES:  # torchvision keeps the archives next to the unzipped files
        (root / "pcam" / f"{f}.gz").unlink(missing_ok=True)


def load_pcam(*, max_per_split: int | None = DEFAULT_MAX_PER_SPLIT, seed: int = 0) -> Dataset:
    """PatchCamelyon: ``x`` (N, 3, 96, 96) uint8, ``y`` (N,) in {0, 1}; at most ``max_per_split`` per split."""
    folder = _pcam_dir()
    try:
        import h5py
    except ImportError as e:
        raise FmgaugeError("reading PCAM's .h5 files needs h5py: pip install 'fmgauge[online]' (or h5py).") from e
    splits, sizes = {}, {}
    for name, tag in PCAM_SPLITS.items():
        with h5py.File(folder / f"camelyonpatch_level_2_split_{tag}_y.h5", "r") as fy:
            y = np.asarray(fy["y"]).reshape(-1)
        keep = stratified_subset(y, max_per_split, seed=seed)
        with h5py.File(folder / f"camelyonpatch_level_2_split_{tag}_x.h5", "r") as fx:
            ds = fx["x"]
            if ds.shape[0] != len(y) or ds.ndim != 4:
                raise FmgaugeError(f"{folder}: {tag}_x has shape {ds.shape}, expected ({len(y)}, 96, 96, 3).")
            x = _gather(len(y), keep, lambda a, b, s, ds=ds: ds[a:b][s] if len(s) else ds[0:0])
        splits[name], sizes[name] = _split(name, x, y, keep), len(y)
    return Dataset(name="pcam", class_names=PCAM_CLASSES, splits=splits, source=str(folder),
                   description="PatchCamelyon, metastatic tissue in lymph-node patches",
                   meta={"max_per_split": max_per_split, "seed": seed, "full_sizes": sizes})


# ------------------------------------------------------------------------------------- MedMNIST (224 px)

def _medmnist_path(flag: str, size: int) -> Path:
    fname = f"{flag}.npz" if size == 28 else f"{flag}_{size}.npz"
    how = (f"download https://zenodo.org/records/10519652/files/{fname} and put it at <data dir>/medmnist/{fname}; "
           + ONLINE_HINT.format(sub="medmnist") + ".")
    try:
        return find_data_file(f"medmnist/{fname}", fname, how_to_get=how)
    except FmgaugeError:
        if offline():
            raise
        return _download_medmnist(flag, size)


def load_isic(*, size: int = 224) -> Dataset:
    """ISIC 2018 (HAM10000) as DermaMNIST: ``x`` (N, 3, size, size) uint8, ``y`` (N,) in 0..6."""
    _medmnist_path("dermamnist", size)  # the error/download with the hints above; the loader then finds the file
    ds = load_medmnist_npz("dermamnist", size=size)
    return replace(ds, name="isic", description=f"ISIC 2018 / HAM10000 (MedMNIST DermaMNIST {size}px), 7 classes")


def load_nih_cxr(*, max_per_split: int | None = DEFAULT_MAX_PER_SPLIT, seed: int = 0, size: int = 224) -> Dataset:
    """NIH ChestX-ray14 as ChestMNIST: ``x`` (N, 1, size, size) uint8, ``y`` (N,) = 1 if any of the 14 findings.

    ``meta['finding_counts']`` holds, per split, how many kept images show each finding (order: CHEST_FINDINGS).
    """
    path = _medmnist_path("chestmnist", size)
    splits, sizes, counts = {}, {}, {}
    with np.load(path) as z:
        missing = [k for k in ("train_images", "train_labels", "test_images", "test_labels") if k not in z]
        if missing:
            raise FmgaugeError(f"{path} is not a ChestMNIST npz: missing keys {missing}; it has {z.files}.")
        for name in ("train", "val", "test"):
            if f"{name}_labels" not in z or f"{name}_images" not in z:
                continue
            multi = np.asarray(z[f"{name}_labels"])
            if multi.ndim != 2 or multi.shape[1] != len(CHEST_FINDINGS):
                raise FmgaugeError(f"{path}: {name}_labels has shape {multi.shape}, expected (N, 14) 0/1 findings.")
            y = multi.any(axis=1).astype(np.int64)
            keep = stratified_subset(y, max_per_split, seed=seed)
            splits[name] = _split(name, _npz_rows(path, f"{name}_images", keep), y, keep)
            sizes[name] = len(y)
            counts[name] = dict(zip(CHEST_FINDINGS, multi[keep].sum(axis=0).tolist(), strict=True))
    return Dataset(name="nih-cxr", class_names=("no finding", "finding"), splits=splits, source=str(path),
                   description=f"NIH ChestX-ray14 (MedMNIST ChestMNIST {size}px), any of 14 findings vs none",
                   meta={"max_per_split": max_per_split, "seed": seed, "full_sizes": sizes, "finding_counts": counts})


DATASETS.add("pcam", load_pcam)
DATASETS.add("pcam-full", lambda: load_pcam(max_per_split=None))
DATASETS.add("isic", load_isic)
DATASETS.add("isic-binary", lambda: relabel(load_isic(), "isic-binary", [[0, 1, 2, 3, 5, 6], [4]],
                                            ("other skin lesion", "melanoma"), "ISIC 2018, melanoma vs the rest"))
DATASETS.add("nih-cxr", load_nih_cxr)
DATASETS.add("nih-cxr-full", lambda: load_nih_cxr(max_per_split=None))
