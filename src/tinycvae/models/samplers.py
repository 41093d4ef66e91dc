"""Where generation draws its latents from (``model.sampler``).

* ``prior``: N(0, sample_std^2) for a real VAE; for a bypass model the factors' own
  prior, uniform over [-1, 1].
* ``class_gaussian``: one Gaussian per class fitted to the latents the decoder saw in
  training (the posterior means, or the factors for a bypass model): the aggregate
  posterior, which rescues small-beta runs whose posterior does not match the prior.

The fitted means and Cholesky factors are buffers, so they travel in the model's
state_dict and every checkpoint that holds it (an MCU needs just a mean and a
covariance per class).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from tinycvae.errors import ConfigError, TinyCVAEError

SAMPLERS = ("prior", "class_gaussian")


class SamplerError(TinyCVAEError):
    """A sampler cannot draw (for example: fitted parameters are missing)."""


class LatentSampler(nn.Module):
    def __init__(
        self, kind: str, num_classes: int, latent: int, sample_std: float, bypass: bool
    ) -> None:
        super().__init__()
        if kind not in SAMPLERS:
            raise ConfigError(f"model.sampler={kind} is unknown; allowed: {', '.join(SAMPLERS)}")
        self.kind = kind
        self.latent = latent
        self.sample_std = sample_std
        self.bypass = bypass
        self.register_buffer("means", torch.zeros(num_classes, latent))
        self.register_buffer("scale_tril", torch.eye(latent).repeat(num_classes, 1, 1))
        self.register_buffer("fitted", torch.zeros((), dtype=torch.bool))

    @torch.no_grad()
    def fit(self, z: Tensor, labels: Tensor, jitter: float = 1e-4) -> None:
        """Fit a Gaussian per class to latents ``z`` [N, latent] with ``labels`` [N]
        (on any device; the fitted buffers stay where the sampler is)."""
        z, labels = z.to(self.means.device), labels.to(self.means.device)
        for k in range(self.means.shape[0]):
            zk = z[labels == k].double()
            if zk.shape[0] < 2:
                raise SamplerError(
                    f"class {k} has {zk.shape[0]} training sample(s); class_gaussian needs >= 2"
                )
            mean = zk.mean(0)
            eye = torch.eye(self.latent, dtype=torch.float64, device=zk.device)
            cov = torch.atleast_2d(torch.cov(zk.T)) + jitter * eye
            self.means[k] = mean.float()
            self.scale_tril[k] = torch.linalg.cholesky(cov).float()
        self.fitted.fill_(True)

    def forward(self, labels: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Latents for ``labels``; ``generator`` (on the labels' device) for repeatability."""
        n, device = labels.shape[0], labels.device
        if self.kind == "prior":
            if self.bypass:
                return torch.rand(n, self.latent, generator=generator, device=device) * 2 - 1
            return torch.randn(n, self.latent, generator=generator, device=device) * self.sample_std
        if not bool(self.fitted):
            raise SamplerError(
                "model.sampler=class_gaussian is not fitted: fit it on the training latents "
                "(tinycvae.sampling.fit_sampler) or load a checkpoint whose sampler was fitted"
            )
        # Drawn where the generator is, computed where the fitted buffers are.
        eps = torch.randn(n, self.latent, 1, generator=generator, device=device)
        eps, labels = eps.to(self.means.device), labels.to(self.means.device)
        return self.means[labels] + (self.scale_tril[labels] @ eps).squeeze(-1)
