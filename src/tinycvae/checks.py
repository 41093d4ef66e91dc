"""Type-and-range checks of config values, each failing with one line that names the
key, the bad value and what is allowed."""

from __future__ import annotations

import math
from typing import Any

from tinycvae.errors import ConfigError


def require_int(value: Any, key: str, minimum: int | None = None) -> int:
    if type(value) is not int or (minimum is not None and value < minimum):
        allowed = "an integer" + (f" >= {minimum}" if minimum is not None else "")
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
        raise ConfigError(f"{key}={value} is invalid; allowed: a finite number{bound}")
    return float(value)
