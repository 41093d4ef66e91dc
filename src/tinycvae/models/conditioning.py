"""How the class label enters a network: one module kind per conditioning scheme.

Each scheme maps a vector ``v`` [B, n] and labels ``y`` [B] to the conditioned vector.
The encoder applies it to its flattened features, the decoder to the latent ``z``; so
the decoder that ships to the MCU owns its own copy. Whatever the scheme, the effect
of the label on the decoder's first Linear layer is a per-class column of constants,
which the firmware stores as a table.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tinycvae.errors import ConfigError


class LabelCondition(nn.Module):
    """Base: ``forward(v, y) -> v'``; ``out_dim`` is the size of ``v'``."""

    def __init__(self, num_classes: int, in_dim: int) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.in_dim = in_dim
        self.out_dim = in_dim


class OneHotConcat(LabelCondition):
    """The electronic-die and memo articles (docs/references.md): concatenate the one-hot
    label."""

    def __init__(self, num_classes: int, in_dim: int, embed_dim: int | None = None) -> None:
        super().__init__(num_classes, in_dim)
        self.out_dim = in_dim + num_classes

    def forward(self, v: Tensor, y: Tensor) -> Tensor:
        return torch.cat([v, F.one_hot(y, self.num_classes).to(v.dtype)], dim=1)


class EmbedConcat(LabelCondition):
    """The text-to-image article: concatenate a learned label embedding of size
    ``embed_dim``."""

    def __init__(self, num_classes: int, in_dim: int, embed_dim: int | None = None) -> None:
        super().__init__(num_classes, in_dim)
        embed_dim = embed_dim or num_classes
        self.embed = nn.Embedding(num_classes, embed_dim)
        self.out_dim = in_dim + embed_dim

    def forward(self, v: Tensor, y: Tensor) -> Tensor:
        return torch.cat([v, self.embed(y)], dim=1)


class EmbedAdd(LabelCondition):
    """The text-to-image article: add a learned label embedding of the vector's own size."""

    def __init__(self, num_classes: int, in_dim: int, embed_dim: int | None = None) -> None:
        super().__init__(num_classes, in_dim)
        self.embed = nn.Embedding(num_classes, in_dim)

    def forward(self, v: Tensor, y: Tensor) -> Tensor:
        return v + self.embed(y)


class ProjectAdd(LabelCondition):
    """The from-scratch article: add ``ReLU(Linear(one_hot(y)))``, projected to the vector's
    size."""

    def __init__(self, num_classes: int, in_dim: int, embed_dim: int | None = None) -> None:
        super().__init__(num_classes, in_dim)
        self.project = nn.Linear(num_classes, in_dim)

    def forward(self, v: Tensor, y: Tensor) -> Tensor:
        return v + F.relu(self.project(F.one_hot(y, self.num_classes).to(v.dtype)))


CONDITIONINGS: dict[str, type[LabelCondition]] = {
    "onehot": OneHotConcat,
    "embed_concat": EmbedConcat,
    "embed_add": EmbedAdd,
    "project_add": ProjectAdd,
}


def make_condition(
    kind: str, num_classes: int, in_dim: int, embed_dim: int | None = None
) -> LabelCondition:
    if kind not in CONDITIONINGS:
        raise ConfigError(
            f"conditioning '{kind}' is unknown; allowed: {', '.join(sorted(CONDITIONINGS))}"
        )
    if embed_dim is not None and embed_dim < 1:
        raise ConfigError(f"model.conditioning.embed_dim={embed_dim} is invalid; allowed: >= 1")
    return CONDITIONINGS[kind](num_classes, in_dim, embed_dim)
