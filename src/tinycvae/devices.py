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

import os
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


def cpu_threads(setting: Any, concurrent_jobs: int = 1) -> int:
    """Torch's CPU threads for a job: ``auto`` shares the cores among the jobs that run at
    once (``os.cpu_count() // concurrent_jobs``, at least 1), so that two jobs on two cores
    each take one thread instead of fighting over two; an integer >= 1 as given."""
    if setting in (None, "auto"):
        return max(1, (os.cpu_count() or 1) // max(1, concurrent_jobs))
    if type(setting) is not int or setting < 1:
        raise ConfigError(f"threads={setting} is invalid; allowed: auto or an integer >= 1")
    return setting


def free_cached_memory() -> None:
    """Return a failed job's cached GPU memory, so the sweep's next job has it."""
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
