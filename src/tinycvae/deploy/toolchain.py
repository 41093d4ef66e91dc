"""The firmware's build targets and the tools they need: make, size, QEMU.

Every call goes through ``deploy/Makefile`` (the one place that knows the compiler
flags, boards and linker scripts); this module checks that the tools are installed,
runs the targets and reads back what they print (``golden: n/N match``,
``instructions per image: n``) and what ``size`` measures.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from tinycvae.errors import TinyCVAEError
from tinycvae.repo import DEPLOY_DIR

DEPLOY_SRC = DEPLOY_DIR  # the runtime, the demo, the golden test and the boards


class ToolchainError(TinyCVAEError):
    """A compiler, emulator or build step is missing or failed."""


@dataclass(frozen=True)
class Target:
    name: str
    tools: tuple[str, ...]
    packages: str  # the Debian packages that install the tools
    mcu: str | None = None  # conf/mcu profile whose budget the linker script enforces
    elf: str | None = None  # the firmware image measured with `size`
    size_tool: str | None = None
    check: str | None = None  # make goal running the golden test in an emulator
    machine: str = ""  # what that emulator runs


TARGETS: dict[str, Target] = {
    t.name: t
    for t in (
        Target("host", ("make", "cc"), "make gcc"),
        Target(
            "qemu",
            ("make", "arm-none-eabi-gcc", "qemu-system-arm"),
            "gcc-arm-none-eabi libnewlib-arm-none-eabi qemu-system-arm",
            check="check-qemu",
            machine="qemu-system-arm -M mps2-an385, Cortex-M0+ (ARMv6-M) code",
        ),
        Target(
            "qemu-rv32",
            ("make", "riscv64-unknown-elf-gcc", "qemu-system-riscv32"),
            "gcc-riscv64-unknown-elf picolibc-riscv64-unknown-elf qemu-system-misc",
            check="check-qemu-rv32",
            machine="qemu-system-riscv32 -M virt, the CH32V003's rv32ec code",
        ),
        Target(
            "cortex-m0plus",
            ("make", "arm-none-eabi-gcc"),
            "gcc-arm-none-eabi libnewlib-arm-none-eabi",
            mcu="cortex_m0plus_16k",
            elf="cortex-m0plus/demo.elf",
            size_tool="arm-none-eabi-size",
        ),
        Target(
            "ch32v003",
            ("make", "riscv64-unknown-elf-gcc"),
            "gcc-riscv64-unknown-elf picolibc-riscv64-unknown-elf",
            mcu="ch32v003",
            elf="ch32v003/demo.elf",
            size_tool="riscv64-unknown-elf-size",
        ),
    )
}


def check_targets(names: list[str]) -> list[Target]:
    """The named targets, after checking each exists and its tools are on PATH."""
    targets = []
    for name in names:
        if name not in TARGETS:
            raise ToolchainError(f"target {name} is unknown; allowed: {', '.join(TARGETS)}")
        target = TARGETS[name]
        missing = [t for t in target.tools if shutil.which(t) is None]
        if missing:
            raise ToolchainError(
                f"target {name} needs {', '.join(missing)}, not found on PATH; install it with "
                f"`sudo apt-get install {target.packages}` (or drop the target: targets=[...])"
            )
        targets.append(target)
    return targets


def make(
    goal: str,
    model_dir: Path,
    build_dir: Path,
    timeout: float = 600,
    variables: dict[str, str] | None = None,
) -> str:
    """Run ``make -C deploy <goal>`` for ``model_dir`` (plus ``variables``, e.g. another
    QEMU); its output, or ToolchainError with the lines that say why (e.g. the linker's
    region overflow)."""
    cmd = [
        "make",
        "-s",
        "-C",
        str(DEPLOY_SRC),
        f"MODEL_DIR={model_dir}",
        f"BUILD={build_dir}",
        *(f"{k}={v}" for k, v in (variables or {}).items()),
        goal,
    ]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise ToolchainError(f"make {goal} did not finish within {timeout:.0f} s") from None
    out = done.stdout + done.stderr
    if done.returncode != 0:
        lines = [ln for ln in out.splitlines() if ln.strip()]
        says_why = r"overflow|error|Error|FAIL|differ|expected|plugin"  # golden mismatches too
        why = [ln for ln in lines if re.search(says_why, ln)] or lines
        raise ToolchainError(f"make {goal} failed: {' | '.join(why[-4:])[:600]}")
    return out


def golden_result(output: str) -> tuple[int, int]:
    """``(matching, total)`` from a golden test's ``golden: n/N match`` line."""
    m = re.search(r"golden: (\d+)/(\d+) match", output)
    if not m:
        raise ToolchainError(f"golden test printed no result line: {output[-300:]!r}")
    return int(m.group(1)), int(m.group(2))


def instructions_per_image(output: str) -> int:
    m = re.search(r"instructions per image: (\d+)", output)
    if not m:
        raise ToolchainError(f"the QEMU run printed no instruction count: {output[-300:]!r}")
    return int(m.group(1))


def instructions_per_stage(output: str) -> list[int] | None:
    """Instructions of each stage of that image (``instructions per stage: n0 n1 ...``),
    if the golden test printed them."""
    m = re.search(r"instructions per stage:((?: \d+)+)", output)
    return [int(v) for v in m.group(1).split()] if m else None


def stack_high_water(output: str) -> int | None:
    """Deepest stack use a board measured (``stack high-water: n bytes``), if it did."""
    m = re.search(r"stack high-water: (\d+) bytes", output)
    return int(m.group(1)) if m else None


def elf_size(target: Target, build_dir: Path) -> dict[str, int]:
    """``size`` of the target's firmware: text, data, bss; flash = text + data (the
    initialised data is stored in flash), ram = data + bss (bss includes the stack the
    linker script reserves)."""
    assert target.elf and target.size_tool
    elf = build_dir / target.elf
    done = subprocess.run(
        [target.size_tool, "-B", str(elf)], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise ToolchainError(f"{target.size_tool} {elf} failed: {done.stderr.strip()[:300]}")
    text, data, bss = (int(v) for v in done.stdout.splitlines()[1].split()[:3])
    return {
        "text": text,
        "data": data,
        "bss": bss,
        "flash_bytes": text + data,
        "ram_bytes": data + bss,
    }
