"""Hydra callbacks that make runs and multiruns safe: refuse an output folder that
cannot be written, validate every job before the first one starts, and report (and exit
non-zero) when any job failed."""

from __future__ import annotations

import contextlib
import copy
import logging
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

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


TRAIN_CONFIG = "train"  # the primary config of src/train.py: the command these guards check


def task_config(config: DictConfig, run_dir: Path) -> DictConfig:
    """The job config Hydra will hand to the task for a job in ``run_dir``: without the
    ``hydra`` node, its ``paths.output_dir`` that folder."""
    cfg = copy.deepcopy(config)
    with read_write(cfg), open_dict(cfg):
        del cfg["hydra"]
        cfg.paths.output_dir = str(Path(run_dir).resolve())
    return cfg


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """A preflight says nothing but its refusal: the job repeats every check and gives
    the warnings and notes then, in its own log."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        logging.disable(logging.WARNING)
        try:
            yield
        finally:
            logging.disable(logging.NOTSET)


class RunGuard(Callback):
    """``on_run_start`` of ``src/train.py``: every check of the job (writer lock, no
    checkpoints to overwrite, the whole config) before Hydra writes the run's ``.hydra/``
    record and log, so that a refused command leaves an existing run folder (a running
    job's, a finished one's) byte for byte as it was, and makes none."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        if kwargs.get("config_name") != TRAIN_CONFIG:
            return
        from tinycvae.cli import exit_on_error
        from tinycvae.job import preflight

        with exit_on_error(discard=False), quiet():
            preflight(task_config(config, Path(config.hydra.run.dir)))


def sweep_job_configs(config: DictConfig) -> Iterator[tuple[list[str], DictConfig]]:
    """Each job of a basic sweep as its launcher will compose it: its overrides and its
    config (``hydra`` node included, ``hydra.job.num`` set, so its folder is known)."""
    from hydra.core.global_hydra import GlobalHydra

    loader = GlobalHydra.instance().config_loader()
    for num, overrides in enumerate(job_overrides(config)):
        job = loader.load_sweep_config(config, list(overrides))
        with open_dict(job):
            job.hydra.job.id = f"{job.hydra.job.name}_{num}"
            job.hydra.job.num = num
        yield overrides, job


class SweepGuard(Callback):
    """``on_multirun_start``: compose and check every job as :class:`RunGuard` checks a
    run, in its own folder (no data, no training), and stop with one clear line if any is
    refused, before the sweep's ``multirun.yaml`` or any job's ``.hydra/`` is written; SIGTERM
    / SIGHUP are passed on to the jobs from then on (:mod:`tinycvae.sweep_signals`).
    ``on_multirun_end``: end the idle workers, list failed jobs and exit 1 (128 + N after a
    signal)."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        from tinycvae.sweep_signals import relay_signals

        # SIGTERM / SIGHUP to this parent: passed on to the jobs, recorded by each.
        # (joblib's pool and the in-process launcher; submitit's jobs are the scheduler's)
        launcher = str(config.hydra.launcher.get("_target_", ""))
        if "joblib" in launcher or "basic_launcher" in launcher:
            relay_signals("joblib" in launcher, Path(config.hydra.sweep.dir))
        if config.hydra.sweeper.get("_target_") != BASIC_SWEEPER:
            return  # other sweepers draw their jobs as they go
        if kwargs.get("config_name", TRAIN_CONFIG) != TRAIN_CONFIG:
            return
        from hydra.core.hydra_config import HydraConfig

        from tinycvae.errors import TinyCVAEError
        from tinycvae.job import preflight

        try:
            for overrides, job in sweep_job_configs(config):
                run_dir = Path(job.hydra.sweep.dir) / str(job.hydra.sweep.subdir)
                HydraConfig.instance().set_config(job)  # what the job itself will see
                try:
                    with quiet():
                        preflight(task_config(job, run_dir))
                except TinyCVAEError as err:
                    line = f"error: job [{' '.join(overrides)}]: {str(err).splitlines()[0]}"
                    print(line, file=sys.stderr, flush=True)
                    raise SystemExit(2) from None
        finally:
            HydraConfig.instance().set_config(config)

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
