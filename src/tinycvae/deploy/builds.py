"""Build the written firmware for each target and check it: the golden vectors on the host
and under QEMU, and the size of each microcontroller image against its budget and the
estimate. Also draws images with the host build, for scoring."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import numpy as np

from tinycvae.deploy import insn_mix, toolchain
from tinycvae.deploy.cycles import timing_report
from tinycvae.mcu.footprint import (
    RV_TIER_FLAGS,
    RV_TIER_QSQ,
    RV_TIERS,
    load_mcu,
)


def _golden(goal: str, model_dir: Path, build_dir: Path, what: str) -> tuple[str, str]:
    """Run a golden test (``make <goal>``); its output and ``"n/N"``, or ToolchainError
    when a vector differs."""
    text = toolchain.make(goal, model_dir, build_dir)
    ok, n = toolchain.golden_result(text)
    if ok != n:
        raise toolchain.ToolchainError(f"{what} reproduces {ok} of {n} golden vectors")
    return text, f"{ok}/{n}"


def build_and_check(
    target: toolchain.Target,
    model_dir: Path,
    build: Path,
    estimates: dict[str, Any],
    precision: str = "int8",
    rv_tier: str = RV_TIER_QSQ,
    arm_stride1: str | None = None,
    arm_rows: str | None = None,
) -> dict[str, Any]:
    """Build ``target`` from the firmware in ``model_dir`` (builds under ``build``) and
    check it; what it measured, for the report. ``estimates``: the footprint estimates by
    target name (see :func:`tinycvae.deploy.preflight.check_fits`); ``precision``: the
    shipped integer model's (int8 or int4; the host also builds fp32); ``rv_tier``: the
    CH32V003's rv32ec build (:func:`tinycvae.deploy.projects.ch32v003_tier`), which
    qemu-rv32 builds too; ``arm_stride1``: the 16 KB Cortex-M0's stride-1 kernel
    (:func:`tinycvae.deploy.projects.m0_stride1_kernel`) and ``arm_rows`` its kernels for
    the stages with a generated row kernel (:func:`~tinycvae.deploy.projects.m0_row_kernels`),
    which qemu builds too."""
    name = target.name
    shipped = precision
    if name == "host":
        out: dict[str, Any] = {}
        for precision in (shipped, "fp32"):
            b = build / precision
            toolchain.make("host", model_dir / precision, b)
            what = f"host {precision} build"
            out[f"golden_{precision}"] = _golden("check-host", model_dir / precision, b, what)[1]
        return out
    if target.check:  # an emulator runs the golden test, counting what it executes
        variables, kernel = _parts_kernels(name, rv_tier, arm_stride1, arm_rows)
        return _emulated(target, model_dir / shipped, build / shipped, shipped, variables) | kernel
    toolchain.make(name, model_dir / shipped, build / shipped)
    measured: dict[str, Any] = dict(toolchain.elf_size(target, build / shipped))
    est = estimates[name]
    map_file = (build / shipped / (target.elf or "")).with_suffix(".map")
    if "rv32ec_tier" in est:  # the tier deploy/Makefile's link took, beside the estimate's
        measured["rv32ec_tier"] = linked_rv_tier(map_file)
    if "armv6m_stride1" in est:  # and the ARMv6-M stride-1 kernel it linked
        measured["armv6m_stride1"] = "direct" if linked_fallback(map_file) else "winograd"
    if "armv6m_rows" in est:  # and its row kernels (the same fallback)
        measured["armv6m_rows"] = "runtime" if linked_fallback(map_file) else "generated"
    mcu = load_mcu(target.mcu)
    return {
        "mcu": mcu.name,
        "precision": shipped,
        "budget": {"flash_bytes": mcu.flash_bytes, "ram_bytes": mcu.ram_bytes},
        "measured": measured,
        "estimated": est,
        "flash_error": round(est["flash_bytes"] / measured["flash_bytes"] - 1, 4),
        "ram_error": round(est["ram_bytes"] / measured["ram_bytes"] - 1, 4),
    }


def _parts_kernels(
    name: str, rv_tier: str, arm_stride1: str | None, arm_rows: str | None
) -> tuple[dict[str, str], dict[str, str]]:
    """The make variables that build emulator ``name``'s kernels as the parts get them,
    and those kernels for the report: qemu-rv32 the CH32V003's tier, qemu the 16 KB
    Cortex-M0's stride-1 kernel and row kernels (where the model has them)."""
    if name == "qemu-rv32":
        return {"RV_FLAGS": RV_TIER_FLAGS[rv_tier]}, {"rv32ec_tier": rv_tier}
    if not (arm_stride1 or arm_rows):
        return {}, {}
    flags = ["-DCVAE_ARM_WINO=0"] if arm_stride1 == "direct" else []
    flags += ["-DCVAE_ARM_ROWS=0"] if arm_rows == "runtime" else []
    kernel = {"armv6m_stride1": arm_stride1, "armv6m_rows": arm_rows}
    return {"ARM_FLAGS": " ".join(flags)}, {k: v for k, v in kernel.items() if v}


def _emulated(
    target: toolchain.Target, model_dir: Path, build: Path, shipped: str, variables: dict
) -> dict[str, Any]:
    """The golden test under QEMU, counting what it executes; ``variables``: the make
    variables that build the kernels the parts get (``RV_FLAGS``: the CH32V003's rv32ec
    tier, ``ARM_FLAGS``: the 16 KB Cortex-M0's stride-1 kernel), so that its counts and
    cycles are those of the parts' code."""
    name = target.name
    text, executed = insn_mix.run_with_mix(name, model_dir, build, variables)
    ok, n = toolchain.golden_result(text)
    if ok != n:
        raise toolchain.ToolchainError(f"the {name} build gives {ok} of {n} golden vectors")
    return {
        f"golden_{shipped}": f"{ok}/{n}",
        "instructions_per_image": toolchain.instructions_per_image(text),
        "instructions_per_stage": toolchain.instructions_per_stage(text),
        "stack_high_water_bytes": toolchain.stack_high_water(text),
        "machine": target.machine,
        "cycles": timing_report(executed.segments, executed.isa),
    }


def _link_map(map_file: Path) -> str:
    try:
        text = map_file.read_text(errors="replace")
    except OSError as err:
        raise toolchain.ToolchainError(f"no link map {map_file}: {err.strerror}") from None
    if not any(f"/{obj}.o" in text for obj in ("cvae", "cvae_fallback", "cvae_fallback2")):
        raise toolchain.ToolchainError(f"the link map {map_file} names no cvae object")
    return text


def linked_fallback(map_file: Path) -> int:
    """Which of deploy/Makefile's link_fallback steps linked the image whose link map is
    ``map_file``: 0 (none: ``cvae.o``), 1 (``cvae_fallback.o``) or 2 (``cvae_fallback2.o``)."""
    text = _link_map(map_file)
    return 2 if "/cvae_fallback2.o" in text else 1 if "/cvae_fallback.o" in text else 0


def linked_rv_tier(map_file: Path) -> str:
    """The rv32ec tier of the ch32v003 image whose link map is ``map_file``: the fallback
    deploy/Makefile's link_fallback linked, if any (the table-free kernels, then with the
    C requantisation)."""
    return RV_TIERS[linked_fallback(map_file)]  # the Makefile's order


def host_images(build_dir: Path, labels: np.ndarray, zq: np.ndarray, out_size: int) -> np.ndarray:
    """Pixels (uint8 [N, out_size]) drawn by the host build's ``cvae_pipe`` under
    ``build_dir``, one per (label, int8 z)."""
    records = np.concatenate([labels.astype(np.uint8)[:, None], zq.view(np.uint8)], axis=1)
    done = subprocess.run(
        [str(build_dir / "host" / "cvae_pipe")], input=records.tobytes(), capture_output=True
    )
    if done.returncode != 0:
        raise toolchain.ToolchainError(f"cvae_pipe failed: {done.stderr.decode()[:300]}")
    return np.frombuffer(done.stdout, dtype=np.uint8).reshape(len(labels), out_size)
