"""The executed instruction mix of one image under QEMU, per stage: the golden test runs
with a TCG plugin (``insn_mix_plugin.c``, built here with the host's ``cc``) that counts
each instruction executed between ``cvae_generate``'s entry after
``board_icount_start`` and ``board_icount_stop`` (the window the board's own instruction
count measures), split at each ``cvae_stage_hook`` call; each instruction is then named
by the target toolchain's ``objdump -d`` of the same ELF and placed in flash or RAM by its
section (read-only sections lie in the part's flash).

QEMU is the Makefile's (``QEMU`` / ``QEMU_RV`` point at a wrapper that adds the plugin),
so its flags stay in one place.
"""

from __future__ import annotations

import bisect
import hashlib
import re
import shutil
import subprocess
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from tinycvae.deploy import toolchain
from tinycvae.deploy.cycles import Executed

PLUGIN_SRC = Path(__file__).with_name("insn_mix_plugin.c")


@dataclass(frozen=True)
class Emulator:
    isa: str
    make_var: str  # the Makefile variable naming the emulator
    qemu: str
    binutils: str  # prefix of nm / objdump
    objdump_flags: tuple[str, ...] = ()
    thumb: bool = False  # function symbols carry the Thumb bit


EMULATORS = {
    "qemu": Emulator("armv6m", "QEMU", "qemu-system-arm", "arm-none-eabi-", thumb=True),
    "qemu-rv32": Emulator(
        "rv32ec", "QEMU_RV", "qemu-system-riscv32", "riscv64-unknown-elf-", ("-M", "no-aliases")
    ),  # fmt: skip
}


@dataclass(frozen=True)
class Mix:
    """What one image executed: ``segments[0]`` runs up to stage 0's hook, ``segments[k]``
    stage ``k - 1``, the last one the return after the last stage."""

    isa: str
    segments: list[list[Executed]]

    @property
    def rows(self) -> list[Executed]:
        return [r for seg in self.segments for r in seg]

    @property
    def instructions(self) -> int:
        return sum(r.count for r in self.rows)


def build_plugin(build_dir: Path) -> Path:
    """The plugin, compiled (once per source version) under ``build_dir``."""
    if shutil.which("cc") is None:
        raise toolchain.ToolchainError("the instruction-mix plugin needs cc: apt-get install gcc")
    digest = hashlib.sha256(PLUGIN_SRC.read_bytes()).hexdigest()[:12]
    lib = build_dir / f"insn_mix-{digest}.so"
    if not lib.exists():
        build_dir.mkdir(parents=True, exist_ok=True)
        done = subprocess.run(["cc", "-O2", "-shared", "-fPIC", "-Wall", "-Wextra", "-Werror",
                               "-o", str(lib), str(PLUGIN_SRC)],
                              capture_output=True, text=True)  # fmt: skip
        if done.returncode != 0:
            raise toolchain.ToolchainError(f"building the QEMU plugin failed: {done.stderr[:300]}")
    return lib


def _tool(emu: Emulator, name: str, *args: str) -> str:
    tool = emu.binutils + name
    done = subprocess.run([tool, *args], capture_output=True, text=True)
    if done.returncode != 0:
        raise toolchain.ToolchainError(f"{tool} {' '.join(args)} failed: {done.stderr[:300]}")
    return done.stdout


def symbols(emu: Emulator, elf: Path) -> dict[str, int]:
    """Function addresses of ``elf`` (the Thumb bit cleared: QEMU's pc is even)."""
    out = {}
    for line in _tool(emu, "nm", str(elf)).splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[1] in "Tt":
            out[parts[2]] = int(parts[0], 16) & (~1 if emu.thumb else ~0)
    return out


def readonly_ranges(emu: Emulator, elf: Path) -> list[tuple[int, int]]:
    """``[lo, hi)`` of each allocated read-only section: what the part keeps in flash."""
    text = _tool(emu, "objdump", "-h", str(elf))
    ranges = []
    for m in re.finditer(r"^\s*\d+\s+\S+\s+([0-9a-f]+)\s+([0-9a-f]+)\s+\S+\s+\S+\s+\S+\n(.*)$",
                         text, re.M):  # fmt: skip
        size, vma, flags = int(m.group(1), 16), int(m.group(2), 16), m.group(3)
        if size and "ALLOC" in flags and "READONLY" in flags:
            ranges.append((vma, vma + size))
    return ranges


# Code the runtime writes into RAM at run time (the rv32ec requantisation's chain, written
# once per output row into its function's stack frame: c.mv / c.slli / c.add / c.sub,
# then c.jr back; docs/firmware.md), which objdump cannot name: an instruction in a
# writable section is named "c.jr" where every run of it jumped away, "c.add" (an ALU
# instruction, what the others are) elsewhere.
def writable_ranges(emu: Emulator, elf: Path) -> list[tuple[int, int]]:
    """``[lo, hi)`` of each allocated writable section (data, bss) and of the stack (the
    link script's ``__stack_limit`` .. ``__stack_top``, where it names them)."""
    text = _tool(emu, "objdump", "-h", str(elf))
    nm = (ln.split() for ln in _tool(emu, "nm", str(elf)).splitlines())
    syms = {p[2]: int(p[0], 16) for p in nm if len(p) == 3}
    ranges = [(syms["__stack_limit"], syms["__stack_top"])] if "__stack_top" in syms else []
    for m in re.finditer(r"^\s*\d+\s+\S+\s+([0-9a-f]+)\s+([0-9a-f]+)\s+\S+\s+\S+\s+\S+\n(.*)$",
                         text, re.M):  # fmt: skip
        size, vma, flags = int(m.group(1), 16), int(m.group(2), 16), m.group(3)
        if size and "ALLOC" in flags and "READONLY" not in flags:
            ranges.append((vma, vma + size))
    return ranges


def _name(pc: int, count: int, taken: int, names: dict, generated: list, elf: Path) -> tuple:
    if pc in names:
        return names[pc]
    if any(lo <= pc < hi for lo, hi in generated):
        return ("c.jr", "t2") if taken == count else ("c.add", "generated")
    raise toolchain.ToolchainError(f"{elf}: no instruction at 0x{pc:x} in objdump -d")


def by_function(mix: Mix, emu: Emulator, elf: Path) -> list[Counter]:
    """Per segment of ``mix`` (``segments[k]``: stage ``k - 1``), the instructions each
    function of ``elf`` executed, by the nearest symbol at or below each pc; code the
    runtime writes into RAM (the rv32ec requantisation's chain) as "code in RAM"."""
    syms = sorted((a, n) for n, a in symbols(emu, elf).items())
    addrs = [a for a, _ in syms]
    ram = writable_ranges(emu, elf)
    out = []
    for seg in mix.segments:
        counts: Counter = Counter()
        for r in seg:
            if any(lo <= r.pc < hi for lo, hi in ram):
                counts["code in RAM"] += r.count
                continue
            i = bisect.bisect_right(addrs, r.pc) - 1
            counts[syms[i][1] if i >= 0 else f"0x{r.pc:x}"] += r.count
        out.append(counts)
    return out


_LINE = re.compile(r"^\s*([0-9a-f]+):\t[0-9a-f ]+\t(\S+)[ \t]*(.*)$")


def disassembly(emu: Emulator, elf: Path) -> dict[int, tuple[str, str]]:
    """``pc -> (mnemonic, operands)`` of every instruction objdump finds in ``elf``."""
    out = {}
    for line in _tool(emu, "objdump", "-d", *emu.objdump_flags, str(elf)).splitlines():
        m = _LINE.match(line)
        if m:
            out[int(m.group(1), 16)] = (m.group(2), m.group(3).split("<")[0].strip())
    return out


WINDOW = ("board_icount_start", "cvae_generate", "board_icount_stop")  # arm, on, off


def plugin_args(
    emu: Emulator,
    elf: Path,
    out: Path,
    window: tuple[str, str, str] = WINDOW,
    split: str | None = "cvae_stage_hook",
) -> str:
    """The plugin's arguments: count from ``window[1]`` (once ``window[0]`` has run) to
    ``window[2]``, a new segment at each ``split`` (if ``elf`` has it); flash = the
    read-only sections."""
    syms = symbols(emu, elf)
    missing = [s for s in window if s not in syms]
    if missing:
        raise toolchain.ToolchainError(f"{elf} has no {', '.join(missing)}")
    split = split if split in syms else None  # a runtime without stage hooks: one segment
    args = [f"out={out}"] + [f"{k}={syms[s]:x}" for k, s in zip(("arm", "on", "off"), window)]
    args += [f"split={syms[split]:x}"] if split else []
    args += [f"ro={lo:x}-{hi:x}" for lo, hi in readonly_ranges(emu, elf)]
    return ",".join(args)


def parse(text: str, emu: Emulator, elf: Path) -> Mix:
    """The plugin's output file, each instruction named by ``elf``'s disassembly."""
    lines = text.splitlines()
    if not lines or not lines[-1].startswith("end "):
        raise toolchain.ToolchainError("the QEMU plugin wrote no result (did the run finish?)")
    if any(ln.startswith("overflow") for ln in lines):
        raise toolchain.ToolchainError(f"the QEMU plugin ran out of room: {lines[-2]}")
    n_seg = int(lines[-1].split()[1])
    if n_seg == 0:
        raise toolchain.ToolchainError("the QEMU plugin saw no measured image")
    names = disassembly(emu, elf)
    flash = readonly_ranges(emu, elf)
    generated = writable_ranges(emu, elf)
    segments: list[list[Executed]] = [[] for _ in range(n_seg)]
    for ln in lines[:-1]:
        seg, pc, size, count, taken, ro = ln.split()
        pc_i = int(pc, 16)
        mnem, ops = _name(pc_i, int(count), int(taken), names, generated, elf)
        in_flash = any(lo <= pc_i < hi for lo, hi in flash)
        segments[int(seg)].append(Executed(pc_i, int(size), int(count), int(taken), int(ro),
                                           mnem, ops, in_flash))  # fmt: skip
    return Mix(emu.isa, segments)


def run_with_mix(
    target: str, model_dir: Path, build_dir: Path, variables: dict[str, str] | None = None
) -> tuple[str, Mix]:
    """``make <target>``, then its golden test (``make check-<target>``) under QEMU with the
    plugin: the test's output and the mix of its measured image. ``variables``: more make
    variables for both (e.g. ``RV_FLAGS``)."""
    emu = EMULATORS[target]
    toolchain.make(target, model_dir, build_dir, variables=variables)
    elf = build_dir / target / "golden_test.elf"
    work = build_dir / target / "mix"
    work.mkdir(parents=True, exist_ok=True)
    out = work / "mix.txt"
    out.unlink(missing_ok=True)
    lib = build_plugin(build_dir / "plugin")
    if "," in f"{lib}{out}":
        raise toolchain.ToolchainError(f"the plugin cannot run in a folder with a comma: {work}")
    wrapper = work / "qemu"
    qemu = shutil.which(emu.qemu) or emu.qemu
    wrapper.write_text(f'#!/bin/sh\nexec {qemu} -plugin "{lib},{plugin_args(emu, elf, out)}" '
                       '"$@"\n')  # fmt: skip
    wrapper.chmod(0o755)
    text = toolchain.make(f"check-{target}", model_dir, build_dir,
                          variables={**(variables or {}), emu.make_var: str(wrapper)})  # fmt: skip
    if not out.exists():
        raise toolchain.ToolchainError(f"QEMU with the plugin wrote no {out.name}: {text[-300:]}")
    return text, parse(out.read_text(), emu, elf)
