"""What the command-line entries share: one-line errors and the sweeper's objective."""

from __future__ import annotations

import contextlib
import math
import sys
from collections.abc import Iterator
from typing import Any

from omegaconf import DictConfig

from tinycvae.errors import TinyCVAEError


def fail(message: str, code: int = 2) -> None:
    print(f"error: {message}", file=sys.stderr, flush=True)
    raise SystemExit(code)


@contextlib.contextmanager
def exit_on_error() -> Iterator[None]:
    """Turn a TinyCVAEError into ``error: <one line>`` on stderr and exit status 2."""
    try:
        yield
    except TinyCVAEError as err:
        fail(str(err).splitlines()[0] if str(err) else type(err).__name__)


def is_multirun() -> bool:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def objective(summary: dict[str, Any], cfg: DictConfig) -> float | tuple[float, ...] | None:
    """The metric(s) named by ``cfg.objective`` for a sweeper to optimise.

    A failed single run exits with status 1; in a multirun a failed job returns None (no
    value) so that the sweep goes on (the sweep's end report then exits with status 1).
    None, not NaN: a sweeper records a job without a value as a failed trial, while
    Optuna 2.x refuses NaN and hydra-optuna-sweeper 1.3 then stops the whole sweep."""
    failed = summary["status"] != "ok"
    if failed and not is_multirun():
        fail(f"run {summary['status']} (see {summary['run_dir']}/summary.json)", code=1)
    keys = list(cfg.get("objective") or [])
    if not keys:
        return None
    metrics = summary.get("metrics", {})
    values = tuple(math.nan if failed else float(metrics.get(k, math.nan)) for k in keys)
    if is_multirun() and any(math.isnan(v) for v in values):
        if not failed:
            missing = ", ".join(k for k in keys if k not in metrics) or "NaN"
            print(f"warning: objective {missing}: no value in this job's metrics", file=sys.stderr)
        return None
    return values[0] if len(values) == 1 else values
