"""Tiny MNIST / Fashion-MNIST / CIFAR-10 files in torchvision's real on-disk formats.

The real ``torchvision.datasets`` classes load these files, so tests exercise the real
reading code without the network. Images are label-dependent patterns (a bright bar whose
position is the label), so a test can tell labels from images.

Usage (pytest)::

    arrays = write_fake_mnist(tmp_path)                        # <tmp_path>/MNIST/raw/...
    arrays = write_fake_mnist(tmp_path, folder="FashionMNIST")  # Fashion-MNIST
    disable_cifar_checksums(monkeypatch)                       # fake files cannot match md5s
    arrays = write_fake_cifar10(tmp_path)                      # <tmp_path>/cifar-10-batches-py/...
"""

from __future__ import annotations

import pickle
import struct
from pathlib import Path

import numpy as np

CIFAR10_LABEL_NAMES = [
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
]  # fmt: skip


def _labels(n: int, rng: np.random.Generator) -> np.ndarray:
    """Every class as evenly as possible, in random order."""
    return rng.permutation(np.arange(n) % 10).astype(np.uint8)


def fake_mnist_images(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """uint8 [N, 28, 28]: dim noise plus a bright horizontal bar at rows 2*label+4 .. +1."""
    images = rng.integers(0, 40, size=(len(labels), 28, 28), dtype=np.uint8)
    for i, y in enumerate(labels):
        images[i, 2 * int(y) + 4 : 2 * int(y) + 6, :] = 255
    return images


def fake_cifar_images(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """uint8 [N, 3, 32, 32] (CHW): dim noise plus a bar at rows 3*label .. +2 in channel label%3."""
    images = rng.integers(0, 40, size=(len(labels), 3, 32, 32), dtype=np.uint8)
    for i, y in enumerate(labels):
        images[i, int(y) % 3, 3 * int(y) : 3 * int(y) + 2, :] = 255
    return images


def _write_idx(path: Path, array: np.ndarray) -> None:
    """IDX ("SN3 Pascal Vincent") file: magic 0x0000 08 <ndim>, big-endian int32 dims, data."""
    assert array.dtype == np.uint8
    header = struct.pack(">I", 0x0800 | array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(header + np.ascontiguousarray(array).tobytes())


def write_fake_mnist(
    root: str | Path,
    folder: str = "MNIST",
    n_train: int = 40,
    n_test: int = 20,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """Write ``<root>/<folder>/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte``.

    ``folder`` is the torchvision class name: "MNIST" or "FashionMNIST". Returns the arrays
    written: train_images / test_images uint8 [N, 28, 28], train_labels / test_labels uint8 [N].
    """
    rng = np.random.default_rng(seed)
    raw = Path(root) / folder / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    arrays: dict[str, np.ndarray] = {}
    for split, prefix, n in (("train", "train", n_train), ("test", "t10k", n_test)):
        labels = _labels(n, rng)
        images = fake_mnist_images(labels, rng)
        _write_idx(raw / f"{prefix}-images-idx3-ubyte", images)
        _write_idx(raw / f"{prefix}-labels-idx1-ubyte", labels)
        arrays[f"{split}_images"], arrays[f"{split}_labels"] = images, labels
    return arrays


def write_fake_cifar10(
    root: str | Path, n_per_batch: int = 8, n_test: int | None = None, seed: int = 0
) -> dict[str, np.ndarray]:
    """Write ``<root>/cifar-10-batches-py/{data_batch_1..5,test_batch,batches.meta}``.

    Each training batch holds ``n_per_batch`` images (5 * n_per_batch in all), the test batch
    ``n_test`` (default ``n_per_batch``). Returns train_images / test_images uint8 [N, 3, 32, 32]
    (CHW, the batches' order) and train_labels / test_labels uint8 [N].

    The pickles use *str* keys ("data", "labels", "label_names"): the real files are Python 2
    pickles whose keys torchvision reads as str via ``encoding="latin1"``; bytes keys written
    from Python 3 would stay bytes and torchvision's ``entry["data"]`` would fail. Their md5s
    cannot match torchvision's, so call :func:`disable_cifar_checksums` before loading.
    """
    rng = np.random.default_rng(seed)
    base = Path(root) / "cifar-10-batches-py"
    base.mkdir(parents=True, exist_ok=True)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    sizes = [n_per_batch] * 5 + [n_per_batch if n_test is None else n_test]
    train_images, train_labels = [], []
    test_images = test_labels = None
    for name, n in zip(names, sizes, strict=True):
        labels = _labels(n, rng)
        images = fake_cifar_images(labels, rng)
        entry = {
            "batch_label": name,
            "labels": [int(y) for y in labels],
            "data": images.reshape(n, 3 * 32 * 32),
            "filenames": [f"fake_{name}_{i}.png" for i in range(n)],
        }
        with open(base / name, "wb") as f:
            pickle.dump(entry, f, protocol=2)
        if name == "test_batch":
            test_images, test_labels = images, labels
        else:
            train_images.append(images)
            train_labels.append(labels)
    meta = {"num_cases_per_batch": n_per_batch, "label_names": CIFAR10_LABEL_NAMES, "num_vis": 3072}
    with open(base / "batches.meta", "wb") as f:
        pickle.dump(meta, f, protocol=2)
    return {
        "train_images": np.concatenate(train_images),
        "train_labels": np.concatenate(train_labels),
        "test_images": test_images,
        "test_labels": test_labels,
    }


def disable_cifar_checksums(monkeypatch) -> None:
    """Make ``torchvision.datasets.CIFAR10`` accept any existing file (md5 None) for this test.

    torchvision's ``check_integrity(path, None)`` is true for any existing file; CIFAR10 checks
    every file of ``train_list + test_list`` (for either split) and ``meta["filename"]``.
    """
    from torchvision.datasets import CIFAR10

    monkeypatch.setattr(CIFAR10, "train_list", [[f, None] for f, _ in CIFAR10.train_list])
    monkeypatch.setattr(CIFAR10, "test_list", [[f, None] for f, _ in CIFAR10.test_list])
    monkeypatch.setattr(CIFAR10, "meta", {**CIFAR10.meta, "md5": None})
