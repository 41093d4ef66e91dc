"""The data contract every data set honours: whole splits as in-memory tensors.

A data set is described by a :class:`DataSpec` that is known from its config alone
(before anything is rendered or downloaded), so that a run can be validated first.
Its splits are :class:`Split` tensors: images float32 in [0, 1] shaped [N, C, H, W],
labels int64 [N] in ``0 .. num_classes-1``, factors float32 [N, F] (F = 0 when the
data set has no known generating factors).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from tinycvae.errors import TinyCVAEError


class DataError(TinyCVAEError, ValueError):
    """A data set cannot be provided as configured (missing files, bad settings)."""


@dataclass(frozen=True)
class DataSpec:
    name: str
    channels: int
    height: int
    width: int
    num_classes: int
    class_names: tuple[str, ...]
    factor_names: tuple[str, ...] = ()

    @classmethod
    def from_dict(cls, d: dict) -> DataSpec:
        """The inverse of ``dataclasses.asdict`` (as stored in checkpoints and caches)."""
        return cls(**{**d, "class_names": tuple(d["class_names"]),
                      "factor_names": tuple(d["factor_names"])})  # fmt: skip

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.channels, self.height, self.width)

    @property
    def num_factors(self) -> int:
        return len(self.factor_names)


@dataclass
class Split:
    images: Tensor
    labels: Tensor
    factors: Tensor = field(default_factory=lambda: torch.empty(0, 0))

    def __post_init__(self) -> None:
        n = self.images.shape[0]
        if self.factors.numel() == 0 and self.factors.shape[0] != n:
            self.factors = torch.zeros(n, 0)
        if self.labels.shape[0] != n or self.factors.shape[0] != n:
            raise DataError(
                f"split sizes disagree: images {n}, labels {self.labels.shape[0]}, "
                f"factors {self.factors.shape[0]}"
            )

    def __len__(self) -> int:
        return self.images.shape[0]

    def to(self, device: torch.device | str) -> Split:
        return Split(self.images.to(device), self.labels.to(device), self.factors.to(device))


@dataclass
class Splits:
    train: Split
    val: Split
    test: Split


def check_classes(spec: DataSpec, classes: Mapping[str, Any] | None) -> dict[str, tuple[str, ...]]:
    """``data.classes`` (conf/data/<name>.yaml): class name -> the words and phrases a
    prompt may use for that class (src/generate.py ``prompt=...``). Every key names a
    class of ``spec``; classes left out are matched by their names alone. A bad entry is
    one line naming its ``data.classes.`` key."""
    names = {n.casefold(): n for n in spec.class_names}
    out: dict[str, tuple[str, ...]] = {}
    for key, words in (classes or {}).items():
        name = names.get(str(key).casefold())
        if name is None:
            raise DataError(
                f"data.classes.{key} is not a class of data={spec.name}; allowed: "
                f"{', '.join(spec.class_names)}"
            )
        if isinstance(words, (str, bytes)) or not all(
            isinstance(w, (str, int)) and not isinstance(w, bool) and str(w).strip()
            for w in (words or [])
        ):
            raise DataError(
                f"data.classes.{key}={words} is invalid; allowed: a list of words or phrases"
            )
        out[name] = tuple(str(w) for w in words or ())
    return out
