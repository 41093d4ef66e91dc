"""The firmware's row streaming (``cvae_generate_rows``) on every decoder shape the
streaming walk distinguishes, built and run with the C compilers: the estimator's arena
is the one the runtime uses (its asserts check every buffer against it), and the streamed
pixels equal the whole-image ones and the Python reference (the golden test compares
both APIs with the golden vectors). Random weights, no training: a few seconds each."""

from __future__ import annotations

import re
import subprocess

import numpy as np
import pytest
import torch
from torch import nn

from tinycvae.data.dice import dice_spec
from tinycvae.deploy import quantize as quantize_module
from tinycvae.deploy import toolchain
from tinycvae.deploy.firmware import write_firmware
from tinycvae.deploy.quantize import quantize
from tinycvae.mcu.footprint import RV_TIER_CHAIN, RV_TIER_FLAGS, RV_TIER_PLAIN, estimate
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
needs_arm = needs_tools(
    "arm-none-eabi-gcc", "qemu-system-arm",
    install="gcc-arm-none-eabi, libnewlib-arm-none-eabi, qemu-system-arm",
)  # fmt: skip
needs_both_qemus = needs_tools(
    "arm-none-eabi-gcc",
    "qemu-system-arm",
    "riscv64-unknown-elf-gcc",
    "qemu-system-riscv32",
    install="gcc-arm-none-eabi, libnewlib-arm-none-eabi, qemu-system-arm, "
    "gcc-riscv64-unknown-elf, picolibc-riscv64-unknown-elf, qemu-system-misc",
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


@needs_arm
def test_the_one_slot_path_runs_on_the_armv6m_kernels(tmp_path):
    """The last layer's own accumulator row through the Thumb-1 kernels (one kernel row
    at a time, no requantisation in the kernel), under QEMU: the golden vectors of both
    APIs, and random draws against the host's C path (make check-fuzz-arm)."""
    _, folder = export(tmp_path, "conv", **SHAPES["conv wide grey (last layer reads one slot)"][1])
    assert constants(folder / "int8")["CVAE_LAST_ACC_ROW"] > 0
    out = toolchain.make("check-qemu", folder / "int8", tmp_path / "build")
    assert toolchain.golden_result(out) == (12, 12), out[-800:]
    out = toolchain.make("check-fuzz-arm", folder / "int8", tmp_path / "build")
    assert "fuzz: 60/60 ok" in out, out[-800:]


def make_variable(name: str, model_dir) -> str:
    """The value of the Makefile's variable ``name`` (for ``model_dir``), as make expands it."""
    cmd = ["make", "-s", "-C", str(toolchain.DEPLOY_SRC), f"MODEL_DIR={model_dir}",
           "--eval", f"print-var: ; @echo $({name})", "print-var"]  # fmt: skip
    return subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip()


@needs_arm
def test_the_armv6m_kernels_link_and_match_with_link_time_optimisation(tmp_path):
    """A board build with -flto (a usual flag for size) keeps what only the Thumb-1
    assembly names (the sigmoid LUT of cvae_arm_finish_last, read by no C on ARMv6-M):
    the QEMU image links and its golden vectors match."""
    _, folder = export(tmp_path, "conv", **SHAPES["conv narrow (rings 2, 2, 3, 2)"][1])
    lto = {v: make_variable(v, folder / "int8") + " -flto" for v in ("qemu_CFLAGS", "qemu_LDFLAGS")}
    out = toolchain.make("check-qemu", folder / "int8", tmp_path / "build", variables=lto)
    assert toolchain.golden_result(out) == (12, 12), out[-800:]


def test_wider_streams_save_more():
    """Streaming keeps rows, not tensors: the streamed arena of 16_16_16_16 is under a
    fifth of its whole-image arena."""
    model = build_cvae(DICE, latent=1, latent_mode="bypass", dim1=16, dim2=16, dim3=16, dim4=16)
    whole = estimate(model.decoder, 1, K, "int8")
    streamed = estimate(model.decoder, 1, K, "int8", stream=True)
    assert streamed.activation_bytes * 5 < whole.activation_bytes


# Rows at and one past the widths of the ARMv6-M kernels (cvae.c: ARM_S1_MAX 18 for
# stride 1, ARM_S2_MAX 16 for stride 2; wider rows take scatter_row) and rows that are
# not a multiple of 4 (the rv32ec kernels' loop steps four inputs), on sizes other than 32:
# (size, weight bits, dims, the convT stages' (stride, in_w), the last stage's int16 clamp)
EDGES = {
    "36x36 int8: stride-1 rows of 18, stride-2 rows of 5, 9 and 18": (
        36, 8, (7, 3, 2, 3), {(2, 5), (2, 9), (1, 18), (2, 18)}, True,
    ),
    "38x38 int4: stride-1 rows of 19, stride-2 rows of 5, 10 and 19": (
        38, 4, (3, 5, 2, 4), {(2, 5), (2, 10), (1, 19), (2, 19)}, False,
    ),
    # the rv32ec kernels' loop of four inputs, entered at input -n & 3: 3 on stride-1
    # rows of 17, 1 on rows of 15 (the rows above: 1, 2 and 3 on stride 2, 2 and 1 on 1)
    "34x34 int8: stride-1 rows of 17, stride-2 rows of 5, 9 and 17": (
        34, 8, (7, 3, 2, 3), {(2, 5), (2, 9), (1, 17), (2, 17)}, True,
    ),
    "30x30 int8: stride-1 rows of 15, stride-2 rows of 4, 8 and 15": (
        30, 8, (7, 3, 2, 3), {(2, 4), (2, 8), (1, 15), (2, 15)}, True,
    ),
}  # fmt: skip
# (m, pre, shift) given to six of every seven channels of the hidden stages: m at INT16_MAX,
# 0, 1 and 2^14 (whose trailing zeros pass the shift: rv32ec's rows in C), many set bits,
# pre 0 (the int16 clamp before the multiply) and 16, shift 1 and MAX_SHIFT
REQUANT_EXTREMES = [(32767, 0, 15), (0, 0, 1), (1, 0, 30), (0x5555, 3, 12), (16384, 1, 10),
                    (0x4001, 16, 2)]  # fmt: skip


def saturate(qm) -> None:
    """The requantisation constants of ``qm`` at the extremes the format allows (CONTRACT):
    REQUANT_EXTREMES on the hidden stages, and the last stage's pre folded into its shift,
    less 4 (16x the logits: both ends of the LUT, and the int16 clamp where |acc| > 32767)."""
    for qs in qm.stages[:-1]:
        r = qs.requant
        for o in range(len(r.m)):
            if o % 7 < len(REQUANT_EXTREMES):
                r.m[o], r.pre[o], r.shift[o] = REQUANT_EXTREMES[o % 7]
    r = qm.stages[-1].requant
    r.shift[:] = np.clip(r.shift + r.pre - 4, 1, quantize_module.MAX_SHIFT)
    r.pre[:] = 0


def clamps_of(seen: list, relu: bool) -> dict[str, int]:
    """How many outputs of the reference's requantisations (``seen``: the spy's records)
    met each clamp: int16 before the multiply, and the output range's two ends."""
    hits = [h for r, *h in seen if r == relu]
    return dict(zip(("int16", "top", "bottom"), (sum(c) for c in zip(*hits))))


@needs_both_qemus
@pytest.mark.parametrize("edge", EDGES)
def test_kernel_boundaries_and_saturation_match_the_reference_on_both_cores(
    edge, tmp_path, monkeypatch
):
    """The hand-written kernels of both cores (ARMv6-M Thumb-1, rv32ec RV32E) and their
    fallbacks on rows at and past the kernels' widths, with every clamp of the
    requantisation met, give the Python reference's bytes (golden 12/12 under QEMU)."""
    size, bits, dims, rows, last_clamps = EDGES[edge]
    spec = dice_spec(size)
    torch.manual_seed(0)
    model = build_cvae(spec, latent=1, latent_mode="bypass", conditioning={"kind": "onehot"},
                       **dict(zip(("dim1", "dim2", "dim3", "dim4"), dims)))  # fmt: skip
    for p in model.decoder.parameters():
        nn.init.normal_(p, std=0.3)
    model.eval()
    fm = extract(model.decoder, 1, K)
    assert {(st.stride, st.in_shape[2]) for st in fm.stages if st.kind == "convT"} == rows
    labels = torch.arange(256) % K
    qm = quantize(fm, model.sampler(labels, torch.Generator().manual_seed(1)), labels,
                  bypass=True, bits=bits)  # fmt: skip
    saturate(qm)
    seen, requant = [], quantize_module._apply_requant

    def spy(acc, rq, channel_dim, relu):
        shape = [1] * acc.dim()
        shape[channel_dim] = -1
        a = acc >> torch.from_numpy(rq.pre.astype(np.int64)).reshape(shape)
        y = requant(acc, rq, channel_dim, relu)
        top = 255 if relu else 127
        seen.append((relu, int((a.abs() > 32767).sum()), int((y == top).sum()),
                     int((y == (0 if relu else -128)).sum())))  # fmt: skip
        return y

    monkeypatch.setattr(quantize_module, "_apply_requant", spy)
    write_firmware(tmp_path / "model", model, fm, qm, 12, 0)
    hidden, last = clamps_of(seen, True), clamps_of(seen, False)
    assert min(hidden.values()) > 0 and last["top"] > 0 and last["bottom"] > 0, seen
    assert (last["int16"] > 0) == last_clamps, seen
    folder = tmp_path / "model" / f"int{bits}"
    for goal in ("check-qemu", "check-qemu-rv32"):
        out = toolchain.make(goal, folder, tmp_path / "build")
        assert toolchain.golden_result(out) == (12, 12), out[-800:]
    # rv32ec's table-free builds (the ch32v003 fallbacks): the assembly requantisation's
    # own chain writer (a loop), and without it (the third tier) every row in C
    for tier in (RV_TIER_CHAIN, RV_TIER_PLAIN):
        build = tmp_path / f"build-{tier}"
        out = toolchain.make("check-qemu-rv32", folder, build,
                             variables={"RV_FLAGS": RV_TIER_FLAGS[tier]})  # fmt: skip
        assert toolchain.golden_result(out) == (12, 12), (tier, out[-800:])
        assert toolchain.stack_high_water(out) < 320, tier  # the CH32V003's reserved stack
        syms = subprocess.run(["riscv64-unknown-elf-nm", build / "qemu-rv32" / "golden_test.elf"],
                              capture_output=True, text=True, check=True).stdout  # fmt: skip
        assert (" cvae_rv_finish_hidden\n" in syms) == (tier == RV_TIER_CHAIN), tier
        assert " cvae_qsq\n" not in syms
