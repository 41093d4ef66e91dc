"""MNIST / Fashion-MNIST / CIFAR-10 loading through the real torchvision classes, offline."""

from __future__ import annotations

import os
import urllib.error

import numpy as np
import pytest
import torch
import torchvision.datasets as tvd

from tinycvae.data.base import DataError
from tinycvae.data.torchvision_sets import (
    TORCHVISION_SPECS,
    load_torchvision_splits,
    torchvision_spec,
)

from torchvision_fakes import disable_cifar_checksums, write_fake_cifar10, write_fake_mnist

NAMES = ["mnist", "fashion_mnist", "cifar10"]
CLASS = {"mnist": tvd.MNIST, "fashion_mnist": tvd.FashionMNIST, "cifar10": tvd.CIFAR10}
FOLDER = {
    "mnist": os.path.join("MNIST", "raw"),
    "fashion_mnist": os.path.join("FashionMNIST", "raw"),
    "cifar10": "cifar-10-batches-py",
}
FIRST_FILE = {"mnist": "train-images-idx3-ubyte", "fashion_mnist": "train-images-idx3-ubyte",
              "cifar10": "data_batch_1"}  # fmt: skip


@pytest.fixture(autouse=True)
def _no_cifar_md5(monkeypatch):
    disable_cifar_checksums(monkeypatch)


def write_fake(name: str, root) -> dict[str, np.ndarray]:
    """Fake files for ``name``; images as uint8 [N, C, H, W], labels as int64."""
    if name == "cifar10":
        arrays = write_fake_cifar10(root, n_per_batch=8, n_test=12)  # 40 train, 12 test
    else:
        folder = "MNIST" if name == "mnist" else "FashionMNIST"
        arrays = write_fake_mnist(root, folder=folder, n_train=40, n_test=12)
        arrays = {k: v[:, None] if k.endswith("images") else v for k, v in arrays.items()}
    return {k: v.astype(np.int64) if k.endswith("labels") else v for k, v in arrays.items()}


def as_uint8(images: torch.Tensor) -> np.ndarray:
    return (images * 255).round().to(torch.uint8).numpy()


def train_indices(split, arrays) -> np.ndarray:
    """Index into the written training set of every image of ``split`` (images are unique)."""
    where = {img.tobytes(): i for i, img in enumerate(arrays["train_images"])}
    return np.array([where[img.tobytes()] for img in as_uint8(split.images)])


@pytest.mark.parametrize("name", NAMES)
def test_loads_fake_files_with_right_shapes_values_and_labels(tmp_path, name):
    arrays = write_fake(name, tmp_path)
    splits = load_torchvision_splits(name, tmp_path, download=False, val_size=10, seed=0)
    spec = torchvision_spec(name)

    assert (len(splits.train), len(splits.val), len(splits.test)) == (30, 10, 12)
    for split in (splits.train, splits.val, splits.test):
        assert split.images.dtype == torch.float32 and split.labels.dtype == torch.int64
        assert tuple(split.images.shape[1:]) == spec.shape
        assert split.images.is_contiguous()
        assert split.images.min() >= 0.0 and split.images.max() <= 1.0
        assert split.factors.shape == (len(split), 0)
        assert 0 <= split.labels.min() and split.labels.max() < spec.num_classes

    np.testing.assert_array_equal(as_uint8(splits.test.images), arrays["test_images"])
    np.testing.assert_array_equal(splits.test.labels.numpy(), arrays["test_labels"])
    for split in (splits.train, splits.val):  # every image keeps its own label
        idx = train_indices(split, arrays)
        np.testing.assert_array_equal(split.labels.numpy(), arrays["train_labels"][idx])
    train_idx, val_idx = train_indices(splits.train, arrays), train_indices(splits.val, arrays)
    assert not set(train_idx) & set(val_idx)
    assert sorted(train_idx.tolist() + val_idx.tolist()) == list(range(40))


def test_mnist_label_is_readable_from_the_image(tmp_path):
    write_fake(name="mnist", root=tmp_path)
    test = load_torchvision_splits("mnist", tmp_path, False, val_size=5, seed=0).test
    bar_row = test.images[:, 0].mean(dim=2).argmax(dim=1)  # brightest row
    assert torch.equal((bar_row - 4) // 2, test.labels)


@pytest.mark.parametrize("name", NAMES)
def test_val_split_is_deterministic_per_seed(tmp_path, name):
    write_fake(name, tmp_path)
    a = load_torchvision_splits(name, tmp_path, download=False, val_size=10, seed=1)
    b = load_torchvision_splits(name, tmp_path, download=False, val_size=10, seed=1)
    c = load_torchvision_splits(name, tmp_path, download=False, val_size=10, seed=2)
    assert torch.equal(a.val.images, b.val.images) and torch.equal(a.val.labels, b.val.labels)
    assert torch.equal(a.train.images, b.train.images)
    assert not torch.equal(a.val.images, c.val.images)


@pytest.mark.parametrize("name", NAMES)
def test_missing_files_without_download_name_folder_and_files(tmp_path, name):
    with pytest.raises(DataError) as info:
        load_torchvision_splits(name, tmp_path, download=False, val_size=5, seed=0)
    msg = str(info.value)
    assert "\n" not in msg
    assert name in msg and str(tmp_path / FOLDER[name]) in msg
    assert FIRST_FILE[name] in msg and "download disabled" in msg
    assert info.value.__cause__ is None and info.value.__suppress_context__


@pytest.mark.parametrize("name", NAMES)
def test_failed_download_becomes_one_data_error(tmp_path, monkeypatch, name):
    calls = []

    def offline(self):
        calls.append(self)
        raise urllib.error.URLError("offline")

    monkeypatch.setattr(CLASS[name], "download", offline)
    with pytest.raises(DataError) as info:
        load_torchvision_splits(name, tmp_path, download=True, val_size=5, seed=0)
    msg = str(info.value)
    assert calls, "download was not attempted"
    assert "\n" not in msg and str(tmp_path / FOLDER[name]) in msg
    assert "download failed" in msg and "offline" in msg


@pytest.mark.parametrize(("name", "module"), [("mnist", "mnist"), ("cifar10", "cifar")])
def test_torchvision_own_download_error_is_flattened(tmp_path, monkeypatch, name, module):
    """MNIST wraps per-mirror URLErrors in a multi-line RuntimeError; CIFAR lets URLError out."""

    def offline(*args, **kwargs):
        raise urllib.error.URLError("no route to host")

    monkeypatch.setattr(f"torchvision.datasets.{module}.download_and_extract_archive", offline)
    with pytest.raises(DataError, match="download failed: .*no route to host") as info:
        load_torchvision_splits(name, tmp_path, download=True, val_size=5, seed=0)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("name", NAMES)
def test_download_is_tried_only_when_files_are_missing(tmp_path, monkeypatch, name):
    calls = []

    def fake_download(self):
        calls.append(self)
        write_fake(name, self.root)

    monkeypatch.setattr(CLASS[name], "download", fake_download)
    splits = load_torchvision_splits(name, tmp_path, download=True, val_size=5, seed=0)
    assert len(calls) == 1 and len(splits.train) + len(splits.val) == 40
    load_torchvision_splits(name, tmp_path, download=True, val_size=5, seed=0)
    assert len(calls) == 1  # files now present: no second download


def test_unreadable_files_are_reported(tmp_path):
    write_fake("mnist", tmp_path)
    (tmp_path / "MNIST" / "raw" / "train-images-idx3-ubyte").write_bytes(b"\x00\x00\x08")
    with pytest.raises(DataError, match="files unreadable") as info:
        load_torchvision_splits("mnist", tmp_path, download=False, val_size=5, seed=0)
    assert "\n" not in str(info.value)


def test_unknown_name_lists_allowed_names(tmp_path):
    allowed = "allowed: cifar10, fashion_mnist, mnist"
    with pytest.raises(DataError, match=f"unknown torchvision data set 'svhn'; {allowed}"):
        torchvision_spec("svhn")
    with pytest.raises(DataError, match=allowed):
        load_torchvision_splits("svhn", tmp_path, download=False, val_size=5, seed=0)


@pytest.mark.parametrize("val_size", [0, -3, 40, 41])
def test_bad_val_size_names_value_and_range(tmp_path, val_size):
    write_fake("mnist", tmp_path)
    with pytest.raises(DataError, match=f"val_size {val_size} .*range") as info:
        load_torchvision_splits("mnist", tmp_path, download=False, val_size=val_size, seed=0)
    if val_size >= 40:
        assert "between 1 and 39" in str(info.value)


def test_specs():
    assert set(TORCHVISION_SPECS) == set(NAMES)
    assert torchvision_spec("mnist").shape == (1, 28, 28)
    assert torchvision_spec("mnist").class_names == tuple("0123456789")
    assert torchvision_spec("fashion_mnist").class_names == tuple(tvd.FashionMNIST.classes)
    cifar = torchvision_spec("cifar10")
    assert cifar.shape == (3, 32, 32) and cifar.class_names[:2] == ("airplane", "automobile")
    for spec in TORCHVISION_SPECS.values():
        assert spec.num_classes == len(spec.class_names) == 10 and spec.factor_names == ()
