"""``+typo=1`` is stored but read by nothing: every command says so in one warning line,
naming the key, its value and the settings it does read.

The settings a command reads are the top-level keys and config groups of its primary
config (``conf/<command>.yaml``, and of any primary config its defaults list builds on;
each command's lists its own groups), plus the ``+key=`` extras it documents
(``+sampler=``, ``+sample_std=``).
"""

from __future__ import annotations

import functools
import warnings

from omegaconf import DictConfig, OmegaConf

from tinycvae.errors import ConfigWarning
from tinycvae.repo import CONF_DIR

# Read with +key=... (not in the command's yaml, so that + adds them): by src/evaluate.py
# and src/generate.py (tinycvae.sampling.choose_sampler).
EXTRA_KEYS = {"evaluate": ("sampler", "sample_std"), "generate": ("sampler", "sample_std")}


@functools.cache
def known_keys(command: str) -> frozenset[str]:
    """The top-level settings ``command`` reads (read once per process: a sweep's
    preflight builds every job)."""
    base = OmegaConf.load(CONF_DIR / f"{command}.yaml")
    keys = set(base.keys()) | set(EXTRA_KEYS.get(command, ()))
    for entry in base.get("defaults", []):
        names = [entry] if isinstance(entry, str) else [str(k) for k in entry]
        for name in names:
            name = name.removeprefix("override ").removeprefix("optional ").lstrip("/")
            if isinstance(entry, str) and (CONF_DIR / f"{name}.yaml").is_file():
                keys |= known_keys(name)  # a primary config this one builds on
            else:
                keys.add(name.split("/")[0].split("@")[0])
    return frozenset(keys - {"_self_", "hydra"})


def command_name() -> str:
    """The primary config Hydra composed (train, evaluate, generate or export); train
    outside Hydra (tests that compose the train config)."""
    from hydra.core.hydra_config import HydraConfig

    if HydraConfig.initialized():
        return str(HydraConfig.get().job.config_name or "train")
    return "train"


def warn_unknown_keys(cfg: DictConfig, command: str | None = None) -> None:
    """One :class:`ConfigWarning` per top-level key of ``cfg`` that ``command`` (default:
    :func:`command_name`) does not read."""
    command = command or command_name()
    known = known_keys(command)
    for key in cfg.keys():
        if key not in known and key != "hydra":
            warnings.warn(
                f"{key}={cfg.get(key)} is not a setting tinycvae reads; it is ignored "
                f"(top-level settings of {command}: {', '.join(sorted(known))})",
                ConfigWarning,
                stacklevel=2,
            )
