/* tinycvae decoder runtime (see CONTRACT.md for the arithmetic).
 *
 * One source for every path: the kernels below are written once against
 * acc_t / MUL / TABLE_ACC (the number formats, cvae_num.h) and differ only in
 * finish_row(), the one place an accumulator becomes an activation or a pixel
 * (requant + ReLU or sigmoid LUT on int8 and int4; ReLU or expf sigmoid on fp32).
 *
 * The int8 path uses integers only, no division, and multiplies only in the
 * MAC, the requant (one per output) and a few per row or stage (rv32ec has no
 * multiply instruction: the RV32E kernels below take the MAC from a quarter-square
 * table and the requant as shift-and-adds over m's non-adjacent form, code written
 * per row; with CVAE_RV_QSQ=0 the C MAC shifts and adds over the input's bits, three
 * taps at once, and the requant is the same assembly, or with CVAE_RV_CHAIN=0 too
 * shift-and-adds in C over m's set bits; the rest calls __mulsi3).
 * Weights and inputs are walked with pointers. int4 models (CVAE_INT4, which
 * also defines CVAE_INT8) run the same kernels on packed weights: a weight is
 * then a nibble index into the stage's bytes, and the kernels unpack nibbles by
 * shifts where they load a weight (the three taps of a kernel row once per
 * input row; nibble by nibble, a byte load every other step, in the dot products).
 *
 * Transposed convolutions are computed one output row of one output channel at
 * a time, in scatter form into a row of accumulators (see scatter_row), then
 * requantised with the channel's constants read once (finish_row), so that
 * whole-image and streaming generation share one kernel and give identical
 * pixels. Integer sums do not depend on their order: the bytes are those of the
 * gather form CONTRACT.md defines.
 *
 * On ARMv6-M (Cortex-M0/M0+) the int8 and int4 transposed convolutions and the
 * requantisation run hand-written Thumb-1 kernels instead, on rv32ec (CVAE_RV_QSQ,
 * the default) RV32E ones, with the same contract and the same bytes ("ARMv6-M
 * kernels", "rv32ec kernels" below; on ARMv6-M int8 the stride-1 convTs that the exporter
 * marks by Winograd F(2,3)); every other target runs the C.
 *
 * Checks of the model and of the arena sizes use assert(): active on host and
 * QEMU builds, compiled out with -DNDEBUG on the MCU boards.
 */
#include <assert.h>

#include "cvae.h"

#ifdef CVAE_FP32
#include <math.h>
#endif

#define N_STAGES CVAE_NUM_STAGES
#define LAST_STAGE (&cvae_stages[N_STAGES - 1])
#define CVAE_STATIC_ASSERT(cond, name) typedef char cvae_static_assert_##name[(cond) ? 1 : -1]

#ifdef CVAE_STREAM_ONLY
#define ARENA_BYTES CVAE_ARENA_STREAM
#else
#define ARENA_BYTES (CVAE_ARENA_IMAGE > CVAE_ARENA_STREAM ? CVAE_ARENA_IMAGE : CVAE_ARENA_STREAM)
#endif
/* The arena starts with the convT kernels' accumulator row (CVAE_ACC_ROW
 * 32-bit elements: the widest convT output row plus two slots; 0 without a
 * convT), then, when the generator gives the last convT a row of its own
 * (CVAE_LAST_ACC_ROW > 0, see ring_slots), that row, then the activations. */
#ifndef CVAE_LAST_ACC_ROW
#define CVAE_LAST_ACC_ROW 0 /* models exported before the last convT's own row */
#endif
#define ACC_ROW_ELEMS CVAE_ACC_ROW
#define ACC_ROW_BYTES ((ACC_ROW_ELEMS + CVAE_LAST_ACC_ROW) * 4u)
#define ARENA_ELEMS ((ARENA_BYTES - ACC_ROW_BYTES) / sizeof(cvae_act_t))

/* A convT kernel is CVAE_KERNEL x CVAE_KERNEL taps (cvae.h). Its weights are
 * [out_c][in_c][ky][kx]: KERNEL_TAPS apart from one input channel to the next. */
#define KERNEL_TAPS (CVAE_KERNEL * CVAE_KERNEL)
/* A convT's stride is 1 or 2, so stride - 1 is both log2(stride), to divide by
 * the stride with a shift, and the mask of the remainder. */
#define STRIDE_LOG2(s) ((s)->stride - 1u)

/* Kept out of line: the MAC loops and finish_row (inlined, gcc spills their
 * registers on Thumb-1 and RV32E) and convt_row (its frame would be duplicated
 * in each caller). */
#ifdef __GNUC__
#define NOINLINE __attribute__((noinline))
#else
#define NOINLINE
#endif

CVAE_STATIC_ASSERT(N_STAGES >= 1, at_least_one_stage);
CVAE_STATIC_ASSERT(ARENA_BYTES % sizeof(cvae_act_t) == 0, arena_whole_elements);
/* the streaming arena holds at least the accumulator row and the output row */
CVAE_STATIC_ASSERT(ACC_ROW_BYTES + CVAE_OUT_C * CVAE_OUT_W * sizeof(cvae_act_t) <= CVAE_ARENA_STREAM,
                   stream_arena_holds_a_row);
CVAE_STATIC_ASSERT(CVAE_OUT_SIZE <= CVAE_MAX_STAGE_OUT, max_stage_out);

#include "cvae_num.h"

CVAE_STATIC_ASSERT(sizeof(acc_t) == 4, acc_is_32_bits);
#ifdef CVAE_INT8
CVAE_STATIC_ASSERT(CVAE_TABLE_SHIFT >= 0 && CVAE_TABLE_SHIFT <= 16, table_shift);
#endif

/* One static arena: the accumulator row, then the activations (the union aligns
 * it for the accumulators and for float on fp32). */
static union {
    struct {
#if ACC_ROW_ELEMS > 0
        acc_t acc[ACC_ROW_ELEMS];
#endif
#if CVAE_LAST_ACC_ROW > 0
        acc_t last_acc[CVAE_LAST_ACC_ROW];
#endif
        cvae_act_t a[ARENA_ELEMS];
    } s;
    uint32_t align;
} arena;
#define ARENA_ACT (arena.s.a)
#if ACC_ROW_ELEMS > 0
#define ACC_ROW (arena.s.acc)
#else
#define ACC_ROW ((acc_t *)NULL) /* no convT: convt_row() never runs */
#endif
#if CVAE_LAST_ACC_ROW > 0
#define LAST_ACC_ROW (arena.s.last_acc)
#else
#define LAST_ACC_ROW ACC_ROW
#endif

#ifdef RV_CHAIN
/* rv32ec requantisation of a row, in RV32E assembly: finish_row's arithmetic with the
 * multiply as the chain cvae_rv_chain_setup writes to RAM for m (cvae_num.h), called
 * once per output (jalr t2; the chain returns through t2), m's trailing zeros f folded
 * into the rounding and the shift ((a m + 2^(s-1)) >> s = (a (m >> f) + 2^(s-1-f)) >>
 * (s - f) for f < s). Hidden stages: an output below a bound T (cvae_rv_sat, once per
 * row) needs neither clamp: 11 instructions and the chain per output
 * (7 for one that the ReLU zeroes), the others clamp; the last stage 15 and the chain
 * per pixel. The accumulators hold the bias already (start_acc_row). Arguments: acc,
 * end (acc < end), y, the channel's constants, the sigmoid LUT (last stage). Returns 0,
 * or 1 without a store where the chain does not apply (m = 0, f >= s: finish_row's C
 * then). Frame: ra, s0, s1, r, the LUT, the chain (36 B). */
int cvae_rv_finish_hidden(const acc_t *acc, const acc_t *end, cvae_act_t *y,
                          const cvae_requant_t *r, const uint8_t *lut);
int cvae_rv_finish_last(const acc_t *acc, const acc_t *end, cvae_act_t *y, const cvae_requant_t *r,
                        const uint8_t *lut);
CVAE_STATIC_ASSERT(sizeof(cvae_requant_t) == 4 && offsetof(cvae_requant_t, pre) == 2 &&
                       offsetof(cvae_requant_t, shift) == 3,
                   rv_requant_layout);
/* Digit position i of m's NAF, from the top (15) down: a3 holds nz << 16 | nm (nz: the
 * non-zero digits, nm: the negative ones), shifted left once a position, so digit i is
 * a3's sign bit and its sign bit 15. A digit writes one word at t0: c.slli s1, d (d = 4
 * times the distance from the previous digit, t1 - 4i: t1 holds the template s0 plus 4
 * times the previous position) and c.add s1, a5 (c.sub: minus s1, the difference of
 * the two templates). The first digit (always +1) leaves the word's high half c.mv
 * s1, a5 (t1's first value). 2 instructions a position, 6-7 more a digit. */
#define RV_NAF_POS(i) "bgez a3, 1f\n slli t2, a3, 16\n bgez t2, 2f\n sub t1, t1, s1\n"        \
    "2:\n addi t2, t1, -4*" #i "\n sw t2, 0(t0)\n addi t0, t0, 4\n addi t1, s0, 4*" #i "\n" \
    "1:\n slli a3, a3, 1\n"
#ifdef RV_QSQ /* the positions written out: 2 instructions a position */
#define RV_NAF_WALK                                                            \
    RV_NAF_POS(15) RV_NAF_POS(14) RV_NAF_POS(13) RV_NAF_POS(12) RV_NAF_POS(11) \
    RV_NAF_POS(10) RV_NAF_POS(9) RV_NAF_POS(8) RV_NAF_POS(7) RV_NAF_POS(6)     \
    RV_NAF_POS(5) RV_NAF_POS(4) RV_NAF_POS(3) RV_NAF_POS(2) RV_NAF_POS(1) RV_NAF_POS(0)
#else /* table-free build (flash): RV_NAF_POS as a loop over i = 15 .. 0, 4i in a4
       * (4 instructions a position) */
#define RV_NAF_WALK                                                            \
    "li a4, 60\n 1:\n bgez a3, 3f\n slli t2, a3, 16\n bgez t2, 2f\n sub t1, t1, s1\n" \
    "2:\n sub t2, t1, a4\n sw t2, 0(t0)\n addi t0, t0, 4\n add t1, s0, a4\n"      \
    "3:\n slli a3, a3, 1\n addi a4, a4, -4\n bgez a4, 1b\n"
#endif
/* cvae_rv_chain_setup: the chain for m (a3, 1..32767) at t0 (the caller's frame), f
 * (m's trailing zeros: the last digit's position) in t1. Called from the two functions
 * below (jal ra); clobbers a3, a4, t0-t2, s0, s1. NAF: xh = m >> 1, x3 = m + xh, c = xh ^
 * x3: nz = c & (x3 | xh), nm = c & xh. */
__asm__(".pushsection .text.cvae_rv_chain_setup,\"ax\",@progbits\n"
        ".balign 2\n.type cvae_rv_chain_setup, @function\ncvae_rv_chain_setup:\n"
        "srli a4, a3, 1\n add t2, a3, a4\n xor a3, a4, t2\n or t2, t2, a4\n"
        "and a4, a4, a3\n and a3, a3, t2\n slli a3, a3, 16\n or a3, a3, a4\n"
        "li s0, 0x94be0482\n lui s1, 0x8210\n li t1, 0x84be0040\n"
        RV_NAF_WALK
        "li t2, 0x8382\n sh t2, 0(t0)\n sub t1, t1, s0\n srli t1, t1, 2\n"
        "ret\n.size cvae_rv_chain_setup, .-cvae_rv_chain_setup\n.popsection\n");
/* the chain for m, a3 = pre, a4 = s - f, ra = the rounding term, t0 = the chain's entry;
 * t1 = s (then f), s0 scratch; or out with 1 */
#define RV_FIN_ENTER(name)                                                     \
    ".pushsection .text." name ",\"ax\",@progbits\n"                          \
    ".balign 2\n.global " name "\n.type " name ", @function\n" name ":\n"     \
    "lhu t0, 0(a3)\n beqz t0, 8f\n"                                             \
    "addi sp, sp, -56\n sw ra, 0(sp)\n sw s0, 4(sp)\n sw s1, 8(sp)\n sw a3, 12(sp)\n" \
    "sw a4, 16(sp)\n mv a3, t0\n addi t0, sp, 20\n jal ra, cvae_rv_chain_setup\n"    \
    "lw a3, 12(sp)\n lbu a4, 3(a3)\n lbu a3, 2(a3)\n bgeu t1, a4, 7f\n"         \
    "sub a4, a4, t1\n add t1, t1, a4\n li ra, 1\n addi s0, a4, -1\n sll ra, ra, s0\n" \
    "addi t0, sp, 22\n"
#define RV_FIN_LEAVE(name)                                                     \
    "7:\n li a0, 1\n j 10f\n 9:\n li a0, 0\n"                                    \
    "10:\n lw ra, 0(sp)\n lw s0, 4(sp)\n lw s1, 8(sp)\n addi sp, sp, 56\n ret\n"  \
    "8:\n li a0, 1\n ret\n.size " name ", .-" name "\n.popsection\n"
/* cvae_rv_sat[k] = floor(511 * 2^16 / (k + 1)): for m < (k + 1) 2^11 (k = m >> 11) and
 * a < T = floor(511 * 2^(s-12) / (k + 1)) = cvae_rv_sat[k] >> (28 - s), a m + 2^(s-1) <
 * 2^(s+8), so y <= 255 (T is within 1 + 2^11 / m of the exact bound). 64 B of flash. */
__asm__(".pushsection .rodata.cvae_rv_sat,\"a\",@progbits\n.balign 4\ncvae_rv_sat:\n"
        ".set cvae_rv_k, 1\n.rept 16\n.word (511 << 16) / cvae_rv_k\n.set cvae_rv_k, cvae_rv_k + 1\n"
        ".endr\n.size cvae_rv_sat, 64\n.popsection\n");
__asm__(RV_FIN_ENTER("cvae_rv_finish_hidden")
        /* t1 = min(cvae_rv_sat[m >> 11] >> (28 - s), 32768) (s < 28; else 32768) */
        "lw s0, 12(sp)\n lhu s0, 0(s0)\n srli s0, s0, 11\n slli s0, s0, 2\n"
        "lui t2, %hi(cvae_rv_sat)\n addi t2, t2, %lo(cvae_rv_sat)\n add s0, s0, t2\n lw s0, 0(s0)\n"
        "li t2, 28\n bgeu t1, t2, 1f\n sub t2, t2, t1\n srl t1, s0, t2\n lui s0, 8\n"
        "bleu t1, s0, 2f\n 1:\n lui t1, 8\n 2:\n"
        "1:\n lw a5, 0(a0)\n addi a0, a0, 4\n sra a5, a5, a3\n blez a5, 4f\n bge a5, t1, 5f\n"
        "jalr t2, 0(t0)\n add s1, s1, ra\n sra s1, s1, a4\n"
        "3:\n sb s1, 0(a2)\n addi a2, a2, 1\n bltu a0, a1, 1b\n j 9f\n"
        "4:\n sb zero, 0(a2)\n addi a2, a2, 1\n bltu a0, a1, 1b\n j 9f\n" /* the ReLU's 0 */
        "5:\n lui s0, 8\n addi s0, s0, -1\n ble a5, s0, 6f\n mv a5, s0\n"   /* a > 32767 */
        "6:\n jalr t2, 0(t0)\n add s1, s1, ra\n sra s1, s1, a4\n srli s0, s1, 8\n"
        "beqz s0, 3b\n li s1, 255\n j 3b\n"                                /* y > 255 */
        RV_FIN_LEAVE("cvae_rv_finish_hidden")
        RV_FIN_ENTER("cvae_rv_finish_last")
        "lw t1, 16(sp)\n"
        "1:\n lw a5, 0(a0)\n addi a0, a0, 4\n sra a5, a5, a3\n"
        "srai s0, a5, 15\n addi s0, s0, 1\n sltiu s0, s0, 2\n beqz s0, 5f\n"
        "2:\n jalr t2, 0(t0)\n add s1, s1, ra\n sra s1, s1, a4\n addi s1, s1, 128\n"
        "sltiu s0, s1, 256\n beqz s0, 6f\n"
        "3:\n add s1, s1, t1\n lbu s1, 0(s1)\n sb s1, 0(a2)\n addi a2, a2, 1\n bltu a0, a1, 1b\n"
        "j 9f\n"
        "5:\n slti s0, a5, 0\n lui a5, 8\n addi a5, a5, -1\n beqz s0, 2b\n" /* a > 32767 */
        "lui a5, 1048568\n j 2b\n"                                       /* a < -32768 */
        "6:\n srai s1, s1, 31\n not s1, s1\n andi s1, s1, 255\n j 3b\n" /* logit past -128..127 */
        RV_FIN_LEAVE("cvae_rv_finish_last"));
#endif

/* ARMv6-M kernels (Cortex-M0/M0+: Thumb-1; int8 and int4 weights). Hand-written,
 * because MULS overwrites one operand and only r0-r7 reach MULS, LDRB and the
 * flag-setting ALU forms: gcc's code for scatter_row spends 8-9 instructions per
 * MAC there. cvae_arm_row_s1/s2 compute one output row of a convT, every output
 * channel: per channel every kernel row that has an input row (listed once per
 * call), of every input channel, is added to the accumulator row, as scatter_row
 * does row by row and channel by channel; then the row is requantised
 * (cvae_arm_fin_*) and the accumulators set to the next channel's bias
 * (cvae_arm_fill, 4 words per STM), in a tail both kernels share. Per kernel row and
 * input channel (int8; int4 adds 10 to unpack the three nibbles):
 *   stride 1, gather form, weight-stationary (the three taps sign-extended into
 *             r2-r4 once per channel), one output column at a time, its accumulator
 *             loaded and stored once, every activation load serving as MULS's copy:
 *             acc[ox] += w2 x[ox-1] + w1 x[ox] + w0 x[ox+1] as LDRB t,[x,#k];
 *             MULS t,w; ADDS a,t per MAC: 11 instructions per 3 MACs inside the
 *             row, the two edge columns 8 and 10 per 2 MACs, 13 for taps, entry
 *             and loop: 185 for a 16-wide row (46 MACs, 4.0 per MAC). The columns
 *             are unrolled with immediate offsets: a row enters the unrolled body so
 *             many columns from its start that it ends at the body's end (MOV PC),
 *             which bounds the row's width (ARM_S1_MAX; wider rows take scatter_row);
 *   stride 2, scatter form with zero-skip: x[m] adds w0 x, w1 x, w2 x to slots 2m,
 *             2m+1, 2m+2: 3 instructions for a zero input, 16 for another (3 MACs);
 *             a body of 8 inputs looped (rows up to ARM_S2_MAX), 18 per row for
 *             taps, entry and loop.
 * Integer sums do not depend on their order: the bytes are scatter_row's and
 * finish_row's. int8 stride-1 stages of 6 or more input channels run Winograd F(2,3)
 * instead where the model has its weights (arm_wino_row, below). */
#if defined(__thumb__) && !defined(__thumb2__) && defined(CVAE_INT8)
#define ARM_KERNELS 1
#define ARM_S1_MAX 18u /* stride 1: in_w - 2 columns in the body of 16 */
#define ARM_S2_MAX 16u /* stride 2: two passes of the body of 8 */
/* One output row of convT s (rows[ky]: the input row, channel 0, that kernel row ky
 * reads, or NULL; channels in_chan_step apart in the input, out_chan_step in the
 * output), every output channel: its kernel rows added to acc, whose columns hold the
 * channel's bias already for channel 0 (the kernels fill them for the next ones), then
 * requantised by finish into out. finish NULL: channel 0's kernel rows only (the last
 * layer's own accumulator row, convt_single_channel_row). The kernels read s by the
 * offsets below. */
typedef void arm_finish_fn(const acc_t *acc, uint32_t n, const cvae_requant_t *r, cvae_act_t *y);
typedef void arm_row_fn(acc_t *acc, const cvae_act_t *const rows[CVAE_KERNEL], const cvae_stage_t *s,
                        uint32_t in_chan_step, cvae_act_t *out, uint32_t out_chan_step,
                        arm_finish_fn *finish);
arm_row_fn cvae_arm_row_s1, cvae_arm_row_s2;
CVAE_STATIC_ASSERT(offsetof(cvae_stage_t, in_c) == 6 && offsetof(cvae_stage_t, in_w) == 10 &&
                       offsetof(cvae_stage_t, out_c) == 12 && offsetof(cvae_stage_t, out_w) == 16 &&
                       offsetof(cvae_stage_t, weight) == 20 && offsetof(cvae_stage_t, bias) == 24 &&
                       offsetof(cvae_stage_t, requant) == 28,
                   arm_stage_layout);

/* Saves r4-r11 and lr, then: r11 = the channels' distance, r5 = in_w, r0 = acc, and
 * a frame of 19 words: [sp] (stride 1: column 0's accumulator; stride 2: the next
 * channel's taps), [sp+4] the next entry of the list, [sp+8] its end, [sp+12] the
 * channel's weights, [sp+16] 9 in_c (the taps of all channels), [sp+20] out_w,
 * [sp+24] acc + 4 (output column 0), [sp+28] the stage's weights (int4's nibble base),
 * [sp+32] the bias array less the requantisation array (both 4 B a channel), [sp+36]
 * the channel's requantisation, [sp+40] the channels left, [sp+44] the list: (input row
 * + r3, 3 ky) for each kernel row ky that has an input row, [sp+68] the kernel's walk
 * (label 3); then the arguments out ([sp+112], moved on per channel), out_chan_step
 * ([sp+116]), finish ([sp+120]). rowoff sets r3. */
#define ARM_PROLOGUE(name, rowoff)                                             \
    ".balign 2\n.global " name "\n.type " name ", %function\n.thumb_func\n"    \
    name ":\n"                                                                 \
    "push {r4-r7, lr}\n mov r4, r8\n mov r5, r9\n mov r6, r10\n mov r7, r11\n" \
    "push {r4-r7}\n sub sp, #76\n ldrh r4, [r2, #16]\n str r4, [sp, #20]\n"     \
    "adds r4, r0, #4\n str r4, [sp, #24]\n"                                     \
    "mov r11, r3\n ldr r4, [r2, #20]\n str r4, [sp, #28]\n" ARM_W0              \
    "str r4, [sp, #12]\n ldr r4, [r2, #24]\n ldr r6, [r2, #28]\n subs r4, r4, r6\n"  \
    "str r4, [sp, #32]\n str r6, [sp, #36]\n ldrh r4, [r2, #12]\n str r4, [sp, #40]\n" \
    "ldrh r3, [r2, #6]\n movs r4, #9\n muls r4, r3\n str r4, [sp, #16]\n"      \
    "adr r4, 3f\n str r4, [sp, #68]\n" rowoff "add r6, sp, #44\n"               \
    ".irp k, 0, 1, 2\n ldr r4, [r1, #4*\\k]\n cmp r4, #0\n beq 6f\n adds r4, r3\n" \
    "movs r7, #3*\\k\n stm r6!, {r4, r7}\n6:\n .endr\n"                         \
    "str r6, [sp, #8]\n add r4, sp, #44\n str r4, [sp, #4]\n ldrh r5, [r2, #10]\n"
/* One channel's taps: w0 r2, w1 r3, w2 r4 (sign-extended), r7 on to the next
 * channel's. int8: r7 points at them. int4: r7 is their nibble index in the
 * stage's weights ([sp+28]); the two bytes that hold the three nibbles are read
 * as one 16-bit value, shifted down a nibble when the first is a high one, and
 * each nibble sign-extended by LSLS/ASRS (10 instructions more per channel). */
#ifdef CVAE_INT4
#define ARM_W0 "movs r4, #0\n" /* FIRST_WEIGHT: nibble 0 */
#define ARM_TAPS                                                               \
    "lsrs r5, r7, #1\n ldr r6, [sp, #28]\n adds r6, r5\n"                      \
    "ldrb r2, [r6, #0]\n ldrb r5, [r6, #1]\n lsls r5, #8\n orrs r2, r5\n"     \
    "lsls r5, r7, #31\n beq 5f\n lsrs r2, #4\n5:\n"                           \
    "lsls r3, r2, #24\n asrs r3, #28\n lsls r4, r2, #20\n asrs r4, #28\n"      \
    "lsls r2, #28\n asrs r2, #28\n adds r7, #9\n"
#else
#define ARM_W0 /* FIRST_WEIGHT: the stage's weights, in r4 */
#define ARM_TAPS                                                               \
    "ldrb r2, [r7, #0]\n ldrb r3, [r7, #1]\n ldrb r4, [r7, #2]\n"              \
    "sxtb r2, r2\n sxtb r3, r3\n sxtb r4, r4\n adds r7, #9\n"
#endif
/* The body's bases for this channel (r0, r1 from the input row in r1), then into
 * the body (r10). */
#define ARM_ENTER "mov r0, r9\n add r1, r8\n mov pc, r10\n"
/* After a channel's row: on to the next channel (r12 its input row, r7 its taps,
 * lr the end of the kernel row's taps; then back into the body), or out. */
#define ARM_NEXT "add r12, r11\n1:\n cmp r7, lr\n beq 3f\n"
/* The next kernel row of the list (label 3, word-aligned: the frame keeps its
 * address); after the last, cvae_arm_row_tail. */
#define ARM_WALK                                                               \
    ".balign 4\n3:\n ldr r4, [sp, #4]\n ldr r6, [sp, #8]\n cmp r4, r6\n beq 9f\n" \
    "ldm r4!, {r5, r7}\n str r4, [sp, #4]\n mov r12, r5\n ldr r6, [sp, #12]\n" \
    "adds r7, r6\n ldr r6, [sp, #16]\n adds r6, r7\n mov lr, r6\n b 1b\n"      \
    "9:\n b cvae_arm_row_tail\n"
/* Both kernels' end of a channel: its row requantised (finish; NULL: return), the
 * fields moved on to the next channel, its accumulators (output columns 0 .. out_w -
 * 1) set to its bias (cvae_arm_fill's loop, inline: 4 words per STM), then the kernel's
 * walk again; or restore and return. */
#define ARM_TAIL                                                               \
    ".type cvae_arm_row_tail, %function\n.thumb_func\ncvae_arm_row_tail:\n"    \
    "ldr r5, [sp, #120]\n cmp r5, #0\n beq 10f\n ldr r0, [sp, #24]\n"          \
    "ldr r1, [sp, #20]\n ldr r2, [sp, #36]\n"                                    \
    "ldr r3, [sp, #112]\n blx r5\n"                                            \
    "ldr r5, [sp, #40]\n subs r5, #1\n beq 10f\n str r5, [sp, #40]\n"          \
    "ldr r5, [sp, #12]\n ldr r6, [sp, #16]\n adds r5, r6\n str r5, [sp, #12]\n" \
    "ldr r5, [sp, #36]\n adds r5, #4\n str r5, [sp, #36]\n ldr r6, [sp, #32]\n ldr r2, [r5, r6]\n" \
    "ldr r5, [sp, #112]\n ldr r6, [sp, #116]\n adds r5, r6\n str r5, [sp, #112]\n" \
    "ldr r0, [sp, #24]\n ldr r1, [sp, #20]\n"                                    \
    "mov r3, r2\n mov r4, r2\n mov r5, r2\n subs r1, #4\n blt 12f\n"             \
    "11:\n stm r0!, {r2-r5}\n subs r1, #4\n bge 11b\n 12:\n adds r1, #4\n beq 13f\n" \
    "14:\n stm r0!, {r2}\n subs r1, #1\n bne 14b\n 13:\n"                         \
    "add r4, sp, #44\n str r4, [sp, #4]\n ldr r4, [sp, #68]\n mov pc, r4\n"    \
    "10:\n add sp, #76\n pop {r4-r7}\n mov r8, r4\n mov r9, r5\n mov r10, r6\n" \
    "mov r11, r7\n pop {r4-r7, pc}\n"                                          \
    ".size cvae_arm_row_tail, .-cvae_arm_row_tail\n"
#define ARM_UNITS "0,1,2,3,4,5,6,7,8,9,10,11,12,13,14"
/* stride 2: input j of the (moved) bases, its three taps into slots 2j .. 2j+2, 16
 * instructions (32 bytes), or 3 for a zero input (MOVS copies and tests it) */
#define ARM_S2_UNIT(j)                                                         \
    "ldrb r5, [r1, #" j "]\n movs r6, r5\n beq 7f\n"                           \
    "muls r6, r2\n ldr r7, [r0, #8*" j "]\n adds r7, r6\n str r7, [r0, #8*" j "]\n" \
    "movs r6, r5\n muls r6, r3\n ldr r7, [r0, #8*" j "+4]\n adds r7, r6\n"      \
    "str r7, [r0, #8*" j "+4]\n muls r5, r4\n ldr r7, [r0, #8*" j "+8]\n adds r7, r5\n" \
    "str r7, [r0, #8*" j "+8]\n7:\n"

__asm__(".syntax unified\n.thumb\n"
        /* both kernels and their tail in one section (the branches between them) */
        ".pushsection .text.cvae_arm_row,\"ax\",%progbits\n"
        /* stride 1: body column j is output column ox = 1 + j - j0, j0 = 18 - in_w */
        ARM_PROLOGUE("cvae_arm_row_s1", "movs r3, #0\n")
        "adds r4, r0, #4\n str r4, [sp]\n" /* column 0's accumulator */
        "movs r6, #18\n subs r6, r6, r5\n" /* j0 */
        "rsbs r4, r6, #0\n mov r8, r4\n"   /* x base: x - j0 */
        "lsls r4, r6, #2\n subs r4, r0, r4\n adds r4, #8\n mov r9, r4\n" /* acc + 8 - 4 j0 */
        "movs r4, #22\n muls r4, r6\n adr r5, 2f\n adds r4, r5\n mov r10, r4\n b 3f\n"
        ".balign 4\n2:\n"
        ".irp j, " ARM_UNITS ",15\n"
        "ldr r6, [r0, #4*\\j]\n"
        "ldrb r5, [r1, #\\j]\n muls r5, r4\n adds r6, r5\n"
        "ldrb r5, [r1, #\\j+1]\n muls r5, r3\n adds r6, r5\n"
        "ldrb r5, [r1, #\\j+2]\n muls r5, r2\n adds r6, r5\n"
        "str r6, [r0, #4*\\j]\n"
        ".endr\n"
        /* column in_w - 1: w2 x[in_w-2] + w1 x[in_w-1] */
        "ldr r6, [r0, #64]\n ldrb r5, [r1, #16]\n muls r5, r4\n adds r6, r5\n"
        "ldrb r5, [r1, #17]\n muls r5, r3\n adds r6, r5\n str r6, [r0, #64]\n"
        ARM_NEXT ARM_TAPS
        /* column 0: w1 x[0] + w0 x[1] */
        "ldr r0, [sp]\n mov r1, r12\n ldr r6, [r0]\n ldrb r5, [r1, #0]\n muls r5, r3\n"
        "adds r6, r5\n ldrb r5, [r1, #1]\n muls r5, r2\n adds r6, r5\n str r6, [r0]\n"
        ARM_ENTER
        ARM_WALK ".size cvae_arm_row_s1, .-cvae_arm_row_s1\n"

        /* stride 2, scatter form: x[m] adds w0 x, w1 x, w2 x to slots 2m, 2m+1, 2m+2
         * (the slot of column -1 first); a zero input costs 3 instructions (MOVS copies
         * and tests it), another 16. A body of 8 inputs, the bases moved on by 8 inputs
         * a pass: the first pass enters at unit j0 = 7 - (in_w - 1) % 8 (r12 is the
         * channel's input row - j0, the first pass's base; r8 the last pass's
         * accumulators, acc + 8 in_w - 64). [sp] the taps. */
        ARM_PROLOGUE("cvae_arm_row_s2",
                     "ldrh r3, [r2, #10]\n subs r3, #1\n movs r4, #7\n ands r3, r4\n subs r3, r3, r4\n")
        "subs r6, r5, #1\n movs r4, #7\n ands r6, r4\n subs r6, r4, r6\n" /* j0 */
        "lsls r4, r5, #3\n adds r4, r0\n subs r4, #64\n mov r8, r4\n"     /* the last pass */
        "lsls r4, r6, #3\n subs r4, r0, r4\n mov r9, r4\n"                 /* acc - 8 j0 */
        "lsls r7, r6, #5\n adr r4, 2f\n adds r7, r4\n mov r10, r7\n b 3f\n"
        ".balign 4\n2:\n"
        ".irp j, 0,1,2,3,4,5,6,7\n" ARM_S2_UNIT("\\j") ".endr\n"
        ".if . - 2b != 8 * 32\n .error \"stride-2 units are not 32 bytes\"\n.endif\n"
        "cmp r0, r8\n bhs 4f\n adds r1, #8\n adds r0, #64\n b 2b\n"
        "4:\n ldr r7, [sp]\n add r12, r11\n"
        "1:\n cmp r7, lr\n beq 3f\n" ARM_TAPS "str r7, [sp]\n mov r1, r12\n mov r0, r9\n mov pc, r10\n"
        ARM_WALK ".size cvae_arm_row_s2, .-cvae_arm_row_s2\n"
        ARM_TAIL ".popsection\n");

/* The requantisation of a row, n >= 1 accumulators into y (the channel's constants
 * r; the bias is already in the accumulators: start_acc_row): hidden stages 12
 * instructions per output (two a loop step), 6 for one the ReLU zeroes; the last stage
 * 16 per pixel (the sigmoid LUT). cvae_arm_fin_hidden and _last take r0 acc, r1 n, r2 r,
 * r3 y and keep r8-r11 (r12 and lr hold constants, the last stage saves r8: few
 * registers to save; the row kernels call them); cvae_arm_finish_hidden and _last are the same for C. Flags: ASRS
 * by a register leaves V clear (no instruction before it in the loop overflows), so BLE
 * after it is "a <= 0". */
void cvae_arm_finish_hidden(const acc_t *acc, uint32_t n, const cvae_requant_t *r, cvae_act_t *y);
void cvae_arm_finish_last(const acc_t *acc, uint32_t n, const cvae_requant_t *r, cvae_act_t *y);
void cvae_arm_fin_hidden(const acc_t *acc, uint32_t n, const cvae_requant_t *r, cvae_act_t *y);
void cvae_arm_fin_last(const acc_t *acc, uint32_t n, const cvae_requant_t *r, cvae_act_t *y);
/* cvae_arm_finish_last names the sigmoid LUT, which no C on ARMv6-M reads: this
 * reference keeps it for link-time optimisation (with -flto the link otherwise fails:
 * undefined reference to cvae_sigmoid_lut). 4 bytes of flash, no instruction. */
static const uint8_t *const arm_lut_ref __attribute__((used)) = cvae_sigmoid_lut;
/* n >= 1 words of acc to v. */
void cvae_arm_fill(acc_t *acc, uint32_t n, acc_t v);
CVAE_STATIC_ASSERT(sizeof(cvae_requant_t) == 4 && offsetof(cvae_requant_t, pre) == 2 &&
                       offsetof(cvae_requant_t, shift) == 3,
                   arm_requant_layout);

#define ARM_FUNC(name)                                                         \
    ".pushsection .text." name ",\"ax\",%progbits\n"                           \
    ".balign 2\n.global " name "\n.type " name ", %function\n.thumb_func\n" name ":\n"
#define ARM_END(name) ".size " name ", .-" name "\n.popsection\n"
/* r0 acc, r1 -n (the index, up to 0), r3 y + n, r4 pre, r5 shift, r6 m, r12 the
 * rounding term, lr INT16_MAX (INT16_MIN is ~lr). */
#define ARM_FINISH_SETUP(name)                                                 \
    ARM_FUNC(name) "push {lr}\n"                                               \
    "ldrb r4, [r2, #2]\n ldrb r5, [r2, #3]\n ldrh r6, [r2, #0]\n"              \
    "subs r7, r5, #1\n movs r2, #1\n lsls r2, r7\n mov r12, r2\n"              \
    "ldr r7, =32767\n mov lr, r7\n"                                             \
    "adds r3, r1\n rsbs r1, r1, #0\n"
/* one hidden output: acc into r7, then to [Y, r1] (labels from B on) */
#define ARM_FIN_H(B, Y)                                                        \
    "ldm r0!, {r7}\n asrs r7, r4\n ble " B "4f\n cmp r7, lr\n bgt " B "5f\n"     \
    B "2:\n muls r7, r6\n add r7, r12\n asrs r7, r5\n cmp r7, #255\n bhi " B "6f\n" \
    B "3:\n strb r7, [" Y ", r1]\n"
#define ARM_FIN_H_RARE(B)                                                      \
    B "4:\n movs r7, #0\n b " B "3b\n" B "5:\n mov r7, lr\n b " B "2b\n"        \
    B "6:\n movs r7, #255\n b " B "3b\n"

__asm__(".syntax unified\n.thumb\n"
        /* two outputs a step (y[i] by r3, y[i + 1] by r2 = r3 + 1); an odd n starts at
         * the second, its index one back */
        ARM_FINISH_SETUP("cvae_arm_fin_hidden")
        "adds r2, r3, #1\n lsls r7, r1, #31\n beq 1f\n subs r1, #1\n b 8f\n"
        "1:\n" ARM_FIN_H("1", "r3") "8:\n" ARM_FIN_H("2", "r2")
        "adds r1, #2\n bne 1b\n pop {pc}\n"
        ARM_FIN_H_RARE("1") ARM_FIN_H_RARE("2")
        ".ltorg\n"
        ARM_END("cvae_arm_fin_hidden")

        /* r8 (saved) INT16_MIN */
        ARM_FINISH_SETUP("cvae_arm_fin_last")
        "mov r2, r8\n push {r2}\n mvns r7, r7\n mov r8, r7\n ldr r2, =cvae_sigmoid_lut\n"
        "1:\n ldm r0!, {r7}\n asrs r7, r4\n"
        "cmp r7, lr\n bgt 5f\n cmp r7, r8\n blt 6f\n"
        "2:\n muls r7, r6\n add r7, r12\n asrs r7, r5\n adds r7, #128\n cmp r7, #255\n bhi 7f\n"
        "3:\n ldrb r7, [r2, r7]\n strb r7, [r3, r1]\n adds r1, #1\n bne 1b\n"
        "pop {r2}\n mov r8, r2\n pop {pc}\n"
        "5:\n mov r7, lr\n b 2b\n"
        "6:\n mov r7, r8\n b 2b\n"
        "7:\n asrs r7, r7, #31\n mvns r7, r7\n uxtb r7, r7\n b 3b\n"
        ".ltorg\n"
        ARM_END("cvae_arm_fin_last")

        ARM_FUNC("cvae_arm_finish_hidden") "push {r4-r7, lr}\n bl cvae_arm_fin_hidden\n"
        "pop {r4-r7, pc}\n" ARM_END("cvae_arm_finish_hidden")
        ARM_FUNC("cvae_arm_finish_last") "push {r4-r7, lr}\n bl cvae_arm_fin_last\n"
        "pop {r4-r7, pc}\n" ARM_END("cvae_arm_finish_last")

        ".pushsection .text.cvae_arm_fill,\"ax\",%progbits\n"
        ".balign 2\n.global cvae_arm_fill\n.type cvae_arm_fill, %function\n.thumb_func\n"
        "cvae_arm_fill:\n"
        "push {r4, r5, lr}\n mov r3, r2\n mov r4, r2\n mov r5, r2\n subs r1, #4\n blt 2f\n"
        "1:\n stm r0!, {r2-r5}\n subs r1, #4\n bge 1b\n"
        "2:\n adds r1, #4\n beq 3f\n"
        "4:\n stm r0!, {r2}\n subs r1, #1\n bne 4b\n"
        "3:\n pop {r4, r5, pc}\n"
        ".size cvae_arm_fill, .-cvae_arm_fill\n.popsection\n");

/* The ARMv6-M kernel for convT s's rows, or NULL where they do not fit it
 * (scatter_row then). */
static arm_row_fn *arm_row(const cvae_stage_t *s)
{
    const unsigned in_w = s->in_w;
    if (s->stride == 1)
        return in_w >= 2u && in_w <= ARM_S1_MAX ? cvae_arm_row_s1 : NULL;
    return in_w <= ARM_S2_MAX ? cvae_arm_row_s2 : NULL;
}

#if defined(CVAE_WINO_SCRATCH) && defined(CVAE_ARMV6M_WINO)
/* ARMv6-M, int8: stride-1 convTs by Winograd F(2,3) along x (the exporter marks the stages
 * that run it: cvae_wino_u[k], else NULL; CVAE_WINO_SCRATCH words of scratch). A stride-1
 * convT row is a 3x3 correlation: y[ox] = sum over (in, ky) of g0 d0 + g1 d1 + g2 d2 with
 * (g0, g1, g2) = (w[ky][2], w[ky][1], w[ky][0]) and d = rows[ky][ox-1 .. ox+1] (0 past the
 * edges). Two outputs ox, ox + 1 from d0..d3 = x[ox-1 .. ox+2] take 4 products, not 6, and
 * integer-exactly with G scaled by 2: U = (2 g0, g0+g1+g2, g0-g1+g2, 2 g2) per (out, ky, in)
 * (the exporter's, as U + 2^15 in uint16: LDRH has an immediate offset, LDRSH none),
 * V = (d0-d2, d1+d2, d2-d1, d1-d3) per (ky, in) and output pair, built once for every output
 * channel (cvae_arm_wino_in, words), M_k = sum of U_k V_k, 2 y0 = M1+M2+M3, 2 y1 = M2-M3-M4. The
 * bias 2^15 of U adds 2^15 T_k to M_k (T_k = sum of V_k over the pair's (ky, in), shared by
 * every output channel): M_k starts at -2^15 T_k. Everything is exact mod 2^32 and the sums
 * fit int32, so y = (2y >> 1) + bias is finish_row's accumulator, the same bytes.
 * cvae_arm_wino_pair: one output pair, every output channel, output-stationary: M1..M4 in
 * r4-r7, LDRH u; LDR v; MULS; ADDS per product (16 instructions per 6 MACs), 7 (ky, in)
 * entries of immediates a loop step (BLO's reach; a pair of n entries enters at entry
 * (-n) mod 7), then the pair requantised: inline on hidden stages (ARM_WINO_FIN), by
 * cvae_arm_fin_* on the last stage and for the last column of an odd width. The exporter writes the kernel's weights for int8 stride-1 stages of at least
 * 6 input channels: below, the input transform (once per pair) is shared by too few output
 * channels (3_3_3_3's stride-1 stage: 122,440 instructions against 92,960 direct). */
#define ARM_WINO 1
extern const uint16_t *const cvae_wino_u[CVAE_NUM_STAGES];
typedef struct {
    const uint16_t *u;             /* 0: this output channel's U (entry 0 less j0) */
    uint32_t u_step;               /* 4: bytes from one output channel's U to the next */
    const int32_t *v, *v_end;      /* 8, 12: the pair's V (entry 0 less j0), its end */
    uint32_t j0;                   /* 16: (-entries) mod 7 */
    const cvae_bias_t *bias;       /* 20 */
    const cvae_requant_t *requant; /* 24 */
    cvae_act_t *y;                 /* 28: this output channel's output pair */
    uint32_t y_step;               /* 32 */
    uint32_t n;                    /* 36: outputs of the pair, 1 or 2 */
    uint32_t out_c;                /* 40 */
    arm_finish_fn *fin;            /* 44: the requantisation, or NULL: inline (hidden, n 2) */
    int32_t m0[4];                 /* 48: -2^15 T_k, the accumulators' start */
    uint32_t in_step;              /* 64: the input channels' distance */
    uint32_t in_span;              /* 68: in_c in_step */
    int32_t *v_buf;                /* 72: where cvae_arm_wino_in writes V */
    uint32_t edge;                 /* 76: cvae_arm_wino_in's loop: WINO_* */
} arm_wino_t;
CVAE_STATIC_ASSERT(offsetof(arm_wino_t, fin) == 44 && offsetof(arm_wino_t, m0) == 48 &&
                       offsetof(arm_wino_t, edge) == 76 &&
                       sizeof(void *) == 4,
                   arm_wino_layout);
void cvae_arm_wino_pair(arm_wino_t *p);
/* V of output pair ox, ox + 1 for the nrows input rows rows[] (channel 0) into p->v_buf,
 * and p->m0, one loop per kind of pair (p->edge): within the row (WINO_INNER: d0..d3 =
 * x[ox-1 .. ox+2]), at its start (WINO_LEFT: d0 = 0), at its end (WINO_RIGHT: d3 = 0;
 * WINO_ODD: d2 = d3 = 0, the last column of an odd width); rows of at least 3. Per (ky, in): 4 LDRB, the 4 sums (in r8-r11), 4 for V, one
 * STM, 3 for the loop (16 instructions within the row). */
void cvae_arm_wino_in(const cvae_act_t *const *rows, uint32_t nrows, uint32_t ox, arm_wino_t *p);
#define WINO_INNER 0u
#define WINO_LEFT 1u
#define WINO_RIGHT 2u
#define WINO_ODD 3u
/* the end of one (ky, in) entry: V (r2, r4, r5, r6) stored, on to the next channel */
#define ARM_WINO_IN_NEXT(L) "stm r1!, {r2, r4, r5, r6}\n add r0, r12\n cmp r0, lr\n bne " L "b\n b 31b\n"
/* frame: [sp] the next entry of rows, [sp+4] the rows left, [sp+8] ox - 1, [sp+12] in_span,
 * [sp+16] the loop for the pair's edge, [sp+20] p; r12 in_step, lr the row's end, r1 V */
__asm__(".syntax unified\n.thumb\n" ARM_FUNC("cvae_arm_wino_in")
        "push {r4-r7, lr}\n mov r4, r8\n mov r5, r9\n mov r6, r10\n mov r7, r11\n push {r4-r7}\n"
        "sub sp, #24\n str r0, [sp]\n str r1, [sp, #4]\n subs r2, #1\n str r2, [sp, #8]\n"
        "str r3, [sp, #20]\n ldr r4, [r3, #68]\n str r4, [sp, #12]\n ldr r4, [r3, #64]\n mov r12, r4\n"
        "ldr r4, [r3, #76]\n lsls r4, #2\n adr r5, 40f\n ldr r5, [r5, r4]\n"
        "str r5, [sp, #16]\n ldr r1, [r3, #72]\n"
        "movs r4, #0\n mov r8, r4\n mov r9, r4\n mov r10, r4\n mov r11, r4\n"
        "30:\n ldr r4, [sp]\n ldm r4!, {r0}\n str r4, [sp]\n ldr r4, [sp, #8]\n adds r0, r4\n"
        "ldr r4, [sp, #12]\n adds r4, r0\n mov lr, r4\n ldr r4, [sp, #16]\n mov pc, r4\n"
        "31:\n ldr r4, [sp, #4]\n subs r4, #1\n str r4, [sp, #4]\n bne 30b\n"
        /* m0 = -2^15 (S0 - S2, S1 + S2, S2 - S1, S1 - S3) */
        "mov r2, r8\n mov r3, r9\n mov r4, r10\n mov r5, r11\n"
        "subs r2, r2, r4\n subs r6, r4, r3\n adds r4, r3, r4\n subs r5, r3, r5\n"
        "lsls r2, #15\n rsbs r2, r2, #0\n lsls r4, #15\n rsbs r4, r4, #0\n"
        "lsls r6, #15\n rsbs r6, r6, #0\n lsls r5, #15\n rsbs r5, r5, #0\n"
        "ldr r3, [sp, #20]\n str r2, [r3, #48]\n str r4, [r3, #52]\n str r6, [r3, #56]\n"
        "str r5, [r3, #60]\n"
        "add sp, #24\n pop {r4-r7}\n mov r8, r4\n mov r9, r5\n mov r10, r6\n mov r11, r7\n"
        "pop {r4-r7, pc}\n"
        /* V = (d0 - d2, d1 + d2, d2 - d1, d1 - d3) into r2, r4, r5, r6 */
        ".balign 4\n20:\n ldrb r2, [r0, #0]\n ldrb r3, [r0, #1]\n ldrb r4, [r0, #2]\n ldrb r5, [r0, #3]\n"
        "add r8, r2\n add r9, r3\n add r10, r4\n add r11, r5\n"
        "subs r2, r2, r4\n subs r6, r3, r5\n subs r5, r4, r3\n adds r4, r3, r4\n" ARM_WINO_IN_NEXT("20")
        ".balign 4\n21:\n ldrb r3, [r0, #1]\n ldrb r4, [r0, #2]\n ldrb r5, [r0, #3]\n"
        "add r9, r3\n add r10, r4\n add r11, r5\n"
        "rsbs r2, r4, #0\n subs r6, r3, r5\n subs r5, r4, r3\n adds r4, r3, r4\n" ARM_WINO_IN_NEXT("21")
        ".balign 4\n22:\n ldrb r2, [r0, #0]\n ldrb r3, [r0, #1]\n ldrb r4, [r0, #2]\n"
        "add r8, r2\n add r9, r3\n add r10, r4\n"
        "subs r2, r2, r4\n movs r6, r3\n subs r5, r4, r3\n adds r4, r3, r4\n" ARM_WINO_IN_NEXT("22")
        ".balign 4\n23:\n ldrb r2, [r0, #0]\n ldrb r3, [r0, #1]\n add r8, r2\n add r9, r3\n"
        "movs r4, r3\n rsbs r5, r3, #0\n movs r6, r3\n" ARM_WINO_IN_NEXT("23")
        ".balign 4\n40:\n .word 20b, 21b, 22b, 23b\n"
        ARM_END("cvae_arm_wino_in"));
#define ARM_WINO_UNIT(j)                                                       \
    "ldrh r2, [r0, #8*" j "]\n ldr r3, [r1, #16*" j "]\n muls r2, r3\n adds r4, r2\n"       \
    "ldrh r2, [r0, #8*" j "+2]\n ldr r3, [r1, #16*" j "+4]\n muls r2, r3\n adds r5, r2\n"   \
    "ldrh r2, [r0, #8*" j "+4]\n ldr r3, [r1, #16*" j "+8]\n muls r2, r3\n adds r6, r2\n"   \
    "ldrh r2, [r0, #8*" j "+6]\n ldr r3, [r1, #16*" j "+12]\n muls r2, r3\n adds r7, r2\n"
/* One hidden output of the pair (Y: r2 or r3, at [r1, #K]) requantised inline, as
 * cvae_arm_fin_hidden does (r4 pre, r5 shift, r6 m, r0 the rounding term, r7 INT16_MAX;
 * V is clear before the ASRS: BLE is "a <= 0"); labels from B on */
#define ARM_WINO_FIN(Y, K, B)                                                  \
    "asrs " Y ", r4\n ble " B "1f\n cmp " Y ", r7\n bgt " B "2f\n"             \
    B "3:\n muls " Y ", r6\n adds " Y ", r0\n asrs " Y ", r5\n cmp " Y ", #255\n bhi " B "4f\n" \
    B "5:\n strb " Y ", [r1, #" K "]\n"
#define ARM_WINO_FIN_RARE(Y, B)                                                \
    B "1:\n movs " Y ", #0\n b " B "5b\n" B "2:\n mov " Y ", r7\n b " B "3b\n"  \
    B "4:\n movs " Y ", #255\n b " B "5b\n"
/* frame: [sp] p, [sp+4] the output channels left, [sp+8] y0, [sp+12] y1 (the accumulators
 * for cvae_arm_fin_*, where p->fin is one: the last stage, a pair of one column), 4 B more
 * so that sp is 8-byte aligned at that call (36 B pushed: AAPCS); r8 the
 * V's end, r9 the entry into the body, r10 this output channel's U, r11 its output pair */
__asm__(".syntax unified\n.thumb\n" ARM_FUNC("cvae_arm_wino_pair")
        "push {r4-r7, lr}\n mov r4, r8\n mov r5, r9\n mov r6, r10\n mov r7, r11\n push {r4-r7}\n"
        "sub sp, #20\n str r0, [sp]\n ldr r1, [r0, #40]\n str r1, [sp, #4]\n"
        "ldr r1, [r0, #12]\n mov r8, r1\n ldr r1, [r0, #28]\n mov r11, r1\n"
        "ldr r1, [r0, #16]\n lsls r2, r1, #3\n ldr r3, [r0, #0]\n subs r3, r2\n mov r10, r3\n"
        "lsls r2, r1, #4\n ldr r3, [r0, #8]\n subs r3, r2\n str r3, [r0, #8]\n"
        "lsls r1, #5\n adr r2, 2f\n adds r1, r2\n mov r9, r1\n"
        "1:\n ldr r3, [sp]\n mov r0, r10\n ldr r1, [r3, #8]\n adds r3, #48\n"
        "ldm r3!, {r4-r7}\n mov pc, r9\n"
        ".balign 4\n2:\n"
        ".irp j, 0,1,2,3,4,5,6\n" ARM_WINO_UNIT("\\j") ".endr\n"
        ".if . - 2b != 7 * 32\n .error \"Winograd units are not 32 bytes\"\n.endif\n"
        "adds r0, #56\n adds r1, #112\n cmp r1, r8\n blo 2b\n"
        "adds r2, r4, r5\n adds r2, r6\n asrs r2, #1\n subs r3, r5, r6\n subs r3, r7\n asrs r3, #1\n"
        "ldr r0, [sp]\n ldr r1, [r0, #20]\n ldm r1!, {r4}\n str r1, [r0, #20]\n"
        "adds r2, r4\n adds r3, r4\n"
        "ldr r1, [r0, #24]\n adds r4, r1, #4\n str r4, [r0, #24]\n" /* r1: the requantisation */
        "ldr r4, [r0, #44]\n cmp r4, #0\n bne 5f\n"
        "ldrb r4, [r1, #2]\n ldrb r5, [r1, #3]\n ldrh r6, [r1, #0]\n"
        "subs r7, r5, #1\n movs r0, #1\n lsls r0, r7\n ldr r7, =32767\n mov r1, r11\n"
        ARM_WINO_FIN("r2", "0", "4") ARM_WINO_FIN("r3", "1", "6")
        "6:\n ldr r0, [sp]\n ldr r2, [r0, #32]\n add r11, r2\n ldr r2, [r0, #4]\n add r10, r2\n"
        "ldr r2, [sp, #4]\n subs r2, #1\n str r2, [sp, #4]\n beq 7f\n b 1b\n"
        "5:\n str r2, [sp, #8]\n str r3, [sp, #12]\n mov r2, r1\n mov r3, r11\n"
        "ldr r1, [r0, #36]\n add r0, sp, #8\n blx r4\n b 6b\n"
        ARM_WINO_FIN_RARE("r2", "4") ARM_WINO_FIN_RARE("r3", "6")
        "7:\n add sp, #20\n pop {r4-r7}\n mov r8, r4\n mov r9, r5\n mov r10, r6\n mov r11, r7\n"
        "pop {r4-r7, pc}\n"
        ".ltorg\n"
        ARM_END("cvae_arm_wino_pair"));

static int32_t wino_v[CVAE_WINO_SCRATCH - 4]; /* V: [ky][in][4] of the present kernel rows */
static arm_wino_t wino;

/* convt_row() of a stage that runs the Winograd kernel (0: it does not, nothing done; the
 * exporter gives it to rows of at least 3) */
static int arm_wino_row(const cvae_stage_t *s, const cvae_act_t *const rows[CVAE_KERNEL],
                        uint32_t in_chan_step, cvae_act_t *out, uint32_t out_chan_step,
                        unsigned last)
{
    const uint16_t *const u = cvae_wino_u[s - cvae_stages];
    const cvae_act_t *in[CVAE_KERNEL];
    const unsigned in_c = s->in_c, out_w = s->out_w;
    unsigned ky, lo = CVAE_KERNEL, nrows = 0, ox;
    uint32_t n, j0;

    if (!u)
        return 0;
    for (ky = 0; ky < CVAE_KERNEL; ky++)
        if (rows[ky]) {
            if (!nrows)
                lo = ky;
            in[nrows++] = rows[ky];
        }
    assert(s->stride == 1 && s->in_w >= 3u && nrows && rows[lo + nrows - 1u] &&
           12u * in_c <= CVAE_WINO_SCRATCH - 4u);
    n = nrows * in_c;
    wino.in_step = in_chan_step;
    wino.in_span = in_c * in_chan_step;
    wino.v_buf = wino_v;
    for (j0 = n; j0 >= 7u; j0 -= 7u) /* n mod 7, without a division */
        ;
    j0 = j0 ? 7u - j0 : 0u;
    for (ox = 0; ox < out_w; ox += 2) {
        wino.edge = !ox                ? WINO_LEFT
                    : ox + 2u < out_w  ? WINO_INNER
                    : ox + 2u == out_w ? WINO_RIGHT
                                       : WINO_ODD;
        cvae_arm_wino_in(in, nrows, ox, &wino);
        wino.u = u + lo * in_c * 4u;
        wino.u_step = in_c * CVAE_KERNEL * 8u;
        wino.v = wino_v;
        wino.v_end = wino_v + 4u * n;
        wino.j0 = j0;
        wino.bias = s->bias;
        wino.requant = s->requant;
        wino.y = out + ox;
        wino.y_step = out_chan_step;
        wino.n = out_w - ox < 2u ? 1u : 2u;
        wino.out_c = s->out_c;
        /* NULL: a hidden pair of two, requantised inline */
        wino.fin = last ? cvae_arm_fin_last : wino.n == 1u ? cvae_arm_fin_hidden : NULL;
        cvae_arm_wino_pair(&wino);
    }
    return 1;
}
#endif

#endif

/* The accumulators acc .. end-1 of output channel chan (plus its bias) into y:
 * activations (hidden stage: requant + ReLU) or pixels (last stage: requant to an
 * int8 logit, then the sigmoid LUT); the channel's constants are read once. Inlined into one function
 * for hidden stages and one for the last (fewer live values: RV32E's stack). */
static inline __attribute__((always_inline)) void finish_row(const acc_t *acc, const acc_t *end,
                                                             acc_t bias, const cvae_stage_t *s,
                                                             unsigned chan, cvae_act_t *y,
                                                             const unsigned last)
{
#ifdef CVAE_INT8
    const cvae_requant_t *r = &s->requant[chan];
#ifdef RV_CHAIN
    assert(bias == 0 && acc < end); /* the accumulators hold it (start_acc_row) */
    if (acc + 1 < end &&
        !(last ? cvae_rv_finish_last : cvae_rv_finish_hidden)(acc, end, y, r, cvae_sigmoid_lut))
        return; /* else one output, m = 0 or its trailing zeros at least the shift: below */
#endif
    const unsigned pre = r->pre, shift = r->shift;
    /* the multiplier; without a multiply instruction, the count of its set bits */
    const int32_t m = REQUANT_SETUP(r->m), round = (int32_t)1 << (shift - 1);
    for (; acc < end; acc++) {
        int32_t a = (*acc + bias) >> pre; /* arithmetic shift with gcc */
        if (!last && a <= 0) { /* a * m + round < 2^shift: y <= 0, so 0 after the ReLU */
            *y++ = 0;
            continue;
        }
        if (a < INT16_MIN)
            a = INT16_MIN;
        else if (a > INT16_MAX)
            a = INT16_MAX;
        a = (MUL_REQUANT(a, m) + round) >> shift;
        if (last) {
            if (a < INT8_MIN)
                a = INT8_MIN;
            else if (a > INT8_MAX)
                a = INT8_MAX;
            *y++ = cvae_sigmoid_lut[a - INT8_MIN]; /* entry 0: logit -128 */
        } else {
            if (a < 0)
                a = 0;
            else if (a > UINT8_MAX)
                a = UINT8_MAX;
            *y++ = (cvae_act_t)a;
        }
    }
#else
    (void)s;
    (void)chan;
    for (; acc < end; acc++) {
        const acc_t a = *acc + bias;
        *y++ = last ? 1.0f / (1.0f + expf(-a)) : a > 0.0f ? a : 0.0f;
    }
#endif
}

#ifdef ARM_KERNELS
/* ARMv6-M: the requantisation in Thumb-1 (cvae_arm_finish_*); its rows hold their
 * bias already (a linear stage's accumulator, a convT row from start_acc_row). */
static void finish_row_hidden(const acc_t *acc, const acc_t *end, acc_t bias, const cvae_stage_t *s,
                              unsigned chan, cvae_act_t *y)
{
    assert(bias == 0);
    (void)bias;
    cvae_arm_finish_hidden(acc, (uint32_t)(end - acc), &s->requant[chan], y);
}

static void finish_row_last(const acc_t *acc, const acc_t *end, acc_t bias, const cvae_stage_t *s,
                            unsigned chan, cvae_act_t *y)
{
    assert(bias == 0);
    (void)bias;
    cvae_arm_finish_last(acc, (uint32_t)(end - acc), &s->requant[chan], y);
}
#else
static NOINLINE void finish_row_hidden(const acc_t *acc, const acc_t *end, acc_t bias,
                                       const cvae_stage_t *s, unsigned chan, cvae_act_t *y)
{
    finish_row(acc, end, bias, s, chan, y, 0);
}

static NOINLINE void finish_row_last(const acc_t *acc, const acc_t *end, acc_t bias,
                                     const cvae_stage_t *s, unsigned chan, cvae_act_t *y)
{
    finish_row(acc, end, bias, s, chan, y, 1);
}
#endif

/* Dot products: stage 0 reads z (int8_t on int8), later stages activations. */
#ifdef CVAE_INT4
/* n >= 1 weights from nibble t on (a row may start in a byte's high nibble): the
 * current byte is shifted down a nibble after an even t, a new one loaded after
 * an odd t; one MAC in the loop (on rv32ec the MAC is inline shift-and-add code:
 * one copy per dot product, not two). */
#define CVAE_DEF_DOT(name, xtype, mul)                                         \
    static NOINLINE acc_t name(WEIGHTS_PARAM, const xtype *x, unsigned n)      \
    {                                                                          \
        acc_t a = 0;                                                           \
        uint32_t b;                                                            \
        w += t >> 1;                                                           \
        b = *w++;                                                              \
        if (t & 1)                                                             \
            b >>= 4;                                                           \
        for (;;) {                                                             \
            a += mul(NIB_LO(b), *x++);                                         \
            if (!--n)                                                          \
                return a;                                                      \
            if (++t & 1)                                                       \
                b >>= 4;                                                       \
            else                                                               \
                b = *w++;                                                      \
        }                                                                      \
    }
#else
#define CVAE_DEF_DOT(name, xtype, mul)                                         \
    static NOINLINE acc_t name(const cvae_weight_t *w, const xtype *x, unsigned n) \
    {                                                                          \
        acc_t a = 0;                                                           \
        while (n--)                                                            \
            a += mul(*w++, *x++);                                              \
        return a;                                                              \
    }
#endif
CVAE_DEF_DOT(dot_act, cvae_act_t, MUL)
#ifdef CVAE_INT8
CVAE_DEF_DOT(dot_z, cvae_z_t, MUL_SIGNED)
#else
#define dot_z dot_act
#endif

static uint32_t n_in(const cvae_stage_t *s) { return (uint32_t)s->in_c * s->in_h * s->in_w; }
static uint32_t n_out(const cvae_stage_t *s) { return (uint32_t)s->out_c * s->out_h * s->out_w; }

/* Outputs first .. first+count-1 of a linear stage into y. Stage 0 (z != NULL)
 * adds the label's row of the class table instead of a bias. */
static void linear(const cvae_stage_t *s, const cvae_act_t *x, const cvae_z_t *z, unsigned label,
                   unsigned first, unsigned count, cvae_act_t *y, unsigned last)
{
    const unsigned n_inputs = s->in_c;
    weight_pos_t w = FIRST_WEIGHT(s) + (uint32_t)first * n_inputs;
    const cvae_table_t *table_row = z ? cvae_table + (uint32_t)label * s->out_c + first : NULL;
    unsigned o;

    for (o = first; o < first + count; o++, w += n_inputs) {
        const acc_t acc = z ? TABLE_ACC(*table_row++) + dot_z(WEIGHTS(s, w), z, n_inputs)
                            : s->bias[o] + dot_act(WEIGHTS(s, w), x, n_inputs);
        (last ? finish_row_last : finish_row_hidden)(&acc, &acc + 1, 0, s, o, y++);
    }
}

/* The input row (or column) that a convT's output row (column) out reads through
 * kernel row (column) k, or -1 for none: pos = out + pad - k must be >= 0 and a
 * multiple of the stride, and pos / stride below in_size. */
static int input_index(int pos, unsigned stride_log2, unsigned in_size)
{
    if (pos < 0 || (pos & (int)stride_log2)) /* stride_log2 is also stride - 1 */
        return -1;
    pos >>= stride_log2;
    return pos < (int)in_size ? pos : -1;
}

/* Transposed convolutions are computed in scatter form, one output row of one
 * output channel at a time, into the accumulator row ACC_ROW: every input pixel
 * x[ix] of an input row that kernel row ky reads adds w[ky][kx] * x[ix] to
 * output column ix * stride - pad + kx, for kx = 0, 1, 2 (the three weights
 * stay in registers). ACC_ROW has a slot before column 0 and one after the
 * last column for the taps that fall into the padding or past the edge; those
 * are never read. A zero input (most, after a ReLU) is skipped. */

/* acc[ix * stride + kx] += w_kx * x[ix] for kx < CVAE_KERNEL and every input
 * x[ix] before end (acc: the slot of output column -1), the three taps w0, w1,
 * w2 of a kernel row loaded (int4: unpacked) once per input row by scatter_row. */
static inline __attribute__((always_inline)) void scatter(acc_t *acc, const tap_t w0,
                                                          const tap_t w1, const tap_t w2,
                                                          const cvae_act_t *x,
                                                          const cvae_act_t *end,
                                                          const unsigned stride)
{
    for (; x < end; x++, acc += stride) {
        const cvae_act_t v = *x;
        if (v) {
#ifdef MUL3
            MUL3(acc, w0, w1, w2, v);
#else
            acc[0] += MUL(w0, v);
            acc[1] += MUL(w1, v);
            acc[2] += MUL(w2, v);
#endif
        }
    }
}

#ifdef RV_QSQ
/* rv32ec kernels (no multiply instruction): every kernel row ky of every input channel
 * over its input row rows[ky], as scatter_row does row by row and channel by channel, in
 * RV32E assembly, one call per output row and channel. A product
 * is w * x = qsq[x + w] - qsq[x - w] (cvae_num.h's quarter squares, in flash): with B =
 * &qsq[x] (2 instructions per non-zero input) and W = 2w per tap (once per channel),
 * add, lhu, sub, lhu, sub: 5 instructions, no table built at run time. Zero inputs are
 * skipped (2 instructions); inputs go four a loop step (a row of n enters at input
 * -n & 3).
 *   stride 1: acc[ix] += P0 + w0 x[ix]; P0 = P1 + w1 x[ix]; P1 = w2 x[ix] (the two
 *             pending sums in s1 and ra, flushed after the row): 24 instructions per
 *             non-zero input (3 MACs), the accumulator loaded and stored once;
 *   stride 2: acc[2ix + k] += w_k x[ix]: 26 per non-zero input.
 * Per channel about 20 (the taps, the row's pointers, the entry), per kernel row 16.
 * Arguments: acc (slot -1 of the accumulator row), w (int8: channel 0's taps of kernel
 * row 0; int4: the weights' bytes), rows (channel 0's input row of each kernel row, or
 * NULL), in_c >= 1, the channels' distance in the input, in_w >= 1, and on int4 t (the
 * nibble index of channel 0's first tap); the frame: below. */
/* p = w * x into R, for B in t1 and W (2w) in register W; s0 and t2 scratch */
#define RV_PROD(R, W) "add t2, t1, " W "\n lhu t2, 0(t2)\n sub s0, t1, " W "\n lhu s0, 0(s0)\n" \
                      "sub " R ", t2, s0\n"
#define RV_ADD(OFF, R) "lw s0, " OFF "(a0)\n add s0, s0, " R "\n sw s0, " OFF "(a0)\n"
/* x = input X of the step; zero: to label Z; B = &qsq[x] in t1 */
#define RV_LOAD(X, Z) "lbu t1, " X "(a1)\n beqz t1, " Z "\n slli t1, t1, 1\n add t1, t1, t0\n"
#define RV_UNIT_S1(X, A, Z)                                                    \
    RV_LOAD(X, Z) RV_PROD("t2", "a3") "lw s0, " A "(a0)\n add s0, s0, s1\n add s0, s0, t2\n" \
    "sw s0, " A "(a0)\n" RV_PROD("t2", "a4") "add s1, ra, t2\n" RV_PROD("ra", "a5")
/* a zero input: acc[ix] += P0; P0 = P1; P1 = 0 (nothing when both are 0), back to N */
/* the same input while P0 = P1 = 0: acc[ix] += w0 x[ix]; P0 = w1 x[ix]; P1 = w2 x[ix],
 * then on at N (pending) */
#define RV_CLEAN_S1(X, A, Z, N)                                                \
    RV_LOAD(X, Z) RV_PROD("t2", "a3") RV_ADD(A, "t2") RV_PROD("s1", "a4") RV_PROD("ra", "a5") \
    "j " N "\n"
/* a zero input with sums pending: both into acc[ix], acc[ix + 1], then on at N (clean,
 * which sets P0 and P1 before it reads them) */
#define RV_ZERO_S1(A0, A1, N) RV_ADD(A0, "s1") RV_ADD(A1, "ra") "j " N "\n"
/* stride 2: x[ix] adds w0 x, w1 x to acc[2ix], acc[2ix + 1] and leaves C = w2 x (in s1)
 * pending for acc[2ix + 2], which the next input's w0 x also reaches; the same two
 * copies of the loop as stride 1 (C pending or not) */
#define RV_CLEAN_S2(X, A0, A1, Z, N)                                           \
    RV_LOAD(X, Z) RV_PROD("t2", "a3") RV_ADD(A0, "t2") RV_PROD("t2", "a4") RV_ADD(A1, "t2") \
    RV_PROD("s1", "a5") "j " N "\n"
#define RV_UNIT_S2(X, A0, A1, Z)                                               \
    RV_LOAD(X, Z) RV_PROD("t2", "a3") "lw s0, " A0 "(a0)\n add s0, s0, s1\n add s0, s0, t2\n" \
    "sw s0, " A0 "(a0)\n" RV_PROD("t2", "a4") RV_ADD(A1, "t2") RV_PROD("s1", "a5")
#define RV_ZERO_S2(A0, N) RV_ADD(A0, "s1") "j " N "\n"
#ifdef CVAE_INT4
#define RV_T_PARAM , uint32_t t
/* the taps of the channel at nibble t (24(sp)) of the weights (32(sp)): the two bytes
 * that hold nibbles t .. t + 2, as one 16-bit value shifted down by 4 (t & 1), each
 * nibble sign-extended by a shift up and back down */
#define RV_FIRST_W "lw t1, 52(sp)\n sw t1, 44(sp)\n sw a1, 32(sp)\n"
#define RV_TAPS                                                                \
    "lw t1, 24(sp)\n lw t2, 32(sp)\n srli s0, t1, 1\n add s0, s0, t2\n lbu a3, 0(s0)\n"   \
    "lbu a4, 1(s0)\n slli a4, a4, 8\n or a3, a3, a4\n andi s0, t1, 1\n slli s0, s0, 2\n"  \
    "srl a3, a3, s0\n slli a4, a3, 24\n srai a4, a4, 28\n slli a5, a3, 20\n srai a5, a5, 28\n" \
    "slli a3, a3, 28\n srai a3, a3, 28\n addi t1, t1, 9\n sw t1, 24(sp)\n"
#else
#define RV_T_PARAM
#define RV_FIRST_W "sw a1, 44(sp)\n"
#define RV_TAPS "lw t1, 24(sp)\n lb a3, 0(t1)\n lb a4, 1(t1)\n lb a5, 2(t1)\n addi t1, t1, 9\n" \
                "sw t1, 24(sp)\n"
#endif
void cvae_rv_krow_s1(acc_t *acc, const cvae_weight_t *w, const cvae_act_t *const rows[CVAE_KERNEL],
                     uint32_t in_c, uint32_t in_chan_step, uint32_t in_w RV_T_PARAM);
void cvae_rv_krow_s2(acc_t *acc, const cvae_weight_t *w, const cvae_act_t *const rows[CVAE_KERNEL],
                     uint32_t in_c, uint32_t in_chan_step, uint32_t in_w RV_T_PARAM);
/* The frame (52 B): ra, s0, s1, acc, in_chan_step, in_w, the next channel's taps (int8:
 * pointer, int4: nibble index), the end of the taps, the int4 weights, the next entry of
 * rows, rows + 3, the next kernel row's taps (channel 0), 9 in_c. The row: a1 .. a2. */
#define RV_KROW_ENTER(name)                                                    \
    ".pushsection .text." name ",\"ax\",@progbits\n"                          \
    ".balign 2\n.global " name "\n.type " name ", @function\n" name ":\n"     \
    "addi sp, sp, -52\n sw ra, 0(sp)\n sw s0, 4(sp)\n sw s1, 8(sp)\n sw a0, 12(sp)\n"     \
    "sw a4, 16(sp)\n sw a5, 20(sp)\n" RV_FIRST_W "sw a2, 36(sp)\n addi t1, a2, 12\n"    \
    "sw t1, 40(sp)\n slli t2, a3, 3\n add t2, t2, a3\n sw t2, 48(sp)\n"                  \
    "lui t0, %hi(cvae_qsq+256)\n addi t0, t0, %lo(cvae_qsq+256)\n j 11f\n"
/* a channel: its taps (W = 2w), the accumulators (a0); a row of n inputs enters the loop
 * of four at input k = -n & 3 (pointers k inputs back) */
#define RV_CHANNEL(log2)                                                       \
    "8:\n" RV_TAPS "slli a3, a3, 1\n slli a4, a4, 1\n slli a5, a5, 1\n lw a0, 12(sp)\n"   \
    "sub t1, a1, a2\n andi t1, t1, 3\n beqz t1, 1f\n sub a1, a1, t1\n slli t2, t1, " log2 "\n" \
    "sub a0, a0, t2\n addi t1, t1, -2\n bltz t1, 2f\n beqz t1, 13f\n j 14f\n"
/* the next channel's row; or the next kernel row that has an input row (rows[ky]), its
 * taps 3 on; or out */
#define RV_KROW_LEAVE(name)                                                    \
    "lw t2, 16(sp)\n add a2, a2, t2\n lw t2, 20(sp)\n sub a1, a2, t2\n"            \
    "lw t1, 24(sp)\n lw t2, 28(sp)\n bltu t1, t2, 8b\n"                            \
    "11:\n lw t1, 36(sp)\n lw t2, 40(sp)\n bgeu t1, t2, 12f\n lw a1, 0(t1)\n"      \
    "addi t1, t1, 4\n sw t1, 36(sp)\n lw t2, 44(sp)\n addi t1, t2, 3\n sw t1, 44(sp)\n" \
    "beqz a1, 11b\n sw t2, 24(sp)\n lw t1, 48(sp)\n add t2, t2, t1\n sw t2, 28(sp)\n"   \
    "lw t1, 20(sp)\n add a2, a1, t1\n j 8b\n"                                       \
    "12:\n lw ra, 0(sp)\n lw s0, 4(sp)\n lw s1, 8(sp)\n addi sp, sp, 52\n ret\n"     \
    ".size " name ", .-" name "\n.popsection\n"
/* stride 1: two copies of the loop of four inputs, one while no sums are pending (labels
 * 1, 2, 13, 14, the step 3: a zero input costs 2 instructions there) and one while they
 * are (4, 5, 15, 16, the step 6); a zero input with sums pending adds them (7, 10, 17, 18)
 * and goes on in the first, a non-zero one without goes on in the second */
__asm__(RV_KROW_ENTER("cvae_rv_krow_s1") RV_CHANNEL("2")
        "1:\n" RV_CLEAN_S1("0", "0", "2f", "5f") "2:\n" RV_CLEAN_S1("1", "4", "13f", "15f")
        "13:\n" RV_CLEAN_S1("2", "8", "14f", "16f") "14:\n" RV_CLEAN_S1("3", "12", "3f", "6f")
        "3:\n addi a1, a1, 4\n addi a0, a0, 16\n bltu a1, a2, 1b\n j 9f\n"
        "4:\n" RV_UNIT_S1("0", "0", "7f") "5:\n" RV_UNIT_S1("1", "4", "10f")
        "15:\n" RV_UNIT_S1("2", "8", "17f") "16:\n" RV_UNIT_S1("3", "12", "18f")
        "6:\n addi a1, a1, 4\n addi a0, a0, 16\n bltu a1, a2, 4b\n"
        RV_ADD("0", "s1") RV_ADD("4", "ra") "j 9f\n" /* the pending sums, past the row */
        "7:\n" RV_ZERO_S1("0", "4", "2b") "10:\n" RV_ZERO_S1("4", "8", "13b")
        "17:\n" RV_ZERO_S1("8", "12", "14b") "18:\n" RV_ZERO_S1("12", "16", "3b")
        "9:\n" RV_KROW_LEAVE("cvae_rv_krow_s1")
        RV_KROW_ENTER("cvae_rv_krow_s2") RV_CHANNEL("3")
        "1:\n" RV_CLEAN_S2("0", "0", "4", "2f", "5f") "2:\n" RV_CLEAN_S2("1", "8", "12", "13f", "15f")
        "13:\n" RV_CLEAN_S2("2", "16", "20", "14f", "16f")
        "14:\n" RV_CLEAN_S2("3", "24", "28", "3f", "6f")
        "3:\n addi a1, a1, 4\n addi a0, a0, 32\n bltu a1, a2, 1b\n j 9f\n"
        "4:\n" RV_UNIT_S2("0", "0", "4", "7f") "5:\n" RV_UNIT_S2("1", "8", "12", "10f")
        "15:\n" RV_UNIT_S2("2", "16", "20", "17f") "16:\n" RV_UNIT_S2("3", "24", "28", "18f")
        "6:\n addi a1, a1, 4\n addi a0, a0, 32\n bltu a1, a2, 4b\n"
        RV_ADD("0", "s1") "j 9f\n" /* C, past the row */
        "7:\n" RV_ZERO_S2("0", "2b") "10:\n" RV_ZERO_S2("8", "13b")
        "17:\n" RV_ZERO_S2("16", "14b") "18:\n" RV_ZERO_S2("24", "3b")
        "9:\n" RV_KROW_LEAVE("cvae_rv_krow_s2"));

/* Kernel row ky of every input channel over input row rows[ky] (channel 0; channels
 * in_chan_step apart), for every ky with one, into acc; w: channel 0's taps of kernel row
 * 0 (nibble t on int4). */
static inline __attribute__((always_inline)) void rv_kernel_rows(acc_t *acc, const cvae_stage_t *s,
                                                                weight_pos_t w,
                                                                const cvae_act_t *const rows[CVAE_KERNEL],
                                                                uint32_t in_chan_step)
{
#ifdef CVAE_INT4
#define RV_KROW_ARGS(s, w) (s)->weight, rows, (s)->in_c, in_chan_step, (s)->in_w, (w)
#else
#define RV_KROW_ARGS(s, w) (w), rows, (s)->in_c, in_chan_step, (s)->in_w
#endif
    (s->stride == 1 ? cvae_rv_krow_s1 : cvae_rv_krow_s2)(acc, RV_KROW_ARGS(s, w));
}
#endif

#ifndef RV_TABLE_FREE /* table-free rv32ec: scatter_channels, below */
/* scatter() with the stride a constant: one register fewer in the loop. */
static NOINLINE void scatter_row(acc_t *acc, WEIGHTS_PARAM, const cvae_act_t *x,
                                 const cvae_act_t *end, unsigned stride)
{
#ifdef CVAE_INT4
    /* the three taps unpacked once, before the loops */
    const tap_t w0 = TAP(0), w1 = TAP(1), w2 = TAP(2);
    if (stride == 1)
        scatter(acc, w0, w1, w2, x, end, 1);
    else
        scatter(acc, w0, w1, w2, x, end, 2);
#else
    if (stride == 1)
        scatter(acc, TAP(0), TAP(1), TAP(2), x, end, 1);
    else
        scatter(acc, TAP(0), TAP(1), TAP(2), x, end, 2);
#endif
}
#endif

#ifdef RV_TABLE_FREE
/* rv32ec's table-free builds (with or without the assembly requantisation): kernel row w
 * of every input channel (in_c >= 1, channels in_chan_step apart from x) in one call: gcc
 * spilled about 20 registers around each call of scatter_row there (RV32E keeps two
 * saved registers) */
#define RV_SCATTER_CHANNELS 1
#ifdef CVAE_INT4
#define NEXT_CHANNEL_TAPS (t += KERNEL_TAPS)
#else
#define NEXT_CHANNEL_TAPS (w += KERNEL_TAPS)
#endif
static NOINLINE void scatter_channels(acc_t *acc, WEIGHTS_PARAM, const cvae_act_t *x, unsigned in_c,
                                      uint32_t in_chan_step, unsigned in_w, unsigned stride)
{
    for (; in_c; in_c--, x += in_chan_step, NEXT_CHANNEL_TAPS) {
        const tap_t w0 = TAP(0), w1 = TAP(1), w2 = TAP(2);
        if (stride == 1)
            scatter(acc, w0, w1, w2, x, x + in_w, 1);
        else
            scatter(acc, w0, w1, w2, x, x + in_w, 2);
    }
}
#endif

/* The accumulators acc of one output row of a convT (and its two edge slots) at
 * the start of the row: 0, and finish_row adds ROW_BIAS(bias); on ARMv6-M the
 * bias, and finish_row adds 0. Returns the slot after the last. */
#ifdef ARM_KERNELS
static acc_t *start_acc_row(acc_t *acc, unsigned out_w, acc_t bias)
{
    cvae_arm_fill(acc, out_w + 2u, bias);
    return acc + out_w + 2;
}
#define ROW_BIAS(bias) 0
#elif defined(CVAE_INT8) && defined(__riscv) && !defined(__riscv_mul)
/* rv32ec (both kernels, the table-free ones too): the bias (the requantisation adds
 * none), two words a step, not gcc's call to picolibc's memset for the zeros it had been
 * (10-16 instructions a word) */
__attribute__((optimize("no-tree-loop-distribute-patterns")))
static acc_t *start_acc_row(acc_t *acc, unsigned out_w, acc_t bias)
{
    acc_t *const end = acc + out_w + 2;
    if (out_w & 1) /* then two words a step (3 instructions for 2) */
        *acc++ = bias;
    for (; acc < end; acc += 2)
        acc[0] = acc[1] = bias;
    return end;
}
#define ROW_BIAS(bias) 0
#else
static acc_t *clear_acc_row(acc_t *acc, unsigned out_w)
{
    acc_t *const end = acc + out_w + 2;
    while (acc < end)
        *acc++ = 0;
    return end;
}
#define start_acc_row(acc, out_w, bias) clear_acc_row((acc), (out_w))
#define ROW_BIAS(bias) (bias)
#endif

/* Adds kernel row ky of the weights of output channel 0 ([in_c][ky][kx], from
 * FIRST_WEIGHT(s)) over input row x (channel 0; channels in_chan_step apart) to the
 * accumulator row acc. */
static void scatter_kernel_row(acc_t *acc, const cvae_stage_t *s, unsigned ky,
                               const cvae_act_t *x, uint32_t in_chan_step)
{
    const unsigned in_c = s->in_c, in_w = s->in_w, stride = s->stride;
    weight_pos_t w = FIRST_WEIGHT(s) + ky * CVAE_KERNEL;
    unsigned i;
#ifdef ARM_KERNELS
    if (arm_row(s)) {
        const cvae_act_t *rows[CVAE_KERNEL] = {NULL, NULL, NULL};
        rows[ky] = x;
        arm_row(s)(acc, rows, s, in_chan_step, NULL, 0, NULL);
        return;
    }
#endif
#ifdef RV_QSQ
    {
        const cvae_act_t *const one_row[CVAE_KERNEL] = {x, NULL, NULL};
        rv_kernel_rows(acc, s, w, one_row, in_chan_step);
        return;
    }
#endif
#ifdef RV_SCATTER_CHANNELS
    (void)i;
    scatter_channels(acc, WEIGHTS(s, w), x, in_c, in_chan_step, in_w, stride);
#else
    for (i = 0; i < in_c; i++, x += in_chan_step, w += KERNEL_TAPS)
        scatter_row(acc, WEIGHTS(s, w), x, x + in_w, stride);
#endif
}

#ifdef ARM_KERNELS
/* convt_row() by the ARMv6-M kernels, one call for the row: per output channel, the
 * accumulator row set to the bias, every kernel row of every input channel added,
 * then the row requantised. 0 (nothing done) where the rows do not fit the kernels. */
static int arm_convt_row(const cvae_stage_t *s, const cvae_act_t *const rows[CVAE_KERNEL],
                         uint32_t in_chan_step, cvae_act_t *out, uint32_t out_chan_step, acc_t *acc,
                         unsigned last)
{
    arm_row_fn *const row = arm_row(s);

    if (!row)
        return 0;
    cvae_arm_fill(acc + 1, s->out_w, s->bias[0]);
    row(acc, rows, s, in_chan_step, out, out_chan_step, last ? cvae_arm_fin_last : cvae_arm_fin_hidden);
    return 1;
}
#endif

/* One output row of a convT (all channels): rows[ky] is the input row (channel 0)
 * that kernel row ky reads, or NULL; channels lie in_chan_step apart in the input
 * and out_chan_step apart in the output. */
static NOINLINE void convt_row(const cvae_stage_t *s, const cvae_act_t *const rows[CVAE_KERNEL],
                               uint32_t in_chan_step, cvae_act_t *out, uint32_t out_chan_step,
                               unsigned last)
{
    const unsigned in_c = s->in_c, in_w = s->in_w, stride = s->stride;
    weight_pos_t w = FIRST_WEIGHT(s);
    acc_t *const acc = last ? LAST_ACC_ROW : ACC_ROW;
    unsigned o;

#ifdef CVAE_ROWS
    if (CVAE_ROWS[s - cvae_stages]) { /* the stage's generated row kernel */
        CVAE_ROWS[s - cvae_stages](rows, in_chan_step, out, out_chan_step);
        return;
    }
#endif
#ifdef ARM_WINO
    if (arm_wino_row(s, rows, in_chan_step, out, out_chan_step, last))
        return;
#endif
#ifdef ARM_KERNELS
    if (arm_convt_row(s, rows, in_chan_step, out, out_chan_step, acc, last))
        return;
#endif
    for (o = 0; o < s->out_c; o++, out += out_chan_step, w += in_c * KERNEL_TAPS) {
        acc_t *const a_end = start_acc_row(acc, s->out_w, s->bias[o]);
        unsigned ky = CVAE_KERNEL, i;
#ifdef RV_QSQ
        rv_kernel_rows(acc, s, w, rows, in_chan_step);
        ky = 0; /* every kernel row done */
#endif
        while (ky--) { /* the order of convt_single_channel_row: the same float sums */
            const cvae_act_t *x = rows[ky];
            if (!x)
                continue;
            /* scatter_kernel_row's loop, written out: calling it (even inlined) costs
             * 1.4% more instructions per image on ARMv6-M (8_8_8_8, measured) */
#ifdef RV_SCATTER_CHANNELS
            (void)i;
            scatter_channels(acc, WEIGHTS(s, w + ky * CVAE_KERNEL), x, in_c, in_chan_step, in_w,
                             stride);
#else
            for (i = 0; i < in_c; i++, x += in_chan_step)
                scatter_row(acc, WEIGHTS(s, w + i * KERNEL_TAPS + ky * CVAE_KERNEL), x, x + in_w,
                            stride);
#endif
        }
#ifdef RV_CHAIN /* straight into the assembly (finish_row's C where it declines) */
        if (!(last ? cvae_rv_finish_last : cvae_rv_finish_hidden)(acc + 1, a_end - 1, out,
                                                                  &s->requant[o], cvae_sigmoid_lut))
            continue;
#endif
        (last ? finish_row_last : finish_row_hidden)(acc + 1, a_end - 1, ROW_BIAS(s->bias[o]), s, o, out);
    }
}


/* Streaming. The last linear stage and every stage after it (the convT suffix)
 * are computed one output row at a time, when the stage after them needs the
 * row. A row is one row of the next stage's input (all its channels: [c][x],
 * channels a row apart; a linear stage's outputs read as that input's CHW).
 * Each streamed stage but the last keeps its latest rows in a ring of as many
 * slots as the next stage needs at once (ring_slots). Static, like the arena:
 * the CH32V003 (2 KB RAM) reserves 320 bytes of stack, so the walk is a loop. */
typedef struct {
    cvae_act_t *slot0;  /* slot k at slot0 + k * (the next stage's in_c * in_w) */
    uint16_t next_row;  /* the next row to compute */
    uint8_t next_slot;  /* the slot it goes into */
    uint8_t slots;
} ring_t;

static struct {
    unsigned first;        /* the first streamed stage: the last linear one */
    const cvae_act_t *in;  /* its whole input (CHW), left by run_prefix; NULL for z */
    const cvae_z_t *z;     /* z when the first streamed stage is stage 0 */
    unsigned label;
    ring_t ring[N_STAGES]; /* of stages first .. N_STAGES-2 */
} stream;

/* Elements of one row of stage k's output = of stage k+1's input. */
static uint32_t row_elems(unsigned k) { return (uint32_t)cvae_stages[k + 1].in_c * cvae_stages[k + 1].in_w; }

/* Slots of stage k's ring: as many rows as one output row of the convT after it
 * reads, ceil(CVAE_KERNEL / stride) (3 before stride 1, 2 before stride 2). The
 * generator gives a last stride-2 convT with one output channel a row of
 * accumulators of its own (CVAE_LAST_ACC_ROW) when that is smaller than a ring
 * slot: it then reads its input rows in increasing order, each filled just
 * before (convt_single_channel_row), from one slot. */
static uint8_t ring_slots(unsigned k)
{
    const cvae_stage_t *next = &cvae_stages[k + 1];
    if (next == LAST_STAGE && CVAE_LAST_ACC_ROW > 0)
        return 1;
    return (uint8_t)((CVAE_KERNEL + STRIDE_LOG2(next)) >> STRIDE_LOG2(next));
}

/* The rings of stages first .. N_STAGES-2, from free on; returns the first
 * element after them. */
static cvae_act_t *ring_init(cvae_act_t *free)
{
    unsigned k;
    for (k = stream.first; k + 1 < N_STAGES; k++) {
        ring_t *r = &stream.ring[k];
        r->slot0 = free;
        r->next_row = 0;
        r->next_slot = 0;
        r->slots = ring_slots(k);
        free += r->slots * row_elems(k);
    }
    return free;
}

/* The last input row that output row oy of convT s reads (kernel row 0, or 1
 * where row 0 falls between the input rows of a stride-2 stage). */
static unsigned last_input_row(const cvae_stage_t *s, unsigned oy)
{
    unsigned iy = ((unsigned)oy + s->pad) >> STRIDE_LOG2(s);
    return iy < s->in_h ? iy : s->in_h - 1u;
}

/* Row iy of streamed stage k, already computed and still in its ring. */
static const cvae_act_t *ring_row(unsigned k, unsigned iy)
{
    const ring_t *r = &stream.ring[k];
    const unsigned back = r->next_row - iy; /* 1: the row computed last */
    unsigned slot = r->next_slot + r->slots - back;

    assert(iy < r->next_row && back <= r->slots);
    if (slot >= r->slots)
        slot -= r->slots;
    return r->slot0 + slot * row_elems(k);
}

/* Row y of linear stage s's outputs read as channels x h x w, into row ([c][x]):
 * outputs c*h*w + y*w .. c*h*w + y*w + w-1 of every channel c. */
static void linear_row(const cvae_stage_t *s, unsigned channels, unsigned h, unsigned w, unsigned y,
                       cvae_act_t *row, unsigned last)
{
    unsigned c, o = y * w;
    for (c = 0; c < channels; c++, o += h * w, row += w)
        linear(s, stream.in, stream.z, stream.label, o, w, row, last);
}

/* The input row that kernel row ky of convT s reads for output row oy, for ky = 0 ..
 * CVAE_KERNEL-1: iy[ky], or -1 where none (the one walk from kernel rows to input rows,
 * for whole stages, streamed ones and the last layer's own accumulator row). */
static void kernel_input_rows(const cvae_stage_t *s, unsigned oy, int iy[CVAE_KERNEL])
{
    unsigned ky;
    for (ky = 0; ky < CVAE_KERNEL; ky++)
        iy[ky] = input_index((int)oy + s->pad - (int)ky, STRIDE_LOG2(s), s->in_h);
}

/* rows[ky]: the input row (channel 0) that kernel row ky reads for output row oy of
 * convT s, or NULL where none: from its whole CHW input in, or (in NULL, a streamed
 * stage) from the ring of the stage before it, where it already is. */
static void input_rows(const cvae_stage_t *s, unsigned oy, const cvae_act_t *in,
                       const cvae_act_t *rows[CVAE_KERNEL])
{
    int iy[CVAE_KERNEL];
    unsigned ky;
    kernel_input_rows(s, oy, iy);
    for (ky = 0; ky < CVAE_KERNEL; ky++)
        rows[ky] = iy[ky] < 0 ? NULL
                   : in       ? in + (uint32_t)iy[ky] * s->in_w
                              : ring_row((unsigned)(s - cvae_stages) - 1u, (unsigned)iy[ky]);
}

/* Computes rows of streamed stages until row iy of stage k is in its ring: each
 * time the lowest stage, from k down, whose next row has all its input rows. */
static void ring_fill(unsigned k, unsigned iy)
{
    while (stream.ring[k].next_row <= iy) {
        unsigned j = k;
        ring_t *r;
        cvae_act_t *slot;
        while (j > stream.first &&
               stream.ring[j - 1].next_row <= last_input_row(&cvae_stages[j], stream.ring[j].next_row))
            j--;
        r = &stream.ring[j];
        slot = r->slot0 + r->next_slot * row_elems(j);
        if (j == stream.first) {
            const cvae_stage_t *next = &cvae_stages[j + 1];
            linear_row(&cvae_stages[j], next->in_c, next->in_h, next->in_w, r->next_row, slot, 0);
        } else {
            const cvae_act_t *rows[CVAE_KERNEL];
            input_rows(&cvae_stages[j], r->next_row, NULL, rows);
            convt_row(&cvae_stages[j], rows, cvae_stages[j].in_w, slot, cvae_stages[j].out_w, 0);
        }
        r->next_row++;
        r->next_slot = r->next_slot + 1u == r->slots ? 0 : r->next_slot + 1u;
    }
}

/* A whole stage, input CHW -> output CHW. */
static void run_stage(const cvae_stage_t *s, const cvae_act_t *in, const cvae_z_t *z, unsigned label,
                      cvae_act_t *out, unsigned last)
{
    uint32_t in_chan_step, out_chan_step;
    unsigned oy;

    if (s->kind == CVAE_STAGE_LINEAR) {
        linear(s, in, z, label, 0, s->out_c, out, last);
        return;
    }
    in_chan_step = (uint32_t)s->in_h * s->in_w;
    out_chan_step = (uint32_t)s->out_h * s->out_w;
    for (oy = 0; oy < s->out_h; oy++, out += s->out_w) {
        const cvae_act_t *rows[CVAE_KERNEL];
        input_rows(s, oy, in, rows);
        convt_row(s, rows, in_chan_step, out, out_chan_step, last);
    }
}

#ifdef BOARD_ICOUNT
/* QEMU builds: called before stage k of every stage run and with k = N_STAGES
 * after cvae_generate()'s last, for per-stage instruction counts (golden_test.c
 * defines it; empty elsewhere). */
__attribute__((weak)) void cvae_stage_hook(unsigned k) { (void)k; }
#define STAGE_HOOK(k) cvae_stage_hook(k)
#else
#define STAGE_HOOK(k) ((void)0)
#endif

#ifdef NDEBUG
#define CHECK_MODEL() ((void)0)
#else
/* Host and QEMU builds: what the runtime assumes of the generated model. */
static void check_model(void)
{
    static int done;
    unsigned k;
    if (done)
        return;
    assert(cvae_stages[0].kind == CVAE_STAGE_LINEAR && cvae_stages[0].in_c == CVAE_LATENT);
    for (k = 0; k < N_STAGES; k++) {
        const cvae_stage_t *s = &cvae_stages[k];
        assert(s->relu == (k + 1 < N_STAGES));
        assert(n_out(s) <= CVAE_MAX_STAGE_OUT);
        assert(k == 0 || n_in(s) == n_out(s - 1));
        assert(s->kind == CVAE_STAGE_LINEAR ||
               (s->kind == CVAE_STAGE_CONVT && s->kernel == CVAE_KERNEL &&
                (s->stride == 1 || s->stride == 2) && s->pad == 1 &&
                s->out_w + 2u <= (s == LAST_STAGE && CVAE_LAST_ACC_ROW ? CVAE_LAST_ACC_ROW
                                                                       : ACC_ROW_ELEMS)));
#ifdef CVAE_INT8
        {
            unsigned o;
            for (o = 0; o < s->out_c; o++)
                assert(s->requant[o].m >= 0 && s->requant[o].pre < 32 && s->requant[o].shift >= 1 &&
                       s->requant[o].shift <= 30);
        }
#endif
    }
    assert(n_out(LAST_STAGE) == CVAE_OUT_SIZE);
    assert(CVAE_LAST_ACC_ROW == 0 || (LAST_STAGE->kind == CVAE_STAGE_CONVT && LAST_STAGE->out_c == 1 &&
                                      LAST_STAGE->stride == 2 && N_STAGES >= 2));
    assert(LAST_STAGE->kind == CVAE_STAGE_LINEAR ||
           (LAST_STAGE->out_c == CVAE_OUT_C && LAST_STAGE->out_h == CVAE_OUT_H &&
            LAST_STAGE->out_w == CVAE_OUT_W));
    done = 1;
}
#define CHECK_MODEL() check_model()
#endif

/* Stages 0 .. n-1, whole, alternating the arena's two ends (stage k's output at
 * the start for even k, at the end for odd k). Returns stage n-1's output. */
static const cvae_act_t *run_prefix(unsigned n, unsigned label, const cvae_z_t *z, uint32_t budget)
{
    const cvae_act_t *in = NULL;
    unsigned k;

    (void)budget;
    for (k = 0; k < n; k++) {
        const cvae_stage_t *s = &cvae_stages[k];
        const uint32_t out_elems = n_out(s);
        cvae_act_t *out = (k & 1) ? ARENA_ACT + ARENA_ELEMS - out_elems : ARENA_ACT;
        assert(((k ? n_in(s) : 0) + out_elems) * sizeof(cvae_act_t) + ACC_ROW_BYTES <= budget);
        STAGE_HOOK(k);
        run_stage(s, in, k ? NULL : z, label, out, 0);
        in = out;
    }
    return in;
}

#ifndef CVAE_STREAM_ONLY
int cvae_generate(uint8_t label, const cvae_z_t *z, cvae_pixel_t *out)
{
    const cvae_act_t *in;

    if (label >= CVAE_NUM_CLASSES)
        return -1;
    CHECK_MODEL();
    in = run_prefix(N_STAGES - 1, label, z, CVAE_ARENA_IMAGE);
    assert((N_STAGES > 1 ? n_in(LAST_STAGE) : 0) * sizeof(cvae_act_t) + ACC_ROW_BYTES <=
           CVAE_ARENA_IMAGE);
    STAGE_HOOK(N_STAGES - 1);
    run_stage(LAST_STAGE, in, N_STAGES > 1 ? NULL : z, label, out, 1);
    STAGE_HOOK(N_STAGES);
    return 0;
}
#endif

/* cvae_generate_rows() runs the stages before the first streamed one whole
 * (run_prefix), then produces the output row by row. */

/* The first stage computed row by row: the last linear one (stage 0 is linear). */
static unsigned first_streamed_stage(void)
{
    unsigned k = N_STAGES - 1;
    while (cvae_stages[k].kind != CVAE_STAGE_LINEAR)
        k--;
    return k;
}

/* The streaming arena once run_prefix(first) has left stage first's input
 * (in_elems elements) in it, at the start if first is odd, at the end if even:
 * the rings of the streamed stages but the last, then the output row, in the
 * rest. Returns the output row. */
static cvae_act_t *place_stream_buffers(unsigned first, uint32_t in_elems)
{
    cvae_act_t *row = ARENA_ACT;

    if (first & 1) /* stage first-1 (even) left its output at the start */
        row += in_elems;
    row = ring_init(row);
    assert((uint32_t)(row - ARENA_ACT) + (first & 1 ? 0 : in_elems) + CVAE_OUT_C * CVAE_OUT_W <=
           (CVAE_ARENA_STREAM - ACC_ROW_BYTES) / sizeof(cvae_act_t));
    return row;
}

/* Output row y of a last convT with one output channel and a row of accumulators
 * of its own: its kernel rows in decreasing order read its input rows in
 * increasing order, each filled into the ring just before it is read (the
 * hidden stages that fill it use the other accumulator row). */
static void convt_single_channel_row(unsigned y, cvae_act_t *row)
{
    const cvae_stage_t *s = LAST_STAGE;
    acc_t *const a_end = start_acc_row(LAST_ACC_ROW, s->out_w, s->bias[0]);
    int iy[CVAE_KERNEL];
    unsigned ky = CVAE_KERNEL;

    kernel_input_rows(s, y, iy);
    while (ky--) {
        if (iy[ky] < 0)
            continue;
        ring_fill(N_STAGES - 2, (unsigned)iy[ky]);
        scatter_kernel_row(LAST_ACC_ROW, s, ky, ring_row(N_STAGES - 2, (unsigned)iy[ky]), s->in_w);
    }
    finish_row_last(LAST_ACC_ROW + 1, a_end - 1, ROW_BIAS(s->bias[0]), s, 0, row);
}

/* Output row y of a last convT (the output row's channels a row apart). */
static void convt_output_row(unsigned y, cvae_act_t *row)
{
    const cvae_act_t *rows[CVAE_KERNEL];
    if (CVAE_LAST_ACC_ROW > 0) {
        convt_single_channel_row(y, row);
        return;
    }
    ring_fill(N_STAGES - 2, last_input_row(LAST_STAGE, y));
    input_rows(LAST_STAGE, y, NULL, rows);
    convt_row(LAST_STAGE, rows, LAST_STAGE->in_w, row, LAST_STAGE->out_w, 1);
}

int cvae_generate_rows(uint8_t label, const cvae_z_t *z, cvae_row_fn fn, void *ctx)
{
    const unsigned first = first_streamed_stage();
    cvae_act_t *row;
    unsigned y;

    if (label >= CVAE_NUM_CLASSES)
        return -1;
    CHECK_MODEL();
    stream.first = first;
    stream.in = run_prefix(first, label, z, CVAE_ARENA_STREAM);
    stream.z = first ? NULL : z;
    stream.label = label;
    row = place_stream_buffers(first, first ? n_in(&cvae_stages[first]) : 0);
    for (y = 0; y < CVAE_OUT_H; y++) {
        if (LAST_STAGE->kind == CVAE_STAGE_LINEAR)
            linear_row(LAST_STAGE, CVAE_OUT_C, CVAE_OUT_H, CVAE_OUT_W, y, row, 1);
        else
            convt_output_row(y, row);
        fn((uint16_t)y, row, ctx);
    }
    return 0;
}
