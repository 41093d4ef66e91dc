"""``hydra/sweeper=optuna_study``: a Hydra 1.3 sweeper on a current Optuna (ask and tell).

Hydra finds sweepers in the ``hydra_plugins`` namespace package; this module stays
light (Hydra imports it on every run): the work is in ``tinycvae.search``.

    python src/train.py -m hparams_search=dice_optuna
"""

# No `from __future__ import annotations`: Hydra executes plugin modules outside
# sys.modules, where dataclasses cannot resolve string annotations.
from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig


@dataclass
class OptunaStudySweeperConf:
    _target_: str = "hydra_plugins.tinycvae_optuna.optuna_sweeper.OptunaSweeper"
    # An optuna.samplers class and its arguments, built with hydra.utils.instantiate.
    sampler: Any = field(default_factory=lambda: {"_target_": "optuna.samplers.TPESampler"})
    # minimize | maximize, or a list of them: one per key of the task's `objective`.
    direction: Any = "minimize"
    study_name: str | None = None
    # auto: a journal file at <paths.log_dir>/searches/<study_name>/study.journal (in memory
    # when the study has no name); null: in memory; a path: a journal file; a URL:
    # sqlite:///x.db, postgresql://..., mysql+pymysql://..., redis://...
    storage: str | None = "auto"
    # null: continue the study if it exists, else create it; true: it must exist;
    # false: it must not.
    resume: bool | None = None
    # The study's total (across runs and workers), not this process's.
    n_trials: int = 20
    # Trials asked at once and handed to the launcher as one batch.
    n_jobs: int = 1
    # key: choice(...) | range(...) | interval(...) | tag(log, interval(...)) | fixed value
    params: dict[str, str] | None = None
    # Optuna's heartbeat: seconds between beats of a running trial, and after how many
    # seconds without one the trial is failed and retried (null: 2 x the interval).
    heartbeat_interval: int = 10
    grace_period: int | None = 60
    # How many times a killed trial's parameters are queued again (null: no limit).
    max_retry: int | None = 2


ConfigStore.instance().store(
    group="hydra/sweeper",
    name="optuna_study",
    node=OptunaStudySweeperConf,
    provider="tinycvae",
)


class OptunaSweeper(Sweeper):
    """Delegates to ``tinycvae.search.loop.StudySweeper`` (imported when used)."""

    def __init__(self, **settings: Any) -> None:
        from tinycvae.search.loop import StudySweeper

        self.sweeper = StudySweeper(**settings)

    def setup(
        self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig
    ) -> None:
        self.sweeper.setup(hydra_context=hydra_context, task_function=task_function, config=config)

    def sweep(self, arguments: list[str]) -> None:
        return self.sweeper.sweep(arguments)
