"""The paper's dataset loaders (PCAM, ISIC, NIH-CXR) on tiny files made here; the network is never touched."""

from __future__ import annotations

import socket

import numpy as np
import pytest

import fmgauge.core.data as data
import fmgauge.core.datasets_medmnist as datasets_medmnist
import fmgauge.core.datasets_online as online
from fmgauge.core.data import load_dataset
from fmgauge.core.validation import FmgaugeError

NAMES = ["pcam", "pcam-full", "isic", "isic-binary", "nih-cxr", "nih-cxr-full"]


@pytest.fixture
def datadir(tmp_path, monkeypatch):
    """FMGAUGE_DATA -> tmp_path/store, offline, cwd in tmp_path (so ./data and ../shared/data are empty too), and
    any download attempt fails the test."""
    store = tmp_path / "work" / "store"
    store.mkdir(parents=True)
    monkeypatch.chdir(tmp_path / "work")
    monkeypatch.setenv("FMGAUGE_DATA", str(store))
    monkeypatch.setenv("FMGAUGE_OFFLINE", "1")

    def no_download(*args, **kwargs):
        pytest.fail(f"a download was attempted: {args} {kwargs}")

    monkeypatch.setattr(online, "_download_pcam", no_download)
    monkeypatch.setattr(online, "_download_medmnist", no_download)
    monkeypatch.setattr(datasets_medmnist, "_download_medmnist", no_download)
    monkeypatch.setattr(socket.socket, "connect", no_download)
    return store


def _tag_images(n: int, shape: tuple[int, ...]) -> np.ndarray:
    """(n, *shape) uint8 whose every pixel of row i equals i % 256, so rows can be traced after subsampling."""
    return np.broadcast_to((np.arange(n) % 256).astype(np.uint8).reshape(-1, *[1] * len(shape)), (n, *shape)).copy()


def write_pcam(store, sizes=None) -> dict[str, np.ndarray]:
    h5py = pytest.importorskip("h5py")
    sizes = sizes or {"train": (30, 10), "valid": (6, 6), "test": (8, 4)}  # (negatives, positives)
    (store / "pcam").mkdir()
    labels = {}
    for tag, (neg, pos) in sizes.items():
        y = np.random.default_rng(len(tag)).permutation(np.r_[np.zeros(neg), np.ones(pos)]).astype(np.uint8)
        with h5py.File(store / "pcam" / f"camelyonpatch_level_2_split_{tag}_x.h5", "w") as f:
            f["x"] = _tag_images(len(y), (96, 96, 3))
        with h5py.File(store / "pcam" / f"camelyonpatch_level_2_split_{tag}_y.h5", "w") as f:
            f["y"] = y.reshape(-1, 1, 1, 1)
        labels[tag] = y
    return labels


def write_chest(store, *, compressed=True, n=(24, 6, 10)) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    arrays, labels = {}, {}
    for split, k in zip(("train", "val", "test"), n, strict=True):
        multi = (rng.random((k, 14)) < 0.08).astype(np.uint8)
        multi[: k // 3] = 0  # plenty of 'no finding' rows
        multi[k // 3, [2, 5]] = 1  # at least one multi-finding row
        arrays[f"{split}_images"] = _tag_images(k, (224, 224))
        arrays[f"{split}_labels"] = multi
        labels[split] = multi
    (store / "medmnist").mkdir(exist_ok=True)
    (np.savez_compressed if compressed else np.savez)(store / "medmnist" / "chestmnist_224.npz", **arrays)
    return labels


def write_derma(store) -> dict[str, np.ndarray]:
    arrays, labels = {}, {}
    for split, k in (("train", 21), ("val", 7), ("test", 14)):
        y = np.arange(k) % 7
        arrays[f"{split}_images"] = _tag_images(k, (224, 224, 3))
        arrays[f"{split}_labels"] = y.reshape(-1, 1).astype(np.uint8)
        labels[split] = y
    (store / "medmnist").mkdir(exist_ok=True)
    np.savez_compressed(store / "medmnist" / "dermamnist_224.npz", **arrays)
    return labels


def test_names_are_registered():
    assert set(NAMES) <= set(data.DATASETS.names())


def test_pcam_loads_local_h5(datadir):
    labels = write_pcam(datadir)
    ds = load_dataset("pcam")
    assert ds.class_names == ("lymph node", "lymph node containing metastatic tumor tissue")
    assert set(ds.splits) == {"train", "val", "test"}
    for split, tag in (("train", "train"), ("val", "valid"), ("test", "test")):
        sp = ds.split(split)
        assert sp.x.shape == (len(labels[tag]), 3, 96, 96) and sp.x.dtype == np.uint8
        assert sp.y.dtype == np.int64
        np.testing.assert_array_equal(sp.y, labels[tag])
        np.testing.assert_array_equal(sp.x[:, 0, 0, 0], np.arange(len(sp)) % 256)
    assert ds.meta["full_sizes"] == {"train": 40, "val": 12, "test": 12}


@pytest.mark.parametrize("seed", [0, 1])
def test_pcam_subsample_is_stratified_seeded_and_traceable(datadir, seed):
    labels = write_pcam(datadir, {"train": (600, 200), "valid": (30, 30), "test": (40, 10)})
    ds = online.load_pcam(max_per_split=40, seed=seed)
    again = online.load_pcam(max_per_split=40, seed=seed)
    for split, tag in (("train", "train"), ("val", "valid"), ("test", "test")):
        sp, full_y = ds.split(split), labels[tag]
        assert len(sp) == 40
        assert sp.y.mean() == pytest.approx(full_y.mean(), abs=1 / 40)  # class ratio kept
        rows = np.array([int(i.split("/")[1]) for i in sp.ids])
        assert (np.diff(rows) > 0).all()  # sorted, no repeats
        np.testing.assert_array_equal(sp.y, full_y[rows])  # ids point at the original rows ...
        np.testing.assert_array_equal(sp.x[:, 1, 50, 50], rows % 256)  # ... and so do the images
        np.testing.assert_array_equal(sp.ids, again.split(split).ids)
    other = online.load_pcam(max_per_split=40, seed=seed + 7)
    assert not np.array_equal(other.split("train").ids, ds.split("train").ids)


@pytest.mark.parametrize("compressed", [True, False])
def test_nih_cxr_binary_any_finding(datadir, compressed):
    multi = write_chest(datadir, compressed=compressed)
    ds = load_dataset("nih-cxr")
    assert ds.class_names == ("no finding", "finding")
    for split, m in multi.items():
        sp = ds.split(split)
        assert sp.x.shape == (len(m), 1, 224, 224) and sp.x.dtype == np.uint8
        np.testing.assert_array_equal(sp.y, m.any(axis=1).astype(int))
        np.testing.assert_array_equal(sp.x[:, 0, 100, 7], np.arange(len(m)) % 256)
        assert ds.meta["finding_counts"][split]["effusion"] == int(m[:, 2].sum())
    assert 0 < ds.split("train").y.mean() < 1


def test_nih_cxr_subsample_is_stratified(datadir):
    multi = write_chest(datadir, n=(300, 30, 30))
    y_full = multi["train"].any(axis=1).astype(int)
    sp = online.load_nih_cxr(max_per_split=60, seed=3).split("train")
    rows = np.array([int(i.split("/")[1]) for i in sp.ids])
    assert len(sp) == 60 and sp.y.mean() == pytest.approx(y_full.mean(), abs=1 / 60)
    np.testing.assert_array_equal(sp.y, y_full[rows])
    np.testing.assert_array_equal(sp.x[:, 0, 0, 0], rows % 256)


def test_nih_cxr_rejects_single_label_npz(datadir):
    (datadir / "medmnist").mkdir()
    np.savez(datadir / "medmnist" / "chestmnist_224.npz", train_images=np.zeros((3, 224, 224), np.uint8),
             train_labels=np.zeros((3, 1), np.uint8), test_images=np.zeros((2, 224, 224), np.uint8),
             test_labels=np.zeros((2, 1), np.uint8))
    with pytest.raises(FmgaugeError, match=r"expected \(N, 14\)"):
        load_dataset("nih-cxr")


def test_isic_and_melanoma_binary(datadir):
    labels = write_derma(datadir)
    ds, binary = load_dataset("isic"), load_dataset("isic-binary")
    assert ds.name == "isic" and ds.n_classes == 7 and ds.class_names[4] == "melanoma"
    assert binary.class_names == ("other skin lesion", "melanoma")
    for split, y in labels.items():
        assert ds.split(split).x.shape == (len(y), 3, 224, 224)
        np.testing.assert_array_equal(ds.split(split).y, y)
        np.testing.assert_array_equal(binary.split(split).y, (y == 4).astype(int))


def test_medmnist_class_orders_match_the_medmnist_package():
    medmnist = pytest.importorskip("medmnist")
    derma = medmnist.INFO["dermamnist"]["label"]
    expected = ["actinic", "basal cell", "benign keratosis", "dermatofibroma", "melanoma", "melanocytic", "vascular"]
    assert [derma[str(i)].split()[0] for i in range(7)] == [e.split()[0] for e in expected]
    assert [n.split()[0] for n in data.MEDMNIST_CLASSES["dermamnist"]] == [e.split()[0] for e in expected]
    chest = medmnist.INFO["chestmnist"]["label"]
    assert tuple(chest[str(i)] for i in range(14)) == online.CHEST_FINDINGS


@pytest.mark.parametrize("name", NAMES)
def test_missing_data_offline_is_one_error_listing_every_place(datadir, name):
    with pytest.raises(FmgaugeError) as err:
        load_dataset(name)
    msg = str(err.value)
    for d in data.data_dirs():
        assert str(d) in msg
    assert "fmgauge[online]" in msg
    files = {"pcam": "camelyonpatch_level_2_split_train_x.h5", "isic": "dermamnist_224.npz",
             "nih-cxr": "chestmnist_224.npz"}
    assert next(f for prefix, f in files.items() if name.startswith(prefix)) in msg


def test_incomplete_pcam_folder_offline_names_missing_files(datadir):
    write_pcam(datadir)
    (datadir / "pcam" / "camelyonpatch_level_2_split_test_y.h5").unlink()
    with pytest.raises(FmgaugeError, match="camelyonpatch_level_2_split_test_y.h5") as err:
        load_dataset("pcam")
    assert "fmgauge[online]" in str(err.value)


@pytest.fixture
def online_datadir(datadir, monkeypatch):
    """Like ``datadir`` but online: the loaders may call their download functions (replaced below per test)."""
    for var in ("FMGAUGE_OFFLINE", "HF_HUB_OFFLINE", "CI"):
        monkeypatch.delenv(var, raising=False)
    return datadir


def test_pcam_online_downloads_into_fmgauge_data_when_missing(online_datadir, monkeypatch):
    calls = []
    monkeypatch.setattr(online, "_download_pcam", lambda root: calls.append(root) or write_pcam(root))
    ds = load_dataset("pcam")
    assert calls == [online_datadir] and len(ds.split("train")) == 40
    load_dataset("pcam")  # present now: no second download
    assert len(calls) == 1


def test_nih_cxr_online_downloads_into_fmgauge_data_when_missing(online_datadir, monkeypatch):
    def fake_download(flag, size):
        assert (flag, size) == ("chestmnist", 224)
        write_chest(online_datadir)
        return online_datadir / "medmnist" / "chestmnist_224.npz"

    monkeypatch.setattr(online, "_download_medmnist", fake_download)
    assert load_dataset("nih-cxr").split("test").x.shape == (10, 1, 224, 224)
