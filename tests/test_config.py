"""Hydra composition of every config, and bad values caught before any work."""

from __future__ import annotations

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from tinycvae.errors import ConfigError
from tinycvae.evaluator import EvaluatorError
from tinycvae.job import build

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


# The articles' settings (docs/references.md) each real-data experiment reproduces.
ARTICLE_SETTINGS = {
    "mnist_mlp": {  # the memo article
        "data.name": "mnist",
        "data.batch_size": 256,
        "model.arch": "mlp",
        "model.hidden": 512,
        "model.latent": 16,
        "model.conditioning.kind": "onehot",
        "optimizer.lr": 0.001,
        "scheduler": None,
        "beta": 1.0,
        "trainer.max_epochs": 50,
    },
    "mnist_mlp_10ep": {  # the memo article's model, in 10 epochs of 32-image batches
        "data.name": "mnist",
        "data.batch_size": 32,
        "model.arch": "mlp",
        "model.hidden": 512,
        "model.latent": 16,
        "model.conditioning.kind": "onehot",
        "model.sampler": "prior",
        "model.sample_std": 1.0,
        "optimizer.lr": 0.001,
        "scheduler": None,
        "trainer.max_epochs": 10,
    },
    "mnist_project": {  # the from-scratch article
        "model.conditioning.kind": "project_add",
        "beta": 1e-5,
        "scheduler": None,
    },
    "fashion_embed": {  # the text-to-image article
        "data.name": "fashion_mnist",
        "model.arch": "conv",
        "model.latent": 128,
        "model.dim4": 128,
        "model.conditioning.kind": "embed_concat",
        "model.conditioning.embed_dim": 32,
        "scheduler": None,
    },
    "kl_warmup": {  # the VAE-framework article: warm-up over 3/7 of the epochs
        "data.batch_size": 100,
        "beta_warmup": 9,
        "trainer.max_epochs": 21,
    },
}


@pytest.mark.parametrize("experiment", sorted(ARTICLE_SETTINGS))
def test_article_experiments_hold_the_articles_settings(experiment):
    cfg = compose_train([f"experiment={experiment}"])
    for key, value in ARTICLE_SETTINGS[experiment].items():
        assert OmegaConf.select(cfg, key) == value, key


SWEEPS = {
    "mnist_project_beta": ("beta", ["1.0e-5", "1.0"]),
    "fashion_embed_concat_vs_add": ("conditioning", ["embed_concat", "embed_add"]),
    "kl_warmup": ("data", ["mnist", "fashion_mnist"]),
}


@pytest.mark.parametrize("experiment", sorted(SWEEPS))
def test_each_job_of_an_article_sweep_composes_and_builds(experiment, tmp_path):
    key, values = SWEEPS[experiment]
    with initialize_config_dir(str(CONF), version_base="1.3"):
        cfg = compose("train", overrides=[f"experiment={experiment}"], return_hydra_config=True)
    assert str(cfg.hydra.sweeper.params[key]) == ",".join(values)
    for value in values:
        job_cfg = compose_train([f"experiment={experiment}", f"{key}={value}"], tmp_path)
        job = build(job_cfg)
        if key == "data":  # the experiment's batch size holds for every data set
            assert job_cfg.data.name == value and job_cfg.data.batch_size == 100
        if key == "conditioning":
            kind = {"embed_concat": "EmbedConcat", "embed_add": "EmbedAdd"}[value]
            assert type(job.model.decoder.condition).__name__ == kind
        if key == "beta":
            assert job_cfg.beta == float(value)
