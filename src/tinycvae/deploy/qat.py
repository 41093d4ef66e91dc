"""Quantisation-aware fine-tuning of the deployed stages, for when post-training int8 or
int4 costs too much accuracy (tiny decoders are sensitive to weight rounding).

The float stages are trained through fake quantisation that mirrors the integer runtime
(per-channel weights of the quantised model's width, ``qm.bits``: int8 or int4; uint8
activations, int8 logits, int8 z), with straight-through gradients, to reproduce the
*float model's own* images (distillation: the goal is to draw what the PyTorch model
draws), optionally keeping the epoch whose integer model a second evaluator rates best
(:class:`KeepBest`; the loss never sees that evaluator). The step sizes are learned with
the weights (LSQ, Esser et al. 2020: each weight channel's scale and each stage's output
scale, started from ``qm``'s), and the model is shipped at exactly those steps
(:class:`Steps`, passed to :func:`tinycvae.deploy.quantize.quantize`), so that the
integer model is the one trained.

Repeatable: the batches come from a CPU generator seeded by ``seed`` and the training
runs on one CPU thread (a different thread count sums in another order, and a rounding
that flips under the straight-through estimator sends the run elsewhere).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from tinycvae.deploy.quantize import ACT_MAX, LOGIT_MAX, QuantModel, Steps, one_thread, w_max
from tinycvae.mcu.stages import FloatModel, run_stages


def _ste_round(x: Tensor) -> Tensor:
    return x + (torch.round(x) - x).detach()


def _fake_weight(w: Tensor, floor: Tensor | None, bits: int = 8, scale: Tensor | None = None):
    """``w`` rounded to per-output-channel symmetric ``bits``-wide codes (8: -127..127,
    4: -7..7) at ``scale`` (default: as :func:`tinycvae.deploy.quantize.quantize` picks it
    for int8, the channel's largest |w| over the top code), at least ``floor``."""
    top = w_max(bits)
    if scale is None:
        scale = w.detach().reshape(w.shape[0], -1).abs().amax(1).clamp_min(1e-8) / top
    if floor is not None:
        scale = torch.maximum(scale, floor)
    shape = (-1,) + (1,) * (w.dim() - 1)
    return _ste_round(w / scale.reshape(shape)).clamp(-top, top) * scale.reshape(shape)


def _fake_act(x: Tensor, scale: float | Tensor, lo: int, hi: int) -> Tensor:
    return _ste_round(x / scale).clamp(lo, hi) * scale


@dataclass
class _LearnedSteps:
    """Log step sizes being trained: per stage, its weight channels' and its output's."""

    log_w: list[Tensor]
    log_out: Tensor

    @classmethod
    def start(cls, qm: QuantModel, device: torch.device) -> _LearnedSteps:
        log_w = [torch.tensor(np.log(qs.w_scale), dtype=torch.float32, device=device)
                 for qs in qm.stages]  # fmt: skip
        outs = [qs.out_scale for qs in qm.stages]
        return cls(log_w, torch.tensor(np.log(outs), dtype=torch.float32, device=device))

    def params(self) -> list[Tensor]:
        return [*self.log_w, self.log_out]

    def freeze(self, floor: Tensor) -> Steps:
        w = [t.detach().double().exp().cpu() for t in self.log_w]
        w[0] = torch.maximum(w[0], floor.detach().double().cpu())
        return Steps([v.numpy() for v in w], self.log_out.detach().double().exp().tolist())


def _table_floor(fm: FloatModel, qm: QuantModel) -> Tensor:
    """Stage 0's least weight scale: the one that keeps the class table in int16."""
    return fm.table.detach().abs().amax(0) / (32766 * qm.z_scale)


def fake_forward(
    fm: FloatModel, qm: QuantModel, z: Tensor, labels: Tensor, steps: _LearnedSteps | None = None
) -> Tensor:
    """Logits of ``fm`` under the integer runtime's rounding at ``qm``'s weight width
    (differentiable by STE), at ``qm``'s scales or the ``steps`` being learned, computed
    where ``fm`` is (``z`` and ``labels`` must be there)."""
    x = _fake_act(z, qm.z_scale, -127, 127)
    floor = _table_floor(fm, qm)
    weights = [
        _fake_weight(st.weight, floor if i == 0 else None, qm.bits,
                     None if steps is None else steps.log_w[i].exp())
        for i, st in enumerate(fm.stages)
    ]  # fmt: skip
    biases = [fm.table[labels]] + [st.bias for st in fm.stages[1:]]
    outs = [qs.out_scale for qs in qm.stages] if steps is None else steps.log_out.exp()

    def fake_requantise(i: int, y: Tensor) -> Tensor:
        if fm.stages[i].relu:
            return _fake_act(F.relu(y), outs[i], 0, ACT_MAX)
        return _fake_act(y, outs[i], -128, LOGIT_MAX)

    x = run_stages(fm.stages, x, weights, biases, fake_requantise)
    return x.reshape(x.shape[0], *fm.out_shape)


class KeepBest:
    """The fine-tuning epoch whose integer model ``score(tuned, steps)`` rates highest (the
    later one on a tie): offered a copy after every epoch, it keeps the best."""

    def __init__(self, score: Callable[[FloatModel, Steps], float]) -> None:
        self.score = score
        self.best: float = -math.inf
        self.epoch: int | None = None
        self.kept: tuple[FloatModel, Steps] | None = None

    def offer(self, epoch: int, tuned: FloatModel, steps: Steps) -> None:
        with torch.no_grad():
            score = float(self.score(tuned, steps))
        if score >= self.best:
            self.best, self.epoch, self.kept = score, epoch, (copy.deepcopy(tuned), steps)


def finetune(
    fm: FloatModel,
    qm: QuantModel,
    z: Tensor,
    labels: Tensor,
    epochs: int = 10,
    lr: float = 1e-3,
    batch_size: int = 256,
    seed: int = 0,
    keep: KeepBest | None = None,
) -> tuple[FloatModel, Steps]:
    """A copy of ``fm`` fine-tuned so that its integer form (``qm``'s width) draws ``fm``'s
    float images (the BCE to them), and the step sizes learned with it (quantise the copy
    at them): the last epoch's, or with ``keep`` the epoch it rated best. Trains where
    ``fm`` is; the batches are drawn with a CPU generator seeded by ``seed``, so they are
    the same on every device."""
    z, labels = z.to(fm.device), labels.to(fm.device)
    tuned = copy.deepcopy(fm)
    steps = _LearnedSteps.start(qm, fm.device)
    params = [tuned.table] + [
        p for st in tuned.stages for p in (st.weight, st.bias) if p is not None
    ]
    with torch.no_grad():
        target = torch.sigmoid(fm.forward(z, labels))
    batch_size = min(batch_size, len(z))
    opt = torch.optim.Adam([{"params": params}, {"params": steps.params(), "lr": lr}], lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(
        opt, epochs * max(1, len(z) // batch_size)
    )
    gen = torch.Generator().manual_seed(seed)
    with one_thread(fm.device):
        for epoch in range(1, epochs + 1):
            _set_grad(params + steps.params(), True)
            order = torch.randperm(len(z), generator=gen)
            for k in range(0, len(z) - batch_size + 1, batch_size):
                idx = order[k : k + batch_size].to(z.device)
                opt.zero_grad()
                logits = fake_forward(tuned, qm, z[idx], labels[idx], steps)
                F.binary_cross_entropy_with_logits(logits, target[idx]).backward()
                opt.step()
                sched.step()
            _set_grad(params + steps.params(), False)
            if keep is not None:
                keep.offer(epoch, tuned, steps.freeze(_table_floor(tuned, qm)))
    if keep is not None and keep.kept is not None:
        return keep.kept
    return tuned, steps.freeze(_table_floor(tuned, qm))


def _set_grad(params: list[Tensor], on: bool) -> None:
    for p in params:
        p.requires_grad_(on)
