"""``src/train.py``: one training job, for a composed Hydra config. Its steps, in order:
preflight (every check, :mod:`tinycvae.job`), its run summary, the deployed decoder's
footprint, the evaluator, fit, test, the quality stage (:mod:`tinycvae.quality_stage`)
and the record of how it ended.

Everything a job needs is validated first, before any data is rendered or trained: a
bad value raises a one-line :class:`ConfigError`. A started job holds its run folder's
writer lock (:mod:`tinycvae.run_folder`) and records how it ended in its
``summary.json`` (:func:`tinycvae.outcome.recorded`): a failure is recorded, not raised,
so that the other jobs of a multirun still run and keep their results; a signal ends
the process with ``128 + N``. Every stage runs on the job's one device
(:mod:`tinycvae.devices`); resuming follows :mod:`tinycvae.resume`.
"""

from __future__ import annotations

import secrets
from typing import Any

import torch
from omegaconf import DictConfig
from pytorch_lightning.trainer.states import TrainerStatus

from tinycvae import devices
from tinycvae.job import Job, preflight
from tinycvae.mcu.footprint import all_mcus, flat_metrics, summary_dict
from tinycvae.metrics import param_counts
from tinycvae.metrics.callback import PeriodicQuality
from tinycvae.models import CVAE
from tinycvae.outcome import SignalWatch, recorded
from tinycvae.quality_stage import prepare_evaluator, score_quality
from tinycvae.repo import sweep_group
from tinycvae.resume import checkpoint_files, previous_summary
from tinycvae.run_folder import writer_lock
from tinycvae.summary import RunSummary
from tinycvae.sweep_signals import in_pool_worker, remember_signals
from tinycvae.trainer import make_callbacks, make_loggers, make_trainer


def run(cfg: DictConfig) -> dict[str, Any]:
    """Run one job; return its summary (also written to ``<run_dir>/summary.json``)."""
    if in_pool_worker():
        remember_signals()  # first: from now on a relayed signal reaches this job
    job = preflight(cfg)
    torch.set_num_threads(job.threads)
    with writer_lock(job.run_dir), SignalWatch() as watch:
        previous = previous_summary(job.run_dir) if job.resume_from else {}
        group = cfg.get("group") or sweep_group()
        summary = _new_summary(job, previous, group)
        # The deployed decoder's MCU cost, known before training: a sweep can be filtered on it.
        footprint, cost = _footprint(job.model)
        run_id = previous.get("wandb", {}).get("id") or _new_run_id()
        checkpoints = lambda: {"checkpoints": checkpoint_files(job.run_dir)}  # noqa: E731
        with recorded(summary, watch, cfg.name, checkpoints):
            watch.check()  # a signal relayed before this job started: recorded at once
            teacher = job.module.teacher  # distill.teacher=: recorded beside the run's cost
            extra = {} if teacher is None else {"distill": teacher.summary()}
            summary.update(footprint=footprint, metrics=cost, **extra)  # the first record: running
            _train_and_score(job, summary, cost, run_id, group, watch)
    return summary.data


def _new_summary(job: Job, previous: dict, group: str | None) -> RunSummary:
    """The job's record, continuing ``previous`` (a resumed run's summary)."""
    return RunSummary(
        job.run_dir,
        previous,
        name=job.cfg.name,
        group=group,
        device=str(job.device),
        threads=job.threads,
        cpus=job.cpus,
        resumed_from=job.resume_from,
        config=job.module.run_info["config"],
        params=param_counts(job.model),
    )


def _footprint(model: CVAE) -> tuple[dict[str, Any], dict[str, Any]]:
    """The decoder's footprint on every MCU, and the cost metrics logged from step 0."""
    footprint = summary_dict(model.decoder, model.latent, model.num_classes, all_mcus())
    return footprint, {**param_counts(model), **flat_metrics(footprint)}


def _train_and_score(
    job: Job, summary: RunSummary, cost: dict[str, Any], run_id: str, group, watch: SignalWatch
) -> None:
    """The job's stages, in order: evaluator, fit, test, quality metrics and pictures."""
    cfg, run_dir = job.cfg, job.run_dir
    evaluator = prepare_evaluator(job)
    if evaluator is not None:
        summary.update(evaluator={"test_acc": evaluator.test_acc, "path": evaluator.path})
    loggers = make_loggers(cfg, run_dir, group, run_id, summary)
    callbacks = make_callbacks(cfg, has_logger=bool(loggers))
    if evaluator is not None and cfg.metrics.get("every_n_epochs", 0) > 0:
        callbacks.append(
            PeriodicQuality(cfg.metrics.every_n_epochs, evaluator.evaluator, job.quality)
        )
    trainer = make_trainer(job, loggers or False, callbacks)
    watch.busy = lambda: trainer.state.status == TrainerStatus.RUNNING
    for lg in loggers:
        lg.log_metrics(cost, step=0)
    trainer.fit(job.module, datamodule=job.datamodule, ckpt_path=job.resume_from)
    metrics = {**cost, **_float_metrics(trainer.callback_metrics)}
    best = checkpoint_files(run_dir).get("best")
    trainer.test(job.module, datamodule=job.datamodule, ckpt_path=best, verbose=False)
    metrics.update(_float_metrics(trainer.callback_metrics))
    summary.update(metrics=metrics)
    if evaluator is not None:
        # Lightning hands the module back on the CPU: every stage after it runs on the
        # job's device again, next to its data and evaluator.
        devices.place(job.device, job.module, job.datamodule, evaluator.evaluator)
        metrics.update(score_quality(job, evaluator, best, loggers, summary))
    summary.update(status="ok", metrics=metrics)


def _float_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in sorted(metrics.items())}


def _new_run_id() -> str:
    return secrets.token_hex(4)
