"""``hydra/launcher=slurm``: hydra-submitit-launcher's SLURM launcher, fitted to the
partition it is pointed at (``gpus_per_node: auto``), checked against ``sinfo`` before
anything is submitted, and quiet on clusters without accounting.

Hydra finds launchers in the ``hydra_plugins`` namespace package; this module stays
light (Hydra imports it on every run): the work is in ``tinycvae.slurm``.

    python src/train.py -m hydra/launcher=slurm hydra.launcher.partition=debug beta=1e-5,1
"""

# No `from __future__ import annotations`: Hydra executes plugin modules outside
# sys.modules, where dataclasses cannot resolve string annotations.
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from hydra.core.config_store import ConfigStore
from hydra.core.utils import JobReturn
from hydra_plugins.hydra_submitit_launcher.config import SlurmQueueConf
from hydra_plugins.hydra_submitit_launcher.submitit_launcher import BaseSubmititLauncher


@dataclass
class TinyCVAESlurmConf(SlurmQueueConf):
    _target_: str = "hydra_plugins.tinycvae_slurm.slurm_launcher.SlurmLauncher"
    # auto: 1 when sinfo lists GPU gres on the partition, none otherwise; null or 0: none;
    # N >= 1: N (refused before submission on a partition without GPUs).
    gpus_per_node: Any = "auto"


ConfigStore.instance().store(
    group="hydra/launcher",
    name="tinycvae_slurm",
    node=TinyCVAESlurmConf,
    provider="tinycvae",
)


class SlurmLauncher(BaseSubmititLauncher):
    """Submits a sweep's jobs as one SLURM array (``tinycvae.slurm.launch``)."""

    _EXECUTOR = "slurm"

    def setup(self, *, hydra_context: Any, task_function: Any, config: Any) -> None:
        """Check SLURM, the partition and its GPUs (``sinfo``) before any job exists."""
        from tinycvae.cli import fail
        from tinycvae.errors import ConfigError
        from tinycvae.slurm import preflight

        super().setup(hydra_context=hydra_context, task_function=task_function, config=config)
        try:
            self.params = preflight(self.params)
        except ConfigError as err:
            fail(str(err))

    def launch(
        self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int
    ) -> Sequence[JobReturn]:
        from tinycvae.slurm import launch

        return launch(self, job_overrides, initial_job_idx)
