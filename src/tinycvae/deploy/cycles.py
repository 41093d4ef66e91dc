"""Cycles from an executed instruction mix: each instruction QEMU ran (how often, how
often it branched away, how many of its accesses read flash; see
:mod:`tinycvae.deploy.insn_mix`) is classified from its disassembly and costed by a
documented timing model of the core and of the part's flash (``timing:`` in
``conf/mcu/<name>.yaml``). The model and how far it can be trusted:
``docs/firmware.md``.

Per instruction: ``max(execute, fetch)`` cycles, where ``execute`` is the core's cost of
its class when it does not branch and ``fetch`` the flash time of its bytes
(``size / fetch_bytes * (1 + wait_states)``; the prefetch buffer hides it behind
execution, never more); plus, each time it branched away, the core's refill cost and the
flash wait states of the target's first fetch; plus the wait states of each of its data
accesses that read flash (constants, weights).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from tinycvae.errors import ConfigError


@dataclass(frozen=True)
class Core:
    """Cycles per instruction class when the instruction does not branch (``execute``),
    what a branch away adds (``taken``), and the bytes one access of the core's own bus
    (SRAM, zero wait states) delivers."""

    name: str
    isa: str
    execute: dict[str, int]
    taken: dict[str, int]
    bus_bytes: int = 4


# Cortex-M0+ TRM (DDI 0484C) table 3-1, single-cycle multiplier (the STM32 and RP2040
# configuration); Cortex-M0 TRM (DDI 0432C) table 3-1. "ldm"/"stm"/"push"/"pop": 1 + N
# (N registers, added per register by `execute_cycles`).
_ARMV6M = {"alu": 1, "mul": 1, "load": 2, "store": 2, "ldm": 1, "stm": 1, "push": 1,
           "pop": 1, "pop_pc": 1, "branch": 1, "jump": 1, "call": 2, "indirect": 1,
           "barrier": 3}  # fmt: skip
CORES = {
    c.name: c
    for c in (
        Core(
            "cortex_m0plus",
            "armv6m",
            _ARMV6M,
            # B / B<cond> taken 2, BL 3, BX/BLX 2, POP {..,pc} 3 + N
            {"branch": 1, "jump": 1, "call": 1, "indirect": 1, "pop_pc": 2},
        ),  # fmt: skip
        Core(
            "cortex_m0",
            "armv6m",
            _ARMV6M,
            # B / B<cond> taken 3, BL 4, BX/BLX 3, POP {..,pc} 4 + N
            {"branch": 2, "jump": 2, "call": 2, "indirect": 2, "pop_pc": 3},
        ),  # fmt: skip
        # QingKe V2A (CH32V003): 2-stage pipeline, RV32EC, no multiplier; data accesses take
        # 2 cycles; a taken branch or jump flushes the fetched instruction (1 cycle) before
        # the target's fetch (whose wait states are added per part)
        Core(
            "qingke_v2a",
            "rv32ec",
            {
                "alu": 1,
                "load": 2,
                "store": 2,
                "branch": 1,
                "jump": 1,
                "call": 1,
                "indirect": 1,
                "system": 1,
                "mul": 1,
            },  # fmt: skip
            {"branch": 1, "jump": 1, "call": 1, "indirect": 1},
        ),
    )
}


@dataclass(frozen=True)
class PartTiming:
    """One part a profile covers, as its timing model sees it: its core, the clock it
    runs at and its flash (wait states at that clock; bytes one flash access delivers to
    the prefetch buffer)."""

    mcu: str
    part: str
    core: Core
    clock_mhz: float
    wait_states: int
    fetch_bytes: int


def part_timings(mcu: str, entries: Iterable[dict]) -> list[PartTiming]:
    """The ``timing:`` entries of ``conf/mcu/<mcu>.yaml`` (each: part, core, clock_mhz,
    flash_wait_states, flash_fetch_bytes), checked: a bad one is one line naming it."""
    out = []
    for i, e in enumerate(entries):
        where = f"mcu={mcu} timing[{i}]"
        e = dict(e)
        if e.get("core") not in CORES:
            raise ConfigError(f"{where}.core={e.get('core')} is unknown; allowed: "
                              f"{', '.join(CORES)}")  # fmt: skip
        clock, ws, fetch = (e.get(k) for k in ("clock_mhz", "flash_wait_states",
                                               "flash_fetch_bytes"))  # fmt: skip
        for key, ok, allowed in (
            ("clock_mhz", isinstance(clock, (int, float)) and clock > 0, "> 0"),
            ("flash_wait_states", isinstance(ws, int) and 0 <= ws <= 15, "an integer 0-15"),
            ("flash_fetch_bytes", fetch in (2, 4, 8, 16), "2, 4, 8 or 16"),
        ):
            if not ok:
                raise ConfigError(f"{where}.{key}={e.get(key)} is invalid; allowed: {allowed}")
        out.append(PartTiming(mcu, str(e.get("part", mcu)), CORES[e["core"]], float(clock),
                              ws, fetch))  # fmt: skip
    return out


# ------------------------------------------------------------------ classification

_ARM_BRANCH = re.compile(r"b(eq|ne|cs|hs|cc|lo|mi|pl|vs|vc|hi|ls|ge|lt|gt|le)$")


def _reglist(ops: str) -> list[str]:
    m = re.search(r"\{([^}]*)\}", ops)
    regs = []
    for part in m.group(1).split(",") if m else []:
        a, _, b = part.strip().partition("-")
        if b:  # r4-r7
            regs += [f"r{k}" for k in range(int(a[1:]), int(b[1:]) + 1)]
        elif a:
            regs.append(a)
    return regs


def classify_armv6m(mnemonic: str, ops: str) -> tuple[str, int]:
    """``(class, registers moved)`` of a Thumb instruction as objdump spells it."""
    m = mnemonic.lower().split(".")[0]  # b.n, bl.w ...
    if m in ("push", "pop", "ldmia", "ldm", "stmia", "stm"):
        regs = _reglist(ops)
        kind = {"ldmia": "ldm", "stmia": "stm"}.get(m, m)
        return ("pop_pc" if kind == "pop" and "pc" in regs else kind), len(regs)
    if m == "b" or _ARM_BRANCH.match(m):
        return ("jump" if m == "b" else "branch"), 0
    if m == "bl":
        return "call", 0
    if m in ("bx", "blx"):
        return "indirect", 0
    if m.startswith("ldr"):
        return "load", 0
    if m.startswith("str"):
        return "store", 0
    if m in ("muls", "mul"):
        return "mul", 0
    if m in ("dmb", "dsb", "isb"):
        return "barrier", 0
    if m in ("mov", "add") and ops.replace(" ", "").startswith("pc,"):
        return "indirect", 0
    return "alu", 0


_RV_LOAD = {"lb", "lbu", "lh", "lhu", "lw", "c.lw", "c.lwsp"}
_RV_STORE = {"sb", "sh", "sw", "c.sw", "c.swsp"}
_RV_BRANCH = {"beq", "bne", "blt", "bge", "bltu", "bgeu", "c.beqz", "c.bnez"}


def classify_rv32(mnemonic: str, ops: str) -> tuple[str, int]:
    """``(class, 0)`` of an RV32EC instruction as ``objdump -M no-aliases`` spells it."""
    m = mnemonic.lower()
    if m in _RV_LOAD:
        return "load", 0
    if m in _RV_STORE:
        return "store", 0
    if m in _RV_BRANCH:
        return "branch", 0
    if m in ("jal", "c.jal"):
        link = m == "c.jal" or not ops.startswith("zero")
        return ("call" if link else "jump"), 0
    if m == "c.j":
        return "jump", 0
    if m in ("jalr", "c.jr", "c.jalr"):
        return "indirect", 0
    if m.startswith(("csr", "fence", "ecall", "ebreak", "mret", "wfi")):
        return "system", 0
    if m.startswith(("mul", "div", "rem")):
        return "mul", 0
    return "alu", 0


CLASSIFY = {"armv6m": classify_armv6m, "rv32ec": classify_rv32}


# ------------------------------------------------------------------ the model


@dataclass(frozen=True)
class Executed:
    """One instruction's share of a run: where it lies and how it ran."""

    pc: int
    size: int
    count: int
    taken: int
    flash_reads: int
    mnemonic: str
    ops: str
    in_flash: bool


def execute_cycles(core: Core, kind: str, regs: int) -> int:
    return core.execute[kind] + (regs if kind in ("ldm", "stm", "push", "pop", "pop_pc") else 0)


def cycles(rows: Iterable[Executed], part: PartTiming) -> float:
    """Cycles of ``rows`` on ``part`` (the model in this module's docstring)."""
    core, ws = part.core, part.wait_states
    total = 0.0
    for r in rows:
        kind, regs = CLASSIFY[core.isa](r.mnemonic, r.ops)
        if r.in_flash:
            fetch = r.size / part.fetch_bytes * (1 + ws)
        else:
            fetch = r.size / core.bus_bytes
        per = max(execute_cycles(core, kind, regs), fetch)
        refill = core.taken.get(kind, 1) + (ws if r.in_flash else 0)
        total += r.count * per + r.taken * refill + r.flash_reads * ws
    return total


def mix(rows: Iterable[Executed], isa: str) -> dict[str, int]:
    """Executed instructions per class (and ``taken``: how many branched away)."""
    out: dict[str, int] = {}
    for r in rows:
        kind = CLASSIFY[isa](r.mnemonic, r.ops)[0]
        out[kind] = out.get(kind, 0) + r.count
        out["taken"] = out.get("taken", 0) + r.taken
    return dict(sorted(out.items()))


def parts_for(isa: str) -> list[PartTiming]:
    """Every part in ``conf/mcu/`` whose core runs ``isa`` code, in profile order."""
    from tinycvae.mcu.footprint import all_mcus

    return [p for m in all_mcus() for p in part_timings(m.name, m.timing) if p.core.isa == isa]


def timing_report(segments: list[list[Executed]], isa: str) -> dict:
    """The report's ``cycles`` block of one emulator target: the executed instructions by
    class and, per part running that code, cycles and microseconds per image and cycles
    per stage (``segments[1:-1]``: the stages; the first and last hold the call's entry
    and return, counted in the totals)."""
    rows = [r for seg in segments for r in seg]
    parts = []
    for p in parts_for(isa):
        total = cycles(rows, p)
        parts.append({
            "mcu": p.mcu, "part": p.part, "core": p.core.name, "clock_mhz": p.clock_mhz,
            "flash_wait_states": p.wait_states, "cycles_per_image": round(total),
            "us_per_image": round(total / p.clock_mhz, 1),
            "cycles_per_stage": [round(cycles(seg, p)) for seg in segments[1:-1]],  # [] unsplit
        })  # fmt: skip
    return {
        "model": "tinycvae.deploy.cycles (docs/firmware.md)",
        "instructions_per_image": sum(r.count for r in rows),
        "mix": mix(rows, isa),
        "parts": parts,
    }
