"""The loss-dict contract every variant is trained and logged with.

``loss = recon + beta * kl`` where ``recon`` is summed over pixels and averaged over the
batch (``bce`` on logits, or ``mse`` on sigmoid outputs) and ``kl`` is KL(q(z|x,c) || N(0, I))
summed over latent dimensions and averaged over the batch (zero in bypass mode).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from tinycvae.errors import ConfigError

RECON_LOSSES = ("bce", "mse")


def check_recon(name: str) -> None:
    if name not in RECON_LOSSES:
        raise ConfigError(f"recon_loss={name} is invalid; allowed: {', '.join(RECON_LOSSES)}")


def reconstruction(logits: Tensor, x: Tensor, kind: str = "bce") -> Tensor:
    if kind == "bce":
        per = F.binary_cross_entropy_with_logits(logits, x, reduction="none")
    elif kind == "mse":
        per = (torch.sigmoid(logits) - x) ** 2
    else:
        check_recon(kind)
    return per.flatten(1).sum(1).mean()


def kl_divergence(mu: Tensor | None, logvar: Tensor | None) -> Tensor:
    if mu is None or logvar is None:
        return torch.zeros(())
    return (-0.5 * (1 + logvar - mu.pow(2) - logvar.exp())).sum(1).mean()


def beta_at(beta: float, warmup_epochs: float, epoch_progress: float) -> float:
    """Linear KL warm-up (the VAE-framework article): 0 -> beta over ``warmup_epochs`` epochs."""
    if warmup_epochs <= 0:
        return beta
    return beta * min(1.0, epoch_progress / warmup_epochs)


def elbo_terms(
    logits: Tensor,
    x: Tensor,
    mu: Tensor | None,
    logvar: Tensor | None,
    beta: float,
    recon_kind: str = "bce",
) -> dict[str, Tensor]:
    recon = reconstruction(logits, x, recon_kind)
    kl = kl_divergence(mu, logvar).to(recon.device)
    return {"loss": recon + beta * kl, "recon": recon, "kl": kl}
