"""What an export starts from: the checkpoint to export, and the data set it was trained on.

The checkpoint is named by exactly one of ``run=<run folder>`` (its
``checkpoints/best.ckpt``), ``checkpoint=<file.ckpt>``, ``select_from=[<folders>]`` with
``mcu=<name>`` (the most accurate run that fits that microcontroller) or
``artifact=<entity/project/name:alias>`` (a W&B model artifact; needs W&B online).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from tinycvae.errors import ConfigError, TinyCVAEError
from tinycvae.front.core import select
from tinycvae.front.summaries import collect_runs

log = logging.getLogger(__name__)

SOURCES = ("run", "checkpoint", "select_from", "artifact")


@dataclass
class Source:
    checkpoint: Path
    how: str  # which of SOURCES named it, and with what


def _download_artifact(name: str, into: Path) -> Path:
    import wandb

    from tinycvae.tracking import resolve_mode

    if resolve_mode("auto") != "online":
        raise ConfigError(
            f"artifact={name} needs W&B online (wandb login or WANDB_API_KEY); offline, "
            "pass checkpoint=<path to .ckpt> or run=<run folder>"
        )
    try:
        folder = Path(wandb.Api().artifact(name).download(root=str(into)))
    except Exception as err:  # noqa: BLE001 - any W&B failure is one line for the user
        raise ConfigError(f"artifact={name} could not be downloaded: {err}") from None
    found = sorted(folder.rglob("*.ckpt"))
    if not found:
        raise ConfigError(f"artifact={name} holds no .ckpt file")
    return found[0]


def resolve_source(cfg: DictConfig, scratch: Path) -> Source:
    """The checkpoint to export: exactly one of run / checkpoint / select_from / artifact
    (an artifact is downloaded into ``scratch``)."""
    given = [k for k in SOURCES if cfg.get(k) not in (None, "", [])]
    if len(given) != 1:
        raise ConfigError(
            f"name exactly one model to export (given: {', '.join(given) or 'none'}); allowed: "
            "run=<run folder>, checkpoint=<file.ckpt>, select_from=[<folders>] (with mcu=), "
            "artifact=<entity/project/name:alias>"
        )
    kind = given[0]
    value = cfg[kind]
    if kind == "checkpoint":
        return Source(Path(value), f"checkpoint={value}")
    if kind == "run":
        path = Path(value) / "checkpoints" / "best.ckpt"
        if not path.is_file():
            raise ConfigError(f"run={value} has no checkpoints/best.ckpt; allowed: a run folder")
        return Source(path, f"run={value}")
    if kind == "artifact":
        return Source(_download_artifact(str(value), scratch), f"artifact={value}")
    if not cfg.get("mcu"):
        raise ConfigError("select_from=... picks the best run that fits an MCU: set mcu=<name>")
    folders = [value] if isinstance(value, str) else list(value)
    row = select(collect_runs(folders), cfg.mcu.name)
    if not row.checkpoint or not Path(row.checkpoint).is_file():
        raise ConfigError(f"the selected run {row.run_dir} has no best checkpoint")
    log.info("selected %s (acc %.3f) for %s", row.run_dir, row.acc, cfg.mcu.name)
    how = f"select_from={folders} mcu={cfg.mcu.name} -> {row.run_dir}"
    return Source(Path(row.checkpoint), how)


def load_data(info: dict[str, Any]):
    """The data module the checkpoint was trained on (``info``: the run info stored with
    it), prepared and set up, on the CPU: rebuilt through the data modules tinycvae ships
    (:func:`tinycvae.checkpoints.rebuild_data`), never through code the checkpoint names."""
    from tinycvae.checkpoints import rebuild_data

    dm = rebuild_data(info["config"]["data"])
    try:
        dm.prepare_data()
        dm.setup()
    except TinyCVAEError:
        raise
    except Exception as err:  # noqa: BLE001
        raise ConfigError(f"the checkpoint's data set cannot be loaded: {err}") from None
    return dm
