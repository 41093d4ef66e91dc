"""Generated Thumb-1 row kernels for the narrow transposed convs of an int8 decoder on
ARMv6-M (Cortex-M0/M0+): one function per stage that computes a whole output row, every
output channel, straight into activations (or pixels on the last stage).

Output-stationary: the accumulators of up to three output channels (stride 1: one
column; stride 2: a column pair, two channels) stay in registers while every input
channel and kernel row is added; the weights are immediates in the code (MOVS, MULS,
ADDS or SUBS: 3 instructions a MAC, none for a zero weight), the bias, the multiplier
and the rounding term literals, and the requantisation follows in registers (no
accumulator row in RAM, no separate requantisation pass). The exporter writes them into
``cvae_model.c`` under ``CVAE_ARMV6M_ROWS`` (``deploy/cvae.h``); ``convt_row`` in
``deploy/cvae.c`` calls a stage's through ``cvae_arm_rows``. Which stages have one is
:func:`rows_stage` (the shapes only, as the estimator sees them).

The sums are the same integers as the runtime's C (integer addition does not depend on
the order), the requantisation is ``finish_row``'s (``deploy/CONTRACT.md``); its int16
clamp is written out only where the stage's worst-case accumulator could reach it.

Registers in the unit loops: r8 the input channels' distance, r9 the output channels',
r10 the output column (channel 0 of the group), r11 the move from the last input
channel's row back to the first one's, one input column on; r12 the first kernel row's
pointer at the end of the loop. Stride 1: accumulators r0-r2, the input r3, scratch r4,
the kernel rows' pointers r5-r7 (one before the output column). Stride 2: accumulators
r0-r3 (two channels' column pair, or one channel's two pairs), the input r4, scratch r5,
the kernel rows' pointers r6 (and r7 on odd output rows: kernel rows 0 and 2; even rows
read row 1).
"""

from __future__ import annotations

import numpy as np

from tinycvae.mcu.stages import CONV_T, Stage

INT16_MAX = 32767
# the narrow transposed convs, at most ROWS_MAX_CHANNEL_PAIRS input x output channels, rows
# of 3 (stride 1) or 2 (stride 2) to 256 inputs, a stride-2 stage's rows twice as wide out
# as in: their weights are immediates in the code (6 B a weight, once for every edge
# variant), so a wider stage keeps the runtime's kernels and its weights as data
ROWS_MAX_CHANNEL_PAIRS = 9
ROWS_ZERO_NAME = "cvae_rows_zero"
# a zero input skips its MACs where it has at least this many (measured: bench/firmware.py
# on the 3_3_3_3 dice decoder)
ZERO_SKIP_MIN_MACS = 2


class _Asm:
    """Thumb-1 source lines with unique local labels; a literal pool (branched over) goes in
    before a pending literal would fall out of LDR's reach (1020 B forward)."""

    REACH = 900  # bytes from the oldest pending literal's LDR: room for the pool itself

    def __init__(self, prefix: str):
        self.lines: list[str] = []
        self.prefix = prefix
        self.n = 0
        self.pos = 0
        self.oldest: int | None = None  # position of the first LDR since the last pool

    def label(self) -> str:
        self.n += 1
        return f".L{self.prefix}_{self.n}"

    def __call__(self, *lines: str) -> None:
        for line in lines:
            if line == ".ltorg":
                self.oldest = None
            elif not (line.startswith(".") or line.endswith(":")):
                if self.oldest is not None and self.pos - self.oldest > self.REACH:
                    self.pool()
                self.pos += 2
                if "=" in line and self.oldest is None:
                    self.oldest = self.pos
            self.lines.append(line)

    def far(self, cond: str, target: str) -> None:
        """A conditional branch past B<cond>'s 256 bytes: the inverse over a B (2 KB)."""
        inverse = {"eq": "ne", "lo": "hs"}[cond]
        skip = self.label()
        self(f"b{inverse} {skip}", f"b {target}", f"{skip}:")

    def pool(self) -> None:
        """A literal pool after an unconditional branch over it."""
        over = self.label()
        self.oldest = None
        self(f"b {over}", ".ltorg", f"{over}:")


def _macs(asm: _Asm, load: str, x: str, t: str, pairs: list[tuple[str, int]]) -> None:
    """x = the input (load), then acc += w * x for each (acc, w) in pairs; where two or
    more weights are not zero, a zero input (most, after a ReLU) branches past them (2
    instructions for 6 or more)."""
    pairs = [(a, w) for a, w in pairs if w]
    if not pairs:
        return
    asm(load)
    skip = asm.label() if len(pairs) >= ZERO_SKIP_MIN_MACS else None
    if skip:
        asm(f"cmp {x}, #0", f"beq {skip}")
    for a, w in pairs:
        _mac(asm, a, x, t, w)
    if skip:
        asm(f"{skip}:")


def _mac(asm: _Asm, acc: str, x: str, t: str, w: int) -> None:
    """acc += w * x (3 instructions; none for w = 0)."""
    if w == 0:
        return
    asm(f"movs {t}, #{abs(w)}", f"muls {t}, {x}, {t}", f"{'adds' if w > 0 else 'subs'} {acc}, {t}")


def _const(asm: _Asm, reg: str, v: int) -> None:
    asm(f"movs {reg}, #{v}" if 0 <= v <= 255 else f"ldr {reg}, ={v}")


def _requant(asm: _Asm, a: str, t: str, m: int, pre: int, shift: int, clamp: bool, last: bool):
    """finish_row's requantisation of accumulator a in place (t scratch): a hidden
    activation 0..255, or on the last stage the sigmoid LUT's pixel."""
    done = asm.label()
    if pre:
        asm(f"asrs {a}, {a}, #{pre}")
    elif not last:
        asm(f"cmp {a}, #0")
    if not last:  # the ReLU: a <= 0 gives 0 (ASRS leaves V clear: no sum overflows)
        go = asm.label()
        asm(f"bgt {go}", f"movs {a}, #0", f"b {done}", f"{go}:")
    if clamp:
        ok = asm.label()
        asm(f"ldr {t}, ={INT16_MAX}", f"cmp {a}, {t}", f"ble {ok}", f"mov {a}, {t}", f"{ok}:")
        if last:
            ok = asm.label()
            asm(f"ldr {t}, ={-INT16_MAX - 1}", f"cmp {a}, {t}", f"bge {ok}", f"mov {a}, {t}")
            asm(f"{ok}:")
    _const(asm, t, m)
    asm(f"muls {a}, {t}, {a}")
    rnd = 1 << (shift - 1)
    if rnd <= 255:
        asm(f"adds {a}, #{rnd}")
    else:
        asm(f"ldr {t}, ={rnd}", f"adds {a}, {a}, {t}")
    asm(f"asrs {a}, {a}, #{shift}")
    if last:
        asm(f"adds {a}, #128")
    asm(f"cmp {a}, #255", f"bls {done}")
    if last:  # below 0: 0, above 255: 255
        asm(f"asrs {a}, {a}, #31", f"mvns {a}, {a}", f"uxtb {a}, {a}")
    else:
        asm(f"movs {a}, #255")
    asm(f"{done}:")
    if last:
        asm(f"ldr {t}, =cvae_sigmoid_lut", f"ldrb {a}, [{t}, {a}]")


def needs_clamp(w: np.ndarray, bias: np.ndarray, pre: np.ndarray, last: bool) -> list[bool]:
    """Per output channel: whether acc >> pre can leave int16 for inputs 0..255."""
    flat = w.reshape(w.shape[0], -1).astype(np.int64)
    hi = bias.astype(np.int64) + 255 * np.clip(flat, 0, None).sum(1)
    lo = bias.astype(np.int64) + 255 * np.clip(flat, None, 0).sum(1)
    return [
        bool((h >> p) > INT16_MAX or (last and (lo_ >> p) < -INT16_MAX - 1))
        for h, lo_, p in zip(hi, lo, pre.astype(np.int64))
    ]


def s2_taps(w: np.ndarray, group: list[int], accs: list[list[str]], cols: int, edge: bool):
    """A stride-2 unit's loads from one (input channel, kernel row), w its taps [out][kx]:
    (u, [(accumulator, weight)]) for input column n + u, u = 0 .. cols (cols left out at
    the row's end: edge), accs[j] channel group[j]'s accumulators of output columns 2n ..
    2n + 2 cols - 1. Column 2(n + u) reads x[n + u] by kx 1; 2(n + u) + 1 reads x[n + u]
    by kx 2 and x[n + u + 1] by kx 0."""
    for u in range(cols + (0 if edge else 1)):
        pairs = []
        for o, regs in zip(group, accs):
            if u < cols:
                pairs += [(regs[2 * u], w[o, 1]), (regs[2 * u + 1], w[o, 2])]
            if u:
                pairs.append((regs[2 * u - 1], w[o, 0]))
        yield u, pairs


class StagePlan:
    """What both cores' generators plan alike for one stage: its weights [out][in][ky][kx]
    and per-channel constants, where the int16 clamp is needed, the output channels' groups
    and a stride-2 unit's columns and accumulators (``ACC_S2``: the core's four)."""

    ACC_S2: tuple[str, ...] = ()

    def __init__(self, index: int, st: Stage, w, bias, requant, last: bool):
        self.i, self.st, self.last = index, st, last
        self.w = np.asarray(w, dtype=np.int64).reshape(st.out_channels, st.in_shape[0], 3, 3)
        self.bias = np.asarray(bias, dtype=np.int64)
        self.m, self.pre, self.shift = (np.asarray(v, dtype=np.int64) for v in requant)
        self.clamp = needs_clamp(self.w, self.bias, self.pre, last)

    def groups(self, size: int) -> list[list[int]]:
        o = self.st.out_channels
        return [list(range(g, min(g + size, o))) for g in range(0, o, size)]

    def s2_cols(self, group: list[int]) -> int:
        """Input columns a unit: 2 for one channel (4 accumulators) where the row has 3 or
        more (the loop runs at least once), else 1."""
        return 2 if len(group) == 1 and self.st.in_shape[2] >= 3 else 1

    def s2_accs(self, group: list[int], cols: int) -> list[list[str]]:
        """Each channel's accumulators: output columns 2n .. 2n + 2 cols - 1."""
        per = 2 * self.s2_cols(group)
        return [[self.ACC_S2[per * j + c] for c in range(2 * cols)] for j in range(len(group))]

    def s2_steps(self, group: list[int]) -> tuple[int, int, int]:
        """(columns a unit, units in the loop, columns of the last unit after it)."""
        cols, in_w = self.s2_cols(group), self.st.in_shape[2]
        units = (in_w - 1) // cols
        return cols, units, in_w - cols * units

    # the unit walks, by the core's hooks: bias(reg, value), copy(dst, src), step(base) (to
    # the next input channel's row), back(base) (to the first one's, a unit on) and
    # load_macs(base, offset, [(acc, w)]) (the input at base + offset into its MACs)
    ACC_S1: tuple[str, ...] = ()
    BASES_S1: tuple[str, ...] = ()

    def s1_unit(self, group: list[int], edge: str) -> None:
        """The loads and MACs of one output column of the channels in group (accumulators
        ACC_S1), its kernel rows' pointers BASES_S1 one column before it; edge "left"
        leaves out kx = 2 (column -1), "right" kx = 0 (column in_w)."""
        accs = self.ACC_S1[: len(group)]
        for a, o in zip(accs, group):
            self.bias_to(a, int(self.bias[o]))
        for ky, base in enumerate(self.BASES_S1):
            for ic in range(self.st.in_shape[0]):
                if ic:
                    self.step(base)
                for kx in (2, 1, 0):
                    if (edge == "left" and kx == 2) or (edge == "right" and kx == 0):
                        continue
                    pairs = [(a, int(self.w[o, ic, ky, kx])) for a, o in zip(accs, group)]
                    self.load_macs(base, 2 - kx, pairs)
            self.back(base)

    def s2_unit(self, group: list[int], rows: list[tuple[int, str]], cols: int, edge: bool):
        """The loads and MACs of output columns 2n .. 2n + 2 cols - 1 of the channels in
        group from input columns n .. n + cols (n + cols left out at the row's end: edge)
        of the kernel rows in rows, (ky, pointer at input column n): s2_taps."""
        accs = self.s2_accs(group, cols)
        for o, regs in zip(group, accs):
            self.bias_to(regs[0], int(self.bias[o]))
            for r in regs[1:]:
                self.copy(r, regs[0])
        for ky, base in rows:
            for ic in range(self.st.in_shape[0]):
                if ic:
                    self.step(base)
                for u, pairs in s2_taps(self.w[:, ic, ky], group, accs, cols, edge):
                    self.load_macs(base, u, pairs)
            self.back(base)


class _Stage(StagePlan):
    """The Thumb-1 generator of one stage."""

    ACC_S1, BASES_S1, ACC_S2 = ("r0", "r1", "r2"), ("r5", "r6", "r7"), ("r0", "r1", "r2", "r3")

    def __init__(self, index: int, st: Stage, w, bias, requant, last: bool):
        super().__init__(index, st, w, bias, requant, last)
        self.asm = _Asm(f"r{index}")

    def bias_to(self, reg: str, v: int) -> None:
        self.asm(f"ldr {reg}, ={v}")

    def copy(self, dst: str, src: str) -> None:
        self.asm(f"mov {dst}, {src}")

    def step(self, base: str) -> None:
        self.asm(f"add {base}, r8")

    def back(self, base: str) -> None:
        self.asm(f"add {base}, r11")

    def load_macs(self, base: str, offset: int, pairs) -> None:
        x, t = ("r3", "r4") if self.st.stride == 1 else ("r4", "r5")
        _macs(self.asm, f"ldrb {x}, [{base}, #{offset}]", x, t, pairs)

    def finish(self, accs: list[tuple[int, str]], t: str) -> None:
        for o, a in accs:
            _requant(self.asm, a, t, int(self.m[o]), int(self.pre[o]), int(self.shift[o]),
                     self.clamp[o], self.last)  # fmt: skip

    def tail(self, accs: list[tuple[int, str]], t: str, p: str, cols: int) -> None:
        """A unit's end: accs (output channel, register: cols columns a channel, a
        channel's in a row) requantised (t scratch), stored from r10 on (p: a free low
        register), r10 on by cols."""
        self.finish(accs, t)
        self.asm(f"mov {p}, r10")
        for k, (_, a) in enumerate(accs):
            if k and k % cols == 0:
                self.asm(f"add {p}, r9")
            self.asm(f"strb {a}, [{p}, #{k % cols}]")
        self.asm(f"movs {accs[0][1]}, #{cols}", f"add r10, {accs[0][1]}")

    def row_loop(self, base: str, first, middle, last, tail, last_tail=None) -> None:
        """A pass over the row: first (or None), then middle until base reaches r12, then
        last; each emits a unit's loads and MACs and shares tail (requantisation, stores,
        the move on), last_tail where given in its place."""
        asm = self.asm
        top, shared, end_, to_last = asm.label(), asm.label(), asm.label(), asm.label()
        if first:
            first()
            asm(f"b {shared}")
            asm.pool()
        asm(f"{top}:")
        middle()
        asm(f"{shared}:")
        tail()
        asm(f"cmp {base}, r12")
        asm.far("lo", top)  # the middle units while base < r12
        if last_tail is None:  # base == r12: the last unit, then through the tail again
            asm(f"beq {to_last}", f"b {end_}", ".ltorg", f"{to_last}:")
            last()
            asm(f"b {shared}", ".ltorg", f"{end_}:")
        else:  # base == r12: the last unit and its own tail
            asm.pool()
            last()
            last_tail()
            asm.pool()

    # stride 1 ---------------------------------------------------------------------
    def s1_pass(self, group: list[int]) -> None:
        asm, in_w = self.asm, self.st.in_shape[2]
        asm("ldr r5, [sp, #0]", "ldr r6, [sp, #4]", "ldr r7, [sp, #8]")
        asm("subs r5, #1", "subs r6, #1", "subs r7, #1")
        asm("mov r4, r5", f"adds r4, #{in_w - 1}", "mov r12, r4")
        self.group_out(group[0])
        accs = [(o, f"r{j}") for j, o in enumerate(group)]
        self.row_loop(
            "r5",
            lambda: self.s1_unit(group, "left"),
            lambda: self.s1_unit(group, ""),
            lambda: self.s1_unit(group, "right"),
            lambda: self.tail(accs, "r4", "r3", 1),
        )

    # stride 2 ---------------------------------------------------------------------

    def s2_pass(self, group: list[int], rows: list[int]) -> None:
        asm, in_c = self.asm, self.st.in_shape[0]
        cols, units, edge = self.s2_steps(group)
        bases = list(zip(rows, ("r6", "r7")))
        for ky, base in bases:
            asm(f"ldr {base}, [sp, #{4 * ky}]")
        asm("mov r4, r6", f"adds r4, #{cols * units}", "mov r12, r4")
        # r11 = cols - (in_c - 1) * in_chan_step: the last input channel's row back to the
        # first one's, cols columns on
        asm(f"movs r4, #{in_c - 1}", "mov r5, r8", "muls r4, r5, r4", f"movs r5, #{cols}",
            "subs r5, r5, r4", "mov r11, r5")  # fmt: skip
        self.group_out(group[0])

        def tail(n: int):
            accs = [(o, r) for o, regs in zip(group, self.s2_accs(group, n)) for r in regs]
            return lambda: self.tail(accs, "r5", "r4", 2 * n)

        self.row_loop(
            "r6",
            None,
            lambda: self.s2_unit(group, bases, cols, edge=False),
            lambda: self.s2_unit(group, bases, edge, edge=True),
            tail(cols),
            None if edge == cols else tail(edge),
        )

    # the function -------------------------------------------------------------------
    def group_out(self, first: int) -> None:
        """r10: output channel first's row ([sp+12] channel 0's, r9 apart)."""
        self.asm("ldr r4, [sp, #12]")
        for _ in range(first):
            self.asm("add r4, r9")
        self.asm("mov r10, r4")

    def source(self) -> str:
        asm, st = self.asm, self.st
        name = f"cvae_arm_rows_{self.i}"
        in_c = st.in_shape[0]
        asm(".balign 2", f".global {name}", f".type {name}, %function", ".thumb_func", f"{name}:")
        asm("push {r4-r7, lr}", "mov r4, r8", "mov r5, r9", "mov r6, r10", "mov r7, r11")
        asm("push {r4-r7}", "sub sp, #16", "mov r8, r1", "mov r9, r3", "str r2, [sp, #12]")
        if st.stride == 1:  # r11 = 1 - (in_c - 1) * in_chan_step (stride 2: per pass)
            asm(f"movs r4, #{in_c - 1}", "muls r4, r1, r4", "movs r5, #1", "subs r5, r5, r4",
                "mov r11, r5")  # fmt: skip
        for ky in range(3):  # the kernel rows, NULL: the zero row
            have = asm.label()
            asm(f"ldr r4, [r0, #{4 * ky}]", "cmp r4, #0", f"bne {have}")
            asm(f"ldr r4, ={ROWS_ZERO_NAME}", f"{have}:", f"str r4, [sp, #{4 * ky}]")
        if st.stride == 1:
            for group in self.groups(3):
                self.s1_pass(group)
        else:
            odd = asm.label()
            asm("ldr r4, [r0, #4]", "cmp r4, #0")
            asm.far("eq", odd)
            for group in self.groups(2):  # even output row: kernel row 1
                self.s2_pass(group, [1])
            end = asm.label()
            asm(f"b {end}", f"{odd}:")
            for group in self.groups(2):  # odd: kernel rows 0 and 2
                self.s2_pass(group, [0, 2])
            asm(f"{end}:")
        asm("add sp, #16", "pop {r4-r7}", "mov r8, r4", "mov r9, r5", "mov r10, r6",
            "mov r11, r7", "pop {r4-r7, pc}", ".ltorg", f".size {name}, .-{name}")  # fmt: skip
        return "\n".join(asm.lines)


def rows_stage(st: Stage, precision: str) -> bool:
    """Whether stage ``st`` runs a generated row kernel on ARMv6-M (see
    ROWS_MAX_CHANNEL_PAIRS): an int8 3x3 transposed conv, padding 1, narrow enough."""
    if precision != "int8" or st.kind != CONV_T or st.kernel != 3 or st.pad != 1:
        return False
    (in_c, _, in_w), out_w = st.in_shape, st.out_shape[2]
    if in_c * st.out_channels > ROWS_MAX_CHANNEL_PAIRS:
        return False
    if st.stride == 1:
        return 3 <= in_w <= 256 and out_w == in_w
    return st.stride == 2 and 2 <= in_w <= 256 and out_w == 2 * in_w


def rows_zero_bytes(stages: list[Stage], picks, precision: str, stream: bool) -> int:
    """Bytes of the zero row that the kernel rows past the image read (0 where no stage
    has a row kernel: ``picks(stage, precision)``, e.g. :func:`rows_stage`): a kernel row's
    every input channel, in_chan_step apart (a ring slot's row when streaming, the image's
    rows otherwise)."""
    picked = [st.in_shape for st in stages if picks(st, precision)]
    return max(((c - 1) * (w if stream else h * w) + w for c, h, w in picked), default=0)


def kernel_asm(index: int, st: Stage, weight, bias, requant, last: bool) -> list[str]:
    """Stage ``index``'s row kernel ``cvae_arm_rows_<index>`` in Thumb-1 (GNU as, unified
    syntax): ``weight`` int8 [out][in][3][3], ``bias`` int32 [out], ``requant`` (m, pre,
    shift) arrays; ``last``: the decoder's last stage (pixels by the sigmoid LUT)."""
    return _Stage(index, st, weight, bias, requant, last).source().split("\n")


def code_bytes(lines: list[str]) -> int:
    """The bytes GNU as makes of ``lines`` (kernel_asm's): 2 a Thumb-1 instruction (none
    here is 32-bit), and each literal pool's distinct words, aligned to 4."""
    pos, pending = 0, set()

    def flush() -> int:
        return (-pos % 4 + 4 * len(pending)) if pending else 0

    for line in lines:
        if line == ".ltorg":
            pos += flush()
            pending = set()
        elif not (line.startswith(".") or line.endswith(":")):
            pos += 2
            if "=" in line:
                pending.add(line.split("=", 1)[1])
    return pos + flush()


def shape_code_bytes(index: int, st: Stage, last: bool) -> int:
    """Stage ``index``'s row kernel as the estimator counts it from the shape: kernel_asm's
    bytes with no zero weight, distinct channel constants and no int16 clamp (a trained
    model's zero weights and repeated constants make it smaller)."""
    o, n = st.out_channels, st.in_shape[0]
    channels = np.arange(o)
    # pre 8: no clamp; shift 9 on: a literal rounding term, one a channel
    requant = (1000 + channels, np.full(o, 8), 9 + channels)
    return code_bytes(kernel_asm(index, st, np.ones((o, n, 3, 3)), 1 + channels, requant, last))


def rows_code_bytes(stages: list[Stage], precision: str) -> int:
    """The row kernels' code, every stage's :func:`shape_code_bytes` (0: none)."""
    last = len(stages) - 1
    return sum(
        shape_code_bytes(i, st, i == last)
        for i, st in enumerate(stages)
        if rows_stage(st, precision)
    )
