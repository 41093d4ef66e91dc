"""Latents and generation: what the decoder is fed, and the images it draws.

One place for what the metrics, the pictures, ``src/generate.py`` and the exporter all
need: the eval-mode guard (:func:`evaluation`), balanced labels, the latents a model's
decoder sees for real images (:func:`latents_of`), latents drawn for labels
(:func:`draw_latents`), the sampler's choice and fit (:func:`choose_sampler`,
:func:`fit_sampler`) and generated images (:func:`draw_images`).

The sampler itself (``model.sampler``, :class:`tinycvae.models.samplers.LatentSampler`)
is part of the model: its fitted buffers travel in every checkpoint.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator

import torch
from torch import Tensor, nn

from tinycvae.checks import require_number
from tinycvae.data.base import Split
from tinycvae.devices import device_of
from tinycvae.errors import ConfigError
from tinycvae.models import CVAE
from tinycvae.models.samplers import LatentSampler

Sampler = Callable[[Tensor, torch.Generator], Tensor]


@contextlib.contextmanager
def evaluation(model: nn.Module) -> Iterator[nn.Module]:
    """``model`` in eval mode under ``torch.no_grad``; every module's training flag is
    restored afterwards, whatever it was."""
    flags = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        with torch.no_grad():
            yield model
    finally:
        for m, flag in flags:
            m.training = flag


def in_evaluation(fn):
    """Decorator: run ``fn(model, ...)`` inside :func:`evaluation` of its first argument."""

    @functools.wraps(fn)
    def wrapper(model, *args, **kwargs):
        with evaluation(model):
            return fn(model, *args, **kwargs)

    return wrapper


def balanced_labels(n: int, num_classes: int, device=None) -> Tensor:
    """``n`` labels cycling through the classes: 0, 1, ..., K-1, 0, 1, ..."""
    return torch.arange(n, device=device) % num_classes


@in_evaluation
def latents_of(
    model: CVAE, split: Split, batch_size: int = 1024, idx: Tensor | None = None
) -> Tensor:
    """The z the decoder sees for each image of ``split`` (or of its samples ``idx``): the
    posterior mean, or the known factors of a bypass model; on the model's device, encoded
    ``batch_size`` images at a time."""
    device = device_of(model)
    if model.bypass:
        factors = split.factors if idx is None else split.factors[idx]
        return factors[:, : model.latent].float().to(device)
    idx = torch.arange(len(split)) if idx is None else idx
    images, labels = split.images, split.labels
    return torch.cat(
        [
            model.encode(images[chunk].to(device), labels[chunk].to(device))[0]
            for chunk in idx.split(batch_size)
        ]
    )


def draw_latents(
    model: CVAE, labels: Tensor, generator: torch.Generator, sampler: Sampler | None = None
) -> Tensor:
    """Latents for ``labels`` from ``sampler``, or else from the model's prior (N(0,
    sample_std^2); uniform over [-1, 1] for a bypass model's factors), drawn with
    ``generator`` on its device."""
    if sampler is not None:
        return sampler(labels, generator)
    n, device = len(labels), generator.device
    if model.bypass:
        return torch.rand(n, model.latent, generator=generator, device=device) * 2.0 - 1.0
    return torch.randn(n, model.latent, generator=generator, device=device) * model.sample_std


@in_evaluation
def draw_images(model: CVAE, labels: Tensor, seed: int = 0, batch_size: int = 1024) -> Tensor:
    """Images in [0, 1] for ``labels``, latents from the model's sampler, repeatable for
    ``seed``; made on the model's device."""
    labels = labels.to(device_of(model))
    gen = torch.Generator(device=labels.device).manual_seed(seed)
    return torch.cat(
        [
            model.sample(labels[i : i + batch_size], generator=gen)
            for i in range(0, len(labels), batch_size)
        ]
    )


def fit_sampler(model: CVAE, train: Split, batch_size: int = 1024) -> None:
    """Fit ``model.sampler``'s per-class Gaussians (a no-op for the ``prior`` sampler)."""
    if model.sampler.kind == "class_gaussian":
        z = latents_of(model, train, batch_size)
        model.sampler.fit(z, train.labels.to(z.device))


def choose_sampler(
    model: CVAE,
    kind: str | None,
    device: torch.device | str = "cpu",
    sample_std: float | None = None,
) -> bool:
    """Make ``model`` draw with sampler ``kind`` (``+sampler=...`` of src/evaluate.py and
    src/generate.py; None: the checkpoint's own) and, for a VAE's prior, with std
    ``sample_std`` (``+sample_std=...``; None: the checkpoint's ``model.sample_std``). A bad
    name or value is a one-line ConfigError. True when the sampler still has to be fitted
    on the training split (a ``class_gaussian`` the checkpoint did not fit: see
    :func:`fit_sampler`)."""
    if kind and kind != model.sampler.kind:
        s = model.sampler
        model.sampler = LatentSampler(kind, s.means.shape[0], s.latent, s.sample_std, s.bypass).to(
            device
        )
    if sample_std is not None:
        require_number(sample_std, "sample_std", 0, exclusive=True)
        if model.sampler.kind != "prior" or model.bypass:
            drawn = "a bypass model's uniform factors" if model.bypass else "class_gaussian"
            raise ConfigError(
                f"sample_std={sample_std} scales a VAE's N(0, 1) prior; this model draws from "
                f"{drawn}: allowed: +sampler=prior on a VAE checkpoint, or no sample_std"
            )
        model.sample_std = model.sampler.sample_std = float(sample_std)
    return model.sampler.kind == "class_gaussian" and not bool(model.sampler.fitted)
