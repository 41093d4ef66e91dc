/* tinycvae runtime: the number formats of the three paths (see CONTRACT.md), in one
 * place for the kernels of cvae.c: the accumulator type acc_t, the multiplies (MUL one
 * product, MUL3 the three taps of one input, MUL_SIGNED stage 0's z, MUL_REQUANT the
 * requantisation), TABLE_ACC (a class-table entry in the accumulator's scale) and the
 * weights' storage (int4: nibbles, unpacked by shifts; WEIGHTS_PARAM / WEIGHTS / TAP are
 * how a kernel takes and reads them). Included by cvae.c only, after cvae.h. */
#ifndef CVAE_NUM_H
#define CVAE_NUM_H

#include "cvae.h"

#ifdef CVAE_INT8
typedef int32_t acc_t;
#if defined(__riscv) && !defined(__riscv_mul)
/* No multiply instruction (rv32ec): shift-and-add over the bits of x instead of
 * a call to __mulsi3 (no call, no register spills; ends early on small x). */
static inline __attribute__((always_inline)) acc_t mul8(int32_t w, uint32_t x)
{
    uint32_t p = 0, u = (uint32_t)w;
    for (; x; x >>= 1, u <<= 1)
        if (x & 1)
            p += u;
    return (acc_t)p;
}
#define MUL(w, x) mul8((w), (x))
/* CVAE_RV_QSQ (default 1): the quarter-square MAC (a 1 KB table in flash), the assembly
 * kernel rows and the chain writer unrolled; 0: the table-free kernels (shift-and-add over
 * x's bits; the rows the chain declines loop over m's bits), about 3.1 KB less flash and
 * slower (docs/firmware.md). The ch32v003 build falls back to 0 where the model leaves no
 * room for the table. */
#ifndef CVAE_RV_QSQ
#define CVAE_RV_QSQ 1
#endif
/* CVAE_RV_CHAIN (default 1): both builds requantise convT rows in cvae.c's RV32E
 * assembly (the chain over m's NAF written into the stack frame); the table-free one
 * writes it with a loop (36 B of code, not the 574 B unrolled writer) and keeps the C
 * below for the rows it declines. 0 (table-free build only): no assembly requantisation,
 * every row through finish_row's C below (660-676 B less flash, slower: the
 * ch32v003 build's third tier, where the chain does not fit either). */
#ifndef CVAE_RV_CHAIN
#define CVAE_RV_CHAIN 1
#endif
#if CVAE_RV_CHAIN
#define RV_CHAIN 1
#elif CVAE_RV_QSQ
#error "CVAE_RV_CHAIN=0 is a table-free build: it needs CVAE_RV_QSQ=0"
#endif
#if !CVAE_RV_QSQ
/* the table-free kernels (the C MAC over x's bits; cvae.c's scatter_channels) */
#define RV_TABLE_FREE 1
/* a * m for the requantisation (0 <= m <= INT16_MAX) by shift-and-add over the
 * set bits of m only: REQUANT_SETUP(m) lists once per output row the distances
 * between them (static, not on the stack), MUL_REQUANT(a, m) adds a shifted by
 * each. No call to __mulsi3, so finish_row() is a leaf (a smaller frame). */
static uint8_t m_steps[16];
static inline __attribute__((always_inline)) unsigned requant_setup(uint32_t m)
{
    unsigned n = 0, pos = 0, prev = 0;
    for (; m; m >>= 1, pos++)
        if (m & 1) {
            m_steps[n++] = (uint8_t)(pos - prev);
            prev = pos;
        }
    return n;
}
static inline __attribute__((always_inline)) int32_t mul_requant(int32_t a, unsigned n)
{
    uint32_t p = 0, u = (uint32_t)a;
    const uint8_t *d = m_steps, *end = m_steps + n;
    for (; d < end; d++) {
        u <<= *d;
        p += u;
    }
    return (int32_t)p;
}
#define REQUANT_SETUP(m) requant_setup((uint32_t)(m))
#define MUL_REQUANT(a, m) mul_requant((a), (m))
#else
/* The requantisation's a * m by Horner's rule over the non-adjacent form of m (NAF:
 * digits -1, 0, +1, no two adjacent non-zero; 5.8 non-zero digits on average for m in
 * [2^14, 2^15), against 8 set bits), as code written once per output row into the
 * requantising function's stack frame (cvae.c's RV32E assembly, cvae_rv_chain_setup):
 * p = a (c.mv s1, a5), then p = (p << d) +- a for each next digit d places lower (c.slli
 * s1, d; c.add / c.sub s1, a5: 2 compressed instructions a digit), then c.jr t2 back;
 * m's trailing zeros are folded into the rounding and the shift. At most 8 digits: 8
 * words (the first's high half only: the chain is entered at byte 2) and the return,
 * 36 B of stack, no static RAM. The rows that chain does not take (m = 0, or m's
 * trailing zeros at least the shift: rare; a linear stage's single outputs) multiply in
 * C, through the table (rv_mul_requant). The table is defined in assembly (below),
 * which link-time optimisation keeps as written. */
#define REQUANT_SETUP(m) (m)
#define MUL_REQUANT(a, m) rv_mul_requant((a), (m))
/* Quarter squares: w * x = floor((x + w)^2 / 4) - floor((x - w)^2 / 4) for any integers
 * (x + w and x - w have the same parity, so both floors drop the same quarter).
 * cvae_qsq[n + 128] = floor(n^2 / 4) for n = -128 .. 383 covers x in 0..255 and w in
 * -128..127: 512 uint16 entries (the largest, 383^2 / 4 = 36672), 1 KB in flash. */
__asm__(".pushsection .rodata.cvae_qsq,\"a\",@progbits\n.balign 2\n.global cvae_qsq\n"
        "cvae_qsq:\n.set cvae_qsq_n, -128\n.rept 512\n.hword (cvae_qsq_n * cvae_qsq_n) >> 2\n"
        ".set cvae_qsq_n, cvae_qsq_n + 1\n.endr\n.size cvae_qsq, 1024\n.popsection\n");
#define RV_QSQ 1
/* stage 0's w * z (both signed) from the same table, its symmetry taking |x + w| and
 * |x - w| (at most 255): about 15 instructions, not __mulsi3's loop over 32 bits */
extern const uint16_t cvae_qsq[512];
static inline __attribute__((always_inline)) acc_t rv_mul_signed(int32_t w, int32_t x)
{
    int32_t p = x + w, q = x - w;
    p = p < 0 ? -p : p;
    q = q < 0 ? -q : q;
    return (acc_t)cvae_qsq[p + 128] - (acc_t)cvae_qsq[q + 128];
}
#define MUL_SIGNED(w, x) rv_mul_signed((w), (x))
/* x * w for x in 0..255, w in -128..128 */
static inline __attribute__((always_inline)) int32_t rv_qmul(uint32_t x, int32_t w)
{
    return (int32_t)cvae_qsq[x + (uint32_t)w + 128u] - (int32_t)cvae_qsq[x - (uint32_t)w + 128u];
}
/* a * m (-32768 <= a <= 32767, 0 <= m <= 32767) for the rows finish_row's C requantises
 * (a linear stage's single outputs, where writing a chain costs more than it saves, and
 * the rare rows the chain does not take): a + 2^15 and m in byte pieces (m's low one
 * signed, its high one 0..128), four products from the table, modulo 2^32; one copy
 * for both finish rows (flash) */
static __attribute__((noinline)) int32_t rv_mul_requant(int32_t a, int32_t m)
{
    const uint32_t u = (uint32_t)(a + 32768), a0 = u & 255u, a1 = u >> 8;
    const int32_t m0 = (int32_t)(int8_t)(uint8_t)m, m1 = (m - m0) >> 8;
    const uint32_t p = ((uint32_t)rv_qmul(a1, m1) << 16) +
                       ((uint32_t)(rv_qmul(a1, m0) + rv_qmul(a0, m1)) << 8) +
                       (uint32_t)rv_qmul(a0, m0);
    return (int32_t)(p - ((uint32_t)m << 15));
}
#endif /* CVAE_RV_QSQ */
/* The three taps of one input x, over the bits of x once: acc[k] += w_k * x. Taps 0
 * and 1 share one register as two 16-bit lanes (u01 = w0 + w1 * 2^16, modulo 2^32):
 * one add and one shift per bit serve both, and each lane's product fits it
 * (|w * x| <= 128 * 255 < 2^15), so the low lane sign-extended is w0 * x and the rest,
 * shifted down, w1 * x. */
#define MUL3(acc, w0, w1, w2, x)                                                 \
    do {                                                                         \
        uint32_t p01_ = 0, p2_ = 0, b_ = (x);                                    \
        uint32_t u01_ = (uint32_t)(int32_t)(w0) + ((uint32_t)(int32_t)(w1) << 16); \
        uint32_t u2_ = (uint32_t)(int32_t)(w2);                                  \
        int32_t lo_;                                                             \
        do { /* four bits a step */                                               \
            if (b_ & 1) {                                                        \
                p01_ += u01_;                                                    \
                p2_ += u2_;                                                      \
            }                                                                    \
            if (b_ & 2) {                                                        \
                p01_ += u01_ << 1;                                               \
                p2_ += u2_ << 1;                                                 \
            }                                                                    \
            if (b_ & 4) {                                                        \
                p01_ += u01_ << 2;                                               \
                p2_ += u2_ << 2;                                                 \
            }                                                                    \
            if (b_ & 8) {                                                        \
                p01_ += u01_ << 3;                                               \
                p2_ += u2_ << 3;                                                 \
            }                                                                    \
            u01_ <<= 4;                                                          \
            u2_ <<= 4;                                                           \
        } while (b_ >>= 4);                                                      \
        lo_ = (int32_t)(int16_t)(uint16_t)p01_;                                  \
        (acc)[0] += lo_;                                                         \
        (acc)[1] += (int32_t)(p01_ - (uint32_t)lo_) >> 16;                       \
        (acc)[2] += (acc_t)p2_;                                                  \
    } while (0)
#else
#define MUL(w, x) ((acc_t)(w) * (acc_t)(x))
#define REQUANT_SETUP(m) (m)
#define MUL_REQUANT(a, m) ((a) * (m))
#endif
#define TABLE_ACC(t) ((acc_t)(t) * (1 << CVAE_TABLE_SHIFT)) /* no left shift of a negative */
#ifndef MUL_SIGNED
#define MUL_SIGNED(w, x) ((acc_t)(w) * (acc_t)(x)) /* stage 0: z is signed */
#endif
#else
typedef float acc_t;
#define MUL(w, x) ((w) * (x))
#define MUL_SIGNED(w, x) ((w) * (x))
#define TABLE_ACC(t) (t)
#endif

#ifdef CVAE_INT4
/* int4 weights: element t in byte t/2, low nibble first (CONTRACT.md). A nibble is
 * sign-extended by shifts, as BitNetMCU does: the low one moved to the top of an
 * int8_t and shifted back down (arithmetic shift with gcc), the high one shifted
 * down. A weight's position is a nibble index (weight_pos_t), from the stage's
 * first weight; WEIGHTS(s, pos) are the arguments a kernel takes for it. */
#define NIB_LO(b) ((int8_t)(uint8_t)((b) << 4) >> 4)
#define NIB_HI(b) ((int8_t)(b) >> 4)
static inline __attribute__((always_inline)) int32_t nibble(const cvae_weight_t *w, uint32_t t)
{
    const uint8_t b = w[t >> 1];
    return t & 1 ? NIB_HI(b) : NIB_LO(b);
}
typedef uint32_t weight_pos_t;
typedef int32_t tap_t;
#define WEIGHTS_PARAM const cvae_weight_t *w, uint32_t t
#define WEIGHTS(s, pos) (s)->weight, (pos)
#define FIRST_WEIGHT(s) 0u
#define TAP(k) nibble(w, t + (k))
#else
typedef const cvae_weight_t *weight_pos_t;
typedef cvae_weight_t tap_t;
#define WEIGHTS_PARAM const cvae_weight_t *w
#define WEIGHTS(s, pos) (pos)
#define FIRST_WEIGHT(s) ((s)->weight)
#define TAP(k) w[k]
#endif

#endif /* CVAE_NUM_H */
