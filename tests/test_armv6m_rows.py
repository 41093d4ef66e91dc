"""The generated ARMv6-M row kernels (``tinycvae.mcu.armv6m_rows``) on every shape their
generator tells apart, built for the Cortex-M0+ and run under QEMU: stride 1 and 2, one to
nine output channels (register groups of 3 on stride 1, of 2 on stride 2, and one channel
on two input columns a step), odd and even rows (the last step shares the loop's tail or
has its own), rows of 2 and 3, the last stage (the sigmoid LUT) and hidden ones, and the
requantisation at its extremes (the int16 clamp written out where it can act, m and the
rounding term as immediates and as literals). Every case gives the Python reference's
bytes through both APIs (golden 12/12); the estimator's byte count of the kernels is the
linked one. Random weights, no training: a few seconds each."""

from __future__ import annotations

import re
import subprocess

import numpy as np
import pytest
import torch
from torch import nn

from test_streaming import saturate
from tinycvae.data.dice import dice_spec
from tinycvae.deploy import toolchain
from tinycvae.deploy.firmware import write_firmware
from tinycvae.deploy.quantize import quantize
from tinycvae.mcu.armv6m_rows import code_bytes, kernel_asm, rows_stage, shape_code_bytes
from tinycvae.mcu.stages import extract
from tinycvae.models import build_cvae

from conftest import needs_tools

needs_arm = needs_tools(
    "arm-none-eabi-gcc", "qemu-system-arm",
    install="gcc-arm-none-eabi, libnewlib-arm-none-eabi, qemu-system-arm",
)  # fmt: skip

# (image size, dims, the stages with a row kernel: (stride, in_c, out_c, in_w), saturate)
CASES = {
    "one into four and nine, nine and four into one; rows of 4, 8 and 16": (
        32, (9, 1, 4, 1), {(2, 1, 4, 4), (2, 4, 1, 8), (1, 1, 9, 16), (2, 9, 1, 16)}, False,
    ),
    "four channels out (3 + 1), odd rows of 15 (an own last step); the extremes": (
        30, (4, 2, 2, 2), {(2, 2, 2, 4), (1, 2, 4, 15), (2, 4, 1, 15)}, True,
    ),
    "odd rows of 17 on both strides; the extremes": (
        34, (3, 1, 3, 3), {(1, 1, 3, 17), (2, 3, 1, 17)}, True,
    ),
    "rows of 2 (one column a step), 4 and 8; the extremes": (
        16, (1, 3, 3, 2), {(2, 2, 3, 2), (2, 3, 3, 4), (1, 3, 1, 8), (2, 1, 1, 8)}, True,
    ),
    "rows of 3 (two columns, then one), 6 and 12": (
        24, (1, 3, 3, 2), {(2, 2, 3, 3), (2, 3, 3, 6), (1, 3, 1, 12), (2, 1, 1, 12)}, False,
    ),
}  # fmt: skip


def export(tmp_path, size: int, dims, extremes: bool):
    """A random-weight dice decoder of ``dims`` at ``size`` -> int8 firmware (12 golden
    vectors); its stages and quantised model."""
    torch.manual_seed(0)
    model = build_cvae(dice_spec(size), latent=1, latent_mode="bypass",
                       conditioning={"kind": "onehot"},
                       **dict(zip(("dim1", "dim2", "dim3", "dim4"), dims)))  # fmt: skip
    for p in model.decoder.parameters():  # varied outputs, not a constant grey
        nn.init.normal_(p, std=0.3)
    model.eval()
    fm = extract(model.decoder, 1, model.num_classes)
    labels = torch.arange(256) % model.num_classes
    qm = quantize(fm, model.sampler(labels, torch.Generator().manual_seed(1)), labels,
                  bypass=True, bits=8)  # fmt: skip
    if extremes:
        saturate(qm)
    write_firmware(tmp_path / "model", model, fm, qm, 12, 0)
    return fm, qm


@needs_arm
@pytest.mark.parametrize("case", CASES)
def test_row_kernels_give_the_reference_bytes_on_every_shape(case, tmp_path):
    size, dims, picked, extremes = CASES[case]
    fm, qm = export(tmp_path, size, dims, extremes)
    shapes = {(st.stride, st.in_shape[0], st.out_channels, st.in_shape[2]): i
              for i, st in enumerate(fm.stages) if rows_stage(st, "int8")}  # fmt: skip
    assert set(shapes) == picked
    folder = tmp_path / "model" / "int8"
    out = toolchain.make("check-qemu", folder, tmp_path / "build")
    assert toolchain.golden_result(out) == (12, 12), out[-800:]
    # the kernels are linked, and as big as the estimator counts them
    elf = tmp_path / "build" / "qemu" / "golden_test.elf"
    nm = subprocess.run(["arm-none-eabi-nm", "-S", str(elf)], capture_output=True, text=True)
    sizes = {name: int(size, 16) for size, name in re.findall(r"\w+ (\w+) T (cvae_arm_rows_\d+)",
                                                               nm.stdout)}  # fmt: skip
    assert set(sizes) == {f"cvae_arm_rows_{i}" for i in shapes.values()}
    last = len(fm.stages) - 1
    for i in shapes.values():
        qs, rq = qm.stages[i], qm.stages[i].requant
        asm = kernel_asm(i, fm.stages[i], qs.weight, qs.bias, (rq.m, rq.pre, rq.shift), i == last)
        assert abs(code_bytes(asm) - sizes[f"cvae_arm_rows_{i}"]) <= 2, i


@needs_arm
def test_without_the_row_kernels_the_same_bytes(tmp_path):
    """CVAE_ARM_ROWS=0 (the cortex-m0plus fallback) runs the runtime's kernels on the same
    model: the same golden bytes, and no row kernel linked."""
    export(tmp_path, 32, (3, 3, 3, 3), False)
    folder = tmp_path / "model" / "int8"
    out = toolchain.make("check-qemu", folder, tmp_path / "build",
                         variables={"ARM_FLAGS": "-DCVAE_ARM_ROWS=0"})  # fmt: skip
    assert toolchain.golden_result(out) == (12, 12), out[-800:]
    elf = tmp_path / "build" / "qemu" / "golden_test.elf"
    nm = subprocess.run(["arm-none-eabi-nm", str(elf)], capture_output=True, text=True).stdout
    assert "cvae_arm_rows_" not in nm and "cvae_arm_row_s1" in nm


def test_the_estimators_count_bounds_a_trained_models():
    """A stage's kernel on its real weights is at most the estimator's figure for its shape
    (shape_code_bytes): zero weights and repeated constants only shrink it."""
    torch.manual_seed(0)
    model = build_cvae(dice_spec(32), latent=1, latent_mode="bypass",
                       dim1=3, dim2=3, dim3=3, dim4=3).eval()  # fmt: skip
    fm = extract(model.decoder, 1, model.num_classes)
    labels = torch.arange(256) % model.num_classes
    qm = quantize(fm, model.sampler(labels, torch.Generator().manual_seed(1)), labels,
                  bypass=True, bits=8)  # fmt: skip
    last = len(fm.stages) - 1
    picked = [i for i, st in enumerate(fm.stages) if rows_stage(st, "int8")]
    assert picked == [1, 2, 3, 4]
    for i in picked:
        qs, rq = qm.stages[i], qm.stages[i].requant
        w = np.asarray(qs.weight).copy()
        full = code_bytes(kernel_asm(i, fm.stages[i], w, qs.bias, (rq.m, rq.pre, rq.shift),
                                     i == last))  # fmt: skip
        w.reshape(-1)[::5] = 0  # a fifth of the weights zero: 6 B less each
        sparse = code_bytes(kernel_asm(i, fm.stages[i], w, qs.bias, (rq.m, rq.pre, rq.shift),
                                       i == last))  # fmt: skip
        assert sparse < full <= shape_code_bytes(i, fm.stages[i], i == last), i
