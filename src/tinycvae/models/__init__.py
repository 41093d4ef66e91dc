"""Model construction: architecture x conditioning x latent mode -> one :class:`CVAE`."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from tinycvae.checks import require_int, require_number
from tinycvae.data.base import DataSpec
from tinycvae.errors import ConfigError
from tinycvae.models import conv, mlp
from tinycvae.models.conditioning import CONDITIONINGS, make_condition
from tinycvae.models.cvae import CVAE, LATENT_MODES, CVAEOutput, Decoder, Encoder
from tinycvae.models.samplers import SAMPLERS, LatentSampler, SamplerError

ARCHITECTURES = ("conv", "mlp")

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


def build_cvae(
    spec: DataSpec,
    arch: str = "conv",
    latent: int = 10,
    latent_mode: str = "reparam",
    sample_std: float = 1.0,
    sampler: str = "prior",
    conditioning: Mapping[str, Any] | None = None,
    dim1: int = 8,
    dim2: int = 8,
    dim3: int = 16,
    dim4: int = 16,
    hidden: int = 256,
) -> CVAE:
    """Build a CVAE for data ``spec``; every bad value raises a one-line ConfigError."""
    cond = dict(conditioning or {"kind": "onehot"})
    kind = cond.get("kind", "onehot")
    embed_dim = cond.get("embed_dim")
    label_planes = bool(cond.get("label_planes", kind == "onehot"))
    if arch not in ARCHITECTURES:
        raise ConfigError(f"model.arch={arch} is unknown; allowed: {', '.join(ARCHITECTURES)}")
    if latent_mode not in LATENT_MODES:
        raise ConfigError(
            f"model.latent_mode={latent_mode} is invalid; allowed: {', '.join(LATENT_MODES)}"
        )
    require_int(latent, "model.latent", 1)
    require_number(sample_std, "model.sample_std", 0, exclusive=True)
    if latent_mode == "bypass":
        if spec.num_factors == 0:
            raise ConfigError(
                f"model.latent_mode=bypass needs known generating factors, and data "
                f"'{spec.name}' has none; allowed: latent_mode=reparam, or data=dice"
            )
        if latent > spec.num_factors:
            names = spec.factor_names
            allowed = ", ".join(f"{i} ({'+'.join(names[:i])})" for i in range(1, len(names) + 1))
            raise ConfigError(
                f"model.latent={latent} does not match the factors of '{spec.name}' for "
                f"bypass; allowed: {allowed}"
            )

    k = spec.num_classes
    in_channels = spec.channels + (k if label_planes else 0)
    if arch == "conv":
        dims = (dim1, dim2, dim3, dim4)
        conv.check_dims(dims, spec.shape)
        backbone, feat = conv.encoder_backbone(in_channels, spec.shape, dims)
        dec_cond = make_condition(kind, k, latent, embed_dim)
        body = conv.decoder_body(dec_cond.out_dim, spec.shape, dims)
    else:
        mlp.check_hidden(hidden)
        backbone, feat = mlp.encoder_backbone(
            math.prod(spec.shape) + (k if label_planes else 0), hidden
        )
        dec_cond = make_condition(kind, k, latent, embed_dim)
        body = mlp.decoder_body(dec_cond.out_dim, spec.shape, hidden)
    encoder = None
    if latent_mode == "reparam":
        label_input = ("planes" if arch == "conv" else "vector") if label_planes else None
        encoder = Encoder(
            backbone, make_condition(kind, k, feat, embed_dim), latent, k, label_input
        )
    return CVAE(encoder, Decoder(dec_cond, body), latent, k, latent_mode, sample_std, sampler)


def count_params(module: Any) -> int:
    return 0 if module is None else sum(p.numel() for p in module.parameters())
