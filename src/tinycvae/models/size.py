"""How much memory a model needs to train, known from its config alone: the model is built
on PyTorch's ``meta`` device (shapes, no storage) and one batch is passed through it, so
``model.dim1=100000`` is refused in one line instead of allocating 100 GB."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from tinycvae.data.base import DataSpec
from tinycvae.errors import ConfigError

# fp32 weights, their gradients and Adam's two moments
BYTES_PER_PARAM = 16
# an activation is kept for the backward pass and gets a gradient of its own
BYTES_PER_ACTIVATION = 8


def _activations(model: nn.Module, spec: DataSpec, batch_size: int) -> int:
    """Elements every leaf module outputs for one training batch (on ``meta``)."""
    total = 0

    def count(_module, _inputs, output) -> None:
        nonlocal total
        outs = output if isinstance(output, (tuple, list)) else (output,)
        total += sum(o.numel() for o in outs if isinstance(o, torch.Tensor))

    leaves = [m for m in model.modules() if not list(m.children())]
    hooks = [m.register_forward_hook(count) for m in leaves]
    try:
        x = torch.zeros(batch_size, *spec.shape, device="meta")
        y = torch.zeros(batch_size, dtype=torch.long, device="meta")
        f = torch.zeros(batch_size, spec.num_factors, device="meta")
        model.train()
        model(x, y, f, sample=True)
    except Exception:  # noqa: BLE001 - an op without a meta kernel: count the weights alone
        return 0
    finally:
        for h in hooks:
            h.remove()
    return total


def training_bytes(
    build: Callable[[DataSpec], nn.Module], spec: DataSpec, batch_size: int
) -> tuple[int, int]:
    """``(parameters, bytes)`` that training the model ``build(spec)`` describes needs:
    built on the meta device, the global random state untouched."""
    with torch.random.fork_rng(devices=[]), torch.device("meta"):
        model = build(spec)
        params = sum(p.numel() for p in model.parameters())
        acts = _activations(model, spec, batch_size)
    return params, BYTES_PER_PARAM * params + BYTES_PER_ACTIVATION * acts


def _cgroup_limit() -> int | None:
    try:
        text = Path("/sys/fs/cgroup/memory.max").read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def device_memory(device: torch.device) -> int:
    """Bytes of memory on ``device``: a GPU's own, else this machine's (or its cgroup's)."""
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device.index or 0).total_memory
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    limit = _cgroup_limit()
    return min(total, limit) if limit else total


def _gb(n: int) -> str:
    return f"{n / 1e9:,.1f} GB" if n >= 1e9 else f"{n / 1e6:,.0f} MB"


def check_fits(
    build: Callable[[DataSpec], nn.Module],
    spec: DataSpec,
    batch_size: int,
    device: torch.device,
) -> int | None:
    """The model's parameter count (None: not known without building it); a one-line
    :class:`ConfigError` when training it (weights, gradients, Adam state and one batch's
    activations) needs more memory than ``device`` has."""
    try:
        params, need = training_bytes(build, spec, batch_size)
    except (NotImplementedError, RuntimeError):  # a builder the meta device cannot run
        return None
    have = device_memory(device)
    if need > have:
        raise ConfigError(
            f"the model has {params:,} parameters and needs about {_gb(need)} to train at "
            f"data.batch_size={batch_size} (weights, gradients, Adam state, activations); "
            f"allowed: at most {_gb(have)}, the memory of {device.type} here: smaller "
            "model widths (model.dim1..dim4, model.hidden) or data.batch_size"
        )
    return params
