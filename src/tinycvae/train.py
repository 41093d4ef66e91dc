"""One training job: build -> fit -> test -> record, for a composed Hydra config.

Everything a job needs is validated first (:func:`build`), before any data is rendered
or trained: a bad value raises a one-line :class:`ConfigError`. Once a job has started,
its failures are recorded in its ``summary.json`` instead of raised, so that the other
jobs of a multirun still run and keep their results.
"""

from __future__ import annotations

import logging
import secrets
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import hydra
import pytorch_lightning as pl
import torch
from omegaconf import DictConfig, OmegaConf

from tinycvae.data.datamodule import TensorDataModule
from tinycvae.errors import ConfigError, NonFiniteLossError
from tinycvae.lit_module import CVAEModule
from tinycvae.models import CVAE, count_params
from tinycvae.summary import RunSummary, now_iso
from tinycvae.tracking import finish_wandb, resolve_mode, wandb_logger

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


def run_dir_of(cfg: DictConfig) -> Path:
    return Path(cfg.paths.output_dir)


def _instantiate(node: Any, what: str, **kwargs: Any) -> Any:
    try:
        return hydra.utils.instantiate(node, **kwargs)
    except hydra.errors.InstantiationException as err:
        cause = err.__cause__ or err
        if isinstance(cause, ConfigError):
            raise cause from None
        raise ConfigError(f"{what}: {str(cause).splitlines()[0]}") from None


def build(cfg: DictConfig) -> Job:
    """Validate and construct every piece of a job (cheap: no data, no training)."""
    try:
        resolved = OmegaConf.to_container(cfg, resolve=True)
    except Exception as err:  # noqa: BLE001 - an unresolvable interpolation is bad input
        raise ConfigError(f"config does not resolve: {str(err).splitlines()[0]}") from None
    assert isinstance(resolved, dict)
    datamodule = _instantiate(cfg.data, "data")
    model = _instantiate(cfg.model, "model", _partial_=True, _convert_="all")(datamodule.spec)
    run_info = {"config": resolved, "spec": asdict(datamodule.spec)}
    module = CVAEModule(
        model,
        optimizer=_instantiate(cfg.optimizer, "optimizer"),
        scheduler=_instantiate(cfg.scheduler, "scheduler") if cfg.get("scheduler") else None,
        beta=cfg.beta,
        beta_warmup=cfg.beta_warmup,
        recon_loss=cfg.recon_loss,
        run_info=run_info,
    )
    wandb_cfg = (cfg.get("logger") or {}).get("wandb")
    if wandb_cfg:
        resolve_mode(wandb_cfg.get("mode", "auto"))
    check_resumable(cfg, ckpt_path(cfg, run_dir_of(cfg)))
    return Job(cfg, run_dir_of(cfg), datamodule, model, module)


def ckpt_path(cfg: DictConfig, run_dir: Path) -> str | None:
    """``ckpt_path=last``: this folder's last checkpoint if there is one (else start fresh);
    a path: that checkpoint, which must exist; null: start fresh."""
    value = cfg.get("ckpt_path")
    if value in (None, "", "null"):
        return None
    if value == "last":
        last = run_dir / CHECKPOINT_DIR / "last.ckpt"
        return str(last) if last.exists() else None
    if not Path(value).is_file():
        raise ConfigError(f"ckpt_path={value} does not exist; allowed: last, null or a .ckpt file")
    return str(value)


# Settings that fix the length of a schedule planned over the whole run (OneCycle).
SCHEDULE_KEYS = ("trainer.max_epochs", "data.num_train", "data.batch_size")


def check_resumable(cfg: DictConfig, path: str | None) -> None:
    """A resumed run must keep the settings its checkpointed schedule was planned for."""
    if path is None:
        return
    try:
        stored = torch.load(path, map_location="cpu", weights_only=True).get("tinycvae", {})
    except Exception as err:  # noqa: BLE001 - a corrupt checkpoint is bad input
        raise ConfigError(
            f"ckpt_path={path} cannot be loaded: {str(err).splitlines()[0]}"
        ) from None
    old = OmegaConf.create(stored.get("config", {}))
    for key in SCHEDULE_KEYS:
        before, now = OmegaConf.select(old, key), OmegaConf.select(cfg, key)
        if before is not None and before != now:
            raise ConfigError(
                f"{key}={now} differs from the checkpoint's {before}; a resumed run continues "
                f"its learning-rate schedule: allowed: {key}={before}, or ckpt_path=null"
            )


def param_counts(model: CVAE) -> dict[str, int]:
    return {
        "params/total": count_params(model),
        "params/encoder": count_params(model.encoder),
        "params/decoder": count_params(model.decoder),
    }


def _float_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in sorted(metrics.items())}


def run(cfg: DictConfig) -> dict[str, Any]:
    """Run one job; return its summary (also written to ``<run_dir>/summary.json``)."""
    job = build(cfg)  # raises ConfigError before any work
    start = time.perf_counter()
    run_dir = job.run_dir
    run_dir.mkdir(parents=True, exist_ok=True)
    resume_from = ckpt_path(cfg, run_dir)
    previous = _previous_summary(run_dir) if resume_from else {}
    run_id = previous.get("wandb", {}).get("id") or _new_run_id()
    group = cfg.get("group") or _sweep_group()
    summary = RunSummary(
        run_dir,
        name=cfg.name,
        group=group,
        started=now_iso(),
        resumed_from=resume_from,
        config=job.module.run_info["config"],
        params=param_counts(job.model),
        wandb={"id": run_id},
    )
    summary.update()
    try:
        pl.seed_everything(cfg.seed, workers=True, verbose=False)
        loggers = _loggers(cfg, run_dir, group, run_id, summary)
        callbacks = _callbacks(cfg, has_logger=bool(loggers))
        trainer: pl.Trainer = _instantiate(
            cfg.trainer,
            "trainer",
            default_root_dir=str(run_dir),
            logger=loggers or False,
            callbacks=callbacks,
        )
        for lg in loggers:
            lg.log_metrics(param_counts(job.model), step=0)
        trainer.fit(job.module, datamodule=job.datamodule, ckpt_path=resume_from)
        metrics = _float_metrics(trainer.callback_metrics)
        best = _checkpoint_files(run_dir).get("best")
        trainer.test(job.module, datamodule=job.datamodule, ckpt_path=best, verbose=False)
        metrics.update(_float_metrics(trainer.callback_metrics))
        summary.update(status="ok", metrics=metrics)
    except NonFiniteLossError as err:
        log.error("%s: %s", cfg.name, err)
        summary.update(status="failed: non-finite loss", error=str(err))
    except KeyboardInterrupt:
        summary.update(status="failed: interrupted")
        raise
    except Exception as err:  # noqa: BLE001 - record it; the sweep's other jobs go on
        log.exception("job %s failed", cfg.name)
        summary.update(status=f"failed: {type(err).__name__}: {str(err).splitlines()[0]}")
    finally:
        finish_wandb()
        summary.update(
            finished=now_iso(),
            wall_time_s=round(time.perf_counter() - start, 2),
            checkpoints=_checkpoint_files(run_dir),
        )
    return summary.data


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
    from tinycvae.summary import read_summary

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
                    "id": run_id,
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
