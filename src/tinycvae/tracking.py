"""Weights & Biases tracking: offline unless the user is logged in or asks for online.

The YAML (``conf/logger/wandb.yaml``) holds what a user sets (project, entity, mode,
tags); this module fills in what belongs to the run: its folder, name, group (one per
sweep), a stable id (so a resumed run continues the same W&B run) and the config.
"""

from __future__ import annotations

import functools
import netrc
import os
import socket
import urllib.parse
import warnings
from pathlib import Path
from typing import Any

from tinycvae.errors import ConfigError, ConfigWarning

MODES = ("auto", "offline", "online", "disabled")
DEFAULT_SERVER = "https://api.wandb.ai"
PROBE_TIMEOUT_S = 5.0


def has_wandb_credentials() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        hosts = netrc.netrc().hosts
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False
    return any("wandb" in host for host in hosts)


def _key_problem() -> str | None:
    """What is wrong with ``WANDB_API_KEY`` (W&B's own format check), never the key."""
    key = os.environ.get("WANDB_API_KEY")
    if key is None:
        return None
    try:
        from wandb.sdk.lib.wbauth.validation import check_api_key
    except ImportError:  # another wandb version: its own login says what is wrong
        return None
    problem = check_api_key(key.strip())
    return f"WANDB_API_KEY is malformed ({problem.rstrip('.')})" if problem else None


def server_url() -> str:
    return os.environ.get("WANDB_BASE_URL") or DEFAULT_SERVER


@functools.cache
def unreachable(url: str, timeout_s: float = PROBE_TIMEOUT_S) -> str | None:
    """Why the W&B server at ``url`` cannot be reached (a TCP connect, once per process),
    or None: without a network ``wandb.init`` would wait ~100 s and then fail."""
    parts = urllib.parse.urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        socket.create_connection((parts.hostname or "", port), timeout=timeout_s).close()
    except OSError as err:
        return f"{parts.hostname}:{port}: {err.strerror or type(err).__name__}"
    return None


def _online(requested: str) -> str:
    """``online`` when W&B can be used online: a key of W&B's format (else one line) and
    a server that answers. Unreachable: ``auto`` falls back to offline with a warning
    (``wandb sync`` uploads the run later); an explicit ``online`` is refused."""
    problem = _key_problem()
    if problem:
        raise ConfigError(
            f"logger.wandb.mode={requested}: {problem}; allowed: a key from "
            "https://wandb.ai/authorize (or `wandb login`), or logger.wandb.mode=offline"
        )
    if requested == "online" and not has_wandb_credentials():
        raise ConfigError(
            "logger.wandb.mode=online needs a W&B API key and none is set; allowed: "
            "WANDB_API_KEY=<key> or `wandb login`, or logger.wandb.mode=offline"
        )
    why = unreachable(server_url())
    if why is None:
        return "online"
    if requested == "online":
        raise ConfigError(
            f"logger.wandb.mode=online: the W&B server {server_url()} cannot be reached "
            f"({why}); allowed: logger.wandb.mode=offline (then `wandb sync`), or auto"
        )
    warnings.warn(
        f"W&B server {server_url()} cannot be reached ({why}): logging offline; upload "
        "later with `wandb sync <run folder>/wandb/offline-run-*`",
        ConfigWarning,
        stacklevel=3,
    )
    return "offline"


def resolve_mode(mode: str) -> str:
    """The W&B mode a run uses: ``auto`` is ``WANDB_MODE`` when set, else online when
    logged in (and the server answers), else offline."""
    if mode not in MODES:
        raise ConfigError(f"logger.wandb.mode={mode} is invalid; allowed: {', '.join(MODES)}")
    if mode == "auto":
        env = os.environ.get("WANDB_MODE")
        if env in ("offline", "disabled"):
            return env
        if env != "online" and not has_wandb_credentials():
            return "offline"
        return _online("online" if env == "online" else "auto")
    return _online(mode) if mode == "online" else mode


def wandb_logger(
    settings: dict[str, Any], run_dir: Path, name: str, group: str | None, run_id: str, config: dict
):
    """Build Lightning's WandbLogger for one run from the user's logger settings."""
    from pytorch_lightning.loggers import WandbLogger

    settings = dict(settings)
    settings.pop("_target_", None)
    with warnings.catch_warnings():  # the job's build() has said it once already
        warnings.simplefilter("ignore", ConfigWarning)
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
