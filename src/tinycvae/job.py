"""A job, validated and built before any work: :func:`build` checks every setting a job
reads (the trainer and its one device, the seed and data folder, the data, the model and
its fit in memory, the optimizer and scheduler, resuming, the quality metrics and their
evaluator) and constructs its pieces, cheaply: nothing is rendered or trained, and a bad
value raises a one-line :class:`ConfigError`. :func:`preflight` adds the checks of its
run folder. Shared by the train command (:mod:`tinycvae.commands.train`), the evaluate
command and the sweep guard (:mod:`tinycvae.hydra_callbacks`).
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import hydra
import pytorch_lightning as pl
import torch
from lightning_fabric.utilities.seed import max_seed_value, min_seed_value
from omegaconf import DictConfig, OmegaConf

from tinycvae import devices, distill
from tinycvae.checks import require_int, require_number, require_writable_dir
from tinycvae.data.datamodule import TensorDataModule
from tinycvae.errors import ConfigError, TinyCVAEError
from tinycvae.evaluator import MIN_TRAIN_PER_CLASS, EvaluatorSettings
from tinycvae.known_keys import warn_unknown_keys
from tinycvae.lit_module import CVAEModule
from tinycvae.metrics import QualitySettings
from tinycvae.models import CVAE
from tinycvae.models.size import check_fits
from tinycvae.repo import concurrent_jobs, job_num
from tinycvae.resume import check_no_overwrite, check_resumable, ckpt_path
from tinycvae.run_folder import check_free
from tinycvae.tracking import resolve_mode


@dataclass
class Job:
    """A validated, built job: nothing has been rendered or trained yet."""

    cfg: DictConfig
    run_dir: Path
    datamodule: TensorDataModule
    model: CVAE
    module: CVAEModule
    quality: QualitySettings | None  # None: metrics=none
    evaluator: EvaluatorSettings | None
    device: torch.device  # where every stage of this job runs
    threads: int  # torch's CPU threads for this job
    resume_from: str | None  # the checkpoint this start continues, or None
    cpus: dict[str, int]  # what the threads came from: devices.allocated_cpus + jobs_at_once


def run_dir_of(cfg: DictConfig) -> Path:
    return Path(cfg.paths.output_dir)


def instantiate(node: Any, what: str, **kwargs: Any) -> Any:
    try:
        return hydra.utils.instantiate(node, **kwargs)
    except hydra.errors.InstantiationException as err:
        cause = err.__cause__ or err
        if isinstance(cause, TinyCVAEError):
            raise cause from None
        raise ConfigError(f"{what}: {str(cause).splitlines()[0]}") from None


def _call(what: str, fn, *args: Any, **kwargs: Any) -> Any:
    """Call a config-built factory; a bad value inside becomes a one-line ConfigError."""
    try:
        return fn(*args, **kwargs)
    except TinyCVAEError:
        raise
    except (TypeError, ValueError) as err:
        raise ConfigError(f"{what}: {str(err).splitlines()[0]}") from None


def build(cfg: DictConfig, command: str | None = None) -> Job:
    """Validate and construct every piece of a job (cheap: no data, no training).
    ``command``: whose settings ``cfg`` holds (train, evaluate; None: the one Hydra runs)."""
    try:
        resolved = OmegaConf.to_container(cfg, resolve=True)
    except Exception as err:  # noqa: BLE001 - an unresolvable interpolation is bad input
        raise ConfigError(f"config does not resolve: {str(err).splitlines()[0]}") from None
    assert isinstance(resolved, dict)
    warn_unknown_keys(cfg, command)
    device = _check_trainer(cfg)
    _check_seed_and_data_dir(cfg)
    # Seed first: the model's initial weights are part of what the seed repeats.
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    datamodule = instantiate(cfg.data, "data")
    factory = instantiate(cfg.model, "model", _partial_=True, _convert_="all")
    # Its size from its config, before a byte is allocated for it.
    _call("model", check_fits, factory, datamodule.spec, datamodule.batch_size, device)
    model = _call("model", factory, datamodule.spec)
    run_info = {"config": resolved, "spec": asdict(datamodule.spec)}
    teacher = distill.from_config(cfg.get("distill"), datamodule.spec, model)
    if "lr" in cfg.optimizer:
        require_number(cfg.optimizer.lr, "optimizer.lr", 0.0, exclusive=True)
    optimizer = instantiate(cfg.optimizer, "optimizer")
    _call("optimizer", optimizer, params=model.parameters())  # bad lr etc. fail here, not later
    scheduler = instantiate(cfg.scheduler, "scheduler") if cfg.get("scheduler") else None
    module = CVAEModule(
        model,
        optimizer=optimizer,
        scheduler=scheduler,
        beta=cfg.beta,
        beta_warmup=cfg.beta_warmup,
        recon_loss=cfg.recon_loss,
        run_info=run_info,
        teacher=teacher,
    )
    wandb_cfg = (cfg.get("logger") or {}).get("wandb")
    if wandb_cfg:
        resolve_mode(wandb_cfg.get("mode", "auto"))
    resume = ckpt_path(cfg, run_dir_of(cfg))
    check_resumable(cfg, resume, scheduler)
    quality, evaluator = _quality_settings(cfg, model)
    cpus = devices.allocated_cpus()
    at_once = concurrent_jobs(min(cpus.values()))
    threads = devices.cpu_threads(cfg.get("threads", "auto"), at_once, cpus)
    return Job(
        cfg, run_dir_of(cfg), datamodule, model, module, quality, evaluator, device, threads,
        resume, {**cpus, "jobs_at_once": at_once},
    )  # fmt: skip


def _check_seed_and_data_dir(cfg: DictConfig) -> None:
    """``seed`` within what every seeded library accepts; ``paths.data_dir`` (where data
    sets and evaluators are kept, ``TINYCVAE_DATA``) a folder that can be written."""
    require_int(cfg.seed, "seed", min_seed_value, max_seed_value)
    data_dir = cfg.paths.get("data_dir")
    if data_dir is None:
        return
    key = "TINYCVAE_DATA" if os.environ.get("TINYCVAE_DATA") == str(data_dir) else "paths.data_dir"
    require_writable_dir(data_dir, key)


def preflight(cfg: DictConfig) -> Job:
    """Every check a job can make before it writes anything: its run folder is free and
    holds no checkpoints a fresh start would overwrite, and :func:`build` accepts it.
    Run before Hydra writes the run's ``.hydra/`` record
    (:class:`tinycvae.hydra_callbacks.RunGuard`) and again by the job itself."""
    check_free(run_dir_of(cfg))  # another job is writing there: say so first
    job = build(cfg)  # raises ConfigError before any work
    check_no_overwrite(job.run_dir, job.resume_from)
    return job


def _check_trainer(cfg: DictConfig) -> torch.device:
    """The trainer settings a job can honour, and the one device it runs on."""
    t = cfg.trainer
    if t.get("max_epochs") is not None:
        require_int(t.max_epochs, "trainer.max_epochs", 1)
    n = t.get("devices", 1)
    one = n in (1, "1", "auto") or (OmegaConf.is_list(n) and len(n) == 1)
    if not one or t.get("num_nodes", 1) != 1:
        what = f"trainer.devices={n}" if not one else f"trainer.num_nodes={t.num_nodes}"
        raise ConfigError(
            f"{what}: a job trains on one device (these models are too small to gain from "
            "data parallelism); allowed: trainer.devices=1, and to use several devices run "
            "jobs at once, e.g. python src/train.py -m hydra/launcher=local_parallel "
            "hydra.launcher.n_jobs=<devices> ... (a sweep's jobs are spread over the GPUs)"
        )
    if str(t.get("strategy", "auto")) not in ("auto", "single_device"):
        raise ConfigError(
            f"trainer.strategy={t.strategy}: a job trains on one device; allowed: auto"
        )
    index = n[0] if OmegaConf.is_list(n) else None
    return devices.resolve(t.get("accelerator", "auto"), "trainer.accelerator", index, job_num())


def _quality_settings(
    cfg: DictConfig, model: CVAE
) -> tuple[QualitySettings | None, EvaluatorSettings | None]:
    m = cfg.get("metrics") or {}
    if not m.get("enabled", False):
        return None, None
    quality = QualitySettings.from_config(m, model.num_classes)
    evaluator = EvaluatorSettings()
    if cfg.get("evaluator"):
        try:
            evaluator = instantiate(cfg.evaluator, "evaluator")  # conf/evaluator/<data>.yaml
        except ConfigError as err:  # e.g. evaluator.foo, a key it does not have
            raise ConfigError(f"{err}; allowed: {EvaluatorSettings.__doc__}") from None
    num_train = OmegaConf.select(cfg, "data.num_train")
    least = MIN_TRAIN_PER_CLASS * model.num_classes
    if isinstance(num_train, int) and num_train < least:
        raise ConfigError(
            f"data.num_train={num_train} is too few images to train the evaluator that scores "
            f"this run; allowed: data.num_train >= {least} ({MIN_TRAIN_PER_CLASS} per class), "
            "or metrics=none"
        )
    return quality, evaluator
