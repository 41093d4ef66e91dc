"""A Hydra sweeper on Optuna's ask-and-tell API, with a study that survives its process.

Optuna does the work: the study, its sampler and its storage (journal file, SQLite or any
database, see ``tinycvae.search.storage``); this module only maps Hydra overrides to trial
parameters and back, launches each batch of trials through the configured Hydra launcher,
and keeps Optuna's heartbeat going while they run.

* ``n_trials`` is the study's total, not this process's: running the same command again
  continues the study, and N processes (or SLURM array tasks) on one storage and study
  name share the trials until the study holds ``n_trials``.
* A trial whose worker died (kill -9, a lost node) stops beating; after ``grace_period``
  seconds ``optuna.storages.fail_stale_trials`` marks it failed and
  ``RetryHeartbeatStaleTrialCallback`` queues its parameters again (up to ``max_retry``
  times); the retried slot does not count against ``n_trials``.
* Job folders are named by trial number (``hydra.job.num`` is the trial number), so
  workers and resumed runs never share a run folder.
"""

from __future__ import annotations

import logging
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
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override, Transformer
from hydra.core.plugins import Plugins
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from optuna.storages import RetryHeartbeatStaleTrialCallback, fail_stale_trials
from optuna.trial import FrozenTrial, Trial, TrialState

from tinycvae.errors import ConfigError
from tinycvae.search.storage import (
    Storage,
    open_storage,
    quiet_optuna,
    redact,
    resolve_spec,
    storage_file,
)
from tinycvae.search.trials import SURPLUS_ATTR, report
from tinycvae.summary import compact_summary
from tinycvae.sweep_signals import stop_if_signalled

log = logging.getLogger(__name__)

DIRECTIONS = ("minimize", "maximize")


# --- Hydra overrides <-> Optuna distributions ------------------------------------------


def search_space(
    params: dict[str, Any] | None, arguments: Sequence[str]
) -> tuple[dict[str, BaseDistribution], list[str]]:
    """``hydra.sweeper.params`` plus the command line -> (distributions, fixed overrides).

    ``choice(...)`` -> categorical; ``range(a, b[, step])`` of integers -> an integer range
    (Hydra's stop is exclusive), of floats or shuffled -> categorical over its values;
    ``interval(a, b)`` -> a float range (``int(interval(a, b))``: integers),
    ``tag(log, interval(a, b))`` on a log scale. Anything else is a fixed override
    handed unchanged to every trial. A key given on the command line replaces the same
    key of ``params``."""
    lines = [f"{k}={v}" for k, v in (params or {}).items()] + list(arguments)
    try:
        parsed = OverridesParser.create().parse_overrides(lines)
    except Exception as err:  # noqa: BLE001 - Hydra's OverrideParseException and friends
        raise ConfigError(
            f"hydra.sweeper.params: {str(err).splitlines()[0]}; allowed: Hydra overrides"
        ) from None
    space: dict[str, BaseDistribution] = {}
    fixed: dict[str, str] = {}
    for override in parsed:
        key = override.get_key_element()
        space.pop(key, None)
        fixed.pop(key, None)
        if override.is_sweep_override():
            space[key] = distribution(override)
        else:
            fixed[key] = override.input_line or f"{key}={override.get_value_element_as_str()}"
    return space, list(fixed.values())


def distribution(override: Override) -> BaseDistribution:
    if override.is_choice_sweep():
        return CategoricalDistribution(_values(override))
    if override.is_range_sweep():
        values = _values(override)
        value = override.value()
        if not values:
            raise ConfigError(f"{override.input_line}: an empty range; allowed: range(a, b)")
        if not value.shuffle and all(type(v) is int for v in values) and len(values) > 1:
            return IntDistribution(min(values), max(values), step=abs(int(value.step)))
        return CategoricalDistribution(values)
    if override.is_interval_sweep():
        value = override.value()
        log_scale = "log" in value.tags
        if isinstance(value.start, int) and isinstance(value.end, int):
            return IntDistribution(int(value.start), int(value.end), log=log_scale)
        return FloatDistribution(float(value.start), float(value.end), log=log_scale)
    raise ConfigError(
        f"{override.input_line} cannot be searched; allowed: choice(...), range(...), "
        "interval(...), int(interval(...)), tag(log, interval(...))"
    )


def _values(override: Override) -> list[Any]:
    values = list(override.sweep_iterator(transformer=Transformer.encode))
    for v in values:
        if not isinstance(v, (str, int, float, bool, type(None))):
            raise ConfigError(
                f"{override.input_line}: {v!r} cannot be a choice; allowed: strings and numbers"
            )
    return values


def suggest(trial: Trial, name: str, dist: BaseDistribution) -> Any:
    """The trial's value for ``name`` (a retried trial keeps the value it had)."""
    if isinstance(dist, CategoricalDistribution):
        return trial.suggest_categorical(name, dist.choices)
    if isinstance(dist, IntDistribution):
        return trial.suggest_int(name, dist.low, dist.high, step=dist.step, log=dist.log)
    return trial.suggest_float(name, dist.low, dist.high, step=dist.step, log=dist.log)


def override_value(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


# --- the study ---------------------------------------------------------------------------


def check_settings(
    *, direction: Any, objective: Sequence[str] | None, n_trials: int, n_jobs: int
) -> list[str]:
    directions = [direction] if isinstance(direction, str) else list(direction or [])
    directions = [str(d).lower() for d in directions]
    if not directions or any(d not in DIRECTIONS for d in directions):
        raise ConfigError(
            f"hydra.sweeper.direction={directions}: allowed: minimize or maximize, one per "
            "objective"
        )
    if objective and len(objective) != len(directions):
        raise ConfigError(
            f"hydra.sweeper.direction has {len(directions)} entries for objective="
            f"{list(objective)}; allowed: one direction per objective key"
        )
    if not isinstance(n_trials, int) or n_trials < 1:
        raise ConfigError(f"hydra.sweeper.n_trials={n_trials}: allowed: an integer >= 1")
    if not isinstance(n_jobs, int) or n_jobs < 1:
        raise ConfigError(f"hydra.sweeper.n_jobs={n_jobs}: allowed: an integer >= 1")
    return directions


def objectives_text(directions: Sequence[str], names: Sequence[str] | None) -> str:
    names = list(names or [])
    return ", ".join(f"{d} {names[i]}" if i < len(names) else d for i, d in enumerate(directions))


def open_study(
    storage: Storage,
    *,
    study_name: str | None,
    directions: list[str],
    metric_names: list[str] | None,
    sampler: Any = None,
    resume: bool | None = None,
) -> optuna.Study:
    """Create the study or continue it; ConfigError (before any trial) when ``resume=true``
    names a missing study, ``resume=false`` an existing one, or the stored study optimises
    other objectives than this search."""
    if storage.kind == "memory":
        if resume:
            raise ConfigError(
                "hydra.sweeper.resume=true needs a stored study; allowed: a storage "
                "(auto, a journal file or a database URL) and its study name"
            )
        with quiet_optuna():
            return optuna.create_study(
                study_name=study_name, sampler=sampler, directions=directions
            )
    exists = _check_resume(storage, study_name, resume)
    with quiet_optuna():
        if exists:
            study = optuna.load_study(
                study_name=study_name, storage=storage.optuna, sampler=sampler
            )
        else:
            study = optuna.create_study(
                study_name=study_name,
                storage=storage.optuna,
                sampler=sampler,
                directions=directions,
                load_if_exists=True,  # another worker may create it at the same moment
            )
        stored = [d.name.lower() for d in study.directions]
        stored_names = study.metric_names
        if stored_names is None and metric_names and len(metric_names) == len(directions):
            if stored == directions:
                study.set_metric_names(list(metric_names))
                stored_names = list(metric_names)
    if stored != directions or (metric_names and stored_names and stored_names != metric_names):
        raise ConfigError(
            f"study {study_name} in {storage.describe()} has objectives "
            f"[{objectives_text(stored, stored_names)}]; this search asks for "
            f"[{objectives_text(directions, metric_names)}]; allowed: the same objectives "
            "and directions, or another hydra.sweeper.study_name"
        )
    return study


def _check_resume(storage: Storage, study_name: str | None, resume: bool | None) -> bool:
    """A stored study needs a name; ``resume=true`` one that exists, ``resume=false`` one
    that does not. Whether it exists."""
    where = storage.describe()
    if not study_name:
        raise ConfigError(
            f"hydra.sweeper.study_name=null with storage {where}: allowed: a name, so that "
            "the study can be found again"
        )
    with quiet_optuna():
        names = optuna.get_all_study_names(storage.optuna)
    if resume and study_name not in names:
        raise ConfigError(
            f"hydra.sweeper.study_name={study_name}: no such study in {where} "
            f"(hydra.sweeper.resume=true); allowed: {', '.join(sorted(names)) or 'none stored yet'}"
        )
    if resume is False and study_name in names:
        raise ConfigError(
            f"hydra.sweeper.study_name={study_name} already exists in {where} "
            "(hydra.sweeper.resume=false); allowed: a new name, or resume=null to continue it"
        )
    return study_name in names


def retried_numbers(trials: Sequence[FrozenTrial]) -> set[int]:
    """Numbers of the trials whose slot went to a retry (their worker died)."""
    with quiet_optuna():
        return {n for t in trials for n in RetryHeartbeatStaleTrialCallback.retry_history(t)}


def budget(trials: Sequence[FrozenTrial]) -> list[FrozenTrial]:
    """The trials that use up ``n_trials``, by number: all but retried and surplus ones."""
    retried = retried_numbers(trials)
    return sorted(
        (t for t in trials if t.number not in retried and SURPLUS_ATTR not in t.user_attrs),
        key=lambda t: t.number,
    )


# --- the sweeper -------------------------------------------------------------------------


class StudySweeper:
    """What ``hydra_plugins.tinycvae_optuna.optuna_sweeper.OptunaSweeper`` delegates to."""

    def __init__(
        self,
        *,
        sampler: Any,
        direction: Any,
        study_name: str | None,
        storage: str | None,
        resume: bool | None,
        n_trials: int,
        n_jobs: int,
        params: DictConfig | dict | None,
        heartbeat_interval: int,
        grace_period: int | None,
        max_retry: int | None,
    ) -> None:
        self.sampler_cfg = sampler
        self.direction = direction
        self.study_name = study_name
        self.storage_spec = storage
        self.resume = resume
        self.n_trials = n_trials
        self.n_jobs = n_jobs
        self.params = params
        self.heartbeat_interval = heartbeat_interval
        self.grace_period = grace_period
        self.max_retry = max_retry
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

    # Everything that can be wrong with the settings is found here, before any trial.
    def prepare(self, arguments: Sequence[str]) -> tuple[Any, Storage, dict, list[str]]:
        assert self.config is not None
        objective = list(self.config.get("objective") or [])
        directions = check_settings(
            direction=OmegaConf.to_object(self.direction)
            if OmegaConf.is_config(self.direction)
            else self.direction,
            objective=objective,
            n_trials=self.n_trials,
            n_jobs=self.n_jobs,
        )
        params = OmegaConf.to_container(self.params) if OmegaConf.is_config(self.params) else None
        space, fixed = search_space(params if params is not None else self.params, arguments)
        if not space:
            raise ConfigError(
                "hydra.sweeper.params has nothing to search; allowed: key=choice(...), "
                "range(...) or interval(...)"
            )
        if self.study_name is not None and ("/" in self.study_name or not self.study_name.strip()):
            raise ConfigError(
                f"hydra.sweeper.study_name={self.study_name}: allowed: a non-empty name without /"
            )
        if self.max_retry is not None and self.max_retry < 0:
            raise ConfigError(f"hydra.sweeper.max_retry={self.max_retry}: allowed: >= 0 or null")
        if not isinstance(self.heartbeat_interval, int) or self.heartbeat_interval < 1:
            raise ConfigError(
                f"hydra.sweeper.heartbeat_interval={self.heartbeat_interval}: allowed: an "
                "integer >= 1 (seconds)"
            )
        sampler = self._sampler()
        with quiet_optuna():
            retry = RetryHeartbeatStaleTrialCallback(max_retry=self.max_retry)
        spec = resolve_spec(
            self.storage_spec, self.study_name, self.config.get("paths", {}).get("log_dir")
        )
        file = storage_file(spec)
        if self.resume and file is not None and not file.exists():
            raise ConfigError(
                f"hydra.sweeper.study_name={self.study_name}: no such study (hydra.sweeper."
                f"resume=true, and {file} does not exist); allowed: a stored study, or "
                "resume=null to start it"
            )
        storage = open_storage(
            spec,
            study_name=self.study_name,
            heartbeat_interval=self.heartbeat_interval,
            grace_period=self.grace_period,
            stale_callback=retry,
        )
        study = open_study(
            storage,
            study_name=self.study_name,
            directions=directions,
            metric_names=objective or None,
            sampler=sampler,
            resume=self.resume,
        )
        return study, storage, space, fixed

    def _sampler(self) -> Any:
        if self.sampler_cfg is None or isinstance(self.sampler_cfg, optuna.samplers.BaseSampler):
            return self.sampler_cfg  # Hydra builds the sampler with the sweeper (recursively)
        from hydra.utils import instantiate

        try:
            with quiet_optuna():
                return instantiate(self.sampler_cfg)
        except Exception as err:  # noqa: BLE001 - a bad sampler setting: one line
            cause = err.__cause__ or err
            raise ConfigError(
                f"hydra.sweeper.sampler: {str(cause).splitlines()[0]}; allowed: an "
                "optuna.samplers class and its arguments"
            ) from None

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
            f"{len(budget(study.get_trials(deepcopy=False)))} of {self.n_trials} trials "
            f"already there; sampler {type(study.sampler).__name__}",
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

    # --- the loop --------------------------------------------------------------------------

    def _run(self, study: optuna.Study, storage: Storage, space: dict, fixed: list[str]) -> int:
        own: set[int] = set()
        ran = 0
        waited = False
        while True:
            with quiet_optuna():
                fail_stale_trials(study)
            counted = budget(study.get_trials(deepcopy=False))
            waiting = sum(t.state == TrialState.WAITING for t in counted)
            to_ask = waiting + max(0, self.n_trials - len(counted))
            if to_ask <= 0:
                running = [t.number for t in counted if t.state == TrialState.RUNNING]
                if not running:
                    return ran
                if not waited:
                    print(
                        f"search: {self.n_trials} trials asked; waiting for trial(s) "
                        f"{', '.join(map(str, running))} of other workers (a dead worker's "
                        f"trial is retried after {self._grace()} s)",
                        flush=True,
                    )
                    waited = True
                time.sleep(max(1, min(5, self.heartbeat_interval)))
                continue
            batch = []
            for _ in range(min(self.n_jobs, to_ask)):
                trial = self._ask(study, space, own)
                if trial is not None:
                    batch.append(trial)
            if batch:
                ran += len(batch)
                self._launch(study, storage, batch, fixed)
                stop_if_signalled()  # SIGTERM / SIGHUP relayed to the jobs: exit 128 + N

    def _grace(self) -> int:
        return self.grace_period or 2 * self.heartbeat_interval

    def _ask(self, study: optuna.Study, space: dict, own: set[int]) -> Trial | None:
        with quiet_optuna():
            trial = study.ask()
        own.add(trial.number)
        self._beat(study, trial)  # at once: a beat-less RUNNING trial is never found stale
        trial.set_user_attr("worker", f"{socket.gethostname()} pid {os.getpid()}")
        trial.set_user_attr("sweep_dir", str(self.config.hydra.sweep.dir))
        trials = study.get_trials(deepcopy=False)
        frozen = next(t for t in trials if t.number == trial.number)
        queued = bool(frozen.params) or "fixed_params" in frozen.system_attrs
        if not queued:
            counted = [t.number for t in budget(trials)]
            if trial.number in counted and counted.index(trial.number) >= self.n_trials:
                # Another worker took the last slot between our count and our ask.
                trial.set_user_attr(SURPLUS_ATTR, "asked past n_trials by a racing worker")
                _tell_safely(study, trial, state=TrialState.FAIL)
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
            _tell_safely(study, trial, state=TrialState.FAIL, fail_reason=why)
            return None
        return trial

    def _beat(self, study: optuna.Study, *trials: Trial) -> None:
        storage = self.storage.optuna
        if storage is None or not hasattr(storage, "record_heartbeat"):
            return
        for trial in trials:
            try:
                storage.record_heartbeat(trial._trial_id)
            except Exception as err:  # noqa: BLE001 - a missed beat is not fatal
                log.warning("heartbeat of trial %d: %s", trial.number, err)

    def _launch(
        self, study: optuna.Study, storage: Storage, batch: list[Trial], fixed: list[str]
    ) -> None:
        stop = threading.Event()

        def beat() -> None:
            while not stop.wait(self.heartbeat_interval):
                self._beat(study, *batch)

        thread = threading.Thread(target=beat, name="optuna-heartbeat", daemon=True)
        thread.start()
        told: set[int] = set()
        try:
            for group in _contiguous(sorted(batch, key=lambda t: t.number)):
                overrides = [
                    [*fixed, *(f"{k}={override_value(v)}" for k, v in t.params.items())]
                    for t in group
                ]
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
                if trial.number in told or not _tell_safely(study, trial, state=TrialState.FAIL):
                    continue
                if interrupted:
                    self._retry(study, trial)
            raise
        finally:
            stop.set()
            thread.join()

    def _retry(self, study: optuna.Study, trial: Trial) -> None:
        """Queue a failed trial's parameters again (as for a dead worker's trial)."""
        frozen = next(t for t in study.get_trials(deepcopy=False) if t.number == trial.number)
        with quiet_optuna():
            RetryHeartbeatStaleTrialCallback(max_retry=self.max_retry)(study, frozen)

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
                    break  # failed meanwhile (see _tell_safely)
        values, why = self._values(ret, len(study.directions))
        status = str((attrs["summary"] or {}).get("status", ""))
        if values is None and status.startswith("failed: interrupted"):
            # a relayed SIGTERM / SIGHUP: not the trial's fault, its parameters run again
            if _tell_safely(study, trial, state=TrialState.FAIL, fail_reason=status):
                self._retry(study, trial)
        elif values is None:
            _tell_safely(study, trial, state=TrialState.FAIL, fail_reason=why)
        else:
            _tell_safely(study, trial, values=values)

    @staticmethod
    def _values(ret: Any, n: int) -> tuple[list[float] | None, str]:
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


def _tell_safely(
    study: optuna.Study,
    trial: Trial,
    *,
    values: list[float] | None = None,
    state: TrialState | None = None,
    fail_reason: str | None = None,
) -> bool:
    """``study.tell``; False (with a warning) when the trial was finished meanwhile: its
    heartbeat went stale (a stalled process) and a worker failed it and queued a retry."""
    try:
        if fail_reason:
            trial.set_user_attr("fail_reason", fail_reason)
        with quiet_optuna():
            study.tell(trial, values=values, state=state)
        return True
    except (optuna.exceptions.UpdateFinishedTrialError, ValueError) as err:
        if isinstance(err, ValueError) and not str(err).startswith("Cannot tell a"):
            raise
        print(
            f"warning: trial {trial.number} was marked failed meanwhile (its heartbeat went "
            "stale); its retry takes its slot",
            file=sys.stderr,
            flush=True,
        )
        return False


def _contiguous(trials: list[Trial]) -> list[list[Trial]]:
    groups: list[list[Trial]] = []
    for t in trials:
        if groups and t.number == groups[-1][-1].number + 1:
            groups[-1].append(t)
        else:
            groups.append([t])
    return groups


__all__ = ["StudySweeper", "open_storage", "open_study", "redact", "search_space"]
