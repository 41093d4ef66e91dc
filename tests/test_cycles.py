"""The cycle model: instruction classes from objdump's spelling, the timing of each core
and part, and QEMU's instruction mix (the TCG plugin) on a tiny loop whose counts and
cycles are worked out by hand."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tinycvae.deploy import cycles, insn_mix
from tinycvae.deploy.cycles import CORES, Executed, PartTiming
from tinycvae.errors import ConfigError


@pytest.mark.parametrize(
    "mnemonic, ops, want",
    [
        ("movs", "r0, #10", ("alu", 0)),
        ("bics", "r0, r1", ("alu", 0)),  # starts with b, is no branch
        ("bne.n", "c <loop>", ("branch", 0)),
        ("b.n", "18", ("jump", 0)),
        ("bl", "1c", ("call", 0)),
        ("bx", "lr", ("indirect", 0)),
        ("ldrb", "r2, [r1, #1]", ("load", 0)),
        ("str", "r2, [sp, #4]", ("store", 0)),
        ("muls", "r0, r1", ("mul", 0)),
        ("push", "{r4, r5, r6, lr}", ("push", 4)),
        ("pop", "{r4, r5, r6, pc}", ("pop_pc", 4)),
        ("ldmia", "r1!, {r2-r5}", ("ldm", 4)),
    ],
)
def test_thumb_instructions_are_classified(mnemonic, ops, want):
    assert cycles.classify_armv6m(mnemonic, ops) == want


@pytest.mark.parametrize(
    "mnemonic, ops, want",
    [
        ("c.lw", "a2,0(a1)", "load"),
        ("lbu", "a5,3(a4)", "load"),
        ("c.swsp", "ra,12(sp)", "store"),
        ("c.bnez", "a0,8000000a", "branch"),
        ("bgeu", "a4,a5,80000100", "branch"),
        ("jal", "ra,80000200", "call"),
        ("jal", "zero,80000200", "jump"),
        ("c.j", "8000001e", "jump"),
        ("c.jr", "ra", "indirect"),
        ("c.slli", "a5,0x2", "alu"),
    ],
)
def test_rv32ec_instructions_are_classified(mnemonic, ops, want):
    assert cycles.classify_rv32(mnemonic, ops) == (want, 0)


def _part(core: str, ws: int, fetch: int) -> PartTiming:
    return PartTiming("x", "X", CORES[core], 48.0, ws, fetch)


def test_flash_fetch_costs_32_bit_instructions_a_cycle_on_the_ch32v003():
    # QingKe V2A at 48 MHz, 1 wait state, 32-bit flash reads: a compressed ALU
    # instruction is hidden by the fetch (1 cycle), a 32-bit one waits for it (2)
    alu16 = Executed(0, 2, 100, 0, 0, "c.addi", "a0,-1", True)
    alu32 = Executed(4, 4, 100, 0, 0, "addi", "a0,a0,-1", True)
    part = _part("qingke_v2a", 1, 4)
    assert cycles.cycles([alu16], part) == 100
    assert cycles.cycles([alu32], part) == 200
    # from SRAM (no wait state) both take one cycle
    sram = [Executed(4, 4, 100, 0, 0, "addi", "a0,a0,-1", False)]
    assert cycles.cycles(sram, part) == 100


def test_a_bad_timing_entry_is_one_line_naming_it():
    good = {"part": "P", "core": "cortex_m0plus", "clock_mhz": 48, "flash_wait_states": 1,
            "flash_fetch_bytes": 8}  # fmt: skip
    assert cycles.part_timings("m", [good])[0].clock_mhz == 48
    with pytest.raises(ConfigError, match=r"mcu=m timing\[0\].core=z80 is unknown; allowed"):
        cycles.part_timings("m", [{**good, "core": "z80"}])
    with pytest.raises(ConfigError, match=r"timing\[0\].flash_wait_states=-1 is invalid"):
        cycles.part_timings("m", [{**good, "flash_wait_states": -1}])


def test_every_profile_names_its_parts_timing():
    assert [p.part for p in cycles.parts_for("rv32ec")] == ["CH32V003"]
    arm = {p.part: p.core.name for p in cycles.parts_for("armv6m")}
    assert arm["STM32C011F4"] == "cortex_m0plus" and arm["STM32F030F4"] == "cortex_m0"


# ------------------------------------------------ the plugin on a loop counted by hand

RV_LOOP = """
    .section .text
    .globl _start, done
_start:
    c.li a0, 10
    lui a1, %hi(data)
    addi a1, a1, %lo(data)
loop:
    c.lw a2, 0(a1)
    c.addi a0, -1
    c.bnez a0, loop
done:
    lui t0, 0x100
    lui t1, 0x5
    addi t1, t1, 0x555
    sw t1, 0(t0)
1:  j 1b
    .section .rodata
data: .word 7
"""
ARM_LOOP = """
    .syntax unified
    .thumb
    .section .vectors, "a"
    .word 0x20001000
    .word _start + 1
    .text
    .thumb_func
    .globl _start, done
_start:
    movs r0, #10
    ldr r1, =data
loop:
    ldr r2, [r1]
    subs r0, #1
    bne loop
    .thumb_func
done:
    movs r0, #0x18
    ldr r1, =0x20026
    bkpt 0xab
1:  b 1b
    .ltorg
    .section .rodata
data: .word 7
"""
LOOPS = {
    "qemu-rv32": (RV_LOOP, "0x80000000", ["-march=rv32ec", "-mabi=ilp32e"],
                  "riscv64-unknown-elf-gcc",
                  ["-M", "virt", "-bios", "none", "-cpu", "rv32,m=false,a=false,f=false,d=false"]),
    "qemu": (ARM_LOOP, "0", ["-mcpu=cortex-m0plus", "-mthumb"], "arm-none-eabi-gcc",
             ["-M", "mps2-an385", "-cpu", "cortex-m3", "-semihosting-config",
              "enable=on,target=native"]),
}  # fmt: skip


def _loop_mix(target: str, tmp: Path) -> insn_mix.Mix:
    src, origin, flags, cc, machine = LOOPS[target]
    emu = insn_mix.EMULATORS[target]
    tools = (cc, emu.qemu, emu.binutils + "objdump", "cc")
    if missing := [t for t in tools if shutil.which(t) is None]:
        pytest.skip(f"{', '.join(missing)} not installed (run .ci/run)")
    (tmp / "loop.S").write_text(src)
    (tmp / "loop.ld").write_text(
        f"SECTIONS {{ . = {origin}; .vectors : {{ KEEP(*(.vectors)) }} "
        ".text : { *(.text) } .rodata : { *(.rodata) } }\n"
    )
    elf = tmp / "loop.elf"
    subprocess.run([cc, *flags, "-nostdlib", "-T", str(tmp / "loop.ld"), "-o", str(elf),
                    str(tmp / "loop.S")], check=True)  # fmt: skip
    out = tmp / "mix.txt"
    args = insn_mix.plugin_args(emu, elf, out, ("_start", "_start", "done"), None)
    lib = insn_mix.build_plugin(tmp / "plugin")
    subprocess.run([emu.qemu, *machine, "-nographic", "-icount", "shift=0", "-plugin",
                    f"{lib},{args}", "-kernel", str(elf)], check=True, timeout=60)  # fmt: skip
    return insn_mix.parse(out.read_text(), emu, elf)


def test_the_plugin_counts_a_rv32ec_loop_as_worked_out_by_hand(tmp_path):
    mix = _loop_mix("qemu-rv32", tmp_path)
    # c.li, lui, addi once; c.lw, c.addi, c.bnez ten times; the branch taken 9 times
    assert mix.instructions == 33
    assert cycles.mix(mix.rows, "rv32ec") == {"alu": 13, "branch": 10, "load": 10, "taken": 9}
    assert sum(r.flash_reads for r in mix.rows) == 10  # `data` is in .rodata: flash
    # 48 MHz, 1 wait state: c.li 1 + lui 2 + addi 2 + c.lw 10 x (2 + 1 flash read)
    # + c.addi 10 + c.bnez 10 + 9 taken x (1 refill + 1 wait state)
    assert cycles.cycles(mix.rows, _part("qingke_v2a", 1, 4)) == 73
    # 24 MHz, no wait state: 1 + 1 + 1 + 20 + 10 + 10 + 9
    assert cycles.cycles(mix.rows, _part("qingke_v2a", 0, 4)) == 52


def test_the_plugin_counts_an_armv6m_loop_as_worked_out_by_hand(tmp_path):
    mix = _loop_mix("qemu", tmp_path)
    # movs, ldr (literal) once; ldr, subs, bne ten times; bne taken 9 times
    assert mix.instructions == 32
    assert cycles.mix(mix.rows, "armv6m") == {"alu": 11, "branch": 10, "load": 11, "taken": 9}
    # Cortex-M0+, 1 wait state, 64-bit flash reads: movs 1 + ldr 2 + 1 wait (literal in
    # flash) + 10 ldr x (2 + 1) + 10 subs + 10 bne + 9 taken x (1 + 1 wait)
    assert cycles.cycles(mix.rows, _part("cortex_m0plus", 1, 8)) == 72
    # Cortex-M0: a taken branch costs 3, not 2
    assert cycles.cycles(mix.rows, _part("cortex_m0", 1, 8)) == 81
    # bench/firmware.py --by-function: each pc under the nearest symbol at or below it
    # (_start's 2, the local label `loop`'s 30)
    elf = tmp_path / "loop.elf"
    assert insn_mix.by_function(mix, insn_mix.EMULATORS["qemu"], elf) == [
        {"_start": 2, "loop": 30}
    ]


def test_code_run_from_ram_is_named_by_how_it_ran(tmp_path):
    """The rv32ec requantisation runs a chain it writes into its stack frame, which objdump
    cannot name: there an instruction that always jumped is the chain's c.jr, any other
    one of its ALU instructions (and the cycle model classes them so); outside the
    writable ranges an unknown pc is still an error."""
    names, ram = {0x100: ("c.addi", "sp,-16")}, [(0x8000, 0x9000)]
    assert insn_mix._name(0x100, 5, 0, names, ram, tmp_path) == ("c.addi", "sp,-16")
    assert insn_mix._name(0x8002, 7, 7, names, ram, tmp_path) == ("c.jr", "t2")
    assert insn_mix._name(0x8004, 7, 0, names, ram, tmp_path) == ("c.add", "generated")
    assert cycles.classify_rv32("c.add", "generated") == ("alu", 0)
    assert cycles.classify_rv32("c.jr", "t2")[0] != "alu"
    with pytest.raises(insn_mix.toolchain.ToolchainError, match="no instruction at 0x9000"):
        insn_mix._name(0x9000, 1, 0, names, ram, tmp_path)
