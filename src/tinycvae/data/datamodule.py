"""LightningDataModules: one per data set, all serving whole in-memory tensor splits.

Batches are index slices of tensors that already sit on the training device (no
per-item transform, no collation), which keeps the loader out of the profile.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import pytorch_lightning as pl
import torch
from torch import Tensor

from tinycvae.checks import require_int
from tinycvae.data.base import DataSpec, Split, Splits, check_classes
from tinycvae.data.dice import DiceSettings, dice_spec, load_dice
from tinycvae.data.torchvision_sets import load_torchvision_splits, torchvision_spec
from tinycvae.errors import ConfigError

Batch = tuple[Tensor, Tensor, Tensor]  # images, labels, factors


class TensorBatches:
    """An iterable of ``(images, labels, factors)`` batches over one split.

    Shuffled with its own generator (seeded, advanced each epoch), so a run is
    repeatable and a resumed run sees the same order an uninterrupted run would.
    """

    def __init__(self, split: Split, batch_size: int, shuffle: bool, seed: int = 0) -> None:
        self.split = split
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.epoch = 0

    def __len__(self) -> int:
        return -(-len(self.split) // self.batch_size)

    def __iter__(self) -> Iterator[Batch]:
        n = len(self.split)
        if self.shuffle:
            gen = torch.Generator().manual_seed(self.seed + self.epoch)
            order = torch.randperm(n, generator=gen).to(self.split.images.device)
            self.epoch += 1
        else:
            order = None
        s = self.split
        for start in range(0, n, self.batch_size):
            if order is None:
                sl = slice(start, start + self.batch_size)
                yield s.images[sl], s.labels[sl], s.factors[sl]
            else:
                idx = order[start : start + self.batch_size]
                yield s.images[idx], s.labels[idx], s.factors[idx]


class TensorDataModule(pl.LightningDataModule):
    """Base: subclasses give ``spec`` (from config alone) and ``load_splits()``."""

    spec: DataSpec

    def __init__(
        self,
        name: str,
        batch_size: int = 128,
        eval_batch_size: int = 1024,
        seed: int = 0,
        classes: Mapping[str, Sequence[str]] | None = None,
    ) -> None:
        super().__init__()
        self.name = name
        self._classes = classes  # checked against the spec by the subclass (classes below)
        require_int(batch_size, "data.batch_size", 1)
        require_int(eval_batch_size, "data.eval_batch_size", 1)
        require_int(seed, "seed")
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size
        self.seed = seed
        self.splits: Splits | None = None
        self._train_batches: TensorBatches | None = None

    @property
    def classes(self) -> dict[str, tuple[str, ...]]:
        """``data.classes``: the words a prompt may use for each class (src/generate.py)."""
        return check_classes(self.spec, self._classes)

    def load_splits(self) -> Splits:
        raise NotImplementedError

    def cache_key(self) -> str:
        """Identifies the exact images of every split (for caches derived from them)."""
        raise NotImplementedError

    def prepare_data(self) -> None:
        if self.splits is None:  # renders / downloads once (other ranks read the cache)
            self.splits = self.load_splits()

    def setup(self, stage: str | None = None) -> None:
        if self.splits is None:
            self.splits = self.load_splits()
        if self.trainer is not None:
            device = self.trainer.strategy.root_device
            if self.splits.train.images.device != device:
                self.to(device)

    def to(self, device: torch.device | str) -> None:
        """Move every split to ``device`` (the GPU when training there)."""
        assert self.splits is not None
        sp = self.splits
        self.splits = Splits(sp.train.to(device), sp.val.to(device), sp.test.to(device))
        self._train_batches = None

    def train_dataloader(self) -> TensorBatches:
        assert self.splits is not None, "call setup() first"
        if self._train_batches is None:
            self._train_batches = TensorBatches(self.splits.train, self.batch_size, True, self.seed)
        return self._train_batches

    def val_dataloader(self) -> TensorBatches:
        assert self.splits is not None, "call setup() first"
        return TensorBatches(self.splits.val, self.eval_batch_size, False)

    def test_dataloader(self) -> TensorBatches:
        assert self.splits is not None, "call setup() first"
        return TensorBatches(self.splits.test, self.eval_batch_size, False)

    def state_dict(self) -> dict:
        return {"train_epoch": self._train_batches.epoch if self._train_batches else 0}

    def load_state_dict(self, state: dict) -> None:
        self.train_dataloader().epoch = int(state.get("train_epoch", 0))


class DiceDataModule(TensorDataModule):
    """Procedurally rendered dice (see :mod:`tinycvae.data.dice`), cached under data_dir."""

    def __init__(
        self,
        name: str = "dice",
        data_dir: str | Path | None = "data",
        num_train: int = 8192,
        num_val: int = 1024,
        num_test: int = 1024,
        image_size: int = 32,
        supersample: int = 4,
        scale_range: tuple[float, float] = (1.0, 1.0),
        margin: float = 0.04,
        render_seed: int = 1234,
        **kwargs,
    ) -> None:
        super().__init__(name, **kwargs)
        if (
            not isinstance(scale_range, Sequence)
            or isinstance(scale_range, str)
            or len(scale_range) != 2
        ):
            raise ConfigError(
                f"data.scale_range={scale_range} is invalid; allowed: [min, max] with "
                "0 < min <= max <= 1"
            )
        lo, hi = scale_range
        self.settings = DiceSettings(
            num_train, num_val, num_test, image_size, supersample, lo, hi, margin, render_seed
        )
        self.settings.validate()
        self.data_dir = data_dir
        self.spec = dice_spec(image_size)
        self.classes  # noqa: B018 - a bad data.classes entry is refused here, before any work

    def load_splits(self) -> Splits:
        return load_dice(self.settings, self.data_dir)

    def cache_key(self) -> str:
        return f"dice-{self.settings.cache_key()}"


class TorchvisionDataModule(TensorDataModule):
    """MNIST, Fashion-MNIST or CIFAR-10 through torchvision (downloaded when online)."""

    def __init__(
        self,
        name: str = "mnist",
        data_dir: str | Path = "data",
        download: bool = True,
        val_size: int = 5000,
        split_seed: int = 0,
        **kwargs,
    ) -> None:
        super().__init__(name, **kwargs)
        self.spec = torchvision_spec(name)
        self.classes  # noqa: B018 - a bad data.classes entry is refused here, before any work
        self.data_dir = data_dir
        self.download = download
        self.val_size = val_size
        self.split_seed = split_seed

    def cache_key(self) -> str:
        return f"{self.name}-val{self.val_size}-seed{self.split_seed}"

    def load_splits(self) -> Splits:
        return load_torchvision_splits(
            self.name, self.data_dir, self.download, self.val_size, self.split_seed
        )
