"""The memo article's MLP encoder and decoder (docs/references.md): two hidden layers of
width ``hidden``."""

from __future__ import annotations

import math
from typing import Any

from torch import nn

from tinycvae.checks import require_int
from tinycvae.data.base import DataSpec
from tinycvae.models.builder import Shared
from tinycvae.models.cvae import CVAE


def build(spec: DataSpec, hidden: int = 256, **shared: Any) -> CVAE:
    """The MLP CVAE for data ``spec`` (the ``_target_`` of conf/model/mlp.yaml);
    ``shared``: the keys every architecture takes (:class:`~tinycvae.models.builder.Shared`).
    Every bad value raises a one-line ConfigError."""
    common = Shared.of(spec, "mlp", shared)
    require_int(hidden, "model.hidden", 1)
    return common.assemble(
        lambda label_inputs: encoder_backbone(math.prod(spec.shape) + label_inputs, hidden),
        lambda width: decoder_body(width, spec.shape, hidden),
        label_input="vector",
    )


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
