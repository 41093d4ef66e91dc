"""The one model contract shared by every architecture, conditioning and latent mode.

``encode(x, c) -> (mu, logvar)``, ``decode(z, c) -> logits``, ``sample(c, z=None)``.
The :class:`Decoder` is a module of its own: it is what ships to the MCU, and what the
footprint estimator and the exporter read.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tinycvae.errors import ConfigError
from tinycvae.models.conditioning import LabelCondition
from tinycvae.models.samplers import LatentSampler

LATENT_MODES = ("reparam", "bypass")


@dataclass
class CVAEOutput:
    logits: Tensor
    z: Tensor
    mu: Tensor | None  # None in bypass mode: z is given, nothing is inferred
    logvar: Tensor | None


class Decoder(nn.Module):
    """``(z, label) -> logits``: the label condition followed by the architecture's body."""

    def __init__(self, condition: LabelCondition, body: nn.Module) -> None:
        super().__init__()
        self.condition = condition
        self.body = body

    def forward(self, z: Tensor, c: Tensor) -> Tensor:
        return self.body(self.condition(z, c))


class Encoder(nn.Module):
    """``(x, label) -> (mu, logvar)``. ``label_input`` also feeds the one-hot label to the
    backbone's input: as constant image ``"planes"`` (conv) or as a ``"vector"`` appended
    to the flattened image (mlp); ``None`` leaves the input alone."""

    def __init__(
        self,
        backbone: nn.Module,
        condition: LabelCondition,
        latent: int,
        num_classes: int,
        label_input: str | None,
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.condition = condition
        self.num_classes = num_classes
        self.label_input = label_input
        self.fc_mu = nn.Linear(condition.out_dim, latent)
        self.fc_logvar = nn.Linear(condition.out_dim, latent)

    def forward(self, x: Tensor, c: Tensor) -> tuple[Tensor, Tensor]:
        if self.label_input is not None:
            onehot = F.one_hot(c, self.num_classes).to(x.dtype)
            if self.label_input == "planes":
                x = torch.cat([x, onehot[:, :, None, None].expand(-1, -1, *x.shape[2:])], 1)
            else:
                x = torch.cat([x.flatten(1), onehot], dim=1)
        h = self.condition(self.backbone(x), c)
        return self.fc_mu(h), self.fc_logvar(h)


class CVAE(nn.Module):
    """A conditional VAE. In ``bypass`` mode (the latent-angle bypass of the electronic-die
    article) there is no encoder: z is the sample's known generating factors, and only the
    decoder trains."""

    def __init__(
        self,
        encoder: Encoder | None,
        decoder: Decoder,
        latent: int,
        num_classes: int,
        latent_mode: str = "reparam",
        sample_std: float = 1.0,
        sampler: str = "prior",
    ) -> None:
        super().__init__()
        if latent_mode not in LATENT_MODES:
            raise ConfigError(
                f"model.latent_mode={latent_mode} is invalid; allowed: {', '.join(LATENT_MODES)}"
            )
        if (encoder is None) != (latent_mode == "bypass"):
            raise ConfigError("a bypass model has no encoder; a reparam model needs one")
        self.encoder = encoder
        self.decoder = decoder
        self.latent = latent
        self.num_classes = num_classes
        self.latent_mode = latent_mode
        self.sample_std = sample_std
        self.sampler = LatentSampler(sampler, num_classes, latent, sample_std, self.bypass)

    @property
    def bypass(self) -> bool:
        return self.latent_mode == "bypass"

    def encode(self, x: Tensor, c: Tensor) -> tuple[Tensor, Tensor]:
        if self.encoder is None:
            raise ConfigError("a bypass model has no encoder: its z is the known factors")
        return self.encoder(x, c)

    def decode(self, z: Tensor, c: Tensor) -> Tensor:
        return self.decoder(z, c)

    def forward(
        self,
        x: Tensor,
        c: Tensor,
        factors: Tensor | None = None,
        sample: bool | None = None,
        generator: torch.Generator | None = None,
    ) -> CVAEOutput:
        """Reconstruct ``x``. z is drawn from q(z|x,c) when ``sample`` (default: in training
        mode), else its mean; in bypass mode z is the first ``latent`` known factors.
        ``generator`` makes the draw repeatable without touching the global RNG."""
        if self.bypass:
            if factors is None or factors.shape[1] < self.latent:
                raise ConfigError(f"bypass needs {self.latent} known factor(s) per sample")
            z = factors[:, : self.latent]
            return CVAEOutput(self.decode(z, c), z, None, None)
        mu, logvar = self.encode(x, c)
        z = mu
        if self.training if sample is None else sample:
            eps = torch.randn(mu.shape, generator=generator, device=mu.device, dtype=mu.dtype)
            z = mu + eps * torch.exp(0.5 * logvar)
        return CVAEOutput(self.decode(z, c), z, mu, logvar)

    @torch.no_grad()
    def sample(
        self, c: Tensor, z: Tensor | None = None, generator: torch.Generator | None = None
    ) -> Tensor:
        """Images in [0, 1] for labels ``c``; latents from ``self.sampler`` when not given."""
        if z is None:
            z = self.sampler(c, generator)
        return torch.sigmoid(self.decode(z, c))
