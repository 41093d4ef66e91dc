"""Hydra callbacks that make runs and multiruns safe: refuse an output folder that
cannot be written, validate every job before the first one starts, and report (and exit
non-zero) when any job failed."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf, open_dict

from tinycvae.summary import SUMMARY_NAME, read_summary

BASIC_SWEEPER = "hydra._internal.core_plugins.basic_sweeper.BasicSweeper"


def job_overrides(config: DictConfig) -> list[list[str]]:
    """The override list of every job the basic sweeper will launch."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    task = list(OmegaConf.to_container(config.hydra.overrides.task, resolve=False))
    params = config.hydra.sweeper.get("params") or {}
    task += [f"{k}={v}" for k, v in params.items()]
    parsed = OverridesParser.create().parse_overrides(task)
    return BasicSweeper.split_arguments(parsed, max_batch_size=None)[0]


class OutputDirGuard(Callback):
    """Before Hydra makes a run's (or sweep's) folder: one line and exit 2 when it cannot
    be written, instead of a traceback from deep inside Hydra."""

    def _check(self, folder: str, key: str) -> None:
        from tinycvae.checks import require_writable_dir
        from tinycvae.cli import exit_on_error

        with exit_on_error():
            require_writable_dir(folder, key)

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._check(config.hydra.run.dir, "hydra.run.dir")

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._check(config.hydra.sweep.dir, "hydra.sweep.dir")


class SweepGuard(Callback):
    """``on_multirun_start``: compose and build every job (no data, no training) and stop
    with one clear line if any is invalid; SIGTERM / SIGHUP are passed on to the jobs from
    then on (:mod:`tinycvae.sweep_signals`). ``on_multirun_end``: end the idle workers,
    list failed jobs and exit 1 (128 + N after a signal)."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        from tinycvae.sweep_signals import relay_signals

        # SIGTERM / SIGHUP to this parent: passed on to the jobs, recorded by each.
        # (joblib's pool and the in-process launcher; submitit's jobs are the scheduler's)
        launcher = str(config.hydra.launcher.get("_target_", ""))
        if "joblib" in launcher or "basic_launcher" in launcher:
            relay_signals("joblib" in launcher, Path(config.hydra.sweep.dir))
        if config.hydra.sweeper.get("_target_") != BASIC_SWEEPER:
            return  # other sweepers draw their jobs as they go
        from hydra import compose

        from tinycvae.errors import TinyCVAEError
        from tinycvae.train import build

        for overrides in job_overrides(config):
            try:
                cfg = compose(config_name=config.hydra.job.config_name, overrides=overrides)
                with open_dict(cfg):
                    cfg.paths.output_dir = str(Path(config.hydra.sweep.dir) / "preflight")
                build(cfg)
            except TinyCVAEError as err:
                print(f"error: job [{' '.join(overrides)}]: {err}", file=sys.stderr, flush=True)
                raise SystemExit(2) from None

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        from tinycvae.sweep_signals import shutdown_pool, stop_if_signalled

        shutdown_pool()  # idle workers end now, not minutes later
        self._report(config)
        stop_if_signalled()  # a relayed signal: exit 128 + N
        if self.failed:
            raise SystemExit(1)

    def _report(self, config: DictConfig) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        rows = []
        for path in sorted(sweep_dir.glob(f"*/{SUMMARY_NAME}")):
            try:
                status = read_summary(path.parent).get("status", "unknown")
            except (OSError, ValueError, AttributeError) as err:
                status = f"unreadable {SUMMARY_NAME} ({type(err).__name__})"
            rows.append((path.parent, status))
        failed = [(d, s) for d, s in rows if s != "ok"]
        print(f"sweep {sweep_dir}: {len(rows) - len(failed)} of {len(rows)} jobs ok", flush=True)
        for run_dir, status in failed:
            print(f"  {run_dir}: {status}", file=sys.stderr, flush=True)
        self.failed = bool(failed)
