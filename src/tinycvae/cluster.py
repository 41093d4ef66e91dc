"""A job is one process on one device, wherever it runs: on a laptop, in a joblib worker,
in a SLURM array task submitted by our launcher, or inside someone's own sbatch script.

Lightning looks for a cluster to manage: inside a SLURM job it picks its
``SLURMEnvironment``, which requeues the job on SIGUSR1 (fighting our own SIGTERM
record-and-exit-143, :mod:`tinycvae.outcome`) and checks ``srun`` variables meant for
multi-process training. Our jobs never train across processes, so every Trainer gets
Lightning's plain single-process environment (:func:`trainer_plugins`), and the advice
Lightning prints for cases that are not ours (prepend ``srun``; install litlogger) is
dropped (:func:`quiet_lightning`)."""

from __future__ import annotations

import logging
import warnings
from typing import Any

SRUN_HINT = r"The `srun` command is available on your system but is not used"
TIPS = ("litlogger",)  # Lightning's advertisement on every Trainer
RANK_ZERO_LOGGERS = (
    "pytorch_lightning.utilities.rank_zero",
    "lightning_fabric.utilities.rank_zero",
)


class _DropTips(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        return not any(tip in text for tip in TIPS)


_TIP_FILTER = _DropTips()


def quiet_lightning() -> None:
    """Drop Lightning's srun HINT (our one-process jobs need no ``srun``) and its
    litlogger tip; idempotent."""
    warnings.filterwarnings("ignore", message=SRUN_HINT)
    for name in RANK_ZERO_LOGGERS:
        logger = logging.getLogger(name)
        if _TIP_FILTER not in logger.filters:
            logger.addFilter(_TIP_FILTER)


def trainer_plugins(configured: Any = None) -> list[Any]:
    """The Trainer's plugins: the configured ones (``trainer.plugins``) plus Lightning's
    single-process ``LightningEnvironment`` unless one of them is a cluster environment
    already (then the user chose)."""
    from lightning_fabric.plugins.environments import ClusterEnvironment, LightningEnvironment

    plugins = list(configured or [])
    if not any(isinstance(p, ClusterEnvironment) for p in plugins):
        plugins.append(LightningEnvironment())
    return plugins
