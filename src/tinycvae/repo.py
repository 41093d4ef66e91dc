"""Where this process runs and what it is.

Where: the checkout's own folders, its ``conf/`` (the Hydra configs every command
composes and the MCU profiles) and its ``deploy/`` (the C runtime the exporter builds).
tinycvae runs from a checkout or an editable install, so both sit beside ``src/``.

What: the answers of Hydra's runtime, for the command Hydra runs: whether it is a
multirun, this job's number in it, how many of its jobs run at once, and the sweep's
group. Each is the single-run answer outside Hydra (tests that compose a config)."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CONF_DIR = ROOT / "conf"
DEPLOY_DIR = ROOT / "deploy"


def is_multirun() -> bool:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def concurrent_jobs(cpus: int) -> int:
    """How many jobs of this sweep run at once in this allocation of ``cpus`` CPUs
    (joblib's ``n_jobs``; a submitit/SLURM job has an allocation of its own: 1)."""
    from hydra.core.hydra_config import HydraConfig

    if not is_multirun():
        return 1
    n = HydraConfig.get().launcher.get("n_jobs")
    if not isinstance(n, int) or n == 0:
        return 1
    return n if n > 0 else max(1, cpus + 1 + n)  # joblib: -1 = one per CPU


def job_num() -> int | None:
    """This job's number in a multirun (it picks the job's GPU when there are several)."""
    from hydra.core.hydra_config import HydraConfig

    return HydraConfig.get().job.num if is_multirun() else None


def sweep_group() -> str | None:
    """A multirun's jobs share one W&B group: the sweep folder's name."""
    from hydra.core.hydra_config import HydraConfig

    if not is_multirun():
        return None
    return Path(HydraConfig.get().sweep.dir).name
