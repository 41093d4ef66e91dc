"""What the command-line entries share: one-line errors and warnings, the exit statuses
of :mod:`tinycvae.outcome`, a check of config-group choices before Hydra composes, and
the sweeper's objective."""

from __future__ import annotations

import contextlib
import math
import sys
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from tinycvae.errors import EXIT_BAD_INPUT, EXIT_FAILED, TinyCVAEError
from tinycvae.repo import CONF_DIR, is_multirun


def fail(message: str, code: int = EXIT_BAD_INPUT) -> None:
    print(f"error: {message}", file=sys.stderr, flush=True)
    raise SystemExit(code)


def _one_line_warning(message, category, filename, lineno, file=None, line=None) -> None:
    text = str(message).splitlines()[0] if str(message) else category.__name__
    print(f"warning: {text}", file=file or sys.stderr, flush=True)


@contextlib.contextmanager
def exit_on_error(discard: bool = True) -> Iterator[None]:
    """Turn a TinyCVAEError into ``error: <one line>`` on stderr and exit status 2 (and,
    with ``discard``, remove the run folder made for the refused command when nothing of
    value is in it); print warnings as one ``warning:`` line each."""
    shown = warnings.showwarning
    warnings.showwarning = _one_line_warning
    try:
        yield
    except TinyCVAEError as err:
        if discard:
            _discard_run_folder()
        fail(str(err).splitlines()[0] if str(err) else type(err).__name__)
    finally:
        warnings.showwarning = shown


def _discard_run_folder() -> None:
    """The refused command's run folder goes when it holds only what Hydra and the
    refused job wrote (a single run: its summary and lock too; a sweep's job keeps its
    summary, which the sweep's report reads)."""
    from hydra.core.hydra_config import HydraConfig

    from tinycvae.run_folder import REFUSED_JOB, discard_if_unused

    if not HydraConfig.initialized():
        return
    output_dir = HydraConfig.get().runtime.get("output_dir")
    if output_dir:
        discard_if_unused(Path(output_dir), () if is_multirun() else REFUSED_JOB)


def group_options(group: str, conf_dir: Path = CONF_DIR) -> list[str] | None:
    """The choices of config group ``group`` (e.g. ``data``), or None when it is not one
    of the project's groups (Hydra's own and plugins' groups are Hydra's to check)."""
    folder = conf_dir / group
    if group.startswith("hydra") or not folder.is_dir():
        return None
    return sorted(p.stem for p in folder.glob("*.yaml"))


def check_group_choices(args: Sequence[str], conf_dir: Path = CONF_DIR) -> None:
    """Every ``group=choice`` among ``args`` (sweeps ``a,b`` included) names a config
    file of that group: else one ``error:`` line listing the allowed names, exit 2, before
    Hydra composes anything (its own message is a dozen lines and exit 1)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    candidates = [a for a in args if "=" in a and not a.startswith("-")]
    try:
        overrides = OverridesParser.create().parse_overrides(candidates)
    except Exception:  # noqa: BLE001 - malformed overrides: Hydra says what is wrong
        return
    for ov in overrides:
        if ov.is_delete() or "@" in ov.key_or_group:
            continue
        options = group_options(ov.key_or_group, conf_dir)
        if options is None:
            continue
        values = list(ov.sweep_string_iterator()) if ov.is_sweep_override() else [ov.value()]
        for value in values:
            if value is not None and str(value) not in (*options, "null"):
                fail(f"{ov.key_or_group}={value} is unknown; allowed: {', '.join(options)}")


def objective(summary: dict[str, Any], cfg: DictConfig) -> float | tuple[float, ...] | None:
    """The metric(s) named by ``cfg.objective`` for a sweeper to optimise.

    A failed single run exits with status 1; in a multirun a failed job returns None (no
    value) so that the sweep goes on (the sweep's end report then exits with status 1).
    None, not NaN: a sweeper records a job without a value as a failed trial, while
    Optuna 2.x refuses NaN and hydra-optuna-sweeper 1.3 then stops the whole sweep."""
    failed = summary["status"] != "ok"
    if failed and not is_multirun():
        fail(f"run {summary['status']} (see {summary['run_dir']}/summary.json)", EXIT_FAILED)
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
