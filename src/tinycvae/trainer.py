"""A job's Lightning Trainer, on the job's one device and as one process whatever cluster
it runs in (:func:`make_trainer`), with the loggers (W&B, CSV: ``logger.*``) and the
callbacks (``callbacks.*``) its config names."""

from __future__ import annotations

from pathlib import Path

import pytorch_lightning as pl
from omegaconf import DictConfig, OmegaConf

from tinycvae import cluster
from tinycvae.disk import AtomicCheckpointIO
from tinycvae.job import Job, instantiate
from tinycvae.summary import RunSummary
from tinycvae.tracking import wandb_logger


def make_trainer(job: Job, logger, callbacks: list[pl.Callback]) -> pl.Trainer:
    """The Lightning Trainer of a job, on the job's device, as one process whatever
    cluster it runs in (:mod:`tinycvae.cluster`). ``trainer.deterministic=auto`` is true
    on the CPU (a seed repeats exactly) and false elsewhere (deterministic GPU kernels
    cost speed)."""
    kind = {"cuda": "gpu"}.get(job.device.type, job.device.type)
    cluster.quiet_lightning()
    deterministic = job.cfg.trainer.get("deterministic", "auto")
    if deterministic == "auto":
        deterministic = kind == "cpu"
    plugins = job.cfg.trainer.get("plugins")
    if plugins is not None:
        plugins = instantiate(plugins, "trainer.plugins")
    return instantiate(
        job.cfg.trainer,
        "trainer",
        accelerator=kind,
        # As one process (a cluster environment of our own), and a checkpoint is written
        # whole or not at all (tinycvae.disk).
        plugins=[*cluster.trainer_plugins(plugins), AtomicCheckpointIO()],
        devices=[job.device.index or 0] if kind == "gpu" else 1,
        deterministic=deterministic,
        default_root_dir=str(job.run_dir),
        logger=logger,
        callbacks=callbacks,
    )


def make_loggers(cfg: DictConfig, run_dir: Path, group, run_id: str, summary: RunSummary) -> list:
    loggers = []
    for key, node in (cfg.get("logger") or {}).items():
        if not node:
            continue
        if key == "wandb":
            settings = OmegaConf.to_container(node, resolve=True)
            lg = wandb_logger(settings, run_dir, cfg.name, group, run_id, summary.data["config"])
            summary.update(
                wandb={
                    "id": lg.experiment.id,  # a W&B sweep agent picks its own id
                    "mode": lg.experiment.settings.mode,
                    "dir": str(Path(lg.experiment.dir).parent),
                }
            )
            loggers.append(lg)
        else:
            loggers.append(instantiate(node, f"logger.{key}", save_dir=str(run_dir)))
    return loggers


def make_callbacks(cfg: DictConfig, has_logger: bool) -> list[pl.Callback]:
    callbacks = [instantiate(c, "callbacks") for c in (cfg.get("callbacks") or {}).values() if c]
    if not has_logger:  # Lightning refuses a learning-rate monitor with nothing to log to
        callbacks = [c for c in callbacks if not isinstance(c, pl.callbacks.LearningRateMonitor)]
    return callbacks
