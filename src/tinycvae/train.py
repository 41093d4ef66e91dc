"""One training job: build -> fit -> test -> score -> record, for a composed Hydra config.

Everything a job needs is validated first (:func:`build`), before any data is rendered
or trained: a bad value raises a one-line :class:`ConfigError`. A started job holds its
run folder's writer lock (:mod:`tinycvae.run_folder`) and records how it ended in its
``summary.json`` (:func:`tinycvae.outcome.recorded`): a failure is recorded, not raised,
so that the other jobs of a multirun still run and keep their results; a signal ends
the process with ``128 + N``. Every stage runs on the job's one device
(:mod:`tinycvae.devices`).
"""

from __future__ import annotations

import logging
import os
import secrets
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import hydra
import pytorch_lightning as pl
import torch
from lightning_fabric.utilities.seed import max_seed_value, min_seed_value
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.trainer.states import TrainerStatus

from tinycvae import cluster, devices, distill
from tinycvae.cache import save_atomic
from tinycvae.checks import require_int, require_number, require_writable_dir
from tinycvae.data.datamodule import TensorDataModule
from tinycvae.disk import AtomicCheckpointIO
from tinycvae.errors import ConfigError, TinyCVAEError
from tinycvae.evaluator import MIN_TRAIN_PER_CLASS, EvaluatorSettings, check_floor, load_or_train
from tinycvae.known_keys import warn_unknown_keys
from tinycvae.lit_module import CVAEModule, plans_over_run
from tinycvae.mcu.footprint import all_mcus, flat_metrics, summary_dict
from tinycvae.metrics import QualitySettings, evaluate_quality, param_counts
from tinycvae.metrics.callback import PeriodicQuality
from tinycvae.models import CVAE
from tinycvae.models.size import check_fits
from tinycvae.outcome import MetricsStageError, SignalWatch, describe, recorded
from tinycvae.run_folder import check_free, writer_lock
from tinycvae.sampling import fit_sampler
from tinycvae.summary import RunSummary, read_summary
from tinycvae.sweep_signals import in_pool_worker, remember_signals
from tinycvae.tracking import resolve_mode, wandb_logger

log = logging.getLogger(__name__)

CHECKPOINT_DIR = "checkpoints"


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


def _instantiate(node: Any, what: str, **kwargs: Any) -> Any:
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
    datamodule = _instantiate(cfg.data, "data")
    factory = _instantiate(cfg.model, "model", _partial_=True, _convert_="all")
    # Its size from its config, before a byte is allocated for it.
    _call("model", check_fits, factory, datamodule.spec, datamodule.batch_size, device)
    model = _call("model", factory, datamodule.spec)
    run_info = {"config": resolved, "spec": asdict(datamodule.spec)}
    teacher = distill.from_config(cfg.get("distill"), datamodule.spec, model)
    if "lr" in cfg.optimizer:
        require_number(cfg.optimizer.lr, "optimizer.lr", 0.0, exclusive=True)
    optimizer = _instantiate(cfg.optimizer, "optimizer")
    _call("optimizer", optimizer, params=model.parameters())  # bad lr etc. fail here, not later
    scheduler = _instantiate(cfg.scheduler, "scheduler") if cfg.get("scheduler") else None
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
    at_once = _concurrent_jobs(min(cpus.values()))
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
    _check_no_overwrite(job.run_dir, job.resume_from)
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
    return devices.resolve(t.get("accelerator", "auto"), "trainer.accelerator", index, _job_num())


def _concurrent_jobs(cpus: int) -> int:
    """How many jobs of this sweep run at once in this allocation of ``cpus`` CPUs
    (joblib's ``n_jobs``; a submitit/SLURM job has an allocation of its own: 1)."""
    from hydra.core.hydra_config import HydraConfig

    from tinycvae.cli import is_multirun

    if not is_multirun():
        return 1
    n = HydraConfig.get().launcher.get("n_jobs")
    if not isinstance(n, int) or n == 0:
        return 1
    return n if n > 0 else max(1, cpus + 1 + n)  # joblib: -1 = one per CPU


def _job_num() -> int | None:
    """This job's number in a multirun (it picks the job's GPU when there are several)."""
    from hydra.core.hydra_config import HydraConfig

    from tinycvae.cli import is_multirun

    return HydraConfig.get().job.num if is_multirun() else None


def _check_no_overwrite(run_dir: Path, resume: str | None) -> None:
    """A fresh start never overwrites the checkpoints a run folder already holds."""
    folder = run_dir / CHECKPOINT_DIR
    if resume is None and folder.is_dir() and any(folder.glob("*.ckpt")):
        raise ConfigError(
            f"{run_dir} already holds checkpoints; allowed: ckpt_path=last to resume that "
            "run, or a new run folder"
        )


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
            evaluator = _instantiate(cfg.evaluator, "evaluator")  # conf/evaluator/<data>.yaml
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


def ckpt_path(cfg: DictConfig, run_dir: Path) -> str | None:
    """``ckpt_path=last``: this folder's last checkpoint if there is one (else start fresh,
    unless other checkpoints are there: a one-line error naming them); a path: that
    checkpoint, which must exist; null: start fresh."""
    value = cfg.get("ckpt_path")
    if value in (None, "", "null"):
        return None
    if value == "last":
        folder = run_dir / CHECKPOINT_DIR
        last = folder / "last.ckpt"
        if last.exists():
            return str(last)
        others = sorted(p.name for p in folder.glob("*.ckpt")) if folder.is_dir() else []
        if others:  # a fresh start would overwrite them: not "starting fresh"
            raise ConfigError(
                f"ckpt_path=last: {folder} has no last.ckpt to resume, only "
                f"{', '.join(others)}; allowed: ckpt_path={folder / others[0]} to continue "
                "from it, or a new run folder (hydra.run.dir=...)"
            )
        log.warning("ckpt_path=last: %s has no checkpoint yet; starting fresh", run_dir)
        return None
    if not Path(value).is_file():
        raise ConfigError(f"ckpt_path={value} does not exist; allowed: last, null or a .ckpt file")
    return str(value)


# Settings that fix the length of a schedule planned over the whole run (OneCycle).
SCHEDULE_KEYS = ("trainer.max_epochs", "data.num_train", "data.batch_size")


def _scheduler_target(node: Any) -> str:
    if not node:
        return "null"
    return str(node.get("_target_")) if isinstance(node, (dict, DictConfig)) else repr(node)


def _stored(config: dict, key: str) -> Any:
    """``a.b`` of a checkpoint's stored config (plain data: nothing resolved or built)."""
    for part in key.split("."):
        if not isinstance(config, dict) or part not in config:
            return None
        config = config[part]
    return config


def check_resumable(cfg: DictConfig, path: str | None, scheduler: Any = None) -> None:
    """A resumed run keeps its checkpoint's scheduler and, when that schedule was planned
    over the run's length (OneCycle), the settings that fix the length. A run without
    one (``scheduler=null``) may go on to a larger ``trainer.max_epochs``.

    The checkpoint's stored settings are compared as data: nothing read from it is built
    or called. Whether the schedule is planned over the run is read from ``scheduler``,
    the factory this command's own config built (the same target as the checkpoint's)."""
    if path is None:
        return
    try:
        stored = torch.load(path, map_location="cpu", weights_only=True).get("tinycvae", {})
        old = stored.get("config", {})
        assert isinstance(old, dict), "its stored config is not a mapping"
    except Exception as err:  # noqa: BLE001 - a corrupt checkpoint is bad input
        raise ConfigError(
            f"ckpt_path={path} cannot be loaded: {str(err).splitlines()[0]}"
        ) from None
    if "scheduler" not in old:
        return  # a checkpoint from outside train.py: nothing to compare with
    before = _scheduler_target(old["scheduler"])
    now = _scheduler_target(cfg.get("scheduler"))
    if before != now:
        raise ConfigError(
            f"scheduler={now} differs from the checkpoint's {before:.200}; a resumed run "
            "continues the checkpoint's optimizer state: allowed: the checkpoint's scheduler, "
            "or ckpt_path=null"
        )
    if not plans_over_run(scheduler):
        return
    for key in SCHEDULE_KEYS:
        before, now = _stored(old, key), OmegaConf.select(cfg, key)
        if before is not None and before != now:
            raise ConfigError(
                f"{key}={now} differs from the checkpoint's {before}; a resumed run continues "
                f"its learning-rate schedule, planned over the whole run: allowed: {key}={before}, "
                "or ckpt_path=null (a run trained with scheduler=null can be extended)"
            )


def _float_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in sorted(metrics.items())}


def run(cfg: DictConfig) -> dict[str, Any]:
    """Run one job; return its summary (also written to ``<run_dir>/summary.json``)."""
    if in_pool_worker():
        remember_signals()  # first: from now on a relayed signal reaches this job
    job = preflight(cfg)
    torch.set_num_threads(job.threads)
    with writer_lock(job.run_dir), SignalWatch() as watch:
        previous = _previous_summary(job.run_dir) if job.resume_from else {}
        group = cfg.get("group") or _sweep_group()
        summary = RunSummary(
            job.run_dir,
            previous,
            name=cfg.name,
            group=group,
            device=str(job.device),
            threads=job.threads,
            cpus=job.cpus,
            resumed_from=job.resume_from,
            config=job.module.run_info["config"],
            params=param_counts(job.model),
        )
        # The deployed decoder's MCU cost, known before training: a sweep can be filtered on it.
        model = job.model
        footprint = summary_dict(model.decoder, model.latent, model.num_classes, all_mcus())
        cost = {**param_counts(model), **flat_metrics(footprint)}
        run_id = previous.get("wandb", {}).get("id") or _new_run_id()
        checkpoints = lambda: {"checkpoints": _checkpoint_files(job.run_dir)}  # noqa: E731
        with recorded(summary, watch, cfg.name, checkpoints):
            watch.check()  # a signal relayed before this job started: recorded at once
            teacher = job.module.teacher  # distill.teacher=: recorded beside the run's cost
            extra = {} if teacher is None else {"distill": teacher.summary()}
            summary.update(footprint=footprint, metrics=cost, **extra)  # the first record: running
            _train_and_score(job, summary, cost, run_id, group, watch)
    return summary.data


def _train_and_score(
    job: Job, summary: RunSummary, cost: dict[str, Any], run_id: str, group, watch: SignalWatch
) -> None:
    """The job's stages, in order: evaluator, fit, test, quality metrics and pictures."""
    cfg, run_dir = job.cfg, job.run_dir
    evaluator = prepare_evaluator(job)
    if evaluator is not None:
        summary.update(evaluator={"test_acc": evaluator.test_acc, "path": evaluator.path})
    loggers = _loggers(cfg, run_dir, group, run_id, summary)
    callbacks = _callbacks(cfg, has_logger=bool(loggers))
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
    best = _checkpoint_files(run_dir).get("best")
    trainer.test(job.module, datamodule=job.datamodule, ckpt_path=best, verbose=False)
    metrics.update(_float_metrics(trainer.callback_metrics))
    summary.update(metrics=metrics)
    if evaluator is not None:
        # Lightning hands the module back on the CPU: every stage after it runs on the
        # job's device again, next to its data and evaluator.
        devices.place(job.device, job.module, job.datamodule, evaluator.evaluator)
        metrics.update(_quality_stage(job, evaluator, best, loggers, summary))
    summary.update(status="ok", metrics=metrics)


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
        plugins = _instantiate(plugins, "trainer.plugins")
    return _instantiate(
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


def prepare_evaluator(job: Job):
    """The data set's evaluator (trained on first need, then cached), above its floor, on
    the job's device together with the data."""
    if job.quality is None:
        return None
    dm = job.datamodule
    dm.prepare_data()
    devices.place(job.device, dm)
    record = load_or_train(
        dm.splits, dm.spec, dm.cache_key(), job.cfg.paths.data_dir, job.evaluator, progress=True
    )
    devices.place(job.device, record.evaluator)
    check_floor(record, job.evaluator.floor)
    if job.quality.features == "evaluator":
        if record.path is None:  # torch-fidelity loads its feature network from a file
            raise ConfigError("paths.data_dir=null: the evaluator needs a folder to live in")
        job.quality.weights_path = str(record.path)
    return record


def _quality_stage(job: Job, evaluator, best: str | None, loggers, summary) -> dict[str, float]:
    """Sampler fit, metrics and pictures on the best weights (already loaded by test)."""
    from tinycvae.pictures import make_pictures

    model, splits = job.module.model, job.datamodule.splits
    start = time.perf_counter()
    try:
        fit_sampler(model, splits.train)
        if best:
            _store_sampler(best, model)
        metrics, _, _ = evaluate_quality(model, splits.test, evaluator.evaluator, job.quality)
        pictures = {}
        if job.cfg.metrics.get("pictures", True):
            pictures = make_pictures(
                model,
                splits.test,
                job.run_dir / "pictures",
                class_names=job.datamodule.spec.class_names,
                seed=job.quality.seed,
                sampler=model.sampler,
            )
    except Exception as err:  # noqa: BLE001 - keep the checkpoint, record the failure
        raise MetricsStageError(describe(err)) from err
    metrics["time/metrics_s"] = round(time.perf_counter() - start, 3)
    for lg in loggers:
        lg.log_metrics(metrics)
        if pictures and hasattr(lg, "log_image"):
            for name, image in pictures.items():
                lg.log_image(key=f"pictures/{name}", images=[image])
    summary.update(pictures={n: str(job.run_dir / "pictures" / f"{n}.png") for n in pictures})
    return metrics


def _store_sampler(path: str, model: CVAE) -> None:
    """Write the fitted sampler into the checkpoint whose weights it was fitted on."""
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    for key, value in model.sampler.state_dict().items():
        ckpt["state_dict"][f"model.sampler.{key}"] = value.detach().cpu()
    save_atomic(ckpt, Path(path))


def _sweep_group() -> str | None:
    """A multirun's jobs share one W&B group: the sweep folder's name."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        return None
    return Path(HydraConfig.get().sweep.dir).name


def _new_run_id() -> str:
    return secrets.token_hex(4)


def _previous_summary(run_dir: Path) -> dict:
    try:
        return read_summary(run_dir)
    except (OSError, ValueError):
        return {}


def _loggers(cfg: DictConfig, run_dir: Path, group, run_id: str, summary: RunSummary) -> list:
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
            loggers.append(_instantiate(node, f"logger.{key}", save_dir=str(run_dir)))
    return loggers


def _callbacks(cfg: DictConfig, has_logger: bool) -> list[pl.Callback]:
    callbacks = [_instantiate(c, "callbacks") for c in (cfg.get("callbacks") or {}).values() if c]
    if not has_logger:  # Lightning refuses a learning-rate monitor with nothing to log to
        callbacks = [c for c in callbacks if not isinstance(c, pl.callbacks.LearningRateMonitor)]
    return callbacks


def _checkpoint_files(run_dir: Path) -> dict[str, str]:
    """``best`` and ``last`` as on disk, whatever the run's outcome (a failed run keeps
    its checkpoints); the checkpoint callback writes them under these fixed names."""
    names = ("best", "last")
    return {n: str(p) for n in names if (p := run_dir / CHECKPOINT_DIR / f"{n}.ckpt").is_file()}
