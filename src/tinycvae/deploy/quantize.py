"""Post-training int8 / int4 quantisation of the deployed stages, and its exact reference.

:func:`quantize` calibrates activation scales on the activations the decoder sees for the
training set and turns the float stages (:func:`tinycvae.mcu.stages.extract`) into the
integer form of ``deploy/CONTRACT.md``: int8 (``bits=8``, codes -127..127) or int4
(``bits=4``, codes -7..7) weights per output channel, int32 biases, an int16 class table,
one requantisation word per output channel and a sigmoid lookup table; activations are
uint8 and accumulators int32 at both widths. :func:`run_int8` computes exactly what the C
runtime computes (integer arithmetic, bit for bit) for either width; :func:`pack_nibbles`
is the int4 weights' layout in flash (two per byte, low nibble first).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from tinycvae.mcu.stages import FloatModel, Stage, UnsupportedModelError, run_stages

ACT_MAX = 255  # hidden activations: uint8 after the fused ReLU
LOGIT_MAX = 127  # last stage: int8 logits
W_MAX = 127  # int8 weights, symmetric
W4_MAX = 7  # int4 weights, symmetric: -7..7 (the nibble's -8 is never produced)
BITS = {"int8": 8, "int4": 4}  # weight width of each integer precision
INT32_MAX = 2**31 - 1
Z_MAX = 127  # int8 latents, symmetric
A_LIMIT = 32767  # |pre-shifted accumulator| before the multiplier (CONTRACT: clamp)
M_BITS = 15  # requant multipliers in [2^14, 2^15)
MAX_SHIFT = 30
TABLE_MAX = 32767  # int16 class-table entries
LOGIT_CLIP = 7.0  # sigmoid(7) = 0.9991 -> pixel 255: larger logits need no codes


@dataclass
class Requant:
    m: np.ndarray  # int16 values, one per output channel
    pre: np.ndarray
    shift: np.ndarray


@dataclass
class QuantStage:
    stage: Stage
    weight: np.ndarray  # int8, the runtime's layout
    bias: np.ndarray | None  # int32
    requant: Requant
    w_scale: np.ndarray  # float, per output channel
    in_scale: float
    out_scale: float


@dataclass
class Steps:
    """Step sizes to quantise at instead of calibrating them (what quantisation-aware
    fine-tuning learned): per stage, its weight channels' scales and its output's."""

    weight: list[np.ndarray]
    out: list[float]


@dataclass
class QuantModel:
    """The int8 decoder the C runtime runs (see CONTRACT.md)."""

    float_model: FloatModel
    stages: list[QuantStage]
    table: np.ndarray  # int16 [K, out0]
    table_shift: int
    z_scale: float
    logit_scale: float
    sigmoid_lut: np.ndarray  # uint8 [256], index = logit + 128
    act_scales: list[float] = field(default_factory=list)
    bits: int = 8  # weight width: 8 (int8) or 4 (int4, packed two per byte in C)

    @property
    def precision(self) -> str:
        return f"int{self.bits}"

    @property
    def z_one(self) -> int:
        return int(round(1.0 / self.z_scale))

    def quantize_z(self, z: Tensor) -> np.ndarray:
        q = torch.round(z.double().cpu() / self.z_scale).clamp(-Z_MAX, Z_MAX)
        return q.to(torch.int64).numpy().astype(np.int8)


def _requant(scale: np.ndarray, bound: np.ndarray) -> Requant:
    """Per channel: ``pre`` so that the bound fits A_LIMIT, then ``m * 2^-shift`` for the
    real multiplier ``scale * 2^pre`` with ``m`` in [2^14, 2^15)."""
    pre = np.zeros(len(scale), dtype=np.int64)
    m = np.zeros(len(scale), dtype=np.int64)
    shift = np.zeros(len(scale), dtype=np.int64)
    for o, (s, b) in enumerate(zip(scale, bound)):
        p = 0
        while (int(b) >> p) > A_LIMIT:
            p += 1
        real = float(s) * 2.0**p
        if real <= 0:
            m[o], shift[o], pre[o] = 0, MAX_SHIFT, p
            continue
        sh = M_BITS - 1 - math.floor(math.log2(real))
        mm = round(real * 2.0**sh)
        if mm >= 2**M_BITS:
            sh -= 1
            mm = round(real * 2.0**sh)
        if sh > MAX_SHIFT:
            sh, mm = MAX_SHIFT, round(real * 2.0**MAX_SHIFT)
        if sh < 1:
            raise UnsupportedModelError(
                f"a requantisation multiplier of {real:.4g} is out of range; allowed: < 2^13 "
                "(the model's activation scales are degenerate)"
            )
        m[o], shift[o], pre[o] = mm, sh, p
    return Requant(m, pre, shift)


def w_max(bits: int) -> int:
    """The largest weight code at ``bits`` (symmetric range -w_max..w_max)."""
    if bits not in (8, 4):
        raise ValueError(f"weight width {bits} is unsupported; allowed: 8, 4")
    return W_MAX if bits == 8 else W4_MAX


def pack_nibbles(values: np.ndarray) -> np.ndarray:
    """int4 codes (-8..7, any shape, read flat) -> ``ceil(n / 2)`` bytes: element ``t`` in
    byte ``t // 2``, in its low nibble for even ``t``, its high nibble for odd ``t`` (an odd
    count leaves the last high nibble 0). The layout of CONTRACT.md's int4 weights."""
    v = np.asarray(values).astype(np.int64).ravel()
    if v.size and (v.min() < -8 or v.max() > 7):
        raise ValueError(f"int4 codes must lie in -8..7, got {v.min()}..{v.max()}")
    nib = (v & 0xF).astype(np.uint8)
    if nib.size % 2:
        nib = np.append(nib, np.uint8(0))
    return (nib[0::2] | (nib[1::2] << 4)).astype(np.uint8)


def unpack_nibbles(packed: np.ndarray, n: int) -> np.ndarray:
    """The first ``n`` int4 codes of :func:`pack_nibbles`' bytes, sign-extended (int8), as
    the C runtime unpacks them: ``((int8_t)(b << 4)) >> 4`` low, ``((int8_t)b) >> 4`` high."""
    b = np.asarray(packed, dtype=np.uint8).astype(np.int64)
    lo = ((b << 4) & 0xFF).astype(np.uint8).view(np.int8).astype(np.int64) >> 4
    hi = b.astype(np.uint8).view(np.int8).astype(np.int64) >> 4
    out = np.empty(2 * len(b), dtype=np.int64)
    out[0::2], out[1::2] = lo, hi
    if n > len(out):
        raise ValueError(f"{len(b)} bytes hold at most {len(out)} int4 codes, not {n}")
    return out[:n].astype(np.int8)


SEARCH = np.linspace(0.5, 1.0, 26)  # int4 scale search: fractions of the largest |w|


def _search_scales(flat: Tensor, top: int) -> Tensor:
    """Per channel, the scale among ``SEARCH`` x max|w| / top whose rounding (with
    clipping) leaves the least squared error: at 4 bits, clipping the largest weight
    a little buys finer steps for all the others."""
    amax = flat.abs().amax(dim=1, keepdim=True)
    cand = amax * torch.from_numpy(SEARCH)[None, :] / top  # [C, S]
    q = torch.round(flat[:, None, :] / cand[..., None]).clamp(-top, top) * cand[..., None]
    err = ((q - flat[:, None, :]) ** 2).sum(-1)
    return cand.gather(1, err.argmin(1, keepdim=True)).squeeze(1)


def _weights(
    w: Tensor, floor: Tensor | None = None, bits: int = 8, scale: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Per-output-channel symmetric weights of ``bits`` and their scales (at least
    ``floor``): ``scale`` where given, else int8's largest |w| over 127, int4's searched
    (:func:`_search_scales`)."""
    top = w_max(bits)
    flat = w.detach().cpu().reshape(w.shape[0], -1).double()
    if scale is not None:
        scale = torch.from_numpy(np.asarray(scale, dtype=np.float64))
    elif bits == 4:
        scale = _search_scales(flat, top)
    else:
        scale = flat.abs().amax(dim=1) / top
    if floor is not None:
        scale = torch.maximum(scale, floor)
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    q = torch.round(flat / scale[:, None]).clamp(-top, top).reshape(w.shape)
    return q.to(torch.int64).numpy().astype(np.int8), scale.numpy()


@contextlib.contextmanager
def one_thread(device: torch.device) -> Iterator[None]:
    """Torch on one CPU thread inside (on the CPU): sums in one order, so that scales and
    fine-tuning come out the same on every run and machine, whatever the thread count."""
    before = torch.get_num_threads()
    if device.type == "cpu":
        torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def calibration_ranges(
    fm: FloatModel, z: Tensor, labels: Tensor, batch_size: int = 2048
) -> list[float]:
    """Per stage: the largest output the calibration inputs produce (after the ReLU;
    the last stage: the largest |logit|). Computed where ``fm`` is."""
    peaks = [0.0] * len(fm.stages)
    with torch.no_grad(), one_thread(fm.device):
        for i in range(0, len(z), batch_size):
            outs: list[Tensor] = []
            zb, yb = z[i : i + batch_size], labels[i : i + batch_size]
            fm.forward(zb.to(fm.device), yb.to(fm.device), outs)
            for k, o in enumerate(outs):
                peaks[k] = max(peaks[k], float(o.abs().max()))
    return peaks


def quantize(
    fm: FloatModel,
    z: Tensor,
    labels: Tensor,
    bypass: bool,
    bits: int = 8,
    steps: Steps | None = None,
) -> QuantModel:
    """Post-training quantisation calibrated on ``(z, labels)``: the latents the decoder
    sees for the training set (posterior means, or the known factors) and the sampler's
    draws. Bypass factors are uniform in [-1, 1]: z = 1.0 is code 127. Weights are int8
    (``bits=8``) or int4 (``bits=4``); everything else is the same at both widths.
    With ``steps`` (learned by fine-tuning) the weight and output scales are those, not
    calibrated ones. Calibration runs where ``fm`` is; the integer model is built on the
    CPU.

    An accumulator that could pass int32 is refused (one line: the stage, its worst
    channel and the bound |table or bias| + sum |w| x input peak, against 2^31 - 1)."""
    w_max(bits)  # refuses another width
    zmax = 1.0 if bypass else max(float(z.abs().max()), 1e-6)
    z_scale = zmax / Z_MAX
    act_scales, logit_scale = _output_scales(fm, z, labels, steps)
    out_scales = act_scales + [logit_scale]
    table = fm.table.detach().cpu().double()

    stages: list[QuantStage] = []
    in_scale = z_scale
    table_q = np.zeros(0)
    table_shift = 0
    for i, st in enumerate(fm.stages):
        # Stage 0: the class table shares the accumulator scale s_z * s_w[o]; a channel
        # whose z-weights are tiny next to its table entries gets a coarser weight scale
        # so that its entries fit int16 (the table's step then stays far below one
        # output step, and CVAE_TABLE_SHIFT stays 0).
        floor = table.abs().amax(dim=0) / ((TABLE_MAX - 1) * z_scale) if i == 0 else None
        wq, ws = _weights(st.weight, floor, bits, None if steps is None else steps.weight[i])
        acc_scale = in_scale * ws  # per output channel
        wabs = np.abs(wq.astype(np.int64)).reshape(len(ws), -1).sum(axis=1)
        in_peak = Z_MAX if i == 0 else ACT_MAX
        if i == 0:
            table_q, table_shift, const = _class_table(table, acc_scale)
            bias_q = None
        else:
            bias_f = np.round(st.bias.detach().cpu().double().numpy() / acc_scale)
            const = np.abs(bias_f)  # float: a bias far out of scale may not fit int64
        bound = const + in_peak * wabs.astype(np.float64)
        _check_accumulator(bound, i, fm, bits, in_peak)
        if i > 0:
            bias_q = bias_f.astype(np.int64).astype(np.int32)
        bound = np.round(bound).astype(np.int64)
        rq = _requant(acc_scale / out_scales[i], bound)
        stages.append(QuantStage(st, wq, bias_q, rq, ws, in_scale, out_scales[i]))
        in_scale = out_scales[i]

    lut = _sigmoid_table(logit_scale)
    return QuantModel(fm, stages, table_q, table_shift, z_scale, logit_scale, lut, act_scales, bits)


def _output_scales(
    fm: FloatModel, z: Tensor, labels: Tensor, steps: Steps | None
) -> tuple[list[float], float]:
    """Each stage's output scale (uint8 activations, then the int8 logits): calibrated on
    ``(z, labels)``, or the steps fine-tuning learned."""
    if steps is not None:
        return [float(v) for v in steps.out[:-1]], float(steps.out[-1])
    peaks = calibration_ranges(fm, z, labels)
    act_scales = [max(p, 1e-6) / ACT_MAX for p in peaks[:-1]]
    return act_scales, min(max(peaks[-1], 1e-3), LOGIT_CLIP) / LOGIT_MAX


def _class_table(table, acc_scale: np.ndarray) -> tuple[np.ndarray, int, np.ndarray]:
    """The class table as int16 entries on the first stage's accumulator scale (shifted
    right by ``table_shift`` bits where it would not fit), and each channel's largest
    |entry| in accumulator units (for the overflow bound)."""
    t_acc = table.numpy() / acc_scale[None, :]
    table_shift = 0
    while np.abs(t_acc).max() / 2.0**table_shift > TABLE_MAX:
        table_shift += 1
    table_q = np.clip(np.round(t_acc / 2.0**table_shift), -TABLE_MAX, TABLE_MAX)
    table_q = table_q.astype(np.int16)
    const = np.abs(table_q.astype(np.int64)).max(axis=0) << table_shift
    return table_q, table_shift, const


def _check_accumulator(bound: np.ndarray, i: int, fm: FloatModel, bits: int, in_peak: int):
    """One line when stage ``i``'s worst case could pass int32."""
    if bound.max() > INT32_MAX:
        o = int(np.argmax(bound))
        raise UnsupportedModelError(
            f"precision=int{bits}: stage {i} ({fm.stages[i].kind}) can overflow its "
            f"int32 accumulator: channel {o}'s worst case |sum| = "
            f"{'|table|' if i == 0 else '|bias|'} + sum |w| x {in_peak} = {bound[o]:.0f} > "
            f"2^31 - 1 = {INT32_MAX} (weights or biases far out of scale)"
        )


def _sigmoid_table(logit_scale: float) -> np.ndarray:
    """The 256-entry uint8 sigmoid of every int8 logit code at ``logit_scale``."""
    codes = np.arange(-128, 128, dtype=np.float64) * logit_scale
    return np.round(255.0 / (1.0 + np.exp(-codes))).astype(np.uint8)


def _apply_requant(acc: Tensor, rq: Requant, channel_dim: int, relu: bool) -> Tensor:
    shape = [1] * acc.dim()
    shape[channel_dim] = -1

    def per_channel(v: np.ndarray) -> Tensor:
        return torch.from_numpy(v.astype(np.int64)).reshape(shape)

    a = torch.bitwise_right_shift(acc, per_channel(rq.pre)).clamp(-A_LIMIT - 1, A_LIMIT)
    shift = per_channel(rq.shift)
    y = torch.bitwise_right_shift(
        a * per_channel(rq.m) + torch.bitwise_left_shift(torch.ones_like(shift), shift - 1), shift
    )
    return y.clamp(0, ACT_MAX) if relu else y.clamp(-128, LOGIT_MAX)


def run_int8(qm: QuantModel, zq: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Pixels (uint8 [N, C, H, W]) exactly as the C runtime computes them, on the CPU, for
    int8 and int4 models alike (``qm``'s weights are the codes, unpacked).

    The accumulators are computed in float64, which holds them exactly: every partial sum
    is an integer below the int32 bound that :func:`quantize` checked (far below 2^53)."""
    x = torch.from_numpy(np.asarray(zq, dtype=np.int64))
    lab = torch.from_numpy(np.asarray(labels, dtype=np.int64))
    table = torch.from_numpy(qm.table.astype(np.float64))[lab] * 2**qm.table_shift
    weights = [torch.from_numpy(qs.weight.astype(np.float64)) for qs in qm.stages]
    biases = [table] + [torch.from_numpy(qs.bias.astype(np.float64)) for qs in qm.stages[1:]]

    def requantise(i: int, acc: Tensor) -> Tensor:
        qs = qm.stages[i]
        return _apply_requant(torch.round(acc).to(torch.int64), qs.requant, 1, qs.stage.relu)

    stages = [qs.stage for qs in qm.stages]
    logits = run_stages(stages, x, weights, biases, requantise)
    logits = logits.reshape(logits.shape[0], *qm.float_model.out_shape)
    return qm.sigmoid_lut[(logits + 128).numpy()]
