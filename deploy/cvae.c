/* tinycvae decoder runtime (see CONTRACT.md for the arithmetic).
 *
 * One source for both paths: the kernels below are written once against
 * acc_t / MUL / TABLE_ACC and differ only in finish() (requant + ReLU or
 * sigmoid LUT on int8; ReLU or expf sigmoid on fp32).
 *
 * The int8 path uses integers only, no division, and multiplies only in the
 * MAC, the requant (one per output) and a few per row or stage (rv32ec has no
 * multiply instruction: each is a call to __mulsi3, except the MAC's, an inline
 * shift-and-add). Weights and inputs are walked with pointers.
 *
 * Convolutions are computed one output row at a time, each output from its
 * list of valid kernel taps (gather form), so that whole-image and streaming
 * generation share one kernel and give identical pixels.
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
#define CVAE_STATIC_ASSERT(cond, name) typedef char cvae_static_assert_##name[(cond) ? 1 : -1]

#ifdef CVAE_STREAM_ONLY
#define ARENA_BYTES CVAE_ARENA_STREAM
#else
#define ARENA_BYTES (CVAE_ARENA_IMAGE > CVAE_ARENA_STREAM ? CVAE_ARENA_IMAGE : CVAE_ARENA_STREAM)
#endif
#define ARENA_ELEMS (ARENA_BYTES / sizeof(cvae_act_t))

/* Kept out of line: the MAC loops (inlined, gcc spills their registers on Thumb-1
 * and RV32E) and convt_row (its frame would be duplicated in each caller). */
#ifdef __GNUC__
#define NOINLINE __attribute__((noinline))
#else
#define NOINLINE
#endif

CVAE_STATIC_ASSERT(N_STAGES >= 1, at_least_one_stage);
CVAE_STATIC_ASSERT(ARENA_BYTES % sizeof(cvae_act_t) == 0, arena_whole_elements);
/* the streaming arena holds at least the output row */
CVAE_STATIC_ASSERT(CVAE_OUT_C * CVAE_OUT_W * sizeof(cvae_act_t) <= CVAE_ARENA_STREAM, stream_arena_holds_a_row);
CVAE_STATIC_ASSERT(CVAE_OUT_SIZE <= CVAE_MAX_STAGE_OUT, max_stage_out);

/* One static arena; the union aligns it for float on fp32. */
static union {
    cvae_act_t a[ARENA_ELEMS];
    uint32_t align;
} arena;

#ifdef CVAE_INT8
CVAE_STATIC_ASSERT(CVAE_TABLE_SHIFT >= 0 && CVAE_TABLE_SHIFT <= 16, table_shift);
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
#else
#define MUL(w, x) ((acc_t)(w) * (acc_t)(x))
#endif
#define TABLE_ACC(t) ((acc_t)(t) * (1 << CVAE_TABLE_SHIFT)) /* no left shift of a negative */

/* Accumulator -> activation (hidden: requant + ReLU) or pixel (last: logit -> LUT). */
static cvae_act_t finish(acc_t acc, const cvae_stage_t *s, unsigned o, unsigned last)
{
    const cvae_requant_t *r = &s->requant[o];
    int32_t a = acc >> r->pre; /* arithmetic shift with gcc */
    if (a < -32768)
        a = -32768;
    else if (a > 32767)
        a = 32767;
    a = (a * r->m + ((int32_t)1 << (r->shift - 1))) >> r->shift;
    if (last) {
        if (a < -128)
            a = -128;
        else if (a > 127)
            a = 127;
        return cvae_sigmoid_lut[a + 128];
    }
    if (a < 0)
        a = 0;
    else if (a > 255)
        a = 255;
    return (cvae_act_t)a;
}
#else
typedef float acc_t;
#define MUL(w, x) ((w) * (x))
#define TABLE_ACC(t) (t)

static cvae_act_t finish(acc_t acc, const cvae_stage_t *s, unsigned o, unsigned last)
{
    (void)s;
    (void)o;
    if (last)
        return 1.0f / (1.0f + expf(-acc));
    return acc > 0.0f ? acc : 0.0f;
}
#endif

/* Dot products: stage 0 reads z (int8_t on int8), later stages activations. */
#define CVAE_DEF_DOT(name, xtype, mul)                                         \
    static NOINLINE acc_t name(const cvae_weight_t *w, const xtype *x, unsigned n) \
    {                                                                          \
        acc_t a = 0;                                                           \
        while (n--)                                                            \
            a += mul(*w++, *x++);                                              \
        return a;                                                              \
    }
CVAE_DEF_DOT(dot_act, cvae_act_t, MUL)
#ifdef CVAE_INT8
#define MUL_SIGNED(w, x) ((acc_t)(w) * (acc_t)(x))
CVAE_DEF_DOT(dot_z, cvae_z_t, MUL_SIGNED)
#else
#define dot_z dot_act
#endif

static uint32_t n_in(const cvae_stage_t *s) { return (uint32_t)s->in_c * s->in_h * s->in_w; }
static uint32_t n_out(const cvae_stage_t *s) { return (uint32_t)s->out_c * s->out_h * s->out_w; }

/* Outputs o0 .. o0+n-1 of a linear stage into y. Stage 0 (z != NULL) adds the
 * label's row of the class table instead of a bias. */
static void linear(const cvae_stage_t *s, const cvae_act_t *x, const cvae_z_t *z, unsigned label,
                   unsigned o0, unsigned n, cvae_act_t *y, unsigned last)
{
    const unsigned in = s->in_c;
    const cvae_weight_t *w = s->weight + (uint32_t)o0 * in;
    const cvae_table_t *t = z ? cvae_table + (uint32_t)label * s->out_c + o0 : NULL;
    unsigned o;

    for (o = o0; o < o0 + n; o++, w += in) {
        acc_t acc = z ? TABLE_ACC(*t++) + dot_z(w, z, in) : s->bias[o] + dot_act(w, x, in);
        *y++ = finish(acc, s, o, last);
    }
}

/* Index of the input row/column feeding output position t = out + pad - k of a
 * stride-(sh+1) convT, or -1: t must be >= 0, divisible by the stride, in range. */
static int tap(int t, unsigned sh, unsigned n)
{
    if (t < 0 || (t & (int)sh))
        return -1;
    t >>= sh;
    return t < (int)n ? t : -1;
}

/* A kernel tap of one output position: input x[i * cs] (channel i) times weight
 * w[i * 9] for i < in_c, where w = weight of the output channel + w0 .. + w1. */
typedef struct {
    const cvae_act_t *x; /* NULL: end of the list */
    uint16_t w0, w1;
} tap_t;

/* Sum over the taps of one output channel (weights from w). */
static NOINLINE acc_t dot_taps(const cvae_weight_t *w, const tap_t *t, uint32_t cs)
{
    acc_t a = 0;
    const cvae_act_t *x;
    for (; (x = t->x) != NULL; t++) {
        const cvae_weight_t *wp = w + t->w0, *we = w + t->w1;
        do
            a += MUL(*wp, *x);
        while (x += cs, (wp += 9) < we);
    }
    return a;
}

/* One output row of a convT (all channels): rows[ky] is the input row (channel 0)
 * that kernel row ky reads, or NULL; channels lie in_cs apart in the input and
 * out_cs apart in the output. */
static NOINLINE void convt_row(const cvae_stage_t *s, const cvae_act_t *const rows[3], uint32_t in_cs,
                               cvae_act_t *out, uint32_t out_cs, unsigned last)
{
    static tap_t taps[10], rt[3]; /* static: the 2 KB RAM parts have a 256-byte stack */
    const unsigned sh = s->stride - 1u, n9 = s->in_c * 9u;
    tap_t *t, *end, *rend = rt;
    unsigned ox, k;

    for (k = 0; k < 3; k++) /* the kernel rows that read an input row */
        if (rows[k]) {
            rend->x = rows[k];
            rend++->w0 = (uint16_t)(3 * k);
        }
    for (ox = 0; ox < s->out_w; ox++) {
        const cvae_weight_t *w = s->weight;
        cvae_act_t *y = out + ox;
        unsigned kx, o;

        end = taps;
        for (kx = 0; kx < 3; kx++) {
            int ix = tap((int)ox + s->pad - (int)kx, sh, s->in_w);
            if (ix >= 0)
                for (t = rt; t < rend; t++, end++) {
                    end->x = t->x + ix;
                    end->w0 = (uint16_t)(t->w0 + kx);
                    end->w1 = (uint16_t)(end->w0 + n9);
                }
        }
        end->x = NULL;
        for (o = 0; o < s->out_c; o++, w += n9, y += out_cs)
            *y = finish(s->bias[o] + dot_taps(w, taps, in_cs), s, o, last);
    }
}

/* The input rows (channel 0) that kernel rows 0..2 read for output row oy of a
 * convT, from its whole CHW input; NULL where none. */
static void whole_rows(const cvae_stage_t *s, unsigned oy, const cvae_act_t *in, const cvae_act_t *rows[3])
{
    unsigned ky;
    for (ky = 0; ky < 3; ky++) {
        int iy = tap((int)oy + s->pad - (int)ky, s->stride - 1u, s->in_h);
        rows[ky] = iy < 0 ? NULL : in + (uint32_t)iy * s->in_w;
    }
}

/* Streaming: the rows of the second-to-last stage, computed lazily into a ring
 * of 3 slots of one output row each ([c][x]). Static, like the arena: the 2 KB
 * RAM parts have a 256-byte stack. */
static struct {
    const cvae_stage_t *s; /* the stage that produces the rows */
    const cvae_act_t *in;  /* its whole input (CHW) */
    uint32_t in_cs;        /* in_h * in_w of that input */
    cvae_act_t *slot[3];
    int tag[3];            /* row held by each slot, -1: none */
    unsigned next, wr;     /* next row to compute, slot it goes into */
} ring;

/* Like whole_rows() for the last stage, reading the ring (filled as needed). */
static void ring_rows(const cvae_stage_t *s, unsigned oy, const cvae_act_t *rows[3])
{
    unsigned ky, k;
    for (ky = 0; ky < 3; ky++) {
        int iy = tap((int)oy + s->pad - (int)ky, s->stride - 1u, s->in_h);
        rows[ky] = NULL;
        if (iy < 0)
            continue;
        while ((int)ring.next <= iy) { /* rows are needed in increasing order */
            const cvae_act_t *prow[3];
            whole_rows(ring.s, ring.next, ring.in, prow);
            convt_row(ring.s, prow, ring.in_cs, ring.slot[ring.wr], ring.s->out_w, 0);
            ring.tag[ring.wr] = (int)ring.next++;
            ring.wr = ring.wr == 2 ? 0 : ring.wr + 1;
        }
        for (k = 0; k < 3; k++)
            if (ring.tag[k] == iy)
                rows[ky] = ring.slot[k];
        assert(rows[ky]);
    }
}

/* A whole stage, input CHW -> output CHW. */
static void run_stage(const cvae_stage_t *s, const cvae_act_t *in, const cvae_z_t *z, unsigned label,
                      cvae_act_t *out, unsigned last)
{
    uint32_t in_cs, out_cs;
    unsigned oy;

    if (s->kind == CVAE_STAGE_LINEAR) {
        linear(s, in, z, label, 0, s->out_c, out, last);
        return;
    }
    in_cs = (uint32_t)s->in_h * s->in_w;
    out_cs = (uint32_t)s->out_h * s->out_w;
    for (oy = 0; oy < s->out_h; oy++, out += s->out_w) {
        const cvae_act_t *rows[3];
        whole_rows(s, oy, in, rows);
        convt_row(s, rows, in_cs, out, out_cs, last);
    }
}

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
               (s->kind == CVAE_STAGE_CONVT && s->kernel == 3 && (s->stride == 1 || s->stride == 2) &&
                s->in_c < 7000)); /* weight offsets fit tap_t's uint16_t */
#ifdef CVAE_INT8
        {
            unsigned o;
            for (o = 0; o < s->out_c; o++)
                assert(s->requant[o].m >= 0 && s->requant[o].pre < 32 && s->requant[o].shift >= 1 &&
                       s->requant[o].shift <= 30);
        }
#endif
    }
    k = N_STAGES - 1;
    assert(n_out(&cvae_stages[k]) == CVAE_OUT_SIZE);
    assert(cvae_stages[k].kind == CVAE_STAGE_LINEAR ||
           (cvae_stages[k].out_c == CVAE_OUT_C && cvae_stages[k].out_h == CVAE_OUT_H &&
            cvae_stages[k].out_w == CVAE_OUT_W));
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
        const uint32_t no = n_out(s);
        cvae_act_t *out = (k & 1) ? arena.a + ARENA_ELEMS - no : arena.a;
        assert(((k ? n_in(s) : 0) + no) * sizeof(cvae_act_t) <= budget);
        run_stage(s, in, k ? NULL : z, label, out, 0);
        in = out;
    }
    return in;
}

#ifndef CVAE_STREAM_ONLY
int cvae_generate(uint8_t label, const cvae_z_t *z, cvae_pixel_t *out)
{
    const cvae_stage_t *last = &cvae_stages[N_STAGES - 1];
    const cvae_act_t *in;

    if (label >= CVAE_NUM_CLASSES)
        return -1;
    CHECK_MODEL();
    in = run_prefix(N_STAGES - 1, label, z, CVAE_ARENA_IMAGE);
    assert((N_STAGES > 1 ? n_in(last) : 0) * sizeof(cvae_act_t) <= CVAE_ARENA_IMAGE);
    run_stage(last, in, N_STAGES > 1 ? NULL : z, label, out, 1);
    return 0;
}
#endif

int cvae_generate_rows(uint8_t label, const cvae_z_t *z, cvae_row_fn fn, void *ctx)
{
    const cvae_stage_t *last = &cvae_stages[N_STAGES - 1];
    /* first stage computed row by row: the second-to-last when both are convT */
    const unsigned split = (N_STAGES >= 3 && last->kind == CVAE_STAGE_CONVT &&
                            cvae_stages[N_STAGES - 2].kind == CVAE_STAGE_CONVT)
                               ? N_STAGES - 2
                               : N_STAGES - 1;
    const uint32_t in_elems = split ? n_in(&cvae_stages[split]) : 0;
    const cvae_act_t *in;
    cvae_act_t *row = arena.a;
    unsigned y;

    if (label >= CVAE_NUM_CLASSES)
        return -1;
    CHECK_MODEL();
    in = run_prefix(split, label, z, CVAE_ARENA_STREAM);
    if (split & 1) /* stage split-1 (even) left its output at the start */
        row += in_elems;
    if (split != N_STAGES - 1) { /* the ring, then the output row */
        const cvae_stage_t *p = &cvae_stages[split];
        const unsigned slot = (unsigned)p->out_c * p->out_w;
        ring.s = p;
        ring.in = in;
        ring.in_cs = (uint32_t)p->in_h * p->in_w;
        for (y = 0; y < 3; y++, row += slot) {
            ring.slot[y] = row;
            ring.tag[y] = -1;
        }
        ring.next = ring.wr = 0;
    }
    assert((uint32_t)(row - arena.a) + (split & 1 ? 0 : in_elems) + CVAE_OUT_C * CVAE_OUT_W <=
           CVAE_ARENA_STREAM / sizeof(cvae_act_t));

    for (y = 0; y < CVAE_OUT_H; y++) {
        if (last->kind == CVAE_STAGE_LINEAR) {
            /* the logits are CHW: row y of channel c starts at c*H*W + y*W */
            unsigned c, o = y * CVAE_OUT_W;
            cvae_act_t *r = row;
            for (c = 0; c < CVAE_OUT_C; c++, o += CVAE_OUT_H * CVAE_OUT_W, r += CVAE_OUT_W)
                linear(last, in, split ? NULL : z, label, o, CVAE_OUT_W, r, 1);
        } else {
            const cvae_act_t *rows[3];
            if (split != N_STAGES - 1) {
                ring_rows(last, y, rows);
                convt_row(last, rows, last->in_w, row, last->out_w, 1); /* slot channels: a row apart */
            } else {
                whole_rows(last, y, in, rows);
                convt_row(last, rows, (uint32_t)last->in_h * last->in_w, row, last->out_w, 1);
            }
        }
        fn((uint16_t)y, row, ctx);
    }
    return 0;
}
