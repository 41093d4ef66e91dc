"""Cross-layer equalisation (Nagel et al., "Data-Free Quantization Through Weight
Equalization and Bias Correction", 2019) of the deployed float stages: the same function,
weights easier to quantise per output channel.

Between two stages a ReLU sits, and ``relu(x / s) = relu(x) / s`` for ``s > 0``: dividing
stage ``i``'s output channel ``c`` (its weights and bias, or stage 0's class-table column)
by ``s_c`` and multiplying stage ``i + 1``'s input channel ``c`` by ``s_c`` leaves the
decoder's output unchanged. The runtime quantises each output channel with one scale for
all its input channels, so a narrow decoder whose input channels differ widely in
magnitude loses its small ones to rounding (4-bit codes: a weight below 1/14 of its
channel's largest becomes 0). ``s_c = sqrt(r1_c / r2_c)`` (``r1``: channel ``c``'s largest
|weight| in stage ``i``, ``r2``: in stage ``i + 1``) gives both the same range.
"""

from __future__ import annotations

import copy

import torch

from tinycvae.mcu.stages import LINEAR, FloatModel


def _out_groups(fm: FloatModel, i: int) -> torch.Tensor:
    """Stage ``i``'s output rows as ``[C, rows per channel, ...]``: a linear's outputs are
    reshaped to the next stage's ``(C, H, W)`` input, channel-major."""
    w = fm.stages[i].weight
    channels = fm.stages[i + 1].in_shape[0]
    return w.reshape(channels, -1)


def equalize(fm: FloatModel, sweeps: int = 8) -> FloatModel:
    """A copy of ``fm`` with every ReLU-joined pair of stages equalised (``sweeps`` passes
    over the pairs, since each stage belongs to two pairs); the same function up to
    float rounding."""
    out = copy.deepcopy(fm)
    with torch.no_grad():
        for _ in range(sweeps):
            for i in range(len(out.stages) - 1):
                if out.stages[i].relu:
                    _balance(out, i)
    return out


def _balance(fm: FloatModel, i: int) -> None:
    st, nxt = fm.stages[i], fm.stages[i + 1]
    channels = nxt.in_shape[0]
    r1 = _out_groups(fm, i).abs().amax(1)
    w2 = nxt.weight  # linear [out, in]; convT [out, in, k, k]: input channel c is [:, c]
    if nxt.kind == LINEAR:
        r2 = w2.reshape(w2.shape[0], channels, -1).abs().amax(dim=(0, 2))
    else:
        r2 = w2.abs().amax(dim=(0, 2, 3))
    ok = (r1 > 0) & (r2 > 0)
    s = torch.where(ok, torch.sqrt(r1 / r2.clamp_min(1e-12)), torch.ones_like(r1))
    per_row = s.repeat_interleave(st.weight.shape[0] // channels)
    st.weight /= per_row.reshape((-1,) + (1,) * (st.weight.dim() - 1))
    if i == 0:
        fm.table /= per_row[None, :]
    else:
        st.bias /= per_row
    if nxt.kind == LINEAR:
        cols = s.repeat_interleave(w2.shape[1] // channels)
        nxt.weight *= cols[None, :]
    else:
        nxt.weight *= s.reshape(1, -1, 1, 1)
