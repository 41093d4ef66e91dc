"""The estimator's flash and RAM against the linked MCU images, within 1%: its runtime
code constants (``tinycvae.mcu.footprint``) are measured on ``deploy/``'s demo, so a
change to the runtime that moves its size shows here. Random weights (the sizes depend
on the shapes only): the 3_3_3_3 dice decoder at int8, and 16_16_16_16 at int4, whose
last layer has an accumulator row of its own, and at int8, which leaves the CH32V003 no
flash for the rv32ec quarter-square table (the build and the estimate both fall back to
the table-free kernels), and 12_12_18_20 at int8, which leaves no flash for their
assembly requantisation either (the third tier: the C requantisation). In each the
ch32v003 link's tier is the estimator's."""

from __future__ import annotations

import re
from dataclasses import replace

import pytest
import torch

from tinycvae.data.dice import dice_spec
from tinycvae.deploy import codegen, toolchain
from tinycvae.deploy.builds import build_and_check, linked_fallback, linked_rv_tier
from tinycvae.deploy.preflight import check_fit
from tinycvae.deploy.quantize import quantize, run_int8
from tinycvae.mcu.footprint import (
    RV_TIER_CHAIN,
    RV_TIER_FLAGS,
    RV_TIER_PLAIN,
    RV_TIER_QSQ,
    WINO_MIN_IN_C,
    estimate_stages,
    load_mcu,
    rv_tier,
)
from tinycvae.mcu.stages import extract
from tinycvae.models import build_cvae

from conftest import needs_tools

TARGETS = (("ch32v003", "ch32v003"), ("cortex-m0plus", "cortex_m0plus_16k"))
needs = needs_tools(
    "riscv64-unknown-elf-gcc",
    "arm-none-eabi-gcc",
    install="gcc-riscv64-unknown-elf, picolibc-riscv64-unknown-elf, gcc-arm-none-eabi, "
    "libnewlib-arm-none-eabi",
)


def big_flash(tmp_path) -> dict[str, str]:
    """make variables that link the Cortex-M0+ demo with 64 KB of flash (its 16 KB part's
    script otherwise): a model past the part still gives its linked size."""
    script = toolchain.DEPLOY_SRC / "boards" / "cortex_m0plus" / "link.ld"
    big = tmp_path / "link64k.ld"
    big.write_text(script.read_text().replace("LENGTH = 16K", "LENGTH = 64K"))
    flags = f"--specs=nosys.specs -nostartfiles -T{big} -Wl,--gc-sections -lm"
    return {"cortex-m0plus_LDFLAGS": flags}


def write_random_model(folder, dims, precision):
    """A dice bypass decoder of ``dims`` with seeded random weights, exported to ``folder``
    (model files and golden vectors); its stages."""
    torch.manual_seed(0)
    model = build_cvae(dice_spec(32), latent=1, latent_mode="bypass",
                       **dict(zip(("dim1", "dim2", "dim3", "dim4"), dims))).eval()  # fmt: skip
    fm = extract(model.decoder, 1, 6)
    labels = torch.arange(256) % 6
    z = model.sampler(labels, torch.Generator().manual_seed(1))
    qm = quantize(fm, z, labels, bypass=True, bits=8 if precision == "int8" else 4)
    zq, y = qm.quantize_z(z[:1]), labels[:1].numpy().astype("uint8")
    golden = (y, zq, run_int8(qm, zq, y).reshape(1, -1))
    codegen.write_model(folder, fm, precision, True, 1.0, golden, qm)
    return fm


@needs
@pytest.mark.parametrize(
    "dims, precision, tier",
    [
        ((3, 3, 3, 3), "int8", RV_TIER_QSQ),
        ((16, 16, 16, 16), "int4", RV_TIER_QSQ),
        # on the 16 KB Cortex-M0+ part the direct kernel: no flash for the Winograd one
        ((16, 16, 16, 16), "int8", RV_TIER_CHAIN),
        ((12, 12, 18, 20), "int8", RV_TIER_PLAIN),
    ],
)
def test_estimated_flash_and_ram_are_within_1_percent_of_the_linked_images(
    dims, precision, tier, tmp_path
):
    fm = write_random_model(tmp_path / precision, dims, precision)
    if tier == RV_TIER_PLAIN:  # 12_12_18_20 int8 does not fit the Cortex-M0+'s 16 KB at all
        m0 = load_mcu("cortex_m0plus_16k")
        assert not estimate_stages(fm, precision, True, m0).fits()["flash_ok"]
    for target, mcu in TARGETS[:1] if tier == RV_TIER_PLAIN else TARGETS:
        out = toolchain.make(target, tmp_path / precision, tmp_path / "build")
        measured = toolchain.elf_size(toolchain.TARGETS[target], tmp_path / "build")
        est = estimate_stages(fm, precision, stream=True, mcu=load_mcu(mcu))
        assert est.last_acc_row == (dims[-1] >= 16)
        # the stride-1 stage (dim2 input channels) runs the Winograd kernel where it links
        assert (est.wino[0] > 0) == (precision == "int8" and dims[1] >= WINO_MIN_IN_C)
        map_file = (tmp_path / "build" / toolchain.TARGETS[target].elf).with_suffix(".map")
        if target == "ch32v003":  # the tier the Makefile linked is the estimator's
            assert linked_rv_tier(map_file) == tier, out
            assert rv_tier(precision, est.mcu, est.model_flash(est.mcu), est.last_acc_row) == tier
        else:  # and so is the stride-1 kernel: the direct one wherever it fits the part
            assert linked_fallback(map_file) == (est.wino[0] > 0), out
            says = "cortex-m0plus: the model leaves no flash for the ARMv6-M Winograd or row"
            assert (says in out) == (est.wino[0] > 0), out
            assert est.armv6m_wino(est.mcu) == (0, 0) and est.fits()["flash_ok"]
        assert abs(est.flash_bytes / measured["flash_bytes"] - 1) <= 0.01, (target, measured, est)
        assert est.ram_bytes == measured["ram_bytes"], (target, measured, est)


@needs
def test_the_winograd_kernel_is_linked_where_the_flash_has_room(tmp_path):
    """16_16_16_16 int8 on a Cortex-M0+ with 64 KB of flash (:func:`big_flash`): the
    Winograd kernel and its weights, estimated within 1% and exactly in RAM (on the 16 KB
    part the same model links the direct kernel, above)."""
    fm = write_random_model(tmp_path / "int8", (16, 16, 16, 16), "int8")
    target = toolchain.TARGETS["cortex-m0plus"]
    out = toolchain.make(target.name, tmp_path / "int8", tmp_path / "build",
                         variables=big_flash(tmp_path))  # fmt: skip
    assert linked_fallback((tmp_path / "build" / target.elf).with_suffix(".map")) == 0, out
    measured = toolchain.elf_size(target, tmp_path / "build")
    m0_64k = replace(load_mcu("cortex_m0plus_16k"), flash_kb=64)
    est = estimate_stages(fm, "int8", stream=True, mcu=m0_64k)
    assert est.armv6m_wino(m0_64k)[0] > 0 and est.fits()["flash_ok"]
    assert not estimate_stages(fm, "int8", True, load_mcu("cortex_m0plus_16k")).armv6m_wino(
        load_mcu("cortex_m0plus_16k")
    )[0]
    assert abs(est.flash_bytes / measured["flash_bytes"] - 1) <= 0.01, (measured, est)
    assert est.ram_bytes == measured["ram_bytes"], (measured, est)
    assert check_fit(fm, m0_64k, target.name)["armv6m_stride1"] == "winograd"
    # the export's report on the 16 KB part: the direct kernel, estimated and linked
    m0 = load_mcu("cortex_m0plus_16k")
    estimates = {target.name: check_fit(fm, m0, target.name)}
    built = build_and_check(target, tmp_path, tmp_path / "build-16k", estimates)
    assert built["estimated"]["armv6m_stride1"] == built["measured"]["armv6m_stride1"] == "direct"
    assert "armv6m_stride1" not in check_fit(fm, load_mcu("ch32v003"), "ch32v003")


def test_the_tier_flags_are_the_makefiles_fallbacks():
    """RV_TIER_FLAGS (the projects' heads, the QEMU checks of each tier) are the flags
    deploy/Makefile's ch32v003 link falls back to, in its order."""
    text = (toolchain.DEPLOY_SRC / "Makefile").read_text()
    fallbacks = dict(re.findall(r"^ch32v003_(FALLBACK2?) := (.*)$", text, re.M))
    assert fallbacks == {
        "FALLBACK": RV_TIER_FLAGS[RV_TIER_CHAIN],
        "FALLBACK2": RV_TIER_FLAGS[RV_TIER_PLAIN],
    }
    assert RV_TIER_FLAGS[RV_TIER_QSQ] == ""


@needs
def test_a_model_too_big_for_every_tier_fails_the_ch32v003_build(tmp_path):
    """32_32_32_32 int8 (31 KB of weights) overflows the 16 KB in all three tiers: the
    build fails with the last link's overflow, and leaves no image and no link log."""
    write_random_model(tmp_path / "int8", (32, 32, 32, 32), "int8")
    with pytest.raises(toolchain.ToolchainError, match=r"make ch32v003 failed: .*overflowed"):
        toolchain.make("ch32v003", tmp_path / "int8", tmp_path / "build")
    built = tmp_path / "build" / "ch32v003"
    assert not (built / "demo.elf").exists() and not list(built.glob("*.log"))
    assert (built / "cvae_fallback2.o").exists()  # the third tier was tried


def test_a_missing_or_foreign_link_map_is_named(tmp_path):
    """The report's linked tier is read from the map: one that is missing, or that links
    no cvae object (another program's), is an error naming it, not a guessed tier."""
    missing = tmp_path / "demo.map"
    with pytest.raises(toolchain.ToolchainError, match=f"^no link map {missing}"):
        linked_rv_tier(missing)
    missing.write_text("LOAD /tmp/build/ch32v003/other.o\n")
    with pytest.raises(toolchain.ToolchainError, match="names no cvae object"):
        linked_rv_tier(missing)
