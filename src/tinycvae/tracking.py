"""Weights & Biases tracking: offline unless the user is logged in or asks for online.

The YAML (``conf/logger/wandb.yaml``) holds what a user sets (project, entity, mode,
tags); this module fills in what belongs to the run: its folder, name, group (one per
sweep), a stable id (so a resumed run continues the same W&B run) and the config.
"""

from __future__ import annotations

import netrc
import os
from pathlib import Path
from typing import Any

from tinycvae.errors import ConfigError

MODES = ("auto", "offline", "online", "disabled")


def has_wandb_credentials() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        hosts = netrc.netrc().hosts
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False
    return any("wandb" in host for host in hosts)


def resolve_mode(mode: str) -> str:
    if mode not in MODES:
        raise ConfigError(f"logger.wandb.mode={mode} is invalid; allowed: {', '.join(MODES)}")
    if mode == "auto":
        env = os.environ.get("WANDB_MODE")
        if env in ("offline", "online", "disabled"):
            return env
        return "online" if has_wandb_credentials() else "offline"
    return mode


def wandb_logger(
    settings: dict[str, Any], run_dir: Path, name: str, group: str | None, run_id: str, config: dict
):
    """Build Lightning's WandbLogger for one run from the user's logger settings."""
    from pytorch_lightning.loggers import WandbLogger

    settings = dict(settings)
    settings.pop("_target_", None)
    mode = resolve_mode(settings.pop("mode", "auto"))
    return WandbLogger(
        save_dir=str(run_dir),
        name=name,
        group=group,
        id=run_id,
        resume="allow",
        mode=mode,
        config=config,
        **settings,
    )


def finish_wandb(ok: bool = True, status: str | None = None) -> None:
    """Close the current W&B run, whatever happened (else the next job logs into it),
    marking a failed job as failed."""
    try:
        import wandb

        if wandb.run is not None:
            if status is not None:
                wandb.run.summary["status"] = status
            wandb.finish(exit_code=0 if ok else 1)
    except Exception:  # noqa: BLE001 - closing must never mask the run's own outcome
        pass
