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

import functools
import logging
import os
import secrets
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import hydra
import pytorch_lightning as pl
import torch
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.trainer.states import TrainerStatus

from tinycvae import devices, distill
from tinycvae.cache import save_atomic
from tinycvae.checks import require_int, require_number
from tinycvae.data.datamodule import TensorDataModule
from tinycvae.deploy.footprint import all_mcus, flat_metrics, summary_dict
from tinycvae.errors import ConfigError, ConfigWarning, TinyCVAEError
from tinycvae.evaluator import MIN_TRAIN_PER_CLASS, EvaluatorSettings, check_floor, load_or_train
from tinycvae.lit_module import CVAEModule, plans_over_run
from tinycvae.metrics import QualitySettings, evaluate_quality, fit_sampler, param_counts
from tinycvae.metrics.callback import PeriodicQuality
from tinycvae.models import CVAE
from tinycvae.outcome import MetricsStageError, SignalWatch, describe, recorded
from tinycvae.run_folder import check_free, writer_lock
from tinycvae.summary import RunSummary, read_summary
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


def build(cfg: DictConfig) -> Job:
    """Validate and construct every piece of a job (cheap: no data, no training)."""
    try:
        resolved = OmegaConf.to_container(cfg, resolve=True)
    except Exception as err:  # noqa: BLE001 - an unresolvable interpolation is bad input
        raise ConfigError(f"config does not resolve: {str(err).splitlines()[0]}") from None
    assert isinstance(resolved, dict)
    _warn_unknown_keys(cfg)
    device = _check_trainer(cfg)
    # Seed first: the model's initial weights are part of what the seed repeats.
    pl.seed_everything(require_int(cfg.seed, "seed"), workers=True, verbose=False)
    datamodule = _instantiate(cfg.data, "data")
    model = _call(
        "model", _instantiate(cfg.model, "model", _partial_=True, _convert_="all"), datamodule.spec
    )
    run_info = {"config": resolved, "spec": asdict(datamodule.spec)}
    teacher = distill.from_config(cfg.get("distill"), datamodule.spec, model)
    if "lr" in cfg.optimizer:
        require_number(cfg.optimizer.lr, "optimizer.lr", 0.0, exclusive=True)
    optimizer = _instantiate(cfg.optimizer, "optimizer")
    _call("optimizer", optimizer, params=model.parameters())  # bad lr etc. fail here, not later
    module = CVAEModule(
        model,
        optimizer=optimizer,
        scheduler=_instantiate(cfg.scheduler, "scheduler") if cfg.get("scheduler") else None,
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
    check_resumable(cfg, resume)
    quality, evaluator = _quality_settings(cfg, model)
    threads = devices.cpu_threads(cfg.get("threads", "auto"), _concurrent_jobs())
    return Job(
        cfg, run_dir_of(cfg), datamodule, model, module, quality, evaluator, device, threads, resume
    )


TRAIN_YAML = Path(__file__).resolve().parents[2] / "conf" / "train.yaml"
EXTRA_KEYS = ("sampler",)  # read by src/evaluate.py (+sampler=...)


@functools.cache
def known_keys() -> frozenset[str]:
    """The top-level settings tinycvae reads: conf/train.yaml's keys and groups (read once
    per process: a sweep's preflight builds every job)."""
    base = OmegaConf.load(TRAIN_YAML)
    groups = set()
    for entry in base.get("defaults", []):
        if isinstance(entry, str):
            groups.add(entry)
        else:
            groups.update(str(k).split("/")[0].split("@")[0] for k in entry)
    return frozenset(set(base.keys()) | groups | set(EXTRA_KEYS))


def _warn_unknown_keys(cfg: DictConfig) -> None:
    """``+typo=1`` is stored but read by nothing: say so, naming the key and its value."""
    known = known_keys()
    for key in cfg.keys():
        if key not in known:
            warnings.warn(
                f"{key}={cfg.get(key)} is not a setting tinycvae reads; it is ignored "
                f"(top-level settings: {', '.join(sorted(known - {'_self_', 'hydra'}))})",
                ConfigWarning,
                stacklevel=2,
            )


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


def _concurrent_jobs() -> int:
    """How many jobs of this sweep run at once on this machine (joblib's ``n_jobs``)."""
    from hydra.core.hydra_config import HydraConfig

    from tinycvae.cli import is_multirun

    if not is_multirun():
        return 1
    n = HydraConfig.get().launcher.get("n_jobs")
    if not isinstance(n, int) or n == 0:
        return 1
    return n if n > 0 else max(1, (os.cpu_count() or 1) + 1 + n)  # joblib: -1 = all cores


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
    """``ckpt_path=last``: this folder's last checkpoint if there is one (else start fresh);
    a path: that checkpoint, which must exist; null: start fresh."""
    value = cfg.get("ckpt_path")
    if value in (None, "", "null"):
        return None
    if value == "last":
        last = run_dir / CHECKPOINT_DIR / "last.ckpt"
        if last.exists():
            return str(last)
        log.warning("ckpt_path=last: %s has no last.ckpt; starting fresh", run_dir)
        return None
    if not Path(value).is_file():
        raise ConfigError(f"ckpt_path={value} does not exist; allowed: last, null or a .ckpt file")
    return str(value)


# Settings that fix the length of a schedule planned over the whole run (OneCycle).
SCHEDULE_KEYS = ("trainer.max_epochs", "data.num_train", "data.batch_size")


def _scheduler_target(node: Any) -> str:
    return node.get("_target_") if node else "null"


def check_resumable(cfg: DictConfig, path: str | None) -> None:
    """A resumed run keeps its checkpoint's scheduler and, when that schedule was planned
    over the run's length (OneCycle), the settings that fix the length. A run without
    one (``scheduler=null``) may go on to a larger ``trainer.max_epochs``."""
    if path is None:
        return
    try:
        stored = torch.load(path, map_location="cpu", weights_only=True).get("tinycvae", {})
    except Exception as err:  # noqa: BLE001 - a corrupt checkpoint is bad input
        raise ConfigError(
            f"ckpt_path={path} cannot be loaded: {str(err).splitlines()[0]}"
        ) from None
    old = OmegaConf.create(stored.get("config", {}))
    if "scheduler" not in old:
        return  # a checkpoint from outside train.py: nothing to compare with
    before, now = _scheduler_target(old.scheduler), _scheduler_target(cfg.get("scheduler"))
    if before != now:
        raise ConfigError(
            f"scheduler={now} differs from the checkpoint's {before}; a resumed run continues "
            "the checkpoint's optimizer state: allowed: the checkpoint's scheduler, or "
            "ckpt_path=null"
        )
    try:
        planned = plans_over_run(hydra.utils.instantiate(old.scheduler)) if old.scheduler else False
    except Exception:  # noqa: BLE001 - a scheduler we cannot rebuild: assume it is planned
        planned = True
    if not planned:
        return
    for key in SCHEDULE_KEYS:
        before, now = OmegaConf.select(old, key), OmegaConf.select(cfg, key)
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
    check_free(run_dir_of(cfg))  # another job is writing there: say so first
    job = build(cfg)  # raises ConfigError before any work
    _check_no_overwrite(job.run_dir, job.resume_from)
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
            resumed_from=job.resume_from,
            config=job.module.run_info["config"],
            params=param_counts(job.model),
        )
        # The deployed decoder's MCU cost, known before training: a sweep can be filtered on it.
        model = job.model
        footprint = summary_dict(model.decoder, model.latent, model.num_classes, all_mcus())
        cost = {**param_counts(model), **flat_metrics(footprint)}
        summary.update(footprint=footprint, metrics=cost)
        if job.module.teacher is not None:
            summary.update(distill=job.module.teacher.summary())
        run_id = previous.get("wandb", {}).get("id") or _new_run_id()
        checkpoints = lambda: {"checkpoints": _checkpoint_files(job.run_dir)}  # noqa: E731
        with recorded(summary, watch, cfg.name, checkpoints):
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
    """The Lightning Trainer of a job, on the job's device. ``trainer.deterministic=auto``
    is true on the CPU (a seed repeats exactly) and false elsewhere (deterministic GPU
    kernels cost speed)."""
    kind = {"cuda": "gpu"}.get(job.device.type, job.device.type)
    deterministic = job.cfg.trainer.get("deterministic", "auto")
    if deterministic == "auto":
        deterministic = kind == "cpu"
    return _instantiate(
        job.cfg.trainer,
        "trainer",
        accelerator=kind,
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
