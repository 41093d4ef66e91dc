"""Quantisation-aware fine-tuning of the deployed stages, for when post-training int8 or
int4 costs too much accuracy (tiny decoders are sensitive to weight rounding).

The float stages are trained through fake quantisation that mirrors the integer runtime
(per-channel weights of the quantised model's width, ``qm.bits``: int8 or int4; uint8
activations on the calibrated scales, int8 logits, int8 z), with straight-through
gradients, to reproduce the *float model's own* images
(distillation: the goal is to draw what the PyTorch model draws). The result is a new
:class:`FloatModel`, quantised again by :func:`tinycvae.deploy.quantize.quantize`.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import Tensor

from tinycvae.deploy.quantize import ACT_MAX, LOGIT_MAX, QuantModel, w_max
from tinycvae.mcu.stages import FloatModel, run_stages


def _ste_round(x: Tensor) -> Tensor:
    return x + (torch.round(x) - x).detach()


def _fake_weight(w: Tensor, floor: Tensor | None, bits: int = 8) -> Tensor:
    """``w`` rounded to per-output-channel symmetric ``bits``-wide codes (8: -127..127,
    4: -7..7), as :func:`tinycvae.deploy.quantize.quantize` rounds it."""
    top = w_max(bits)
    scale = w.detach().reshape(w.shape[0], -1).abs().amax(1).clamp_min(1e-8) / top
    if floor is not None:
        scale = torch.maximum(scale, floor)
    shape = (-1,) + (1,) * (w.dim() - 1)
    return _ste_round(w / scale.reshape(shape)).clamp(-top, top) * scale.reshape(shape)


def _fake_act(x: Tensor, scale: float, lo: int, hi: int) -> Tensor:
    return _ste_round(x / scale).clamp(lo, hi) * scale


def fake_forward(fm: FloatModel, qm: QuantModel, z: Tensor, labels: Tensor) -> Tensor:
    """Logits of ``fm`` under the integer runtime's rounding at ``qm``'s weight width
    (differentiable by STE), computed where ``fm`` is (``z`` and ``labels`` must be
    there)."""
    x = _fake_act(z, qm.z_scale, -127, 127)
    table_floor = fm.table.detach().abs().amax(0) / (32766 * qm.z_scale)
    weights = [
        _fake_weight(st.weight, table_floor if i == 0 else None, qm.bits)
        for i, st in enumerate(fm.stages)
    ]
    biases = [fm.table[labels]] + [st.bias for st in fm.stages[1:]]

    def fake_requantise(i: int, y: Tensor) -> Tensor:
        scale = qm.stages[i].out_scale
        if fm.stages[i].relu:
            return _fake_act(F.relu(y), scale, 0, ACT_MAX)
        return _fake_act(y, scale, -128, LOGIT_MAX)

    x = run_stages(fm.stages, x, weights, biases, fake_requantise)
    return x.reshape(x.shape[0], *fm.out_shape)


def finetune(
    fm: FloatModel,
    qm: QuantModel,
    z: Tensor,
    labels: Tensor,
    epochs: int = 10,
    lr: float = 1e-3,
    batch_size: int = 256,
    seed: int = 0,
) -> FloatModel:
    """A copy of ``fm`` fine-tuned so that its integer form (``qm``'s width) draws ``fm``'s
    float images.
    Trains where ``fm`` is; the batches are drawn with a CPU generator seeded by ``seed``,
    so they are the same on every device."""
    z, labels = z.to(fm.device), labels.to(fm.device)
    tuned = copy.deepcopy(fm)
    params = [tuned.table] + [
        p for st in tuned.stages for p in (st.weight, st.bias) if p is not None
    ]
    for p in params:
        p.requires_grad_(True)
    with torch.no_grad():
        target = torch.sigmoid(fm.forward(z, labels))
    batch_size = min(batch_size, len(z))
    opt = torch.optim.Adam(params, lr=lr)
    steps = epochs * max(1, len(z) // batch_size)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        order = torch.randperm(len(z), generator=gen)
        for k in range(0, len(z) - batch_size + 1, batch_size):
            idx = order[k : k + batch_size].to(z.device)
            logits = fake_forward(tuned, qm, z[idx], labels[idx])
            loss = F.binary_cross_entropy_with_logits(logits, target[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    for p in params:
        p.requires_grad_(False)
    return tuned
