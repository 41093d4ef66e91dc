"""The generated row kernels (``tinycvae.mcu.armv6m_rows``, ``rv32ec_rows``) on every
shape their generators tell apart, built for the Cortex-M0+ and the CH32V003's rv32ec and
run under QEMU: stride 1 and 2, one to nine output channels (register groups of 3 on
stride 1, of 2 on stride 2, and one channel on two input columns a step), odd and even
rows (the last step shares the loop's tail or has its own), rows of 2 and 3, the last
stage (the sigmoid LUT) and hidden ones, int8 and int4 weights (rv32ec), and the
requantisation at its extremes (the int16 clamp written out where it can act, m and the
rounding term as immediates and as literals). Every case gives the Python reference's
bytes through both APIs (golden 12/12), and the kernels are as big as their generators
count them. Random weights, no training: a few seconds each."""

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
from tinycvae.mcu import armv6m_rows, rv32ec_rows
from tinycvae.mcu.armv6m_rows import code_bytes, kernel_asm, rows_stage, shape_code_bytes
from tinycvae.mcu.stages import extract
from tinycvae.models import build_cvae

from conftest import needs_tools

needs_both_qemus = needs_tools(
    "arm-none-eabi-gcc", "qemu-system-arm", "riscv64-unknown-elf-gcc", "qemu-system-riscv32",
    install="gcc-arm-none-eabi, libnewlib-arm-none-eabi, qemu-system-arm, "
    "gcc-riscv64-unknown-elf, picolibc-riscv64-unknown-elf, qemu-system-misc",
)  # fmt: skip

# (image size, dims, the stages with an ARMv6-M row kernel: (stride, in_c, out_c, in_w),
# the stages with an rv32ec one (its weights each serve 100 MACs or more), saturate)
CASES = {
    "one into four and nine, nine and four into one; rows of 4, 8 and 16": (
        32, (9, 1, 4, 1), {(2, 1, 4, 4), (2, 4, 1, 8), (1, 1, 9, 16), (2, 9, 1, 16)},
        {(1, 1, 9, 16), (2, 9, 1, 16)}, False,
    ),
    "four channels out (3 + 1), odd rows of 15 (an own last step); the extremes": (
        30, (4, 2, 2, 2), {(2, 2, 2, 4), (1, 2, 4, 15), (2, 4, 1, 15)},
        {(1, 2, 4, 15), (2, 4, 1, 15)}, True,
    ),
    "odd rows of 17 on both strides; the extremes": (
        34, (3, 1, 3, 3), {(1, 1, 3, 17), (2, 3, 1, 17)}, {(1, 1, 3, 17), (2, 3, 1, 17)}, True,
    ),
    "rows of 2 (one column a step), 4 and 8; the extremes": (
        16, (1, 3, 3, 2), {(2, 2, 3, 2), (2, 3, 3, 4), (1, 3, 1, 8), (2, 1, 1, 8)},
        set(), True,  # 64 output pixels: below the rv32ec kernels' 100 uses a weight
    ),
    "rows of 3 (two columns, then one), 6 and 12": (
        24, (1, 3, 3, 2), {(2, 2, 3, 3), (2, 3, 3, 6), (1, 3, 1, 12), (2, 1, 1, 12)},
        {(1, 3, 1, 12), (2, 1, 1, 12)}, False,
    ),
}  # fmt: skip
# by core: the make goal, the ELF, nm, the table's name, which stages, the generator
CORES = {
    "armv6m": ("check-qemu", "qemu", "arm-none-eabi-nm", "cvae_arm_rows", rows_stage,
               armv6m_rows),
    "rv32ec": ("check-qemu-rv32", "qemu-rv32", "riscv64-unknown-elf-nm", "cvae_rv_rows",
               rv32ec_rows.rv_rows_stage, rv32ec_rows),
}  # fmt: skip


def export(tmp_path, size: int, dims, extremes: bool, bits: int):
    """A random-weight dice decoder of ``dims`` at ``size`` -> int8 or int4 (``bits``)
    firmware (12 golden vectors); its stages and quantised model."""
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
                  bypass=True, bits=bits)  # fmt: skip
    if extremes:
        saturate(qm)
    write_firmware(tmp_path / "model", model, fm, qm, 12, 0)
    return fm, qm


def linked_sizes(nm: str, elf, table: str) -> dict[str, int]:
    """The sizes of the ELF's row kernels (``<table>_<k>``) by name."""
    out = subprocess.run([nm, "-S", str(elf)], capture_output=True, text=True).stdout
    return {name: int(size, 16) for size, name in re.findall(rf"\w+ (\w+) T ({table}_\d+)", out)}


def check_core(core: str, fm, qm, folder, build, picked) -> None:
    """The golden test of ``folder`` on ``core`` under QEMU (12/12), its row kernels those
    of the stages ``picked`` (shapes), each as big as its generator counts it."""
    goal, target, nm, table, picks, generator = CORES[core]
    shapes = {(st.stride, st.in_shape[0], st.out_channels, st.in_shape[2]): i
              for i, st in enumerate(fm.stages) if picks(st, qm.precision)}  # fmt: skip
    assert set(shapes) == picked, core
    out = toolchain.make(goal, folder, build)
    assert toolchain.golden_result(out) == (12, 12), (core, out[-800:])
    sizes = linked_sizes(nm, build / target / "golden_test.elf", table)
    assert set(sizes) == {f"{table}_{i}" for i in shapes.values()}, core
    last = len(fm.stages) - 1
    for i in shapes.values():
        qs, rq = qm.stages[i], qm.stages[i].requant
        asm = generator.kernel_asm(i, fm.stages[i], qs.weight, qs.bias, (rq.m, rq.pre, rq.shift),
                                   i == last)  # fmt: skip
        assert abs(generator.code_bytes(asm) - sizes[f"{table}_{i}"]) <= 2, (core, i)


@needs_both_qemus
@pytest.mark.parametrize("case", CASES)
def test_row_kernels_give_the_reference_bytes_on_every_shape(case, tmp_path):
    size, dims, arm, rv, extremes = CASES[case]
    fm, qm = export(tmp_path, size, dims, extremes, bits=8)
    folder = tmp_path / "model" / "int8"
    check_core("armv6m", fm, qm, folder, tmp_path / "build", arm)
    check_core("rv32ec", fm, qm, folder, tmp_path / "build", rv)


@needs_both_qemus
@pytest.mark.parametrize("case", list(CASES)[:3])
def test_rv32ec_row_kernels_on_int4_weights(case, tmp_path):
    """int4 (the ARMv6-M build keeps its runtime kernels there): the rv32ec kernels'
    products of 4-bit weights, 1 to 4 instructions each."""
    size, dims, _, rv, extremes = CASES[case]
    fm, qm = export(tmp_path, size, dims, extremes, bits=4)
    check_core("rv32ec", fm, qm, tmp_path / "model" / "int4", tmp_path / "build", rv)


@needs_both_qemus
def test_without_the_row_kernels_the_same_bytes(tmp_path):
    """CVAE_ARM_ROWS=0 (the cortex-m0plus fallback) and CVAE_RV_ROWS=0 run the runtime's
    kernels on the same model: the same golden bytes, and no row kernel linked."""
    export(tmp_path, 32, (3, 3, 3, 3), False, bits=8)
    folder = tmp_path / "model" / "int8"
    flags = {"ARM_FLAGS": "-DCVAE_ARM_ROWS=0", "RV_FLAGS": "-DCVAE_RV_ROWS=0"}
    for core, runtime_kernel in (("armv6m", "cvae_arm_row_s1"), ("rv32ec", "cvae_rv_krow_s1")):
        goal, target, nm, table, _, _ = CORES[core]
        out = toolchain.make(goal, folder, tmp_path / "build", variables=flags)
        assert toolchain.golden_result(out) == (12, 12), out[-800:]
        elf = tmp_path / "build" / target / "golden_test.elf"
        symbols = subprocess.run([nm, str(elf)], capture_output=True, text=True).stdout
        assert f"{table}_" not in symbols and runtime_kernel in symbols, core


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
