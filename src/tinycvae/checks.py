"""Type-and-range checks of config values, each failing with one line that names the
key, the bad value and what is allowed."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

from tinycvae.errors import ConfigError


def _quoted(value: Any, key: str, allowed: str) -> None:
    """A number written in quotes (``beta='1e-5'``) is a string: say so, not that the
    number is invalid."""
    if isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            return
        if not math.isfinite(number):
            return
        raise ConfigError(
            f"{key}='{value}' is a string (quoted), not a number; allowed: {allowed}, "
            f"written without quotes ({key}={value})"
        )


def require_int(
    value: Any, key: str, minimum: int | None = None, maximum: int | None = None
) -> int:
    low = minimum is not None and type(value) is int and value < minimum
    high = maximum is not None and type(value) is int and value > maximum
    if type(value) is not int or low or high:
        if minimum is not None and maximum is not None:
            allowed = f"an integer from {minimum} to {maximum}"
        elif minimum is not None:
            allowed = f"an integer >= {minimum}"
        else:
            allowed = "an integer" + (f" <= {maximum}" if maximum is not None else "")
        _quoted(value, key, allowed)
        raise ConfigError(f"{key}={value} is invalid; allowed: {allowed}")
    return value


def require_number(
    value: Any, key: str, minimum: float | None = None, exclusive: bool = False
) -> float:
    ok = type(value) in (int, float) and math.isfinite(value)
    if ok and minimum is not None:
        ok = value > minimum if exclusive else value >= minimum
    if not ok:
        bound = "" if minimum is None else f" {'>' if exclusive else '>='} {minimum}"
        _quoted(value, key, f"a finite number{bound}")
        raise ConfigError(f"{key}={value} is invalid; allowed: a finite number{bound}")
    return float(value)


def writable_dir(folder: Path) -> bool:
    """Whether ``folder`` is a writable folder, or could be made (its nearest existing
    ancestor is one)."""
    probe = Path(folder).resolve()
    while not probe.exists():
        probe = probe.parent
    return probe.is_dir() and os.access(probe, os.W_OK | os.X_OK)


def require_writable_dir(folder: Any, key: str) -> Path:
    """``folder`` as a Path; a ConfigError naming ``key`` when it cannot be written."""
    if not writable_dir(Path(folder)):
        raise ConfigError(
            f"{key}={folder} cannot be written (permission denied, or not a folder); "
            "allowed: a writable folder"
        )
    return Path(folder)
