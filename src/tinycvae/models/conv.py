"""The convolutional encoder and decoder of the electronic-die article (docs/references.md),
generalised to any channels and size.

Encoder: Conv 3x3 with strides 2, 1, 2, 2 and widths dim1, dim2, dim3, dim3.
Decoder: Linear -> dim4 x h0 x w0 -> ConvTranspose 3x3 with strides 2, 2, 1, 2 and widths
dim3, dim2, dim1, channels. Each transposed layer's output padding is chosen so that the
decoder retraces the encoder's spatial sizes exactly (32 -> 16 -> 16 -> 8 -> 4 for dice,
28 -> 14 -> 14 -> 7 -> 4 for MNIST), so no size is hard-coded.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from tinycvae.checks import require_int
from tinycvae.data.base import DataSpec
from tinycvae.errors import ConfigError
from tinycvae.models.builder import Shared
from tinycvae.models.cvae import CVAE

STRIDES = (2, 1, 2, 2)
MIN_SIZE = 8


def _down(n: int, stride: int) -> int:
    return (n - 1) // stride + 1  # kernel 3, padding 1


def spatial_chain(n: int) -> list[int]:
    """Sizes along one axis: the input, then after each encoder layer."""
    sizes = [n]
    for s in STRIDES:
        sizes.append(_down(sizes[-1], s))
    return sizes


def check_dims(dims: tuple[int, ...], shape: tuple[int, int, int]) -> None:
    for i, d in enumerate(dims, start=1):
        require_int(d, f"model.dim{i}", 1)
    _, h, w = shape
    if min(h, w) < MIN_SIZE:
        raise ConfigError(
            f"data shape {h}x{w} is too small for the conv architecture; allowed: "
            f"height and width >= {MIN_SIZE} (three stride-2 stages)"
        )


def encoder_backbone(
    in_channels: int, shape: tuple[int, int, int], dims: tuple[int, int, int, int]
) -> tuple[nn.Module, int]:
    d1, d2, d3, _ = dims
    widths = (d1, d2, d3, d3)
    layers: list[nn.Module] = []
    c = in_channels
    for width, stride in zip(widths, STRIDES):
        layers += [nn.Conv2d(c, width, 3, stride=stride, padding=1), nn.ReLU()]
        c = width
    h, w = spatial_chain(shape[1])[-1], spatial_chain(shape[2])[-1]
    return nn.Sequential(*layers, nn.Flatten()), c * h * w


def decoder_body(
    in_dim: int, shape: tuple[int, int, int], dims: tuple[int, int, int, int]
) -> nn.Module:
    d1, d2, d3, d4 = dims
    channels = shape[0]
    hs, ws = spatial_chain(shape[1]), spatial_chain(shape[2])
    layers: list[nn.Module] = [
        nn.Linear(in_dim, d4 * hs[-1] * ws[-1]),
        nn.ReLU(),
        nn.Unflatten(1, (d4, hs[-1], ws[-1])),
    ]
    widths = (d4, d3, d2, d1, channels)
    for i in range(4):  # decoder layer i undoes encoder layer 3 - i
        k = 3 - i
        stride = STRIDES[k]
        # ConvTranspose(k=3, p=1) gives (n - 1) * stride + 1 + output_padding
        pad = (hs[k] - ((hs[k + 1] - 1) * stride + 1), ws[k] - ((ws[k + 1] - 1) * stride + 1))
        layers.append(
            nn.ConvTranspose2d(widths[i], widths[i + 1], 3, stride, padding=1, output_padding=pad)
        )
        if i < 3:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def build(
    spec: DataSpec, dim1: int = 8, dim2: int = 8, dim3: int = 16, dim4: int = 16, **shared: Any
) -> CVAE:
    """The conv CVAE for data ``spec`` (the ``_target_`` of conf/model/conv.yaml);
    ``shared``: the keys every architecture takes (:class:`~tinycvae.models.builder.Shared`).
    Every bad value raises a one-line ConfigError."""
    common = Shared.of(spec, "conv", shared)
    dims = (dim1, dim2, dim3, dim4)
    check_dims(dims, spec.shape)
    return common.assemble(
        lambda label_planes: encoder_backbone(spec.channels + label_planes, spec.shape, dims),
        lambda width: decoder_body(width, spec.shape, dims),
        label_input="planes",
    )
