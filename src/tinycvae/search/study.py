"""The study: the sweeper's settings checked, its Optuna study created or continued on its
storage (journal file, SQLite or any database, see ``tinycvae.search.storage``), and the
book-keeping of its trials: which count against ``n_trials``, heartbeats, and trials failed
or queued again.

* ``n_trials`` is the study's total, not this process's: running the same command again
  continues the study, and N processes (or SLURM array tasks) on one storage and study
  name share the trials until the study holds ``n_trials``.
* A trial whose worker died (kill -9, a lost node) stops beating; after ``grace_period``
  seconds ``optuna.storages.fail_stale_trials`` marks it failed and
  ``RetryHeartbeatStaleTrialCallback`` queues its parameters again (up to ``max_retry``
  times); the retried slot does not count against ``n_trials``.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import optuna
from omegaconf import DictConfig, OmegaConf
from optuna.distributions import BaseDistribution
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.trial import FrozenTrial, Trial, TrialState

from tinycvae.errors import ConfigError
from tinycvae.search.space import sweeper_space
from tinycvae.search.storage import (
    Storage,
    open_storage,
    quiet_optuna,
    resolve_spec,
    storage_file,
)
from tinycvae.search.trials import SURPLUS_ATTR

log = logging.getLogger(__name__)

DIRECTIONS = ("minimize", "maximize")


@dataclass(frozen=True, kw_only=True)
class SearchSettings:
    """``hydra.sweeper.*`` as Hydra hands them over (see the plugin's config dataclass,
    ``hydra_plugins.tinycvae_optuna.optuna_sweeper.OptunaStudySweeperConf``)."""

    sampler: Any
    direction: Any
    study_name: str | None
    storage: str | None
    resume: bool | None
    n_trials: int
    n_jobs: int
    params: DictConfig | dict | None
    heartbeat_interval: int
    grace_period: int | None
    max_retry: int | None

    def grace(self) -> int:
        """Seconds without a beat after which a running trial is failed and retried."""
        return self.grace_period or 2 * self.heartbeat_interval


# --- the settings, checked before any trial -------------------------------------------


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


def _check_worker_settings(settings: SearchSettings) -> None:
    """The study name, ``max_retry`` and ``heartbeat_interval``."""
    name = settings.study_name
    if name is not None and ("/" in name or not name.strip()):
        raise ConfigError(f"hydra.sweeper.study_name={name}: allowed: a non-empty name without /")
    if settings.max_retry is not None and settings.max_retry < 0:
        raise ConfigError(f"hydra.sweeper.max_retry={settings.max_retry}: allowed: >= 0 or null")
    interval = settings.heartbeat_interval
    if not isinstance(interval, int) or interval < 1:
        raise ConfigError(
            f"hydra.sweeper.heartbeat_interval={interval}: allowed: an integer >= 1 (seconds)"
        )


def make_sampler(cfg: Any) -> Any:
    """The optuna sampler of ``hydra.sweeper.sampler`` (None: Optuna's default)."""
    if cfg is None or isinstance(cfg, optuna.samplers.BaseSampler):
        return cfg  # Hydra builds the sampler with the sweeper (recursively)
    from hydra.utils import instantiate

    try:
        with quiet_optuna():
            return instantiate(cfg)
    except Exception as err:  # noqa: BLE001 - a bad sampler setting: one line
        cause = err.__cause__ or err
        raise ConfigError(
            f"hydra.sweeper.sampler: {str(cause).splitlines()[0]}; allowed: an "
            "optuna.samplers class and its arguments"
        ) from None


def _open_search_storage(settings: SearchSettings, log_dir: Any) -> Storage:
    """``hydra.sweeper.storage`` opened, with the heartbeat and the retry of stale trials."""
    with quiet_optuna():
        retry = RetryHeartbeatStaleTrialCallback(max_retry=settings.max_retry)
    spec = resolve_spec(settings.storage, settings.study_name, log_dir)
    file = storage_file(spec)
    if settings.resume and file is not None and not file.exists():
        raise ConfigError(
            f"hydra.sweeper.study_name={settings.study_name}: no such study (hydra.sweeper."
            f"resume=true, and {file} does not exist); allowed: a stored study, or "
            "resume=null to start it"
        )
    return open_storage(
        spec,
        study_name=settings.study_name,
        heartbeat_interval=settings.heartbeat_interval,
        grace_period=settings.grace_period,
        stale_callback=retry,
    )


def prepare(
    settings: SearchSettings, config: DictConfig, arguments: Sequence[str]
) -> tuple[optuna.Study, Storage, dict[str, BaseDistribution], list[str]]:
    """(study, storage, search space, fixed overrides); everything that can be wrong with
    the settings is found here, before any trial (ConfigError)."""
    objective = list(config.get("objective") or [])
    direction = settings.direction
    directions = check_settings(
        direction=OmegaConf.to_object(direction) if OmegaConf.is_config(direction) else direction,
        objective=objective,
        n_trials=settings.n_trials,
        n_jobs=settings.n_jobs,
    )
    space, fixed = sweeper_space(settings.params, arguments)
    _check_worker_settings(settings)
    sampler = make_sampler(settings.sampler)
    storage = _open_search_storage(settings, config.get("paths", {}).get("log_dir"))
    study = open_study(
        storage,
        study_name=settings.study_name,
        directions=directions,
        metric_names=objective or None,
        sampler=sampler,
        resume=settings.resume,
    )
    return study, storage, space, fixed


# --- the study on its storage ---------------------------------------------------------


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


# --- its trials -----------------------------------------------------------------------


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


def beat(storage: Storage, *trials: Trial) -> None:
    """Record a heartbeat of each trial (where the storage keeps them)."""
    optuna_storage = storage.optuna
    if optuna_storage is None or not hasattr(optuna_storage, "record_heartbeat"):
        return
    for trial in trials:
        try:
            optuna_storage.record_heartbeat(trial._trial_id)
        except Exception as err:  # noqa: BLE001 - a missed beat is not fatal
            log.warning("heartbeat of trial %d: %s", trial.number, err)


def tell_safely(
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


def queue_again(study: optuna.Study, trial: Trial, max_retry: int | None) -> None:
    """Queue a failed trial's parameters again (as for a dead worker's trial)."""
    frozen = next(t for t in study.get_trials(deepcopy=False) if t.number == trial.number)
    with quiet_optuna():
        RetryHeartbeatStaleTrialCallback(max_retry=max_retry)(study, frozen)
