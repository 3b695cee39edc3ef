"""core.data: data directory order, errors listing every place tried, MedMNIST shapes, relabelling, image folders."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from fmgauge.core.data import DATASETS, data_dirs, find_data_file, load_dataset, load_image_folder
from fmgauge.core.validation import FmgaugeError


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """cwd = tmp_path/work (so ./data and ../shared/data are empty), FMGAUGE_DATA = tmp_path/store, offline."""
    (tmp_path / "work").mkdir()
    (tmp_path / "store").mkdir()
    monkeypatch.chdir(tmp_path / "work")
    monkeypatch.setenv("FMGAUGE_DATA", str(tmp_path / "store"))
    monkeypatch.setenv("FMGAUGE_OFFLINE", "1")
    return tmp_path


# ---------------------------------------------------------------------------------------- data directories


def test_data_dirs_order_honours_fmgauge_data_first(workdir, monkeypatch):
    assert data_dirs() == [workdir / "store", workdir / "work" / "data", workdir / "shared" / "data"]
    monkeypatch.delenv("FMGAUGE_DATA")
    assert data_dirs() == [workdir / "work" / "data", workdir / "shared" / "data"]


def test_find_data_file_takes_the_first_hit_in_order(workdir):
    (workdir / "work" / "data" / "medmnist").mkdir(parents=True)
    (workdir / "shared" / "data").mkdir(parents=True)
    late = workdir / "shared" / "data" / "x.npz"
    late.touch()
    assert find_data_file("medmnist/x.npz", "x.npz", how_to_get="-") == late
    early = workdir / "work" / "data" / "medmnist" / "x.npz"
    early.touch()
    assert find_data_file("medmnist/x.npz", "x.npz", how_to_get="-") == early
    first = workdir / "store" / "x.npz"
    first.touch()
    assert find_data_file("medmnist/x.npz", "x.npz", how_to_get="-") == first  # FMGAUGE_DATA wins


def test_find_data_file_error_lists_every_place(workdir):
    with pytest.raises(FmgaugeError) as err:
        find_data_file("medmnist/x.npz", "x.npz", how_to_get="put x.npz somewhere")
    msg = str(err.value)
    for d in data_dirs():
        for rel in ("medmnist/x.npz", "x.npz"):
            assert str(d / rel) in msg
    assert msg.count("\n  ") == 6
    assert msg.endswith("To provide it: put x.npz somewhere")


def test_missing_medmnist_offline_lists_places(workdir):
    with pytest.raises(FmgaugeError) as err:
        load_dataset("breastmnist")
    assert str(workdir / "store" / "medmnist" / "breastmnist.npz") in str(err.value)
    assert "fmgauge[online]" in str(err.value)


# ------------------------------------------------------------------------------------------------ MedMNIST


def test_pneumoniamnist_shapes(pneumonia):
    assert pneumonia.name == "pneumoniamnist"
    assert pneumonia.class_names == ("normal", "pneumonia") and pneumonia.n_classes == 2
    train, test = pneumonia.split("train"), pneumonia.split("test")
    assert len(train) == 4708 and len(test) == 624
    assert train.x.shape == (4708, 1, 28, 28) and train.x.dtype == np.uint8
    assert test.x.shape == (624, 1, 28, 28)
    assert train.y.dtype == np.int64 and set(np.unique(train.y)) == {0, 1}
    assert test.ids[0] == "test/0" and test.ids[-1] == "test/623" and len(set(train.ids)) == 4708
    assert "val" in pneumonia.splits
    with pytest.raises(FmgaugeError, match=r"no split 'dev'; it has \['test', 'train', 'val'\]"):
        pneumonia.split("dev")


def test_retinamnist_binary_is_grade_zero_vs_the_rest(fmgauge_env):
    five, binary = load_dataset("retinamnist"), load_dataset("retinamnist-binary")
    assert five.n_classes == 5 and binary.class_names == ("no retinopathy", "retinopathy")
    assert set(binary.splits) == set(five.splits)
    for name, sp in five.splits.items():
        b = binary.split(name)
        assert set(np.unique(sp.y)) <= set(range(5)) and len(np.unique(sp.y)) > 2
        np.testing.assert_array_equal(b.y, (sp.y >= 1).astype(np.int64))
        np.testing.assert_array_equal(b.ids, sp.ids)
        np.testing.assert_array_equal(b.x, sp.x)


def test_unknown_dataset_suggests_near_names():
    with pytest.raises(FmgaugeError) as err:
        load_dataset("pneumonimnist")
    assert "unknown dataset 'pneumonimnist'" in str(err.value)
    assert "Did you mean 'pneumoniamnist'" in str(err.value)
    with pytest.raises(FmgaugeError, match="'retinamnist'"):
        DATASETS.get("retinamnst")


# -------------------------------------------------------------------------------------------- image folder


def make_folder(root, rows, *, size=(6, 5)):
    """PNG images whose every pixel is (value, 0, 255 - value); rows = (path, label, split, value)."""
    root.mkdir(parents=True, exist_ok=True)
    for path, _, _, value in rows:
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        arr = np.zeros((*size, 3), np.uint8)
        arr[..., 0], arr[..., 2] = value, 255 - value
        Image.fromarray(arr).save(root / path)
    pd.DataFrame([r[:3] for r in rows], columns=["path", "label", "split"]).to_csv(root / "labels.csv", index=False)
    return root


FOLDER = [
    ("img/a.png", "pneumonia", "train", 10),
    ("img/b.png", "normal", "train", 20),
    ("img/c.png", "pneumonia", "test", 30),
    ("img/d.png", "normal", "train", 40),
    ("img/e.png", "normal", "test", 50),
]


def test_folder_loader(tmp_path):
    root = make_folder(tmp_path / "imgs", FOLDER)
    ds = load_dataset(f"folder:{root}")
    assert ds.name == f"folder:{root}" and ds.class_names == ("normal", "pneumonia")  # sorted names
    train, test = ds.split("train"), ds.split("test")
    assert train.x.shape == (3, 3, 6, 5) and train.x.dtype == np.uint8
    np.testing.assert_array_equal(train.y, [1, 0, 0])
    np.testing.assert_array_equal(test.y, [1, 0])
    np.testing.assert_array_equal(train.ids, ["train/img/a.png", "train/img/b.png", "train/img/d.png"])
    np.testing.assert_array_equal(train.x[:, 0, 0, 0], [10, 20, 40])  # channel 0 = R
    np.testing.assert_array_equal(test.x[:, 2, 3, 4], [225, 205])  # channel 2 = B
    small = load_image_folder(root, size=4)
    assert small.split("test").x.shape == (2, 3, 4, 4)


def test_folder_without_split_column_is_all_train(tmp_path):
    root = make_folder(tmp_path / "imgs", FOLDER)
    pd.read_csv(root / "labels.csv").drop(columns="split").to_csv(root / "labels.csv", index=False)
    ds = load_image_folder(root)
    assert list(ds.splits) == ["train"] and len(ds.split("train")) == 5


def test_folder_integer_labels_keep_their_numeric_order(tmp_path):
    rows = [(f"{k}.png", k, "train", k) for k in range(12)]
    ds = load_image_folder(make_folder(tmp_path / "imgs", rows))
    np.testing.assert_array_equal(ds.split("train").y, np.arange(12))
    assert ds.class_names == tuple(str(k) for k in range(12))


def test_folder_errors(tmp_path):
    root = make_folder(tmp_path / "imgs", FOLDER)
    (root / "labels.csv").rename(root / "other.csv")
    with pytest.raises(FmgaugeError, match="needs a labels.csv with columns path,label"):
        load_dataset(f"folder:{root}")

    pd.read_csv(root / "other.csv").rename(columns={"label": "class"}).to_csv(root / "labels.csv", index=False)
    with pytest.raises(FmgaugeError, match=r"lacks column\(s\) \['label'\]; it has \['path', 'class', 'split'\]"):
        load_image_folder(root)

    pd.read_csv(root / "other.csv").to_csv(root / "labels.csv", index=False)
    (root / "img" / "c.png").unlink()
    with pytest.raises(FmgaugeError, match=r"image 'img/c.png' listed for split 'test' does not exist"):
        load_image_folder(root)


def test_folder_mixed_sizes_refused_unless_resized(tmp_path):
    root = make_folder(tmp_path / "imgs", FOLDER[:2])
    Image.fromarray(np.zeros((9, 9, 3), np.uint8)).save(root / "img" / "b.png")
    with pytest.raises(FmgaugeError, match="different sizes"):
        load_image_folder(root)
    assert load_image_folder(root, size=8).split("train").x.shape == (2, 3, 8, 8)
