"""Where tensors live: the one device rule of every command and stage.

* A command turns its device setting into one :class:`torch.device` with :func:`resolve`
  (``trainer.accelerator`` for ``train.py`` and ``evaluate.py``, ``device`` for
  ``export.py``), before any data is rendered; a device this machine lacks is refused in
  one line.
* Every stage that touches tensors (sampler fit, quality metrics, pictures, the
  evaluator's training, calibration, QAT, scoring) runs where its model's weights are
  (:func:`device_of`) and brings its inputs there (:func:`to_device`); a command puts its
  model, data and evaluator on its device with :func:`place` before the stages run.
  Lightning moves a trained module back to the CPU when ``fit``/``test`` end, so the
  training job calls :func:`place` again after them.
* Checkpoints are read onto the CPU and then placed, so a CUDA checkpoint loads on a
  CPU-only machine and the other way round.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from tinycvae.errors import ConfigError

ACCELERATORS = ("auto", "cpu", "gpu", "cuda", "mps")


def available() -> str:
    """What this machine offers, in words (for error messages)."""
    if torch.cuda.is_available():
        n = torch.cuda.device_count()
        return f"{n} CUDA GPU{'s' if n > 1 else ''} ({torch.cuda.get_device_name(0)})"
    if _mps_available():
        return "an Apple MPS GPU"
    return "no GPU (torch.cuda.is_available() is False)"


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def resolve(
    setting: Any, key: str, index: int | None = None, job_num: int | None = None
) -> torch.device:
    """``auto`` (a CUDA GPU if there is one, else MPS, else the CPU), ``cpu``, ``gpu`` /
    ``cuda``, ``cuda:N`` or ``mps`` -> a device this machine has.

    Which GPU: ``cuda:N`` or ``index`` when given; else job ``job_num`` of a multirun
    takes GPU ``job_num mod count`` (a sweep's parallel jobs spread over the GPUs);
    else GPU 0. Raises a one-line :class:`ConfigError` naming ``key`` for an unknown
    setting or a device the machine lacks."""
    value = str(setting).lower() if setting is not None else "auto"
    if value.startswith("cuda:"):
        value, _, tail = value.partition(":")
        if not tail.isdigit():
            raise ConfigError(
                f"{key}={setting} is unknown; allowed: {', '.join(ACCELERATORS)} or cuda:N"
            )
        index = int(tail)
    if value not in ACCELERATORS:
        raise ConfigError(
            f"{key}={setting} is unknown; allowed: {', '.join(ACCELERATORS)} or cuda:N"
        )
    if value == "cpu" or (value == "auto" and not torch.cuda.is_available()):
        if value == "auto" and _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    lacking = f"{key}={setting}: this machine has {available()}; allowed: cpu, auto"
    if value == "mps":
        if not _mps_available():
            raise ConfigError(lacking)
        return torch.device("mps")
    if not torch.cuda.is_available():
        raise ConfigError(lacking)
    count = torch.cuda.device_count()
    if index is None:
        index = job_num % count if job_num is not None else 0
    if not 0 <= int(index) < count:
        raise ConfigError(
            f"{key}={setting} (GPU {index}): this machine has {available()}; allowed: GPU 0 "
            f"to {count - 1}, cpu, auto"
        )
    return torch.device("cuda", int(index))


def device_of(module: nn.Module) -> torch.device:
    """The device of a module's weights (its buffers when it has no weights; else CPU)."""
    for tensor in module.parameters():
        return tensor.device
    for tensor in module.buffers():
        return tensor.device
    return torch.device("cpu")


def to_device(device: torch.device, *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """``tensors`` on ``device`` (no copy when they are there already)."""
    return tuple(t.to(device, non_blocking=True) for t in tensors)


def place(device: torch.device, *things: Any) -> None:
    """Move each model (``nn.Module``) or data module (anything with ``to(device)`` that
    moves in place, e.g. :class:`~tinycvae.data.datamodule.TensorDataModule`) to
    ``device``. ``None`` entries are skipped."""
    for thing in things:
        if thing is not None:
            thing.to(device)


def allocated_cpus(
    environ: Mapping[str, str] | None = None, cgroup_root: str | Path = "/sys/fs/cgroup"
) -> dict[str, int]:
    """The CPU counts this process may use, by source: ``cores`` (the machine),
    ``affinity`` (its CPU mask: ``taskset``, a scheduler's task plugin), ``cgroup`` (a CPU
    quota, rounded up: ``docker run --cpus``, systemd, SLURM's cgroup plugin) and
    ``slurm`` (``SLURM_CPUS_PER_TASK``, else ``SLURM_CPUS_ON_NODE``, inside a SLURM job).
    Sources this machine does not have are left out; the smallest count is the budget."""
    environ = os.environ if environ is None else environ
    counts = {"cores": os.cpu_count() or 1}
    if hasattr(os, "sched_getaffinity"):
        counts["affinity"] = len(os.sched_getaffinity(0))
    quota = cgroup_cpu_quota(Path(cgroup_root))
    if quota is not None:
        counts["cgroup"] = quota
    slurm = _slurm_cpus(environ)
    if slurm is not None:
        counts["slurm"] = slurm
    return counts


def _slurm_cpus(environ: Mapping[str, str]) -> int | None:
    if not environ.get("SLURM_JOB_ID"):
        return None  # a stale variable outside a job says nothing
    for name in ("SLURM_CPUS_PER_TASK", "SLURM_CPUS_ON_NODE"):
        value = environ.get(name, "").strip()
        if value.isdigit() and int(value) > 0:
            return int(value)
    return None


def cgroup_cpu_quota(root: Path, proc_cgroup: str = "/proc/self/cgroup") -> int | None:
    """The CPU quota of this process's cgroup and its parents (the smallest, rounded up to
    whole CPUs), or None without one. cgroup v2 ``cpu.max`` (``<quota> <period>`` or
    ``max``), cgroup v1 ``cpu.cfs_quota_us`` / ``cpu.cfs_period_us`` (-1: none)."""
    try:
        lines = Path(proc_cgroup).read_text().splitlines()
    except OSError:
        return None
    found: list[int] = []
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if controllers == "":  # v2
            base, read = root, _quota_v2
        elif "cpu" in controllers.split(","):  # v1
            base, read = root / "cpu", _quota_v1
            if not base.is_dir():
                base = root / "cpu,cpuacct"
        else:
            continue
        folder = base / path.lstrip("/")
        while True:
            quota = read(folder)
            if quota is not None:
                found.append(quota)
            if folder == base or base not in folder.parents:
                break
            folder = folder.parent
    return min(found) if found else None


def _quota_v2(folder: Path) -> int | None:
    try:
        quota, period = (folder / "cpu.max").read_text().split()[:2]
    except (OSError, ValueError):
        return None
    return None if quota == "max" else max(1, math.ceil(int(quota) / int(period)))


def _quota_v1(folder: Path) -> int | None:
    try:
        quota = int((folder / "cpu.cfs_quota_us").read_text())
        period = int((folder / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None
    return None if quota <= 0 or period <= 0 else max(1, math.ceil(quota / period))


def cpu_threads(
    setting: Any, concurrent_jobs: int = 1, cpus: Mapping[str, int] | None = None
) -> int:
    """Torch's CPU threads for a job: ``auto`` shares the CPUs this process may use (the
    smallest count of :func:`allocated_cpus`) among the jobs that run at once (at least
    1 each), so that two jobs on two CPUs take one thread each instead of fighting over
    two, and a SLURM job with ``--cpus-per-task=4`` on a 64-core node takes 4; an
    integer >= 1 as given."""
    if setting in (None, "auto"):
        budget = min((cpus or allocated_cpus()).values())
        return max(1, budget // max(1, concurrent_jobs))
    if type(setting) is not int or setting < 1:
        raise ConfigError(f"threads={setting} is invalid; allowed: auto or an integer >= 1")
    return setting


def free_cached_memory() -> None:
    """Return a failed job's cached GPU memory, so the sweep's next job has it."""
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
