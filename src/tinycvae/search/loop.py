"""The ask-and-tell loop: the sweeper behind ``hydra/sweeper=optuna_study`` (what
``hydra_plugins.tinycvae_optuna.optuna_sweeper.OptunaSweeper`` delegates to).

Optuna does the work (the study, its sampler and its storage: ``tinycvae.search.study``);
this loop asks the study for trials until it holds ``n_trials``, launches each batch
through the configured Hydra launcher with the trials' values as overrides
(``tinycvae.search.space``), keeps Optuna's heartbeat going while they run, tells the
study each job's objective values, and reports the study at the end.

* Job folders are named by trial number (``hydra.job.num`` is the trial number), so
  workers and resumed runs never share a run folder.
* A job stopped by Ctrl+C, SIGTERM or SIGHUP is not the trial's fault: its parameters are
  queued again; any other failure fails the trial for good.
"""

from __future__ import annotations

import math
import os
import socket
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import optuna
from hydra.core.plugins import Plugins
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf
from optuna.storages import fail_stale_trials
from optuna.trial import Trial, TrialState

from tinycvae.errors import ConfigError
from tinycvae.search.space import suggest, trial_overrides
from tinycvae.search.storage import Storage, quiet_optuna
from tinycvae.search.study import (
    SearchSettings,
    beat,
    budget,
    prepare,
    queue_again,
    tell_safely,
)
from tinycvae.search.trials import SURPLUS_ATTR, report
from tinycvae.summary import compact_summary
from tinycvae.sweep_signals import stop_if_signalled


class StudySweeper:
    """The ask-and-tell loop of one sweeper process; ``settings``: ``hydra.sweeper.*``."""

    def __init__(self, **settings: Any) -> None:
        self.settings = SearchSettings(**settings)
        self.config: DictConfig | None = None
        self.launcher: Any = None

    def setup(
        self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig
    ) -> None:
        self.config = config
        self.hydra_context = hydra_context
        self.launcher = Plugins.instance().instantiate_launcher(
            config=config, hydra_context=hydra_context, task_function=task_function
        )

    def prepare(self, arguments: Sequence[str]) -> tuple[Any, Storage, dict, list[str]]:
        """(study, storage, search space, fixed overrides), or ConfigError before any trial."""
        assert self.config is not None
        return prepare(self.settings, self.config, arguments)

    def sweep(self, arguments: list[str]) -> None:
        try:
            study, storage, space, fixed = self.prepare(arguments)
        except ConfigError as err:
            print(f"error: {str(err).splitlines()[0]}", file=sys.stderr, flush=True)
            raise SystemExit(2) from None
        self.study, self.storage = study, storage
        before = len(study.get_trials(deepcopy=False))
        print(
            f"search: study {study.study_name} in {storage.describe()}: "
            f"{len(budget(study.get_trials(deepcopy=False)))} of {self.settings.n_trials} "
            f"trials already there; sampler {type(study.sampler).__name__}",
            flush=True,
        )
        if before:
            # Resumed or joined: draw apart from where a previous run's seed would go again.
            study.sampler.reseed_rng()
            self._reseeded = True
        else:
            self._reseeded = False
        ran = self._run(study, storage, space, fixed)

        report(study, Path(self.config.hydra.sweep.dir), storage, ran=ran)

    def _run(self, study: optuna.Study, storage: Storage, space: dict, fixed: list[str]) -> int:
        n_trials = self.settings.n_trials
        own: set[int] = set()
        ran = 0
        waited = False
        while True:
            with quiet_optuna():
                fail_stale_trials(study)
            counted = budget(study.get_trials(deepcopy=False))
            waiting = sum(t.state == TrialState.WAITING for t in counted)
            to_ask = waiting + max(0, n_trials - len(counted))
            if to_ask <= 0:
                running = [t.number for t in counted if t.state == TrialState.RUNNING]
                if not running:
                    return ran
                if not waited:
                    print(
                        f"search: {n_trials} trials asked; waiting for trial(s) "
                        f"{', '.join(map(str, running))} of other workers (a dead worker's "
                        f"trial is retried after {self.settings.grace()} s)",
                        flush=True,
                    )
                    waited = True
                time.sleep(max(1, min(5, self.settings.heartbeat_interval)))
                continue
            batch = []
            for _ in range(min(self.settings.n_jobs, to_ask)):
                trial = self._ask(study, space, own)
                if trial is not None:
                    batch.append(trial)
            if batch:
                ran += len(batch)
                self._launch(study, storage, batch, fixed)
                stop_if_signalled()  # SIGTERM / SIGHUP relayed to the jobs: exit 128 + N

    def _ask(self, study: optuna.Study, space: dict, own: set[int]) -> Trial | None:
        with quiet_optuna():
            trial = study.ask()
        own.add(trial.number)
        beat(self.storage, trial)  # at once: a beat-less RUNNING trial is never found stale
        trial.set_user_attr("worker", f"{socket.gethostname()} pid {os.getpid()}")
        trial.set_user_attr("sweep_dir", str(self.config.hydra.sweep.dir))
        trials = study.get_trials(deepcopy=False)
        frozen = next(t for t in trials if t.number == trial.number)
        queued = bool(frozen.params) or "fixed_params" in frozen.system_attrs
        if not queued:
            counted = [t.number for t in budget(trials)]
            if trial.number in counted and counted.index(trial.number) >= self.settings.n_trials:
                # Another worker took the last slot between our count and our ask.
                trial.set_user_attr(SURPLUS_ATTR, "asked past n_trials by a racing worker")
                tell_safely(study, trial, state=TrialState.FAIL)
                return None
            if not self._reseeded and any(t.number not in own for t in trials):
                # Another worker shares the study: never draw the same seeded sequence.
                study.sampler.reseed_rng()
                self._reseeded = True
        try:
            for name, dist in space.items():
                suggest(trial, name, dist)
        except ValueError as err:  # a queued trial from before the search space changed
            why = f"its parameters do not fit the search space ({str(err).splitlines()[0]})"
            print(f"warning: trial {trial.number}: {why}", file=sys.stderr, flush=True)
            tell_safely(study, trial, state=TrialState.FAIL, fail_reason=why)
            return None
        return trial

    def _launch(
        self, study: optuna.Study, storage: Storage, batch: list[Trial], fixed: list[str]
    ) -> None:
        stop = threading.Event()

        def beating() -> None:
            while not stop.wait(self.settings.heartbeat_interval):
                beat(storage, *batch)

        thread = threading.Thread(target=beating, name="optuna-heartbeat", daemon=True)
        thread.start()
        told: set[int] = set()
        try:
            for group in _contiguous(sorted(batch, key=lambda t: t.number)):
                overrides = [trial_overrides(fixed, t.params) for t in group]
                # hydra.job.num = the trial number: the job folder is unique across workers.
                returns = self.launcher.launch(overrides, initial_job_idx=group[0].number)
                for trial, ret in zip(group, returns):
                    self._tell(study, trial, ret)
                    told.add(trial.number)
        except BaseException as err:
            stop.set()
            # Ctrl+C, or a job stopped by SIGTERM/SIGINT (exit 143/130): not the trial's
            # fault, so its parameters are queued again; anything else fails it for good.
            interrupted = isinstance(err, KeyboardInterrupt) or (
                isinstance(err, SystemExit) and err.code in (130, 143)
            )
            for trial in batch:
                if trial.number in told or not tell_safely(study, trial, state=TrialState.FAIL):
                    continue
                if interrupted:
                    queue_again(study, trial, self.settings.max_retry)
            raise
        finally:
            stop.set()
            thread.join()

    def _tell(self, study: optuna.Study, trial: Trial, ret: Any) -> None:
        run_dir = None
        hydra_cfg = getattr(ret, "hydra_cfg", None)
        if hydra_cfg is not None:
            run_dir = OmegaConf.select(hydra_cfg, "hydra.runtime.output_dir")
        if run_dir is None:
            run_dir = str(Path(self.config.hydra.sweep.dir) / str(trial.number))
        attrs = {"run_dir": str(run_dir), "summary": compact_summary(Path(run_dir))}
        for key, value in attrs.items():
            if value:
                try:
                    trial.set_user_attr(key, value)
                except optuna.exceptions.UpdateFinishedTrialError:
                    break  # failed meanwhile (see tell_safely)
        values, why = objective_values(ret, len(study.directions))
        status = str((attrs["summary"] or {}).get("status", ""))
        if values is None and status.startswith("failed: interrupted"):
            # a relayed SIGTERM / SIGHUP: not the trial's fault, its parameters run again
            if tell_safely(study, trial, state=TrialState.FAIL, fail_reason=status):
                queue_again(study, trial, self.settings.max_retry)
        elif values is None:
            tell_safely(study, trial, state=TrialState.FAIL, fail_reason=why)
        else:
            tell_safely(study, trial, values=values)


def objective_values(ret: Any, n: int) -> tuple[list[float] | None, str]:
    """A job's return value as ``n`` finite objective values, or (None, why not)."""
    try:
        value = ret.return_value
    except Exception as err:  # noqa: BLE001 - the job raised: the trial failed
        return None, f"job raised {type(err).__name__}: {str(err).splitlines()[0][:200]}"
    if value is None:
        return None, "the job returned no value (failed run or missing metric)"
    seq = list(value) if isinstance(value, (list, tuple)) else [value]
    try:
        floats = [float(v) for v in seq]
    except (TypeError, ValueError):
        return None, f"the job returned {value!r}; allowed: numbers"
    if len(floats) != n:
        return None, f"the job returned {len(floats)} values for {n} objectives"
    if not all(math.isfinite(v) for v in floats):
        return None, f"the job returned a non-finite value {floats}"
    return floats, ""


def _contiguous(trials: list[Trial]) -> list[list[Trial]]:
    groups: list[list[Trial]] = []
    for t in trials:
        if groups and t.number == groups[-1][-1].number + 1:
            groups[-1].append(t)
        else:
            groups.append([t])
    return groups
