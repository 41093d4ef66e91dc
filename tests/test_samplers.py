"""Latent samplers: prior, class_gaussian (fitted, saved with the model), bypass."""

from __future__ import annotations

import pytest
import torch

from tinycvae.data.dice import dice_spec
from tinycvae.errors import ConfigError
from tinycvae.models import LatentSampler, SamplerError, build_cvae
from tinycvae.sampling import choose_sampler

SMALL = {"dim1": 2, "dim2": 2, "dim3": 4, "dim4": 4}


def test_prior_draws_from_n0_std_squared():
    s = LatentSampler("prior", 3, 4, sample_std=0.5, bypass=False)
    z = s(torch.zeros(20000, dtype=torch.long), torch.Generator().manual_seed(0))
    assert z.shape == (20000, 4)
    assert z.mean().abs() < 0.02 and (z.std() - 0.5).abs() < 0.02


def test_bypass_prior_draws_factors_uniformly_over_their_range():
    s = LatentSampler("prior", 3, 2, sample_std=1.0, bypass=True)
    z = s(torch.zeros(20000, dtype=torch.long), torch.Generator().manual_seed(0))
    assert z.min() >= -1 and z.max() <= 1
    assert (z.mean(0).abs() < 0.03).all() and ((z.var(0) - 1 / 3).abs() < 0.02).all()


def test_class_gaussian_recovers_each_class_mean_and_covariance():
    g = torch.Generator().manual_seed(0)
    means = torch.tensor([[2.0, -1.0], [-3.0, 0.5]])
    cov1 = torch.tensor([[1.0, 0.6], [0.6, 0.5]])
    labels = torch.arange(40000) % 2
    z = means[labels] + torch.randn(40000, 2, generator=g) @ torch.linalg.cholesky(cov1).T
    s = LatentSampler("class_gaussian", 2, 2, sample_std=1.0, bypass=False)
    s.fit(z, labels)
    assert torch.allclose(s.means, means, atol=0.03)
    drawn = s(torch.ones(40000, dtype=torch.long), torch.Generator().manual_seed(1))
    assert torch.allclose(drawn.mean(0), means[1], atol=0.03)
    assert torch.allclose(torch.cov(drawn.T), cov1, atol=0.05)


def test_an_unfitted_class_gaussian_refuses_with_the_fix():
    s = LatentSampler("class_gaussian", 2, 2, sample_std=1.0, bypass=False)
    with pytest.raises(SamplerError, match="not fitted"):
        s(torch.zeros(3, dtype=torch.long))


def test_a_class_with_too_few_samples_is_named():
    s = LatentSampler("class_gaussian", 3, 2, sample_std=1.0, bypass=False)
    with pytest.raises(SamplerError, match="class 2"):
        s.fit(torch.randn(10, 2), torch.tensor([0, 1] * 5))


def test_unknown_sampler_is_a_config_error():
    with pytest.raises(ConfigError, match="model.sampler=gan"):
        build_cvae(dice_spec(), sampler="gan", **SMALL)


def test_the_fitted_sampler_travels_in_the_state_dict():
    model = build_cvae(dice_spec(), latent=2, sampler="class_gaussian", **SMALL)
    model.sampler.fit(torch.randn(60, 2) + 5, torch.arange(60) % 6)
    clone = build_cvae(dice_spec(), latent=2, sampler="class_gaussian", **SMALL)
    clone.load_state_dict(model.state_dict())
    assert bool(clone.sampler.fitted)
    y = torch.arange(6)
    a = clone.sample(y, generator=torch.Generator().manual_seed(3))
    b = model.sample(y, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b)


def test_sample_std_narrows_a_vaes_prior_and_is_refused_where_it_means_nothing():
    model = build_cvae(dice_spec(), latent=3, **SMALL)
    assert choose_sampler(model, None, sample_std=0.5) is False
    z = model.sampler(torch.zeros(20000, dtype=torch.long), torch.Generator().manual_seed(0))
    assert (z.std() - 0.5).abs() < 0.02 and model.sample_std == 0.5  # the picture code's too
    with pytest.raises(ConfigError, match=r"^sample_std=0 is invalid; allowed: a finite number >"):
        choose_sampler(model, None, sample_std=0)
    with pytest.raises(ConfigError, match="this model draws from class_gaussian: allowed: "):
        choose_sampler(model, "class_gaussian", sample_std=0.5)
    bypass = build_cvae(dice_spec(), latent=2, latent_mode="bypass", **SMALL)
    with pytest.raises(ConfigError, match="a bypass model's uniform factors"):
        choose_sampler(bypass, None, sample_std=0.5)
