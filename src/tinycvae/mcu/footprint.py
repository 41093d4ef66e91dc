"""Flash, RAM and MAC estimates of a decoder as it would be deployed on a microcontroller,
and the microcontroller profiles (``conf/mcu/``) it is checked against.

The estimator costs the stages of :func:`tinycvae.mcu.stages.extract`, the same stages
the exporter quantises and writes to C, so it accepts and refuses exactly what the
exporter does.

The runtime model (the C runtime in ``deploy/`` implements it; keep the two in step)
------------------------------------------------------------------------------------
* **Label table.** Whatever the conditioning (one-hot or embedding, concatenated or added,
  projected or not), the label's effect on the first Linear's pre-activation is a constant
  per class. The firmware stores it as a ``K x out`` table of accumulator-domain constants
  that also absorbs the first Linear's bias; the first Linear keeps only its ``out x latent``
  z-columns (no bias). :func:`~tinycvae.mcu.stages.fold_label` computes them.
* **Layers.** Linear: ``in*out`` weights, ``out`` biases (a layer without a bias ships
  zeros), ``in*out`` MACs. ConvTranspose2d (kernel k): ``in*out*k*k`` weights, ``out``
  biases; MACs are the *exact* count of valid taps (a tap whose output position falls in
  the padding or past the edge is never multiplied), at most the bound
  ``H_in*W_in*C_in*C_out*k*k``. ReLU is fused into the requantisation (free);
  Flatten/Unflatten/Identity are reinterpretations (free). The final sigmoid is a
  256-entry ``int8 logit -> uint8 pixel`` lookup table on int8/int4, ``expf`` on fp32.
* **Flash (data).** Weights: fp32 4 B, int8 1 B, int4 0.5 B (two per byte, rounded up per
  layer: the runtime packs each stage's weights as one nibble stream, ``deploy/CONTRACT.md``).
  Biases: int32 (4 B) on int8/int4, float (4 B) on fp32. Requantisation on int8/int4: one
  32-bit word per output channel (Linear: per output feature) packing a 15-bit multiplier, a
  pre-shift and a shift, applied in 32-bit arithmetic so that no 64-bit multiply is linked.
  Class table: int16 (2 B) per entry on int8/int4 (the exporter gives a channel whose
  z-weights are tiny next to its table entries a coarser weight scale, so the entries always
  fit), float (4 B) on fp32. Sigmoid LUT: 256 B.
* **Flash (code).** The named ``CODE_*`` constants below, chosen per precision and core,
  measured on the C runtime in ``deploy/`` (see :func:`code_bytes`). Without an MCU the
  core is assumed to have neither multiplier nor FPU (rv32ec's C kernels); an ARMv6-M
  core's int8/int4 code is larger (its Thumb-1 kernels, ``CODE_ARMV6M_*``), and on int8 the
  stride-1 stages that run its Winograd kernel store 8 B per kernel row there instead of 3
  (:func:`wino_bytes`, counted by :class:`Footprint` for ARMv6-M profiles only). The
  narrow transposed convs' generated row kernels are counted from their generators
  (:func:`rows_bytes` on ARMv6-M, :func:`rv_rows_bytes` with the model's flash on cores
  without a multiplier, where they decide the rv32ec tier; ``tinycvae.mcu.armv6m_rows``,
  ``rv32ec_rows``).
* **RAM.** Activations are int8/uint8 (1 B per element) on int8 *and* int4 (only weights
  are 4-bit), float (4 B) on fp32. Every layer is computed output-stationary (gather form,
  also for the transposed convs): each output element's accumulator lives in a register,
  so no accumulator buffer exists. Buffers live in one arena whose two ends alternate as
  input and output (:func:`arena_bytes`, the rule of ``deploy/CONTRACT.md``); the first
  layer reads z from the caller. Whole-image generation writes the image into a buffer of
  the caller's, which is counted too. With ``stream`` the image is emitted row by row
  (e.g. straight to a display or a UART): the layers before the last Linear run whole;
  that Linear and every transposed conv after it are computed one output row at a time,
  when the next layer needs the row, into a ring of as many rows as one row of the next
  layer reads (3 before a stride-1 layer, 2 before a stride-2 one, 1 before a last
  stride-2 layer with one output channel), so no activation of a conv decoder is ever
  whole in RAM (:func:`arena_bytes`).
  With an MCU, its ``reserve_ram_bytes`` (stack + runtime state) is added (and on
  rv32ec the table-free kernels' 16 B scratch where one of their builds links:
  :func:`runtime_ram_bytes`; the build, one of three tiers, is :func:`rv_tier`'s; on
  ARMv6-M the Winograd kernel's scratch, :func:`wino_bytes`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from omegaconf import OmegaConf
from torch import nn

from tinycvae.errors import ConfigError
from tinycvae.mcu.armv6m_rows import rows_code_bytes, rows_stage, rows_zero_bytes
from tinycvae.mcu.rv32ec_rows import rv_rows_code_bytes, rv_rows_stage
from tinycvae.mcu.stages import CONV_T, KERNEL, LINEAR, FloatModel, Stage, extract
from tinycvae.repo import CONF_DIR

MCU_DIR = CONF_DIR / "mcu"
PRECISIONS = ("fp32", "int8", "int4")

# Runtime code size (bytes), measured with `size` on the firmware deploy/ builds (the demo:
# startup, UART output, the cvae_roll.h draws, the runtime's API and kernels): text + data
# minus the model's constants came to 2897 +- 5 B on Cortex-M0+ and 3345 +- 5 B on rv32ec
# (CH32V003) for the 3_3_3_3 and 8_8_8_8 dice decoders, int8, -Os (December 2026: the
# number formats in cvae_num.h, one finish_row for every stage, main.c drawing through
# cvae_roll.h, rv32ec's three-tap MAC four bits a step with two taps in one register), and
# 94-151 B more with the last layer's own accumulator row (16_16_16_16, int8 and int4). The
# fp32 figures are not measured on an MCU (the fp32 build is the host's reference path):
# soft float + expf, 1.5-2 KB on such cores.
CODE_BASE_BYTES = 2385  # vector table + startup, board I/O, demo, API, Linear / convT loops
CODE_INT_EXTRA_BYTES = 512  # int8/int4: requantise (multiply, shifts, ReLU, saturate), LUT
CODE_LAST_ACC_ROW_BYTES = 126  # the last layer's own accumulator row (streaming path)
# int4 (CVAE_INT4): the nibble unpacking in the dot products and in scatter_row's tap loads,
# measured as the int4 image's code minus the int8 one's for the same decoders: 108 B on
# Cortex-M0+ (3_3_3_3 and 8_8_8_8 dice decoders), 216 B on rv32ec, where the int4 dot
# product inlines a shift-and-add MAC of its own (the rest, 108 B)
CODE_INT4_UNPACK_BYTES = 108
CODE_INT4_SOFT_MULTIPLY_BYTES = 108  # int4 without a multiplier: the dot product's inline MAC
# rv32ec: the inline shift-and-add MACs (three taps at once, unrolled) and requant
CODE_SOFT_MULTIPLY_BYTES = 448
# rv32ec, int8 and int4, the quarter-square and the table-free builds: the RV32E row
# requantisation (cvae_rv_finish_hidden, _last, the 64 B bound table, the chain writer as
# a loop), which the third tier (CVAE_RV_CHAIN=0) leaves out for finish_row's C: the
# table-free ch32v003 demo's code minus the one with CVAE_RV_CHAIN=0, measured 2026-12-02
# on the exported dice models: 676 B (3_3_3_3 and 8_8_8_8 int8), 672 B (3_3_3_3 int4),
# 664 B (16_16_16_16 int8), 660 B (16_16_16_16 int4). (The 600 B before was against
# a0a6d6e's build, which also lacked the bias-started accumulator row and
# scatter_channels; those save flash, and every table-free build keeps them.)
CODE_RV_CHAIN_BYTES = 668
# rv32ec, where the model leaves room for it in the part's flash: the quarter-square MAC
# (a 1024 B table of floor(n^2 / 4)), the RV32E assembly kernel rows (both strides, four
# inputs a loop step, int8 or int4 taps), the chain writer unrolled over m's 16 positions,
# and the C multiplies through the table (stage 0's w z, single outputs), on top of the
# table-free kernels: 3088 B (3_3_3_3 and 8_8_8_8 int8, 3_3_3_3 int4), 3108 B
# (16_16_16_16 int8), 3104 B (16_16_16_16 int4), measured 2026-12-02 as the ch32v003
# demo with CVAE_RV_QSQ=1 minus the one with 0 (3668-3760 B before the table-free build
# had the row requantisation).
CODE_QSQ_BYTES = 3090
# The ch32v003 build's tiers on rv32ec (deploy/Makefile's link_fallback), fastest first:
# the first whose image fits the part's flash links, the last where none does (rv_tier)
RV_TIER_QSQ = "quarter-square"  # CVAE_RV_QSQ=1: the table, assembly rows and requant
RV_TIER_CHAIN = "table-free"  # CVAE_RV_QSQ=0: C MAC, assembly requantisation
RV_TIER_PLAIN = "table-free-c"  # CVAE_RV_QSQ=0 CVAE_RV_CHAIN=0: C MAC, C requantisation
RV_TIERS = (RV_TIER_QSQ, RV_TIER_CHAIN, RV_TIER_PLAIN)
# each tier's flags on the C runtime (the ch32v003 build's, deploy/Makefile)
RV_TIER_FLAGS = {
    RV_TIER_QSQ: "",
    RV_TIER_CHAIN: "-DCVAE_RV_QSQ=0",
    RV_TIER_PLAIN: "-DCVAE_RV_QSQ=0 -DCVAE_RV_CHAIN=0",
}
# rv32ec's table-free kernels (both table-free tiers) list m's set bits in 16 B of static
# RAM (cvae_num.h's m_steps), counted on top of the profile's reserve; the quarter-square
# build writes its requantisation chain into the stack frame instead (no static RAM)
RAM_TABLE_FREE_STEPS_BYTES = 16
# ARMv6-M (Cortex-M0/M0+), int8 and int4: the hand-written Thumb-1 kernels of deploy/cvae.c
# (the two whole-row kernels and their shared channel tail, the requantisation, the
# accumulator-row fill and their C driver) beside the portable C path they replace where a
# row fits them, measured as the Cortex-M0+ image's code minus 2add352's for the same
# models: 1276 B (3_3_3_3 int8, 2 December 2026, the channel tail's fill inline; 32 B
# more with the last layer's own accumulator row: 16_16_16_16 int8 linked at 16,376 B before
# the Winograd kernel below) and
# 48 B more on int4 (the nibble taps; 1324 B for 3_3_3_3)
CODE_ARMV6M_KERNELS_BYTES = 1276
CODE_ARMV6M_INT4_TAPS_BYTES = 48
# ARMv6-M, int8: the stride-1 transposed convs with at least WINO_MIN_IN_C input channels
# (measured on c_c_c_c dice decoders, the stride-1 stage's instructions against the direct
# kernel's, bench/winograd_gate.py: 4 +13%, 5 +4%, 6 -3%, 7 -7%, 8 -10%, 16 -20%)
# run the Winograd F(2,3) kernel (deploy/cvae.c, "ARMv6-M kernels"): its weights are a
# second array in flash, written by the exporter under CVAE_ARMV6M_WINO only (cvae.h:
# ARMv6-M int8, unless the build sets CVAE_ARM_WINO=0 where the part has no room),
# WINO_ROW_BYTES per (out, in, ky) kernel row (4 biased halfwords), and it keeps a static
# scratch of (12 in_c + 4) words (the transformed inputs of one output pair, 4 words per
# (in, ky), and their sums) beside the arena
WINO_MIN_IN_C = 6
WINO_ROW_BYTES = 8
# ... and at most WINO_MAX_IN_C: the kernel sums twice the accumulator in int32, exact while
# 2 x 9 in_c x 127 x 255 < 2^31 (in_c <= 3,683); a wider stage keeps the direct kernel
WINO_MAX_IN_C = 2048
# ... and its code: the two Thumb-1 kernels (cvae_arm_wino_pair, cvae_arm_wino_in) and
# their C driver, in the image where a model has such a stage: the Cortex-M0+ demo less the
# same model's without it, less the data (16_16_16_16 int8, 2 December 2026: 21,272 B
# against 16,376 B, of which 3,860 B the weights u3 less w3 and the table; 8_8_8_8: 1,052 B)
CODE_ARMV6M_WINO_BYTES = 1036
# its static RAM beside the scratch words: the kernels' parameter block (arm_wino_t)
RAM_WINO_PARAMS_BYTES = 80
CODE_SOFT_FLOAT_BYTES = 1792  # fp32 without FPU: soft add/mul/convert + expf
CODE_FPU_EXPF_BYTES = 512  # fp32 with an FPU: expf alone
SIGMOID_LUT_BYTES = 256
WORD_BYTES = 4  # int32 bias / requant word, or one float
TABLE_INT_BYTES = 2  # int16 class-table entry on int8/int4


@dataclass(frozen=True)
class MCUProfile:
    """A microcontroller's budget, built from ``conf/mcu/<name>.yaml`` (its ``_target_``);
    it checks itself on creation, each bad value one line naming its ``mcu.`` key."""

    name: str
    parts: tuple[str, ...]
    core: str
    flash_kb: float
    ram_kb: float
    hw_multiply: bool
    fpu: bool
    reserve_ram_bytes: int
    notes: str = ""
    # each part's clock and flash, for the cycle model (tinycvae.deploy.cycles.part_timings)
    timing: tuple = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "parts", tuple(self.parts))  # a YAML list
        object.__setattr__(self, "timing", tuple(self.timing))
        checks = {
            "flash_kb": (_positive(self.flash_kb), "> 0"),
            "ram_kb": (_positive(self.ram_kb), "> 0"),
            "hw_multiply": (isinstance(self.hw_multiply, bool), "true or false"),
            "fpu": (isinstance(self.fpu, bool), "true or false"),
            "reserve_ram_bytes": (
                isinstance(self.reserve_ram_bytes, int)
                and 0 <= self.reserve_ram_bytes < self.ram_bytes,
                f"an integer >= 0 and below ram_kb x 1024 = {self.ram_bytes}",
            ),
        }
        for key, (ok, allowed) in checks.items():
            if not ok:
                raise ConfigError(
                    f"mcu.{key}={getattr(self, key)} is invalid for mcu={self.name}; "
                    f"allowed: {allowed}"
                )

    @property
    def flash_bytes(self) -> int:
        return int(self.flash_kb * 1024)

    @property
    def ram_bytes(self) -> int:
        return int(self.ram_kb * 1024)

    @property
    def armv6m(self) -> bool:
        """An ARMv6-M core (its ``core`` says so): the runtime runs its Thumb-1 kernels."""
        return "ARMv6-M" in self.core


def _positive(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0


def mcu_names() -> list[str]:
    return sorted(p.stem for p in MCU_DIR.glob("*.yaml"))


def load_mcu(name: str) -> MCUProfile:
    """The profile ``conf/mcu/<name>.yaml`` describes."""
    if name not in mcu_names():
        raise ConfigError(f"mcu={name} is unknown; allowed: {', '.join(mcu_names())}")
    from hydra.utils import instantiate

    return instantiate(OmegaConf.load(MCU_DIR / f"{name}.yaml"), _convert_="all")


def all_mcus() -> list[MCUProfile]:
    return [load_mcu(n) for n in mcu_names()]


def check_precision(precision: str) -> None:
    if precision not in PRECISIONS:
        raise ConfigError(
            f"footprint precision={precision} is unknown; allowed: {', '.join(PRECISIONS)}"
        )


def code_bytes(
    precision: str,
    mcu: MCUProfile | None = None,
    last_acc_row: bool = False,
    tier: str = RV_TIER_QSQ,
) -> int:
    """Runtime code for ``precision`` on ``mcu``'s core (None: no multiplier, no FPU);
    ``last_acc_row``: the model gives its last layer an accumulator row of its own
    (:func:`last_acc_row_elems`), which compiles the path that uses it; ``tier``: the
    build an integer path without a multiplier links (:data:`RV_TIERS`: the quarter-square
    table, the table-free kernels with the assembly requantisation, or with finish_row's
    C; :func:`rv_tier` picks it)."""
    check_precision(precision)
    if tier not in RV_TIERS:
        raise ConfigError(f"rv32ec tier={tier} is unknown; allowed: {', '.join(RV_TIERS)}")
    hw_mul, fpu = (mcu.hw_multiply, mcu.fpu) if mcu else (False, False)
    n = CODE_BASE_BYTES + (0 if hw_mul else CODE_SOFT_MULTIPLY_BYTES)
    if not hw_mul and precision != "fp32":
        n += CODE_RV_CHAIN_BYTES if tier != RV_TIER_PLAIN else 0
        n += CODE_QSQ_BYTES if tier == RV_TIER_QSQ else 0
    n += CODE_LAST_ACC_ROW_BYTES if last_acc_row else 0
    if precision == "fp32":
        return n + (CODE_FPU_EXPF_BYTES if fpu else CODE_SOFT_FLOAT_BYTES)
    if precision == "int4":
        n += CODE_INT4_UNPACK_BYTES + (0 if hw_mul else CODE_INT4_SOFT_MULTIPLY_BYTES)
    if mcu is not None and mcu.armv6m:
        n += CODE_ARMV6M_KERNELS_BYTES + (CODE_ARMV6M_INT4_TAPS_BYTES if precision == "int4" else 0)
    return n + CODE_INT_EXTRA_BYTES


def wino_stage(st: Stage, precision: str) -> bool:
    """Whether stage ``st`` (a :class:`~tinycvae.mcu.stages.Stage`) runs the ARMv6-M
    Winograd kernel: an int8 stride-1 transposed conv with WINO_MIN_IN_C .. WINO_MAX_IN_C
    input channels and rows of at least 3 inputs, unless it runs a generated row kernel
    (:func:`~tinycvae.mcu.armv6m_rows.rows_stage`); the exporter writes its weights for it."""
    if precision != "int8" or st.kind != CONV_T or st.stride != 1 or rows_stage(st, precision):
        return False
    return WINO_MIN_IN_C <= st.in_shape[0] <= WINO_MAX_IN_C and st.in_shape[2] >= 3


def rows_bytes(stages: list, precision: str, stream: bool) -> int:
    """Flash that the generated ARMv6-M row kernels add (0 where no stage has one): their
    code (:func:`~tinycvae.mcu.armv6m_rows.rows_code_bytes`), the zero row and the table
    cvae_arm_rows (4 B a stage)."""
    code = rows_code_bytes(stages, precision)
    return _with_zero_row_and_table(code, stages, rows_stage, precision, stream)


def rv_rows_bytes(stages: list, precision: str, stream: bool) -> int:
    """The same for the rv32ec ones (:func:`~tinycvae.mcu.rv32ec_rows.rv_rows_code_bytes`,
    the table cvae_rv_rows)."""
    code = rv_rows_code_bytes(stages, precision)
    return _with_zero_row_and_table(code, stages, rv_rows_stage, precision, stream)


def _with_zero_row_and_table(code: int, stages: list, picks, precision: str, stream: bool) -> int:
    if not code:
        return 0
    return code + rows_zero_bytes(stages, picks, precision, stream) + WORD_BYTES * len(stages)


def wino_scratch_words(stages: list, precision: str) -> int:
    """Words of the Winograd kernel's static scratch (0: no stage runs it): 12 in_c + 4 for
    the stage with the most input channels."""
    ins = [st.in_shape[0] for st in stages if wino_stage(st, precision)]
    return 12 * max(ins) + 4 if ins else 0


def wino_bytes(stages: list, precision: str) -> tuple[int, int]:
    """(flash, RAM) that the Winograd kernel's data adds on ARMv6-M: its weights (WINO_ROW_BYTES
    per (out, in, ky) of each stage that runs it, in place of that row's 3 int8 weights) and
    the stage table cvae_wino_u (4 B a stage); its scratch words and parameter block. (0, 0)
    where no stage runs it."""
    words = wino_scratch_words(stages, precision)
    if not words:
        return 0, 0
    rows = sum(
        st.out_channels * st.in_shape[0] * st.kernel for st in stages if wino_stage(st, precision)
    )
    flash = rows * (WINO_ROW_BYTES - 3) + WORD_BYTES * len(stages)
    return flash, (words - 4) * WORD_BYTES + RAM_WINO_PARAMS_BYTES


def rv_tier(
    precision: str, mcu: MCUProfile | None, data_flash: int, last_acc_row: bool
) -> str | None:
    """The rv32ec build a model gets (:data:`RV_TIERS`; None: an integer path with a
    multiplier, or fp32): as deploy/Makefile's ch32v003 link, the first tier whose data
    and code fit ``mcu``'s flash (None: assumed to fit, the quarter-square build), else
    the smallest, the C requantisation (which then does not fit either)."""
    check_precision(precision)
    if precision == "fp32" or (mcu is not None and mcu.hw_multiply):
        return None
    if mcu is None:
        return RV_TIER_QSQ
    for tier in RV_TIERS[:-1]:
        if data_flash + code_bytes(precision, mcu, last_acc_row, tier) <= mcu.flash_bytes:
            return tier
    return RV_TIER_PLAIN


def runtime_ram_bytes(
    precision: str, mcu: MCUProfile | None, data_flash: int, last_acc_row: bool
) -> int:
    """RAM beside the arena on ``mcu`` (None: 0): its reserve (stack + runtime state),
    plus the table-free rv32ec kernels' static scratch where one of their builds links."""
    if mcu is None:
        return 0
    tier = rv_tier(precision, mcu, data_flash, last_acc_row)
    table_free = tier in (RV_TIER_CHAIN, RV_TIER_PLAIN)
    return mcu.reserve_ram_bytes + (RAM_TABLE_FREE_STEPS_BYTES if table_free else 0)


def _code_for(precision: str, mcu: MCUProfile | None, data_flash: int, last_acc_row: bool) -> int:
    tier = rv_tier(precision, mcu, data_flash, last_acc_row)
    return code_bytes(precision, mcu, last_acc_row, tier or RV_TIER_QSQ)


@dataclass(frozen=True)
class StageShape:
    """What the arena rule needs of one deployed layer (element counts)."""

    conv: bool  # a transposed conv (rows can be computed one at a time)
    in_elems: int  # 0 for the first layer: it reads z from the caller
    out_elems: int
    out_row_elems: int  # channels x width of one output row (the image's, for the last)
    out_w: int = 0  # a transposed conv's output width (its accumulator row)
    stride: int = 1  # a transposed conv's stride (1 or 2)
    in_row_elems: int = 0  # a transposed conv's input channels x input width
    out_c: int = 0  # a transposed conv's output channels


def stage_shapes(stages: list[Stage], image: tuple) -> list[StageShape]:
    """The deployed stages (the first reads z) and the output image's shape ``(C, H, W)``
    -> what :func:`arena_bytes` needs. A row of the last layer is one row of the image,
    whatever the layer kind."""
    image_row = image[0] * image[-1] if len(image) == 3 else math.prod(image)
    shapes = []
    for i, st in enumerate(stages):
        conv, ins, outs = st.kind == CONV_T, st.in_shape, st.out_shape
        row = outs[0] * outs[-1] if conv else image_row if i == len(stages) - 1 else 0
        shapes.append(
            StageShape(
                conv, 0 if i == 0 else math.prod(ins), math.prod(outs), row,
                outs[-1] if conv else 0, st.stride,
                ins[0] * ins[-1] if conv else 0, outs[0] if conv else 0,
            )
        )  # fmt: skip
    return shapes


def last_acc_row_elems(stages: list[StageShape], elem: int) -> int:
    """32-bit accumulators of a row of the last layer's own, or 0: given to a last stride-2
    transposed conv with one output channel (a grey image) when that row is smaller than a
    ring slot of its input (``elem`` bytes per activation). The streaming runtime then
    fills its input rows one at a time between the kernel rows that read them, from one
    ring slot instead of two (:func:`ring_slots`)."""
    last = stages[-1]
    own = last.out_w + 2
    pays = len(stages) >= 2 and last.conv and last.out_c == 1 and last.stride == 2
    return own if pays and own * WORD_BYTES < last.in_row_elems * elem else 0


def acc_row_elems(stages: list[StageShape], elem: int) -> int:
    """32-bit accumulators of the runtime's transposed-conv kernel: the widest transposed
    conv's output row plus a slot before and after it (0 without a transposed conv); the
    last layer's is left out when it has a row of its own (:func:`last_acc_row_elems`)."""
    convs = stages[:-1] if last_acc_row_elems(stages, elem) else stages
    widths = [s.out_w for s in convs if s.conv]
    return max(widths) + 2 if widths else 0


def first_streamed(stages: list[StageShape]) -> int:
    """The first layer the streaming runtime computes row by row: the last linear one
    (the first layer is always linear); the transposed convs after it stream too."""
    return max(k for k, s in enumerate(stages) if not s.conv)


def ring_slots(stages: list[StageShape], k: int, elem: int) -> int:
    """Rows of streamed layer ``k``'s output kept in its ring: as many as one output row of
    the transposed conv after it (kernel 3) reads, ceil(3 / stride); 1 before a last layer
    with an accumulator row of its own (:func:`last_acc_row_elems`)."""
    if k + 1 == len(stages) - 1 and last_acc_row_elems(stages, elem):
        return 1
    return -(-KERNEL // stages[k + 1].stride)


def arena_bytes(stages: list[StageShape], elem: int, stream: bool) -> int:
    """Bytes of the runtime's activation arena (``deploy/CONTRACT.md``).

    The transposed convs' 32-bit accumulator rows (:func:`acc_row_elems`,
    :func:`last_acc_row_elems`), then: whole
    image: the largest input + output of every layer but the last, and the last layer's
    input (its output goes to the caller's buffer). Streamed: the layers before the first
    streamed one (:func:`first_streamed`) whole; then its whole input, a ring of
    :func:`ring_slots` rows (of the next layer's input) of every streamed layer but the
    last, and one row of the image."""
    if not stream:
        need = [s.in_elems + s.out_elems for s in stages[:-1]] + [stages[-1].in_elems]
    else:
        first = first_streamed(stages)
        rings = sum(
            ring_slots(stages, k, elem) * stages[k + 1].in_row_elems
            for k in range(first, len(stages) - 1)
        )
        need = [s.in_elems + s.out_elems for s in stages[:first]]
        need.append(stages[first].in_elems + rings + stages[-1].out_row_elems)
    accumulators = acc_row_elems(stages, elem) + last_acc_row_elems(stages, elem)
    return max(need) * elem + accumulators * WORD_BYTES


@dataclass
class LayerCost:
    """What one deployed item costs: the class table, a stage, or the final sigmoid."""

    name: str  # "class_table", the stage's "body.<index>", or "sigmoid"
    kind: str  # class_table | linear | convT | sigmoid_lut (sigmoid on fp32)
    in_shape: tuple[int, ...]
    out_shape: tuple[int, ...]
    weights: int  # class_table: its K x out entries
    biases: int
    macs: int
    out_elems: int
    flash_bytes: int = 0  # filled in by estimate_stages()


def _valid_taps(n_in: int, n_out: int, k: int, stride: int, pad: int) -> int:
    """(input index, kernel tap) pairs of a transposed conv that land inside the output."""
    return sum(0 <= i * stride - pad + t < n_out for i in range(n_in) for t in range(k))


def _macs(stage: Stage) -> int:
    """Multiply-accumulates of one stage; a transposed conv's are its valid taps only."""
    if stage.kind == LINEAR:
        return stage.weight.numel()
    taps = math.prod(
        _valid_taps(stage.in_shape[d], stage.out_shape[d], stage.kernel, stage.stride, stage.pad)
        for d in (1, 2)
    )
    c_out, c_in = stage.weight.shape[:2]
    return taps * c_in * c_out


def layer_costs(fm: FloatModel) -> list[LayerCost]:
    """The class table, every stage and the sigmoid of the deployed decoder ``fm``."""
    first = fm.stages[0]
    layers = [
        LayerCost(
            "class_table", "class_table", (fm.num_classes,), first.out_shape,
            fm.table.numel(), 0, 0, math.prod(first.out_shape),
        )
    ]  # fmt: skip
    for st in fm.stages:
        biases = 0 if st.bias is None else st.bias.numel()
        n_out = math.prod(st.out_shape)
        layers.append(
            LayerCost(
                st.name, st.kind, st.in_shape, st.out_shape, st.weight.numel(), biases,
                _macs(st), n_out,
            )
        )  # fmt: skip
    n_image = math.prod(fm.out_shape)
    layers.append(LayerCost("sigmoid", "sigmoid_lut", fm.out_shape, fm.out_shape, 0, 0, 0, n_image))
    return layers


@dataclass
class Footprint:
    precision: str
    layers: list[LayerCost]
    params: int  # deployed: class table + weights + biases
    macs: int
    data_flash_bytes: int  # model constants
    code_bytes: int  # runtime code for self.mcu (None: worst-case core)
    activation_bytes: int  # peak of the activation arena
    stream: bool = False
    last_acc_row: bool = False  # the last layer has an accumulator row of its own
    mcu: MCUProfile | None = field(default=None, repr=False)
    # the Winograd kernel's (flash, RAM) data on ARMv6-M (wino_bytes), counted on such cores
    wino: tuple[int, int] = (0, 0)
    # the generated row kernels' flash on ARMv6-M (rows_bytes), counted on such cores
    rows: int = 0
    # and on rv32ec (rv_rows_bytes), counted on cores without a multiplier with the model's
    rv_rows: int = 0

    def model_flash(self, mcu: MCUProfile | None) -> int:
        """The model's flash on ``mcu``: its constants, and on a core without a multiplier
        (None: the worst case) its generated rv32ec row kernels, which decide the rv32ec
        tier as its data does (:func:`rv_tier`)."""
        rv = self.precision != "fp32" and (mcu is None or not mcu.hw_multiply)
        return self.data_flash_bytes + (self.rv_rows if rv else 0)

    def armv6m_fallback(self, mcu: MCUProfile) -> bool:
        """Whether the ARMv6-M build's extras (the Winograd kernel, the generated row
        kernels) leave ``mcu``'s flash: deploy/Makefile's cortex-m0plus link then falls back
        to neither (``CVAE_ARM_WINO=0 CVAE_ARM_ROWS=0``: the runtime's kernels, the int8
        weights)."""
        extras = (self.wino[0] + CODE_ARMV6M_WINO_BYTES if self.wino[0] else 0) + self.rows
        code = _code_for(self.precision, mcu, self.data_flash_bytes, self.last_acc_row)
        return self.data_flash_bytes + code + extras > mcu.flash_bytes

    def armv6m_wino(self, mcu: MCUProfile | None) -> tuple[int, int]:
        """(flash, RAM) that the Winograd kernel adds on ``mcu``: its weights, table and
        code, its scratch; (0, 0) on other cores, where no stage runs it, or where the
        build falls back (:meth:`armv6m_fallback`)."""
        if mcu is None or not mcu.armv6m or not self.wino[0] or self.armv6m_fallback(mcu):
            return 0, 0
        return self.wino[0] + CODE_ARMV6M_WINO_BYTES, self.wino[1]

    def armv6m_rows(self, mcu: MCUProfile | None) -> int:
        """Flash that the generated row kernels add on ``mcu`` (their code, zero row and
        table, ``rows``); 0 on other cores, where no stage has one, or where the build
        falls back (:meth:`armv6m_fallback`)."""
        if mcu is None or not mcu.armv6m or not self.rows or self.armv6m_fallback(mcu):
            return 0
        return self.rows

    def armv6m_row_kernels(self, mcu: MCUProfile | None) -> str | None:
        """The kernels an ARMv6-M ``mcu`` links for the stages with a generated row kernel:
        ``generated``, ``runtime`` where the build falls back (:meth:`armv6m_fallback`), or
        None on other cores and where no stage has one."""
        if mcu is None or not mcu.armv6m or not self.rows:
            return None
        return "generated" if self.armv6m_rows(mcu) else "runtime"

    def armv6m_stride1(self, mcu: MCUProfile | None) -> str | None:
        """The stride-1 kernel an ARMv6-M ``mcu`` links: ``winograd``, ``direct`` where the
        Winograd kernel leaves its flash (:meth:`armv6m_wino`), or None on other cores and
        where no stage has Winograd weights."""
        if mcu is None or not mcu.armv6m or not self.wino[0]:
            return None
        return "winograd" if self.armv6m_wino(mcu)[0] else "direct"

    @property
    def flash_bytes(self) -> int:
        return (
            self.model_flash(self.mcu)
            + self.code_bytes
            + self.armv6m_wino(self.mcu)[0]
            + self.armv6m_rows(self.mcu)
        )

    @property
    def ram_bytes(self) -> int:
        return (
            self.activation_bytes
            + runtime_ram_bytes(
                self.precision, self.mcu, self.model_flash(self.mcu), self.last_acc_row
            )
            + self.armv6m_wino(self.mcu)[1]
        )

    def fits(self, mcu: MCUProfile | None = None) -> dict[str, Any]:
        """Whether it fits ``mcu`` (default: the one estimated for), with that core's code
        size and RAM reserve: ``flash_bytes`` and ``ram_bytes`` are what it needs there (the
        one figure the export's fit check and ``src/pareto.py --select`` both print),
        ``*_over_bytes`` = max(0, need - budget)."""
        mcu = mcu or self.mcu
        if mcu is None:
            raise ConfigError("fits() needs an MCU profile; allowed: " + ", ".join(mcu_names()))
        wino_flash, wino_ram = self.armv6m_wino(mcu)
        flash = (
            self.model_flash(mcu)
            + _code_for(self.precision, mcu, self.model_flash(mcu), self.last_acc_row)
            + wino_flash
            + self.armv6m_rows(mcu)
        )
        ram = (
            self.activation_bytes
            + runtime_ram_bytes(self.precision, mcu, self.model_flash(mcu), self.last_acc_row)
            + wino_ram
        )
        return {
            "flash_bytes": flash,
            "ram_bytes": ram,
            "flash_ok": flash <= mcu.flash_bytes,
            "ram_ok": ram <= mcu.ram_bytes,
            "flash_over_bytes": max(0, flash - mcu.flash_bytes),
            "ram_over_bytes": max(0, ram - mcu.ram_bytes),
        }


def _layer_flash(layer: LayerCost, precision: str) -> int:
    if layer.kind == "class_table":
        return layer.weights * (WORD_BYTES if precision == "fp32" else TABLE_INT_BYTES)
    if layer.kind == "sigmoid_lut":
        return 0 if precision == "fp32" else SIGMOID_LUT_BYTES
    if precision == "fp32":
        return (layer.weights + layer.biases) * WORD_BYTES
    weights = layer.weights if precision == "int8" else math.ceil(layer.weights / 2)
    return weights + (layer.biases + layer.out_shape[0]) * WORD_BYTES  # + requant words


def estimate_stages(
    fm: FloatModel,
    precision: str = "int8",
    stream: bool = False,
    mcu: MCUProfile | None = None,
) -> Footprint:
    """The deployed footprint of the stages ``fm`` at ``precision`` (see the module doc)."""
    check_precision(precision)
    layers = layer_costs(fm)
    if precision == "fp32":
        layers[-1].kind = "sigmoid"
    for layer in layers:
        layer.flash_bytes = _layer_flash(layer, precision)
    elem = WORD_BYTES if precision == "fp32" else 1
    shapes = stage_shapes(fm.stages, fm.out_shape)
    peak = arena_bytes(shapes, elem, stream)
    last_acc_row = last_acc_row_elems(shapes, elem) > 0
    if not stream:
        peak += math.prod(fm.out_shape) * elem  # the caller's image buffer
    data_flash = sum(layer.flash_bytes for layer in layers)
    return Footprint(
        precision=precision,
        layers=layers,
        params=sum(layer.weights + layer.biases for layer in layers),
        macs=sum(layer.macs for layer in layers),
        data_flash_bytes=data_flash,
        code_bytes=_code_for(precision, mcu, data_flash, last_acc_row),
        activation_bytes=peak,
        stream=stream,
        last_acc_row=last_acc_row,
        mcu=mcu,
        wino=wino_bytes(fm.stages, precision),
        rows=rows_bytes(fm.stages, precision, stream),
        rv_rows=rv_rows_bytes(fm.stages, precision, stream),
    )


def estimate(
    decoder: nn.Module,
    latent: int,
    num_classes: int,
    precision: str = "int8",
    stream: bool = False,
    mcu: MCUProfile | None = None,
) -> Footprint:
    """The deployed footprint of ``decoder`` at ``precision``: :func:`estimate_stages` of
    its stages; :class:`~tinycvae.mcu.stages.UnsupportedModelError` (a ConfigError)
    for a layer the runtime does not implement."""
    check_precision(precision)
    return estimate_stages(extract(decoder, latent, num_classes), precision, stream, mcu)


def summary_dict(
    decoder: nn.Module, latent: int, num_classes: int, mcus: list[Any] | None = None
) -> dict[str, Any]:
    """The JSON-ready block for logs and summary.json, one entry per precision.
    ``flash_bytes`` assumes the worst-case core (no multiplier, no FPU; the ARMv6-M
    Winograd kernel, which a build links only where the part's flash has room for it, is
    in the per-MCU ``need`` instead: on a large ARMv6-M part it can exceed this figure);
    ``ram_bytes`` and
    ``ram_bytes_streamed`` are activations only. ``fits``/``over``/``need`` are per MCU, with
    that core's code size, its RAM reserve and the streamed RAM figure (``need``: the flash
    and RAM it takes on that MCU, as the export's fit check counts them; ``rv32ec_tier``:
    the rv32ec build it is counted with on each MCU without a multiplier, :func:`rv_tier`)."""
    profiles = [load_mcu(m) if isinstance(m, str) else m for m in (mcus or all_mcus())]
    fm = extract(decoder, latent, num_classes)
    block: dict[str, Any] = {}
    for precision in PRECISIONS:
        whole = estimate_stages(fm, precision)
        streamed = estimate_stages(fm, precision, stream=True)
        checks = {m.name: streamed.fits(m) for m in profiles}
        block[precision] = {
            "params": whole.params,
            "macs": whole.macs,
            "flash_bytes": whole.flash_bytes,
            "ram_bytes": whole.ram_bytes,
            "ram_bytes_streamed": streamed.ram_bytes,
            "fits": {n: bool(c["flash_ok"] and c["ram_ok"]) for n, c in checks.items()},
            "over": {
                n: {"flash_bytes": c["flash_over_bytes"], "ram_bytes": c["ram_over_bytes"]}
                for n, c in checks.items()
            },
            "need": {
                n: {"flash_bytes": c["flash_bytes"], "ram_bytes": c["ram_bytes"]}
                for n, c in checks.items()
            },
            "rv32ec_tier": {
                m.name: t
                for m in profiles
                if (t := rv_tier(precision, m, streamed.model_flash(m), streamed.last_acc_row))
            },
        }
    return block


def flat_metrics(block: dict[str, Any]) -> dict[str, float]:
    """W&B keys: ``mcu/int8/flash_bytes``, ``mcu/int8/fits/ch32v003`` (1.0/0.0),
    ``mcu/int8/over/ch32v003/flash_bytes``, ``mcu/int8/need/ch32v003/ram_bytes``, ..."""
    flat: dict[str, float] = {}
    for precision, entry in block.items():
        for key, value in entry.items():
            if key == "rv32ec_tier":  # names, not metrics (summary.json keeps them)
                continue
            if key == "fits":
                for mcu, ok in value.items():
                    flat[f"mcu/{precision}/fits/{mcu}"] = 1.0 if ok else 0.0
            elif key in ("over", "need"):
                for mcu, per_mcu in value.items():
                    for what, n in per_mcu.items():
                        flat[f"mcu/{precision}/{key}/{mcu}/{what}"] = float(n)
            else:
                flat[f"mcu/{precision}/{key}"] = float(value)
    return flat
