"""A run's checkpoints and the rules for continuing one: where a run folder keeps them
(:data:`CHECKPOINT_DIR`, ``best`` and ``last``), which checkpoint ``ckpt_path=`` names
(:func:`ckpt_path`), what a resumed run must keep of its checkpoint's settings
(:func:`check_resumable`), that a fresh start never overwrites them
(:func:`check_no_overwrite`), the summary a resumed run continues, and the fitted
sampler written back into the checkpoint it was fitted on. A checkpoint is read as data
(``weights_only=True``); :mod:`tinycvae.checkpoints` rebuilds its model and data set."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from tinycvae.cache import save_atomic
from tinycvae.errors import ConfigError
from tinycvae.lit_module import plans_over_run
from tinycvae.models import CVAE
from tinycvae.summary import read_summary

log = logging.getLogger(__name__)

CHECKPOINT_DIR = "checkpoints"

# Settings that fix the length of a schedule planned over the whole run (OneCycle).
SCHEDULE_KEYS = ("trainer.max_epochs", "data.num_train", "data.batch_size")


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


def check_no_overwrite(run_dir: Path, resume: str | None) -> None:
    """A fresh start never overwrites the checkpoints a run folder already holds."""
    folder = run_dir / CHECKPOINT_DIR
    if resume is None and folder.is_dir() and any(folder.glob("*.ckpt")):
        raise ConfigError(
            f"{run_dir} already holds checkpoints; allowed: ckpt_path=last to resume that "
            "run, or a new run folder"
        )


def checkpoint_files(run_dir: Path) -> dict[str, str]:
    """``best`` and ``last`` as on disk, whatever the run's outcome (a failed run keeps
    its checkpoints); the checkpoint callback writes them under these fixed names."""
    names = ("best", "last")
    return {n: str(p) for n in names if (p := run_dir / CHECKPOINT_DIR / f"{n}.ckpt").is_file()}


def previous_summary(run_dir: Path) -> dict:
    try:
        return read_summary(run_dir)
    except (OSError, ValueError):
        return {}


def store_sampler(path: str, model: CVAE) -> None:
    """Write the fitted sampler into the checkpoint whose weights it was fitted on."""
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    for key, value in model.sampler.state_dict().items():
        ckpt["state_dict"][f"model.sampler.{key}"] = value.detach().cpu()
    save_atomic(ckpt, Path(path))
