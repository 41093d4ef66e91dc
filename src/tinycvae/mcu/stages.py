"""The decoder as the microcontroller runs it: one walk that turns a decoder into stages.

Both the footprint estimator (:mod:`tinycvae.mcu.footprint`) and the exporter
(:mod:`tinycvae.deploy.quantize`, then the C files) read the stages :func:`extract` makes,
so they always describe the same layers and refuse the same ones.

A decoder (``(z, label) -> logits``: a label condition, then a body that is an
``nn.Sequential``) becomes a chain of :class:`Stage` s, as ``deploy/CONTRACT.md`` defines
them:

* **Stage 0** is the body's first ``nn.Linear``. Every conditioning is affine in z, so the
  label's effect on that layer is a constant per class: a ``K x out`` table that also holds
  the layer's bias (:func:`fold_label`). The stage keeps only the ``out x latent`` weights
  that multiply z, and no bias.
* **Every later stage** is an ``nn.Linear`` (reading a flat vector) or an
  ``nn.ConvTranspose2d`` with kernel 3, the same stride 1 or 2 on both axes, padding 1,
  any output padding, no dilation and no groups.
* **A ReLU follows every stage but the last** (the runtime fuses it into the stage); the
  last stage's outputs are the logits. ``Flatten``, ``Unflatten`` and ``Identity`` only
  reshape and are skipped.

Anything else is refused with an :class:`UnsupportedModelError`: one line naming the layer
(``decoder.body.<index>``) and what is allowed. :func:`run_stages` is the one loop that
computes the stages in Python, in float (:meth:`FloatModel.forward`), under fake
quantisation (:mod:`tinycvae.deploy.qat`) and in the runtime's integers
(:func:`tinycvae.deploy.quantize.run_int8`).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tinycvae.errors import ConfigError

LINEAR = "linear"
CONV_T = "convT"  # a transposed convolution
KERNEL = 3  # the one transposed-conv kernel size the runtime implements (CVAE_KERNEL)
KINDS = (LINEAR, CONV_T)
RESHAPES = (nn.Flatten, nn.Unflatten, nn.Identity)
ALLOWED = (
    "allowed: a first Linear, then Linear or ConvTranspose2d (kernel 3, stride 1 or 2, "
    "padding 1, no dilation or groups), each but the last followed by a ReLU; "
    "Flatten, Unflatten and Identity anywhere"
)


class UnsupportedModelError(ConfigError):
    """The decoder has a layer or shape the C runtime does not implement."""


@dataclass
class Stage:
    """One deployed layer in float, ``weight`` in the runtime's layout (``deploy/CONTRACT.md``)."""

    kind: str  # LINEAR or CONV_T
    name: str  # where it is in the decoder: "body.<index>"
    relu: bool  # a ReLU follows (fused)
    in_shape: tuple[int, int, int]  # (C, H, W); a linear's is (features, 1, 1)
    out_shape: tuple[int, int, int]
    weight: Tensor  # linear [out, in]; convT [out, in, k, k]
    bias: Tensor | None  # None on stage 0: folded into the class table
    stride: int = 1
    pad: int = 0
    kernel: int = 1
    output_padding: tuple[int, int] = (0, 0)

    @property
    def out_channels(self) -> int:
        return self.weight.shape[0]

    def layer(self, x: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
        """This stage's layer (no ReLU) on ``x`` with the given ``weight`` and ``bias`` (a
        linear's may be per sample, ``[N, out]``); ``x`` is reshaped to the stage's input
        and cast to the weight's dtype."""
        x = x.to(weight.dtype)
        if self.kind == LINEAR:
            return x.reshape(x.shape[0], -1) @ weight.T + bias
        return F.conv_transpose2d(
            x.reshape(x.shape[0], *self.in_shape),
            weight.transpose(0, 1),
            bias,
            self.stride,
            self.pad,
            self.output_padding,
        )


def run_stages(
    stages: Sequence[Stage],
    x: Tensor,
    weights: Sequence[Tensor],
    biases: Sequence[Tensor],
    finish: Callable[[int, Tensor], Tensor],
) -> Tensor:
    """Compute the stages in order: stage ``i`` runs its layer on ``x`` with ``weights[i]``
    and ``biases[i]``, and ``finish(i, out)`` turns the layer's output into the next
    stage's input (a ReLU, a rounding, a requantisation). Returns the last one's."""
    for i, (stage, weight, bias) in enumerate(zip(stages, weights, biases, strict=True)):
        x = finish(i, stage.layer(x, weight, bias))
    return x


@dataclass
class FloatModel:
    """The float decoder in deployed form: the class ``table [K, out0]`` plus the stages."""

    table: Tensor
    stages: list[Stage]
    num_classes: int
    latent: int
    out_shape: tuple[int, int, int]

    @property
    def device(self) -> torch.device:
        return self.table.device

    def to(self, device: torch.device | str) -> FloatModel:
        """A copy with every tensor on ``device`` (the tensors are shared where they are
        there already)."""

        def move(t: Tensor | None) -> Tensor | None:
            return None if t is None else t.to(device)

        stages = [
            dataclasses.replace(s, weight=move(s.weight), bias=move(s.bias)) for s in self.stages
        ]
        return dataclasses.replace(self, table=move(self.table), stages=stages)

    def forward(self, z: Tensor, labels: Tensor, capture: list[Tensor] | None = None) -> Tensor:
        """Logits; ``capture`` collects every stage's output (after its ReLU). ``z`` and
        ``labels`` must be on :attr:`device`."""

        def finish(i: int, y: Tensor) -> Tensor:
            y = F.relu(y) if self.stages[i].relu else y
            if capture is not None:
                capture.append(y)
            return y

        weights = [s.weight for s in self.stages]
        biases = [self.table[labels]] + [s.bias for s in self.stages[1:]]
        x = run_stages(self.stages, z.float(), weights, biases, finish)
        return x.reshape(x.shape[0], *self.out_shape)


def run_fp32(fm: FloatModel, z: Tensor, labels: Tensor) -> Tensor:
    """Pixels in [0, 1] (float32, on the CPU) from the float stages: the reference of the
    firmware's fp32 path. Computed where ``fm`` is."""
    z, labels = z.to(fm.device), labels.to(fm.device)
    with torch.no_grad():
        return torch.sigmoid(fm.forward(z, labels)).cpu()


def _refuse(where: str, what: str) -> UnsupportedModelError:
    return UnsupportedModelError(f"{where}: {what}; {ALLOWED}")


def _shape3(shape: tuple[int, ...]) -> tuple[int, int, int]:
    return tuple(shape) if len(shape) == 3 else (math.prod(shape), 1, 1)  # type: ignore[return-value]


def _probe(decoder: nn.Module, latent: int) -> list[tuple[nn.Module, tuple, tuple]]:
    """``(module, input shape, output shape)`` of each body module, without the batch
    axis, from one forward pass with z = 0 and label 0."""
    body = getattr(decoder, "body", None)
    if not isinstance(body, nn.Sequential):
        raise UnsupportedModelError(
            f"the decoder's body is {type(body).__name__}, not an nn.Sequential; {ALLOWED}"
        )
    started: list[tuple[int, tuple]] = []  # (index, input shape) of each module entered
    seen: list[tuple[nn.Module, tuple, tuple]] = []
    hooks = []
    for i, m in enumerate(body):
        hooks.append(m.register_forward_pre_hook(
            lambda m, inp, i=i: started.append((i, tuple(inp[0].shape[1:])))
        ))  # fmt: skip
        hooks.append(m.register_forward_hook(
            lambda m, inp, out: seen.append((m, tuple(inp[0].shape[1:]), tuple(out.shape[1:])))
        ))  # fmt: skip
    p = next(decoder.parameters(), torch.zeros(0))
    try:
        with torch.no_grad():
            decoder(
                torch.zeros(1, latent, dtype=p.dtype, device=p.device),
                torch.zeros(1, dtype=torch.long, device=p.device),
            )
    except Exception as err:  # noqa: BLE001 - a layer that cannot run is one line
        i, shape = started[-1] if started else (0, (latent,))
        why = f"{type(err).__name__}: {str(err).splitlines()[0][:200]}" if str(err) else ""
        raise _refuse(
            f"decoder.body.{i}", f"{type(body[i]).__name__} fails on a {shape} input ({why})"
        ) from None
    finally:
        for h in hooks:
            h.remove()
    return seen


@torch.no_grad()
def fold_label(decoder: nn.Module, latent: int, num_classes: int) -> tuple[Tensor, Tensor]:
    """The deployed first layer: ``table [K, out]`` (label + bias) and ``z_weight
    [out, latent]``, so that ``body[0](condition(z, k)) == z_weight @ z + table[k]``.
    Exact for every conditioning, since each is affine in z."""
    index = next(i for i, m in enumerate(decoder.body) if isinstance(m, nn.Linear))
    first = decoder.body[: index + 1]  # reshapes (no-ops on a flat vector), then the Linear
    p = next(decoder.parameters())
    labels = torch.arange(num_classes, device=p.device)
    table = first(
        decoder.condition(torch.zeros(num_classes, latent, dtype=p.dtype, device=p.device), labels)
    )
    eye = torch.eye(latent, dtype=p.dtype, device=p.device)
    zero = torch.zeros(latent, dtype=torch.long, device=p.device)
    z_weight = (first(decoder.condition(eye, zero)) - table[0]).T
    return table, z_weight


def _bias(m: nn.Module, out: int, device: torch.device) -> Tensor:
    """A layer's bias; zeros when it has none (the runtime always adds one)."""
    bias = m.bias if m.bias is not None else torch.zeros(out, device=device)
    return bias.detach().float()


def _linear(m: nn.Linear, name: str, ins: tuple, outs: tuple) -> Stage:
    if len(ins) != 1:
        raise _refuse(f"decoder.{name}", f"Linear reads a {len(ins)}-D input {ins}, not a flat one")
    weight = m.weight.detach().float()
    bias = _bias(m, m.out_features, weight.device)
    return Stage(LINEAR, name, False, _shape3(ins), _shape3(outs), weight, bias)


def _conv_t(m: nn.ConvTranspose2d, name: str, ins: tuple, outs: tuple) -> Stage:
    k, s, p = m.kernel_size, m.stride, m.padding
    if not (
        k == (KERNEL, KERNEL)
        and s[0] == s[1]
        and s[0] in (1, 2)
        and p == (1, 1)
        and m.dilation == (1, 1)
        and m.groups == 1
    ):
        raise _refuse(
            f"decoder.{name}",
            f"ConvTranspose2d with kernel {k}, stride {s}, padding {p}, dilation "
            f"{m.dilation}, groups {m.groups} is not supported",
        )
    weight = m.weight.detach().float().transpose(0, 1).contiguous()
    bias = _bias(m, m.out_channels, weight.device)
    return Stage(
        CONV_T, name, False, _shape3(ins), _shape3(outs), weight, bias,
        s[0], 1, KERNEL, tuple(m.output_padding),
    )  # fmt: skip


def extract(decoder: nn.Module, latent: int, num_classes: int) -> FloatModel:
    """The decoder as deployed stages (see the module doc), on the decoder's device;
    :class:`UnsupportedModelError` for anything the runtime does not implement."""
    seen = _probe(decoder, latent)
    stages: list[Stage] = []
    table = None
    for i, (m, ins, outs) in enumerate(seen):
        name, where = f"body.{i}", f"decoder.body.{i}"
        if isinstance(m, RESHAPES):
            continue
        if isinstance(m, nn.ReLU):
            if not stages or stages[-1].relu:
                raise _refuse(where, "a ReLU must follow a Linear or a ConvTranspose2d")
            stages[-1].relu = True
        elif not stages and not isinstance(m, nn.Linear):
            raise _refuse(where, f"the decoder starts with {type(m).__name__}, not a Linear")
        elif not stages:
            _linear(m, name, ins, outs)  # the same refusals as any Linear
            table, z_weight = fold_label(decoder, latent, num_classes)
            stages.append(
                Stage(LINEAR, name, False, (latent, 1, 1), _shape3(outs), z_weight.float(), None)
            )
        elif isinstance(m, nn.Linear):
            stages.append(_linear(m, name, ins, outs))
        elif isinstance(m, nn.ConvTranspose2d):
            stages.append(_conv_t(m, name, ins, outs))
        else:
            raise _refuse(where, f"{type(m).__name__} is not supported by the C runtime")
    if not stages:
        raise UnsupportedModelError(f"the decoder has no Linear layer; {ALLOWED}")
    if stages[-1].relu:
        raise UnsupportedModelError(
            f"the decoder ends with a ReLU; the last Linear or ConvTranspose2d gives the "
            f"logits; {ALLOWED}"
        )
    for st in stages[:-1]:
        if not st.relu:
            raise _refuse(f"decoder.{st.name}", f"{st.kind} has no ReLU after it")
    assert table is not None
    return FloatModel(table.detach().float(), stages, num_classes, latent, _shape3(seen[-1][2]))
