"""MNIST, Fashion-MNIST and CIFAR-10 through torchvision, as whole in-memory splits.

Files are read with torchvision's own data set classes (from ``<root>``, in torchvision's
layout) and turned into tensors straight from ``ds.data`` / ``ds.targets``. A download is
only tried when the files are missing and ``download`` is true; any failure becomes one
:class:`DataError` naming the folder and files that are expected.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import Tensor

from tinycvae.data.base import DataError, DataSpec, Split, Splits

_FASHION = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)  # fmt: skip
_CIFAR10 = (
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
)  # fmt: skip

TORCHVISION_SPECS: dict[str, DataSpec] = {
    "mnist": DataSpec("mnist", 1, 28, 28, 10, tuple(str(i) for i in range(10))),
    "fashion_mnist": DataSpec("fashion_mnist", 1, 28, 28, 10, _FASHION),
    "cifar10": DataSpec("cifar10", 3, 32, 32, 10, _CIFAR10),
}


def torchvision_spec(name: str) -> DataSpec:
    """The :class:`DataSpec` of a torchvision data set, known without any files."""
    if name not in TORCHVISION_SPECS:
        allowed = ", ".join(sorted(TORCHVISION_SPECS))
        raise DataError(f"unknown torchvision data set {name!r}; allowed: {allowed}")
    return TORCHVISION_SPECS[name]


def _dataset_class(name: str) -> type:
    from torchvision import datasets  # imported lazily: it is slow and only needed here

    return {"mnist": datasets.MNIST, "fashion_mnist": datasets.FashionMNIST,
            "cifar10": datasets.CIFAR10}[name]  # fmt: skip


def _expected_files(cls: type, root: str) -> tuple[str, list[str]]:
    """The folder torchvision reads ``cls`` from, and the file names it needs there."""
    if hasattr(cls, "resources"):  # MNIST family: uncompressed idx files in <root>/<Class>/raw
        files = [os.path.splitext(os.path.basename(url))[0] for url, _ in cls.resources]
        return os.path.join(root, cls.__name__, "raw"), files
    files = [f for f, _ in cls.train_list + cls.test_list] + [cls.meta["filename"]]
    return os.path.join(root, cls.base_folder), files


def _short(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or "no message"
    return f"{type(exc).__name__}: {text[:300]}"


def _to_split(ds: object) -> Split:
    data = ds.data
    if isinstance(data, Tensor):  # MNIST family: uint8 [N, H, W]
        images = data.unsqueeze(1)
    else:  # CIFAR: numpy uint8 [N, H, W, C]
        images = torch.from_numpy(data).permute(0, 3, 1, 2)
    labels = torch.as_tensor(ds.targets, dtype=torch.int64)
    return Split(images.float().div_(255.0).contiguous(), labels, torch.zeros(len(labels), 0))


def _load_both(cls: type, root: str, download: bool) -> tuple[Split, Split]:
    train = cls(root, train=True, download=download)
    test = cls(root, train=False, download=False)
    return _to_split(train), _to_split(test)


def _load_or_explain(name: str, cls: type, root: str, download: bool) -> tuple[Split, Split]:
    """Load train and test, downloading only if needed and allowed; else one DataError."""
    folder, files = _expected_files(cls, root)
    try:
        return _load_both(cls, root, download=False)
    except Exception as exc:  # noqa: BLE001 - every torchvision failure becomes a DataError
        first = exc
    missing = not all(os.path.isfile(os.path.join(folder, f)) for f in files)
    cause = "download disabled" if missing else f"files unreadable: {_short(first)}"
    if download:
        try:
            return _load_both(cls, root, download=True)
        except Exception as exc:  # noqa: BLE001
            why = _short(exc)
            cause = f"download failed: {why}" if missing else f"{cause}; re-download failed: {why}"
    raise DataError(
        f"{name}: data set files not available; expected in {folder}: {', '.join(files)} ({cause})"
    ) from None


def load_torchvision_splits(
    name: str, root: str | Path, download: bool, val_size: int, seed: int
) -> Splits:
    """Train/val/test splits of ``name``; val is ``val_size`` training images chosen by ``seed``."""
    spec = torchvision_spec(name)
    if val_size < 1:
        raise DataError(
            f"{name}: val_size {val_size} is out of range; it must be >= 1 and smaller "
            "than the number of training images"
        )
    cls = _dataset_class(name)
    root = str(Path(root).expanduser())
    train, test = _load_or_explain(name, cls, root, download)
    for split_name, split in (("train", train), ("test", test)):
        if tuple(split.images.shape[1:]) != spec.shape:
            raise DataError(
                f"{name}: {split_name} images under {root} have shape "
                f"{tuple(split.images.shape[1:])}, expected {spec.shape}"
            )
    n = len(train)
    if not 1 <= val_size < n:
        raise DataError(
            f"{name}: val_size {val_size} is out of range; it must be between 1 and {n - 1} "
            f"(the training set has {n} images)"
        )
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    val_idx, train_idx = perm[:val_size].sort().values, perm[val_size:].sort().values
    return Splits(
        train=Split(train.images[train_idx], train.labels[train_idx], train.factors[train_idx]),
        val=Split(train.images[val_idx], train.labels[val_idx], train.factors[val_idx]),
        test=test,
    )
