"""What every architecture's builder shares, and the one map from ``model.arch`` to it.

An architecture is one builder and one YAML: ``conf/model/<arch>.yaml`` names its
builder in ``_target_`` (e.g. ``tinycvae.models.conv.build``) and holds its keys. The
builder takes the data spec, its own keys (widths) and, as ``**shared``, the keys every
architecture shares (:data:`SHARED_KEYS`): :meth:`Shared.of` checks those, the builder
checks its own, and :meth:`Shared.assemble` puts the CVAE together around the builder's
encoder backbone and decoder body.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from omegaconf import OmegaConf
from torch import nn

from tinycvae.checks import require_int, require_number
from tinycvae.data.base import DataSpec
from tinycvae.errors import ConfigError
from tinycvae.models.conditioning import make_condition
from tinycvae.models.cvae import CVAE, LATENT_MODES, Decoder, Encoder
from tinycvae.repo import CONF_DIR

MODEL_CONF = CONF_DIR / "model"
SHARED_KEYS = ("arch", "latent", "latent_mode", "sample_std", "sampler", "conditioning")
ARCHITECTURES = tuple(sorted(p.stem for p in MODEL_CONF.glob("*.yaml")))


def builder_of(arch: str) -> Callable[..., CVAE]:
    """The builder ``conf/model/<arch>.yaml`` names in its ``_target_``."""
    if arch not in ARCHITECTURES:
        raise ConfigError(f"model.arch={arch} is unknown; allowed: {', '.join(ARCHITECTURES)}")
    from hydra.utils import get_method

    return get_method(OmegaConf.load(MODEL_CONF / f"{arch}.yaml")._target_)


def _allowed_keys(arch: str) -> list[str]:
    """The keys of ``conf/model/<arch>.yaml``, then the shared ones it does not hold."""
    own = [str(k) for k in OmegaConf.load(MODEL_CONF / f"{arch}.yaml") if k != "_target_"]
    return [*own, *(k for k in SHARED_KEYS if k not in own)]


@dataclass(frozen=True)
class Shared:
    """The keys every ``conf/model/*.yaml`` shares, checked against the data on creation
    (:meth:`of`): each bad value is a one-line ConfigError naming its ``model.`` key."""

    spec: DataSpec
    arch: str
    latent: int = 10
    latent_mode: str = "reparam"
    sample_std: float = 1.0
    sampler: str = "prior"
    conditioning: Mapping[str, Any] | None = None

    @classmethod
    def of(cls, spec: DataSpec, arch: str, keys: Mapping[str, Any]) -> Shared:
        """The shared ``keys`` handed to ``arch``'s builder (the rest of its ``**kwargs``):
        a key that is neither shared nor the builder's own is named, with the allowed."""
        for key, value in keys.items():
            if key not in SHARED_KEYS:
                raise ConfigError(
                    f"model.{key}={value} is not a setting of model={arch}; allowed: "
                    + ", ".join(_allowed_keys(arch))
                )
        named = keys.get("arch", arch)
        if named != arch:
            raise ConfigError(
                f"model.arch={named} does not match the builder of model={arch}; allowed: "
                f"model.arch={arch}, or model={named} to change the architecture"
            )
        return cls(spec, **{**keys, "arch": arch})

    def __post_init__(self) -> None:
        spec, latent = self.spec, self.latent
        if self.latent_mode not in LATENT_MODES:
            raise ConfigError(
                f"model.latent_mode={self.latent_mode} is invalid; allowed: "
                f"{', '.join(LATENT_MODES)}"
            )
        require_int(latent, "model.latent", 1)
        require_number(self.sample_std, "model.sample_std", 0, exclusive=True)
        if self.latent_mode == "bypass":
            if spec.num_factors == 0:
                raise ConfigError(
                    f"model.latent_mode=bypass needs known generating factors, and data "
                    f"'{spec.name}' has none; allowed: latent_mode=reparam, or data=dice"
                )
            if latent > spec.num_factors:
                names = spec.factor_names
                allowed = ", ".join(
                    f"{i} ({'+'.join(names[:i])})" for i in range(1, len(names) + 1)
                )
                raise ConfigError(
                    f"model.latent={latent} does not match the factors of '{spec.name}' for "
                    f"bypass; allowed: {allowed}"
                )

    def assemble(
        self,
        encoder_backbone: Callable[[int], tuple[nn.Module, int]],
        decoder_body: Callable[[int], nn.Module],
        label_input: str,
    ) -> CVAE:
        """The CVAE around an architecture's parts: ``encoder_backbone(n)`` is the encoder's
        trunk for the image plus ``n`` one-hot label inputs, with its feature width;
        ``decoder_body(width)`` follows the decoder's label condition; ``label_input`` is
        how the one-hot label joins the encoder's input (:class:`Encoder`), when the
        conditioning asks for it (``label_planes``)."""
        cond = dict(self.conditioning or {"kind": "onehot"})
        kind = cond.get("kind", "onehot")
        embed_dim = cond.get("embed_dim")
        label_planes = bool(cond.get("label_planes", kind == "onehot"))
        k = self.spec.num_classes
        # Built in this order whatever the latent mode: the seed draws the same weights.
        backbone, feat = encoder_backbone(k if label_planes else 0)
        dec_cond = make_condition(kind, k, self.latent, embed_dim)
        body = decoder_body(dec_cond.out_dim)
        encoder = None
        if self.latent_mode == "reparam":
            encoder = Encoder(
                backbone,
                make_condition(kind, k, feat, embed_dim),
                self.latent,
                k,
                label_input if label_planes else None,
            )
        return CVAE(
            encoder,
            Decoder(dec_cond, body),
            self.latent,
            k,
            self.latent_mode,
            self.sample_std,
            self.sampler,
        )
