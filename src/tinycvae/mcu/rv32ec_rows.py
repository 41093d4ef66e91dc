"""Generated RV32EC row kernels for the narrow, busy transposed convs of an int8 or int4
decoder on the CH32V003 (rv32ec: no multiply instruction): one function per stage that
computes a whole output row, every output channel, straight into activations (or pixels
on the last stage), as the ARMv6-M ones do (:mod:`tinycvae.mcu.armv6m_rows`, whose plan of
loads and taps they share).

A weight known at export time is its product's code: ``acc += w * x`` is the shifts and
adds of w's non-adjacent form (int4: 1 to 4 instructions, 2.4 on average; int8 about 4),
so the MAC walks the weight's bits, not the activation's, and a zero weight costs
nothing. The multiplier of the requantisation is a chain the same way. A zero input (most,
after a ReLU) branches past its MACs where they cost 3 instructions or more.

Registers in the unit loops: t0 the input channels' distance, t1 the move from the last
input channel's row back to the first one's, cols columns on, t2 the output column
(channel 0 of the group), ra the first kernel row's pointer at the end of the loop; the
input a1, scratch a2 (both x8-x15: compressed forms); stride 1: accumulators s0, s1, a0,
the kernel rows' pointers a3-a5 (one before the output column); stride 2: accumulators
s0, s1, a0, a5, the kernel rows' pointers a3 (and a4 on odd output rows). The frame: the
kernel rows (0, 4, 8), out (12), s0, s1, ra (16-24), out_chan_step (28), the LUT (32).
"""

from __future__ import annotations

import numpy as np

from tinycvae.mcu.armv6m_rows import INT16_MAX, ROWS_ZERO_NAME, StagePlan, rows_stage
from tinycvae.mcu.stages import Stage

# a stage gets a kernel where every weight's code runs at least this often per image
# (its MACs over its weights: the kernel's flash pays off; the CH32V003 has 16 KB)
RV_ROWS_MIN_USES = 100
# a zero input branches past its MACs where they cost at least this many instructions
ZERO_SKIP_MIN_COST = 3
FRAME = 48
X, T = "a1", "a2"
COMPRESSED = {"s0", "s1", "a0", "a1", "a2", "a3", "a4", "a5"}  # x8-x15


def rv_rows_stage(st: Stage, precision: str) -> bool:
    """Whether stage ``st`` runs a generated row kernel on rv32ec: an int8 or int4 stage of
    the ARMv6-M shapes (:func:`~tinycvae.mcu.armv6m_rows.rows_stage`) whose weights each
    serve RV_ROWS_MIN_USES MACs or more."""
    if precision not in ("int8", "int4") or not rows_stage(st, "int8"):
        return False
    out_c, out_h, out_w = st.out_shape
    weights = st.in_shape[0] * out_c * 9
    return out_c * out_h * out_w * st.in_shape[0] * 9 / st.stride**2 >= RV_ROWS_MIN_USES * weights


def naf(k: int) -> list[tuple[int, int]]:
    """k > 0 in non-adjacent form: (bit, +1 or -1), highest first."""
    digits, bit = [], 0
    while k:
        if k & 1:
            d = 2 - (k & 3)  # +1 or -1
            digits.append((bit, d))
            k -= d
        k >>= 1
        bit += 1
    return digits[::-1]


class _Asm:
    def __init__(self, prefix: str):
        self.lines: list[str] = []
        self.prefix, self.n = prefix, 0

    def label(self) -> str:
        self.n += 1
        return f".L{self.prefix}_{self.n}"

    def __call__(self, *lines: str) -> None:
        self.lines.extend(lines)


def mul_const(asm: _Asm, dst: str, src: str, k: int) -> None:
    """dst = src * k (k >= 0, dst != src) by k's non-adjacent form."""
    if k == 0:
        asm(f"li {dst}, 0")
        return
    (top, _), *rest = naf(k)
    prev = top
    if not rest:
        asm(f"slli {dst}, {src}, {top}" if top else f"mv {dst}, {src}")
        return
    first = True
    for bit, sign in rest:
        if first:
            asm(f"slli {dst}, {src}, {prev - bit}")
            first = False
        else:
            asm(f"slli {dst}, {dst}, {prev - bit}")
        asm(f"{'add' if sign > 0 else 'sub'} {dst}, {dst}, {src}")
        prev = bit
    if prev:
        asm(f"slli {dst}, {dst}, {prev}")


def mac_cost(w: int) -> int:
    """Instructions of acc += w * x (mac)."""
    if w == 0:
        return 0
    digits = naf(abs(w))
    if len(digits) == 1:
        return 1 if digits[0][0] == 0 else 2
    return 2 * (len(digits) - 1) + (1 if digits[-1][0] else 0) + 1


def mac(asm: _Asm, acc: str, x: str, t: str, w: int) -> None:
    """acc += w * x (t scratch)."""
    if w == 0:
        return
    op = "add" if w > 0 else "sub"
    digits = naf(abs(w))
    if len(digits) == 1 and digits[0][0] == 0:
        asm(f"{op} {acc}, {acc}, {x}")
        return
    mul_const(asm, t, x, abs(w))
    asm(f"{op} {acc}, {acc}, {t}")


def macs(asm: _Asm, load: str, pairs: list[tuple[str, int]]) -> None:
    """X = the input (load), then acc += w * X for each (acc, w); a zero input branches
    past them where they cost ZERO_SKIP_MIN_COST or more."""
    pairs = [(a, int(w)) for a, w in pairs if w]
    if not pairs:
        return
    asm(load)
    skip = asm.label() if sum(mac_cost(w) for _, w in pairs) >= ZERO_SKIP_MIN_COST else None
    if skip:
        asm(f"beqz {X}, {skip}")
    for a, w in pairs:
        mac(asm, a, X, T, w)
    if skip:
        asm(f"{skip}:")


class _Stage(StagePlan):
    """The RV32EC generator of one stage."""

    ACC_S1, BASES_S1, ACC_S2 = ("s0", "s1", "a0"), ("a3", "a4", "a5"), ("s0", "s1", "a0", "a5")

    def __init__(self, index: int, st: Stage, w, bias, requant, last: bool):
        super().__init__(index, st, w, bias, requant, last)
        self.asm = _Asm(f"v{index}")

    def bias_to(self, reg: str, v: int) -> None:
        self.asm(f"li {reg}, {v}")

    def copy(self, dst: str, src: str) -> None:
        self.asm(f"mv {dst}, {src}")

    def step(self, base: str) -> None:
        self.asm(f"add {base}, {base}, t0")

    def back(self, base: str) -> None:
        self.asm(f"add {base}, {base}, t1")

    def load_macs(self, base: str, offset: int, pairs) -> None:
        macs(self.asm, f"lbu {X}, {offset}({base})", pairs)

    def requant(self, o: int, a: str) -> None:
        """finish_row's requantisation of accumulator a in place (X, T scratch)."""
        asm, pre, shift, m = self.asm, int(self.pre[o]), int(self.shift[o]), int(self.m[o])
        done, zero = asm.label(), asm.label()
        if pre:
            asm(f"srai {a}, {a}, {pre}")
        if not self.last:
            asm(f"blez {a}, {zero}")
        if self.clamp[o]:
            ok = asm.label()
            asm(f"li {T}, {INT16_MAX}", f"ble {a}, {T}, {ok}", f"mv {a}, {T}", f"{ok}:")
            if self.last:
                ok = asm.label()
                asm(f"li {T}, {-INT16_MAX - 1}", f"bge {a}, {T}, {ok}", f"mv {a}, {T}", f"{ok}:")
        if m:
            asm(f"mv {T}, {a}")
            mul_const(asm, a, T, m)
        else:
            asm(f"li {a}, 0")
        rnd = 1 << (shift - 1)
        asm(f"addi {a}, {a}, {rnd}" if rnd <= 2047 else f"lui {T}, {rnd >> 12}")
        if rnd > 2047:
            asm(f"add {a}, {a}, {T}")
        asm(f"srai {a}, {a}, {shift}")
        if self.last:
            asm(f"addi {a}, {a}, 128")
        asm(f"li {T}, 255", f"bleu {a}, {T}, {done}")
        if self.last:  # below 0: 0, above 255: 255
            asm(f"srai {a}, {a}, 31", f"not {a}, {a}", f"andi {a}, {a}, 255")
        else:
            asm(f"mv {a}, {T}", f"j {done}", f"{zero}:", f"li {a}, 0")
        asm(f"{done}:")
        if self.last:
            asm(f"lw {T}, 32(sp)", f"add {T}, {T}, {a}", f"lbu {a}, 0({T})")

    def tail(self, accs: list[tuple[int, str]], cols: int) -> None:
        """Requantise accs (channel, register; cols a channel, a channel's together), store
        them from t2 on, t2 on by cols."""
        asm = self.asm
        for o, a in accs:
            self.requant(o, a)
        asm(f"mv {X}, t2")
        if len(accs) > cols:
            asm(f"lw {T}, 28(sp)")
        for k, (_, a) in enumerate(accs):
            if k and k % cols == 0:
                asm(f"add {X}, {X}, {T}")
            asm(f"sb {a}, {k % cols}({X})")
        asm(f"addi t2, t2, {cols}")

    def row_loop(self, base: str, first, middle, last, tail, last_tail=None) -> None:
        asm = self.asm
        top, shared, end_, to_last = asm.label(), asm.label(), asm.label(), asm.label()
        if first:
            first()
            asm(f"j {shared}")
        asm(f"{top}:")
        middle()
        asm(f"{shared}:")
        tail()
        asm(f"bltu {base}, ra, {top}")
        if last_tail is None:
            asm(f"beq {base}, ra, {to_last}", f"j {end_}", f"{to_last}:")
            last()
            asm(f"j {shared}", f"{end_}:")
        else:
            last()
            last_tail()

    def set_back(self, cols: int) -> None:
        """t1 = cols - (in_c - 1) * t0."""
        in_c = self.st.in_shape[0]
        if in_c > 1:
            mul_const(self.asm, X, "t0", in_c - 1)
            self.asm(f"li t1, {cols}", f"sub t1, t1, {X}")
        else:
            self.asm(f"li t1, {cols}")

    def group_out(self, first: int) -> None:
        self.asm("lw t2, 12(sp)")
        if first:
            self.asm(f"lw {T}, 28(sp)")
        for _ in range(first):
            self.asm(f"add t2, t2, {T}")

    # stride 1
    def s1_pass(self, group: list[int]) -> None:
        asm, in_w = self.asm, self.st.in_shape[2]
        asm("lw a3, 0(sp)", "lw a4, 4(sp)", "lw a5, 8(sp)")
        asm("addi a3, a3, -1", "addi a4, a4, -1", "addi a5, a5, -1", f"addi ra, a3, {in_w - 1}")
        self.group_out(group[0])
        accs = list(zip(group, ["s0", "s1", "a0"]))
        self.row_loop(
            "a3",
            lambda: self.s1_unit(group, "left"),
            lambda: self.s1_unit(group, ""),
            lambda: self.s1_unit(group, "right"),
            lambda: self.tail(accs, 1),
        )

    # stride 2
    def s2_pass(self, group: list[int], rows: list[int]) -> None:
        asm = self.asm
        cols, units, edge = self.s2_steps(group)
        bases = list(zip(rows, ("a3", "a4")))
        for ky, base in bases:
            asm(f"lw {base}, {4 * ky}(sp)")
        asm(f"addi ra, a3, {cols * units}")
        self.set_back(cols)
        self.group_out(group[0])

        def tail(n: int):
            accs = [(o, r) for o, regs in zip(group, self.s2_accs(group, n)) for r in regs]
            return lambda: self.tail(accs, 2 * n)

        self.row_loop(
            "a3",
            None,
            lambda: self.s2_unit(group, bases, cols, edge=False),
            lambda: self.s2_unit(group, bases, edge, edge=True),
            tail(cols),
            None if edge == cols else tail(edge),
        )

    def source(self) -> list[str]:
        asm, st = self.asm, self.st
        name = f"cvae_rv_rows_{self.i}"
        asm(".balign 2", f".global {name}", f".type {name}, @function", f"{name}:")
        asm(f"addi sp, sp, -{FRAME}", "sw s0, 16(sp)", "sw s1, 20(sp)", "sw ra, 24(sp)",
            "sw a2, 12(sp)", "sw a3, 28(sp)", "mv t0, a1")  # fmt: skip
        if self.last:
            asm("la t1, cvae_sigmoid_lut", "sw t1, 32(sp)")
        for ky in range(3):  # the kernel rows, NULL: the zero row
            have = asm.label()
            asm(f"lw t1, {4 * ky}(a0)", f"bnez t1, {have}", f"la t1, {ROWS_ZERO_NAME}",
                f"{have}:", f"sw t1, {4 * ky}(sp)")  # fmt: skip
        if st.stride == 1:
            self.set_back(1)
            for group in self.groups(3):
                self.s1_pass(group)
        else:
            odd, end = asm.label(), asm.label()
            asm("lw t1, 4(a0)", f"beqz t1, {odd}")
            for group in self.groups(2):  # even output row: kernel row 1
                self.s2_pass(group, [1])
            asm(f"j {end}", f"{odd}:")
            for group in self.groups(2):  # odd: kernel rows 0 and 2
                self.s2_pass(group, [0, 2])
            asm(f"{end}:")
        asm("lw s0, 16(sp)", "lw s1, 20(sp)", "lw ra, 24(sp)", f"addi sp, sp, {FRAME}", "ret",
            f".size {name}, .-{name}")  # fmt: skip
        return asm.lines


def kernel_asm(index: int, st: Stage, weight, bias, requant, last: bool) -> list[str]:
    """Stage ``index``'s row kernel ``cvae_rv_rows_<index>`` in RV32EC (GNU as):
    ``weight`` [out][in][3][3] (int8 or int4 values), ``bias`` int32 [out], ``requant``
    (m, pre, shift) arrays; ``last``: the decoder's last stage."""
    return _Stage(index, st, weight, bias, requant, last).source()


def _imm(text: str) -> int:
    return int(text, 0)


def _li_bytes(rd: str, v: int) -> int:
    if -32 <= v <= 31:
        return 2  # c.li
    if -2048 <= v <= 2047:
        return 4  # addi rd, zero, v
    hi, lo = (v + 0x800) >> 12, v - (((v + 0x800) >> 12) << 12)
    lui = 2 if -32 <= ((hi + 2**19) % 2**20) - 2**19 <= 31 else 4  # c.lui
    return lui + (0 if lo == 0 else 2 if -32 <= lo <= 31 else 4)


def instruction_bytes(line: str) -> int:
    """The bytes GNU as (rv32ec, compressed forms, no relaxation) makes of one line of
    kernel_asm's: 2 where a C-extension form exists for its operands, else 4 (8 for la)."""
    op, _, rest = line.partition(" ")
    args = [a.strip() for a in rest.split(",")] if rest else []
    short = {
        "mv": True,
        "ret": True,
        "j": True,  # c.j: the kernels are far below its 2 KB
        "add": len(args) == 3 and args[0] == args[1],
        "sub": len(args) == 3 and args[0] == args[1] and {args[0], args[2]} <= COMPRESSED,
        "slli": len(args) == 3 and args[0] == args[1],
        "srai": len(args) == 3 and args[0] == args[1] and args[0] in COMPRESSED,
        "beqz": args and args[0] in COMPRESSED,  # c.beqz: past MACs, within 256 B
        "bnez": args and args[0] in COMPRESSED,
    }
    if op == "la":
        return 8
    if op == "li":
        return _li_bytes(args[0], _imm(args[1]))
    if op == "lui":
        return 2 if 1 <= _imm(args[1]) <= 31 else 4
    if op == "addi":
        v = _imm(args[2])
        if args[0] == args[1] == "sp" and v % 16 == 0 and -512 <= v <= 496 and v:
            return 2  # c.addi16sp
        return 2 if args[0] == args[1] and -32 <= v <= 31 and v else 4
    if op in ("lw", "sw"):
        off, base = args[1].rstrip(")").split("(")
        if base == "sp":
            return 2 if _imm(off) % 4 == 0 and 0 <= _imm(off) <= 252 else 4
        return 2 if {args[0], base} <= COMPRESSED and 0 <= _imm(off) <= 124 else 4
    return 2 if short.get(op) else 4


def code_bytes(lines: list[str]) -> int:
    """The bytes of kernel_asm's ``lines`` (labels and directives take none)."""
    return sum(instruction_bytes(ln) for ln in lines if not ln.startswith(".") and ln[-1] != ":")


def shape_code_bytes(index: int, st: Stage, last: bool, precision: str) -> int:
    """Stage ``index``'s kernel as the estimator counts it: kernel_asm's bytes for the
    stage's weights quantised per channel by their largest magnitude (int8's rule; int4
    searches its scales, so its figure is near, not exact), a 15-bit multiplier of six
    non-adjacent digits and distinct biases of two instructions (the constants the export's
    calibration picks are not known here), no int16 clamp."""
    o = st.out_channels
    top = 127 if precision == "int8" else 7
    w = st.weight.detach().double().reshape(o, -1).numpy()
    scale = np.abs(w).max(axis=1, keepdims=True) / top
    w = np.clip(np.round(w / np.where(scale > 0, scale, 1)), -top, top).astype(np.int64)
    channels = np.arange(o)
    requant = (np.full(o, 0b100100100100101), np.full(o, 8), 17 + channels % 4)
    asm = kernel_asm(index, st, w, 5000 + 4096 * channels, requant, last)
    return code_bytes(asm)


def rv_rows_code_bytes(stages: list[Stage], precision: str) -> int:
    """The rv32ec row kernels' code, every stage's :func:`shape_code_bytes` (0: none)."""
    last = len(stages) - 1
    return sum(
        shape_code_bytes(i, st, i == last, precision)
        for i, st in enumerate(stages)
        if rv_rows_stage(st, precision)
    )
