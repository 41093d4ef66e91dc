"""Hydra composition of every config, and bad values caught before any work."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from tinycvae.errors import ConfigError
from tinycvae.evaluator import EvaluatorError
from tinycvae.train import build

from conftest import CONF, compose_train

EXPERIMENTS = sorted(p.stem for p in (CONF / "experiment").glob("*.yaml"))
GROUP_OPTIONS = [
    (group, p.stem)
    for group in ("data", "model", "conditioning", "trainer", "callbacks", "logger", "debug")
    for p in sorted((CONF / group).glob("*.yaml"))
]


def test_defaults_match_what_users_type():
    cfg = compose_train([])
    assert cfg.data.name == "dice" and cfg.model.arch == "conv"
    assert cfg.model.latent == 10 and cfg.beta == 1.0
    assert [cfg.model[f"dim{i}"] for i in range(1, 5)] == [8, 8, 16, 16]
    assert cfg.model.conditioning.kind == "onehot"
    cfg = compose_train(["model.latent=1", "beta=1e-5", "conditioning=embed_add"])
    assert cfg.model.latent == 1 and cfg.beta == 1e-5
    assert cfg.model.conditioning.kind == "embed_add"


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_experiment_composes_and_builds(experiment, tmp_path):
    cfg = compose_train([f"experiment={experiment}"], tmp_path)
    OmegaConf.to_container(cfg, resolve=True)
    job = build(cfg)  # builds the data module (no download) and the model
    assert job.model.latent == cfg.model.latent


@pytest.mark.parametrize("group, option", GROUP_OPTIONS)
def test_every_group_option_composes(group, option, tmp_path):
    cfg = compose_train([f"{group}={option}"], tmp_path)
    OmegaConf.to_container(cfg, resolve=True)


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["model.latent=0"], "model.latent=0"),
        (["model.dim1=0"], "model.dim1=0"),
        (["beta=-1"], "beta=-1"),
        (["beta_warmup=-2"], "beta_warmup=-2"),
        (["recon_loss=l1"], "recon_loss=l1"),
        (["model.latent_mode=bypass", "model.latent=3"], "model.latent=3"),
        (["data=mnist", "model.latent_mode=bypass", "model.latent=1"], "has none"),
        (["data.image_size=4"], "data.image_size=4"),
        (["logger.wandb.mode=loud"], "logger.wandb.mode=loud"),
        (["ckpt_path=/nope/x.ckpt"], "ckpt_path=/nope/x.ckpt"),
        (["data.batch_size=0"], "data.batch_size=0"),
        (["model=mlp", "dims=4x4x4x4"], "model.dim1=4 is not a setting of model=mlp"),
        (["+model.hidden=8"], "model.hidden=8 is not a setting of model=conv"),
        (["model.arch=mlp"], "model.arch=mlp does not match the builder of model=conv"),
        (["metrics.num_samples=5"], "metrics.num_samples=5 is invalid; allowed: an integer >= 6"),
        (["metrics.every_n_epochs=-1"], "metrics.every_n_epochs=-1 is invalid"),
        (["metrics.fid.features=clip"], "metrics.fid.features=clip is unknown"),
        (["evaluator.epochs=0"], "evaluator.epochs=0 is invalid; allowed: >= 1"),
        (["+evaluator.foo=1"], "evaluator: .*unexpected keyword argument 'foo'; allowed: How"),
    ],
)
def test_bad_values_fail_in_build(overrides, message, tmp_path):
    cfg = compose_train(overrides, tmp_path)
    with pytest.raises((ConfigError, EvaluatorError), match=message.replace("[", r"\[")):
        build(cfg)
    assert not (tmp_path / "data").exists()  # nothing rendered
