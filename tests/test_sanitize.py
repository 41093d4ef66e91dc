"""The C runtime under AddressSanitizer and UndefinedBehaviorSanitizer on the host
(``make -C deploy check-sanitize``): the golden vectors, then random labels 0..255 and
random latents through both APIs (``deploy/fuzz_test.c``: -1 for a bad label, the
streamed rows equal to the whole image), for a conv and an MLP decoder at int8, int4 and
fp32; and the same draws through the rv32ec assembly kernels under qemu-system-riscv32
and through the ARMv6-M Thumb-1 kernels under qemu-system-arm against the host's images
(``make -C deploy check-fuzz-rv32``, ``check-fuzz-arm``). Random weights with
latent 3 (stage 0's int4 rows start in either nibble) and 15 hidden units for the MLP
(odd rows everywhere); no training."""

from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pytest
import torch

from tinycvae.data.dice import dice_spec
from tinycvae.deploy import codegen, toolchain
from tinycvae.deploy.quantize import quantize, run_int8
from tinycvae.mcu.footprint import RV_TIER_FLAGS
from tinycvae.mcu.stages import extract, run_fp32
from tinycvae.models import build_cvae

from conftest import needs_tools

ARCHS = {"conv": {"dim1": 3, "dim2": 3, "dim3": 3, "dim4": 3}, "mlp": {"hidden": 15}}
DRAWS = 400


def _sanitizers_link(tmp_path_factory) -> bool:
    """Whether the host compiler builds and runs a program with both sanitizers."""
    folder = tmp_path_factory.mktemp("asan")
    (folder / "t.c").write_text("int main(void) { return 0; }\n")
    cmd = ["cc", "-fsanitize=address,undefined", str(folder / "t.c"), "-o", str(folder / "t")]
    if subprocess.run(cmd, capture_output=True).returncode != 0:
        return False
    return subprocess.run([str(folder / "t")], capture_output=True).returncode == 0


@pytest.fixture(scope="module")
def sanitizers(tmp_path_factory):
    if shutil.which("cc") is None or shutil.which("make") is None:
        pytest.skip("needs a host C compiler and make (apt-get install gcc make)")
    if not _sanitizers_link(tmp_path_factory):
        pytest.skip(
            "the host compiler cannot link -fsanitize=address,undefined (libasan, libubsan)"
        )


def write_models(folder, arch: str) -> None:
    """``folder/{int8,int4,fp32}``: one random decoder at the three precisions, each with
    12 golden vectors from the Python references."""
    torch.manual_seed(0)
    model = build_cvae(dice_spec(32), arch=arch, latent=3, latent_mode="reparam",
                       conditioning={"kind": "onehot"}, **ARCHS[arch]).eval()  # fmt: skip
    for p in model.decoder.parameters():
        torch.nn.init.normal_(p, std=0.4)
    fm = extract(model.decoder, 3, 6)
    labels = torch.arange(512) % 6
    z = model.sampler(labels, torch.Generator().manual_seed(1))
    y = labels[:12].numpy().astype(np.uint8)
    for precision, bits in (("int8", 8), ("int4", 4)):
        qm = quantize(fm, z, labels, bypass=False, bits=bits)
        zq = qm.quantize_z(z[:12])
        golden = (y, zq, run_int8(qm, zq, y).reshape(12, -1))
        codegen.write_model(folder / precision, fm, precision, False, 1.0, golden, qm)
    want = run_fp32(fm, z[:12], labels[:12]).reshape(12, -1).numpy()
    codegen.write_model(folder / "fp32", fm, "fp32", False, 1.0, (y, z[:12].numpy(), want))


@pytest.fixture(scope="module")
def models(sanitizers, tmp_path_factory):
    """The conv and the MLP decoder's model folders, by architecture."""
    root = tmp_path_factory.mktemp("models")
    for arch in ARCHS:
        write_models(root / arch, arch)
    return root


@pytest.mark.parametrize("arch", ARCHS)
def test_the_runtime_is_clean_under_asan_and_ubsan_on_random_inputs(models, arch, tmp_path):
    for precision in ("int8", "int4", "fp32"):
        out = toolchain.make("check-sanitize", models / arch / precision,
                             tmp_path / f"build-{precision}")  # fmt: skip
        assert toolchain.golden_result(out) == (12, 12), out[-800:]
        assert f"fuzz: {DRAWS}/{DRAWS} ok" in out, out[-800:]
        assert "runtime error" not in out and "Sanitizer" not in out, out[-800:]


needs_rv32 = needs_tools("riscv64-unknown-elf-gcc", "qemu-system-riscv32",
                         install="gcc-riscv64-unknown-elf, picolibc-riscv64-unknown-elf and "
                         "qemu-system-misc")  # fmt: skip
needs_arm = needs_tools(
    "arm-none-eabi-gcc",
    "qemu-system-arm",
    install="gcc-arm-none-eabi, libnewlib-arm-none-eabi and qemu-system-arm",
)


@pytest.mark.parametrize("goal", [pytest.param("check-fuzz-rv32", marks=needs_rv32),
                                  pytest.param("check-fuzz-arm", marks=needs_arm)])  # fmt: skip
@pytest.mark.parametrize("arch", ARCHS)
def test_the_mcu_kernels_draw_the_host_images_on_random_inputs(models, arch, goal, tmp_path):
    """``make check-fuzz-rv32`` / ``check-fuzz-arm``: the same random draws through the
    rv32ec or ARMv6-M assembly kernels (under QEMU) and the host's portable C path give the
    same image digest; on rv32ec in each of the ch32v003 build's tiers (``RV_FLAGS``)."""
    tiers = RV_TIER_FLAGS if goal == "check-fuzz-rv32" else {"": ""}
    for precision in ("int8", "int4"):
        for tier, flags in tiers.items():  # RV_FLAGS rebuilds the rv32 objects only
            build = tmp_path / f"build-{precision}"
            out = toolchain.make(goal, models / arch / precision, build,
                                 variables={"RV_FLAGS": flags})  # fmt: skip
            assert "fuzz: 60/60 ok" in out and "fuzz images: " in out, (tier, out[-800:])


def _check_with_fault(models, tmp_path, good: str, bad: str, count: int | None, goal: str,
                      flags: str = "", file: str = "cvae.c"):  # fmt: skip
    """``make <goal>`` (more make variables: ``flags``) on a copy of deploy/ and of the conv
    int8 model whose ``file`` (cvae.c, or the model's cvae_model.c) has ``good`` (found
    ``count`` times; None: at least once) replaced by ``bad``."""
    deploy, model = tmp_path / "deploy", tmp_path / "model"
    shutil.copytree(toolchain.DEPLOY_SRC, deploy, ignore=shutil.ignore_patterns("build", "model"))
    shutil.copytree(models / "conv" / "int8", model)
    path = (deploy if file == "cvae.c" else model) / file
    source = path.read_text()
    assert source.count(good) == count if count is not None else good in source
    path.write_text(source.replace(good, bad))
    return subprocess.run(
        ["make", "-s", "-C", str(deploy), f"MODEL_DIR={model}",
         f"BUILD={tmp_path / 'build'}", goal, *flags.split()],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip


@needs_rv32
def test_a_fault_in_the_rv32ec_kernels_fails_the_fuzz_check(models, tmp_path):
    """The check can fail: a stride-2 kernel that drops the pending product of a zero
    input's neighbour draws other images than the host."""
    good = '#define RV_ZERO_S2(A0, N) RV_ADD(A0, "s1") "j " N "\\n"'
    bad = '#define RV_ZERO_S2(A0, N) "j " N "\\n"'
    done = _check_with_fault(
        models, tmp_path, good, bad, 1, "check-fuzz-rv32", "RV_FLAGS=-DCVAE_RV_ROWS=0"
    )  # the runtime's kernels, not the model's
    assert done.returncode != 0
    assert "rv32ec and host images differ" in done.stdout + done.stderr


@needs_arm
def test_a_fault_in_the_armv6m_kernels_fails_the_fuzz_check(models, tmp_path):
    """The check can fail: a stride-2 unit whose zero input skips one accumulator store
    too few (it stores a stale register into the next slot) draws other images (the
    runtime's kernels: CVAE_ARM_ROWS=0, as the cortex-m0plus fallback builds them)."""
    good = '"str r7, [r0, #8*" j "+8]\\n7:\\n"'
    bad = '"7:\\n str r7, [r0, #8*" j "+8]\\n"'
    done = _check_with_fault(models, tmp_path, good, bad, 1, "check-fuzz-arm",
                             "ARM_FLAGS=-DCVAE_ARM_ROWS=0")  # fmt: skip
    assert done.returncode != 0
    assert "ARMv6-M and host images differ" in done.stdout + done.stderr


@pytest.mark.parametrize("goal, good, bad", [
    pytest.param("check-fuzz-arm", '"adds r0, r4\\n"', '"subs r0, r4\\n"', marks=needs_arm),
    pytest.param("check-fuzz-rv32", '"add s0, s0, a2\\n"', '"sub s0, s0, a2\\n"',
                 marks=needs_rv32),
])  # fmt: skip
def test_a_fault_in_a_generated_row_kernel_fails_the_fuzz_check(models, tmp_path, goal, good, bad):
    """The check covers the model's generated row kernels too: a product added to the
    first accumulator subtracted instead (every one) draws other images."""
    done = _check_with_fault(models, tmp_path, good, bad, None, goal, file="cvae_model.c")
    assert done.returncode != 0
    assert "and host images differ" in done.stdout + done.stderr


def test_a_fault_the_fuzz_test_must_catch_fails_the_check(models, tmp_path):
    """The check can fail: a runtime that accepts the first bad label reads past the
    class table, and the sanitized build stops with AddressSanitizer's report."""
    good, bad = "label >= CVAE_NUM_CLASSES", "label > CVAE_NUM_CLASSES"
    done = _check_with_fault(models, tmp_path, good, bad, 2, "check-sanitize")
    assert done.returncode != 0
    assert "AddressSanitizer: global-buffer-overflow" in done.stdout + done.stderr
