"""The memo article's MLP encoder and decoder (docs/references.md): two hidden layers of
width ``hidden``."""

from __future__ import annotations

import math

from torch import nn

from tinycvae.checks import require_int


def check_hidden(hidden: int) -> None:
    require_int(hidden, "model.hidden", 1)


def encoder_backbone(in_dim: int, hidden: int) -> tuple[nn.Module, int]:
    return (
        nn.Sequential(
            nn.Flatten(), nn.Linear(in_dim, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU()
        ),
        hidden,
    )


def decoder_body(in_dim: int, shape: tuple[int, int, int], hidden: int) -> nn.Module:
    return nn.Sequential(
        nn.Linear(in_dim, hidden),
        nn.ReLU(),
        nn.Linear(hidden, hidden),
        nn.ReLU(),
        nn.Linear(hidden, math.prod(shape)),
        nn.Unflatten(1, shape),
    )
