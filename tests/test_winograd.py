"""The ARMv6-M Winograd F(2,3) kernel of the stride-1 transposed convs (deploy/cvae.c,
"ARMv6-M kernels"; its weights from the exporter, tinycvae.deploy.codegen): the transform
is integer-exact, the exporter writes it only for the stages it is meant for and only for
ARMv6-M, the Thumb-1 kernel gives the reference's bytes on odd widths and on entry counts
that are not a multiple of its loop step, and a fault in it is caught by the golden test
(so the path is the one that runs). Random weights, no training."""

from __future__ import annotations

import shutil
import subprocess
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from test_streaming import saturate
from tinycvae.data.dice import dice_spec
from tinycvae.deploy import codegen, toolchain
from tinycvae.deploy.builds import build_and_check
from tinycvae.deploy.firmware import write_firmware
from tinycvae.deploy.quantize import quantize
from tinycvae.mcu import footprint
from tinycvae.mcu.stages import extract
from tinycvae.models import build_cvae

from conftest import needs_tools

K = dice_spec(32).num_classes
needs_arm = needs_tools(
    "arm-none-eabi-gcc", "qemu-system-arm",
    install="gcc-arm-none-eabi, libnewlib-arm-none-eabi, qemu-system-arm",
)  # fmt: skip


def test_the_transform_is_integer_exact():
    """U (the exporter's, less its 2^15) and V (the kernel's) give twice the correlation
    y0 = g . d[0:3], y1 = g . d[1:4] of every kernel row, for the int8 extremes too."""
    rng = np.random.default_rng(0)
    w = rng.integers(-127, 128, size=(5, 7, 3, 3)).astype(np.int8)
    w[0, 0] = 127
    w[0, 1] = -127
    u = codegen.wino_weights(w).astype(np.int64) - 32768  # [out][ky][in][4]
    assert np.abs(u).max() <= 381
    for _ in range(200):
        o, c, ky = rng.integers(5), rng.integers(7), rng.integers(3)
        d = rng.integers(0, 256, size=4)
        v = np.array([d[0] - d[2], d[1] + d[2], d[2] - d[1], d[1] - d[3]])
        m = u[o, ky, c] * v
        g = w[o, c, ky, ::-1].astype(np.int64)  # g0 = w[ky][2]: the flipped kernel
        assert m[0] + m[1] + m[2] == 2 * int(g @ d[:3])
        assert m[1] - m[2] - m[3] == 2 * int(g @ d[1:])


def test_the_exporter_writes_the_winograd_weights_for_armv6m_int8_stride_1_only():
    def stage(kind="convT", stride=1, c=footprint.WINO_MIN_IN_C, w=16, out=16):
        return SimpleNamespace(kind=kind, stride=stride, in_shape=(c, w, w), kernel=3, pad=1,
                               out_channels=out, out_shape=(out, w, w))  # fmt: skip

    assert footprint.wino_stage(stage(), "int8")
    assert footprint.wino_stage(stage(w=3), "int8")
    assert not footprint.wino_stage(stage(w=2), "int8")  # rows of at least 3
    assert not footprint.wino_stage(stage(c=footprint.WINO_MIN_IN_C - 1), "int8")
    # twice the accumulator in int32: 2 x 9 in_c x 127 x 255 < 2^31 up to WINO_MAX_IN_C
    assert 2 * 9 * footprint.WINO_MAX_IN_C * 127 * 255 < 2**31
    assert footprint.wino_stage(stage(c=footprint.WINO_MAX_IN_C), "int8")
    assert not footprint.wino_stage(stage(c=footprint.WINO_MAX_IN_C + 1), "int8")
    assert not footprint.wino_stage(stage(stride=2), "int8")
    assert not footprint.wino_stage(stage(), "int4")  # int4 keeps the direct kernel
    # a narrow stage (in x out channels at most ROWS_MAX_CHANNEL_PAIRS) runs its generated
    # row kernel instead (tinycvae.mcu.armv6m_rows)
    assert not footprint.wino_stage(stage(out=1), "int8")
    assert not footprint.wino_stage(
        SimpleNamespace(kind="linear", stride=1, in_shape=(64,), kernel=1, pad=0), "int8"
    )
    torch.manual_seed(0)
    model = build_cvae(dice_spec(32), latent=1, latent_mode="bypass",
                       dim1=8, dim2=8, dim3=8, dim4=8).eval()  # fmt: skip
    fm = extract(model.decoder, 1, K)
    labels = torch.arange(64) % K
    qm = quantize(fm, model.sampler(labels, torch.Generator().manual_seed(1)), labels, bypass=True)
    source = codegen.model_source(fm, "int8", qm)
    header = codegen.model_header(fm, "int8", True, 1.0, qm)
    assert "#define CVAE_WINO_SCRATCH 100\n" in header  # 12 in_c + 4 words
    guarded = "#if defined(CVAE_ARMV6M_WINO)\n"
    assert source.count(guarded) == 2  # stage 3's weights, the stage table
    assert "const uint16_t *const cvae_wino_u[CVAE_NUM_STAGES] = {NULL, NULL, NULL, u3, NULL};" in (
        source
    )
    assert ".weight = CVAE_WEIGHT_3," in source and ".weight = w2," in source
    fp = footprint.estimate_stages(fm, "int8", stream=True, mcu=footprint.load_mcu("rp2040"))
    assert fp.wino == (8 * 8 * 3 * (footprint.WINO_ROW_BYTES - 3) + 4 * 5, 96 * 4 + 80)
    assert fp.armv6m_wino(footprint.load_mcu("ch32v003")) == (0, 0)


def export(tmp_path, size: int, dims: tuple, min_in_c: int, monkeypatch, extremes=False):
    """Random-weight int8 decoder for a size x size image, with the Winograd kernel on
    stride-1 stages of at least min_in_c input channels (extremes: the requantisation
    constants at the format's extremes, test_streaming.saturate); its int8 model folder."""
    monkeypatch.setattr(footprint, "WINO_MIN_IN_C", min_in_c)
    torch.manual_seed(0)
    model = build_cvae(dice_spec(size), latent=1, latent_mode="bypass",
                       conditioning={"kind": "onehot"},
                       **dict(zip(("dim1", "dim2", "dim3", "dim4"), dims)))  # fmt: skip
    for p in model.decoder.parameters():
        nn.init.normal_(p, std=0.3)
    model.eval()
    fm = extract(model.decoder, 1, K)
    labels = torch.arange(256) % K
    qm = quantize(fm, model.sampler(labels, torch.Generator().manual_seed(1)), labels, bypass=True)
    if extremes:
        saturate(qm)
    write_firmware(tmp_path / "model", model, fm, qm, 12, 0)
    s1 = [st for st in fm.stages if st.kind == "convT" and st.stride == 1]
    return tmp_path / "model" / "int8", s1


# (size, dims, WINO_MIN_IN_C): the stride-1 stage has dim2 input channels and dim1 output
# ones, rows of size / 2: 15, 17 and 5 (the last pair's one column, WINO_ODD), 16, 18 and 4;
# a pair's (ky, in) entries (3 or 2 kernel rows x in_c) enter the loop of 7 at (-n) mod 7:
# in_c 8 (24 or 16: 4 and 5), 7 at the default gate (21 or 14: 0), 6 at the gate with two
# output channels (18 or 12: 3 and 2), 4 and 3 with the gate lowered (12 or 8: 2 and 6;
# 9 or 6: 5 and 1)
CASES = {
    "30x30, rows of 15, in_c 8": (30, (8, 8, 8, 8), 8),
    "30x30, rows of 15, in_c 8, requantisation extremes": (30, (8, 8, 8, 8), 8, True),
    "34x34, rows of 17, in_c 8": (34, (8, 8, 8, 8), 8),
    "36x36, rows of 18, in_c 7": (36, (7, 7, 2, 3), footprint.WINO_MIN_IN_C),
    "30x30, rows of 15, in_c 4": (30, (7, 4, 2, 3), 1),
    "10x10, rows of 5, in_c 6, out_c 2": (10, (2, 6, 3, 3), footprint.WINO_MIN_IN_C),
    "8x8, rows of 4, in_c 3": (8, (7, 3, 2, 3), 1),  # a pair at the start and at the end
}


@needs_arm
@pytest.mark.slow
@pytest.mark.parametrize("case", CASES)
def test_the_winograd_kernel_gives_the_reference_bytes(case, tmp_path, monkeypatch):
    """Golden 12/12 (both APIs) under QEMU and on the host (its int8 weights, the model's
    other branch), and random draws against the host's C."""
    size, dims, min_in_c, *extremes = CASES[case]
    folder, s1 = export(tmp_path, size, dims, min_in_c, monkeypatch, *extremes)
    assert s1 and s1[0].in_shape[0] == dims[1] >= min_in_c  # the kernel's stage
    assert "cvae_wino_u" in (folder / "cvae_model.c").read_text()
    for goal in ("check-qemu", "check-host"):
        out = toolchain.make(goal, folder, tmp_path / "build")
        assert toolchain.golden_result(out) == (12, 12), out[-800:]
    out = toolchain.make("check-fuzz-arm", folder, tmp_path / "build")
    assert "fuzz: 60/60 ok" in out, out[-800:]


def faulty_deploy(tmp_path):
    """A copy of deploy/ whose Winograd kernel adds M4 to 2 y1 instead of subtracting it."""
    copy = tmp_path / "deploy"
    shutil.copytree(toolchain.DEPLOY_SRC, copy, ignore=shutil.ignore_patterns("build", "model"))
    src = copy / "cvae.c"
    good = "subs r3, r5, r6\\n subs r3, r7\\n"
    text = src.read_text()
    assert text.count(good) == 1
    src.write_text(text.replace(good, "subs r3, r5, r6\\n adds r3, r7\\n"))
    return copy


def golden_with(deploy, folder, build, *variables: str) -> tuple[int, int]:
    cmd = ["make", "-s", "-C", str(deploy), f"MODEL_DIR={folder}", f"BUILD={build}", *variables,
           "check-qemu"]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    return toolchain.golden_result(done.stdout + done.stderr)


@needs_arm
@pytest.mark.slow
def test_a_fault_in_the_winograd_kernel_fails_the_golden_test(tmp_path, monkeypatch):
    """The faulty kernel fails the golden test of a model with a Winograd stage (the path
    runs there) and passes that of one without (3 input channels: the direct kernel), and
    that of the same Winograd model built with CVAE_ARM_WINO=0 (the cortex-m0plus link's
    fallback: the model's int8 weights and the direct kernel, no Winograd code run)."""
    deploy = faulty_deploy(tmp_path)
    wino, _ = export(tmp_path / "wino", 30, (8, 8, 8, 8), 8, monkeypatch)
    ok, n = golden_with(deploy, wino, tmp_path / "build-wino")
    assert n == 12 and ok < 12
    fallback = golden_with(deploy, wino, tmp_path / "build-wino", "ARM_FLAGS=-DCVAE_ARM_WINO=0")
    assert fallback == (12, 12)
    direct, _ = export(tmp_path / "direct", 30, (3, 3, 3, 3), 8, monkeypatch)
    assert "cvae_wino_u" not in (direct / "cvae_model.c").read_text()
    assert golden_with(deploy, direct, tmp_path / "build-direct") == (12, 12)


@needs_arm
@pytest.mark.slow
def test_the_export_emulates_the_stride_1_kernel_the_m0_gets(tmp_path, monkeypatch):
    """The export's qemu target builds the kernel that the 16 KB Cortex-M0 links (its
    counts and cycles are that part's): the direct one (ARM_FLAGS=-DCVAE_ARM_WINO=0) costs
    more instructions than the Winograd one, with the same golden bytes."""
    folder, _ = export(tmp_path, 30, (8, 8, 8, 8), 8, monkeypatch)
    qemu = toolchain.TARGETS["qemu"]
    runs = {
        kernel: build_and_check(qemu, folder.parent, tmp_path / kernel, {}, arm_stride1=kernel)
        for kernel in ("winograd", "direct")
    }
    for kernel, run in runs.items():
        assert run["golden_int8"] == "12/12" and run["armv6m_stride1"] == kernel
    assert runs["direct"]["instructions_per_image"] > runs["winograd"]["instructions_per_image"]
