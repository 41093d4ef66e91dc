"""The firmware's row streaming (``cvae_generate_rows``) on every decoder shape the
streaming walk distinguishes, built and run with the C compilers: the estimator's arena
is the one the runtime uses (its asserts check every buffer against it), and the streamed
pixels equal the whole-image ones and the Python reference (the golden test compares
both APIs with the golden vectors). Random weights, no training: a few seconds each."""

from __future__ import annotations

import re

import pytest
import torch
from torch import nn

from tinycvae.data.dice import dice_spec
from tinycvae.deploy import toolchain
from tinycvae.deploy.firmware import write_firmware
from tinycvae.deploy.quantize import quantize
from tinycvae.mcu.footprint import estimate
from tinycvae.mcu.stages import extract
from tinycvae.models import build_cvae

from conftest import needs_tools

DICE = dice_spec(32)
K = DICE.num_classes
needs_cc = needs_tools("cc", install="a host C compiler: gcc")
needs_rv = needs_tools(
    "riscv64-unknown-elf-gcc",
    "qemu-system-riscv32",
    install="gcc-riscv64-unknown-elf, picolibc-riscv64-unknown-elf, qemu-system-misc",
)


def export(tmp_path, arch: str, **dims):
    """Random-weight decoder -> int8 and fp32 model folders with 12 golden vectors."""
    torch.manual_seed(0)
    model = build_cvae(
        DICE, arch=arch, latent=1, latent_mode="bypass", conditioning={"kind": "onehot"}, **dims
    )
    for p in model.decoder.parameters():  # varied outputs, not a constant grey
        nn.init.normal_(p, std=0.3)
    model.eval()
    fm = extract(model.decoder, 1, K)
    labels = torch.arange(256) % K
    z = model.sampler(labels, torch.Generator().manual_seed(1))
    qm = quantize(fm, z, labels, bypass=True)
    write_firmware(tmp_path / "model", model, fm, qm, 12, 0)
    return model, tmp_path / "model"


def constants(model_dir) -> dict[str, int]:
    text = (model_dir / "cvae_model.h").read_text()
    return {k: int(v) for k, v in re.findall(r"#define (CVAE_\w+) (\d+)", text)}


# (arch, dims, whether the last layer gets its own accumulator row at int8)
SHAPES = {
    "conv narrow (rings 2, 2, 3, 2)": ("conv", dict(dim1=3, dim2=3, dim3=3, dim4=3), False),
    "conv wide grey (last layer reads one slot)": (
        "conv", dict(dim1=12, dim2=4, dim3=4, dim4=4), True,
    ),
    "mlp (the last Linear streams)": ("mlp", dict(hidden=16), False),
}  # fmt: skip


@needs_cc
@pytest.mark.parametrize("shape", SHAPES)
def test_streamed_pixels_are_the_whole_image_pixels(shape, tmp_path):
    arch, dims, own_row = SHAPES[shape]
    model, folder = export(tmp_path, arch, **dims)
    int8 = constants(folder / "int8")
    assert (int8["CVAE_LAST_ACC_ROW"] > 0) == own_row
    streamed = estimate(model.decoder, 1, K, "int8", stream=True)
    assert streamed.activation_bytes == int8["CVAE_ARENA_STREAM"]
    assert streamed.last_acc_row == own_row
    for precision in ("int8", "fp32"):
        out = toolchain.make("check-host", folder / precision, tmp_path / f"build-{precision}")
        assert toolchain.golden_result(out) == (12, 12), out[-800:]


@needs_rv
def test_the_one_slot_path_runs_on_the_ch32v003s_core(tmp_path):
    """The last layer's own accumulator row and one-slot ring, compiled for rv32ec and
    run under QEMU (asserts on, both APIs), within the CH32V003's stack."""
    _, folder = export(tmp_path, "conv", **SHAPES["conv wide grey (last layer reads one slot)"][1])
    out = toolchain.make("check-qemu-rv32", folder / "int8", tmp_path / "build")
    assert toolchain.golden_result(out) == (12, 12), out[-800:]
    assert toolchain.stack_high_water(out) < 320


def test_wider_streams_save_more():
    """Streaming keeps rows, not tensors: the streamed arena of 16_16_16_16 is under a
    fifth of its whole-image arena."""
    model = build_cvae(DICE, latent=1, latent_mode="bypass", dim1=16, dim2=16, dim3=16, dim4=16)
    whole = estimate(model.decoder, 1, K, "int8")
    streamed = estimate(model.decoder, 1, K, "int8", stream=True)
    assert streamed.activation_bytes * 5 < whole.activation_bytes
