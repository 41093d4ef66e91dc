"""The estimator's flash and RAM against the linked MCU images, within 1%: its runtime
code constants (``tinycvae.mcu.footprint``) are measured on ``deploy/``'s demo, so a
change to the runtime that moves its size shows here. Random weights (the sizes depend
on the shapes only): the 3_3_3_3 dice decoder at int8, and 16_16_16_16 at int4, whose
last layer has an accumulator row of its own, and at int8, which leaves the CH32V003 no
flash for the rv32ec quarter-square table (the build and the estimate both fall back to
the table-free kernels)."""

from __future__ import annotations

import pytest
import torch

from tinycvae.data.dice import dice_spec
from tinycvae.deploy import codegen, toolchain
from tinycvae.deploy.quantize import quantize, run_int8
from tinycvae.mcu.footprint import WINO_MIN_IN_C, estimate_stages, load_mcu
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


@needs
@pytest.mark.parametrize("dim, precision", [(3, "int8"), (16, "int4"), (16, "int8")])
def test_estimated_flash_and_ram_are_within_1_percent_of_the_linked_images(
    dim, precision, tmp_path
):
    torch.manual_seed(0)
    model = build_cvae(dice_spec(32), latent=1, latent_mode="bypass",
                       dim1=dim, dim2=dim, dim3=dim, dim4=dim).eval()  # fmt: skip
    fm = extract(model.decoder, 1, 6)
    labels = torch.arange(256) % 6
    z = model.sampler(labels, torch.Generator().manual_seed(1))
    qm = quantize(fm, z, labels, bypass=True, bits=8 if precision == "int8" else 4)
    zq, y = qm.quantize_z(z[:1]), labels[:1].numpy().astype("uint8")
    golden = (y, zq, run_int8(qm, zq, y).reshape(1, -1))
    codegen.write_model(tmp_path / precision, fm, precision, True, 1.0, golden, qm)
    for target, mcu in TARGETS:
        toolchain.make(
            target, tmp_path / precision, tmp_path / "build", variables=big_flash(tmp_path)
        )
        measured = toolchain.elf_size(toolchain.TARGETS[target], tmp_path / "build")
        est = estimate_stages(fm, precision, stream=True, mcu=load_mcu(mcu))
        # ARMv6-M int8 16_16_16_16: the Winograd kernel's weights (deploy/cvae.c) take it past
        # the 16 KB part, linked here with 64 KB of flash (the sizes, not the fit, compared)
        winograd = target == "cortex-m0plus" and (dim, precision) == (16, "int8")
        assert (est.wino[0] > 0) == (precision == "int8" and dim >= WINO_MIN_IN_C)
        assert est.fits()["flash_ok"] == (not winograd), (target, est.fits())
        assert est.last_acc_row == (dim == 16)
        assert abs(est.flash_bytes / measured["flash_bytes"] - 1) <= 0.01, (target, measured, est)
        assert est.ram_bytes == measured["ram_bytes"], (target, measured, est)
