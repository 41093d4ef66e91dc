"""Model construction: architecture x conditioning x latent mode -> one :class:`CVAE`.

Each architecture has its own builder (``tinycvae.models.conv.build``,
``tinycvae.models.mlp.build``), named by its ``conf/model/<arch>.yaml``; what they share
is in :mod:`tinycvae.models.builder`."""

from __future__ import annotations

from typing import Any

from tinycvae.data.base import DataSpec
from tinycvae.models.builder import ARCHITECTURES, builder_of
from tinycvae.models.conditioning import CONDITIONINGS
from tinycvae.models.cvae import CVAE, LATENT_MODES, CVAEOutput, Decoder, Encoder
from tinycvae.models.samplers import SAMPLERS, LatentSampler, SamplerError

__all__ = [
    "ARCHITECTURES",
    "CONDITIONINGS",
    "CVAE",
    "CVAEOutput",
    "Decoder",
    "Encoder",
    "LATENT_MODES",
    "LatentSampler",
    "SAMPLERS",
    "SamplerError",
    "build_cvae",
    "count_params",
]


def build_cvae(spec: DataSpec, arch: str = "conv", **keys: Any) -> CVAE:
    """A CVAE for data ``spec`` by architecture name, for code (a run's config names its
    builder itself): ``keys`` are those of ``conf/model/<arch>.yaml`` and the
    conditioning's. Every bad value raises a one-line ConfigError."""
    return builder_of(arch)(spec, arch=arch, **keys)


def count_params(module: Any) -> int:
    return 0 if module is None else sum(p.numel() for p in module.parameters())
