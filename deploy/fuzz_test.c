/* Fuzz test: random labels 0..255 and random latents through both APIs, on the host
 * built with AddressSanitizer and UndefinedBehaviorSanitizer (`make check-sanitize`), and
 * on the host and qemu-rv32 or qemu alike (`make check-fuzz-rv32`, `make check-fuzz-arm`:
 * the same draws must give the same images from the rv32ec or the ARMv6-M assembly kernels
 * as from the portable C path).
 *
 *   fuzz_test [count [seed]]      default 400 draws, seed 1 (with FUZZ_NO_ARGS, for a
 *                                 board without a command line: FUZZ_COUNT, FUZZ_SEED)
 *
 * For every draw: a label >= CVAE_NUM_CLASSES must give -1 from cvae_generate and from
 * cvae_generate_rows (and no row); any other label 0 from both, CVAE_OUT_H rows in order,
 * and the streamed image equal to the whole image byte for byte. int8 and int4 latents
 * are any int8 code (-128..127), fp32 latents uniform in [-4, 4]. Prints one line per
 * failure (at most 10), then "fuzz: <ok>/<count> ok" and "fuzz images: <digest>" (FNV-1a
 * of every good draw's image, int8 and int4 pixels; 0 on fp32, whose floats may differ in
 * the last bit between compilers); exit status 0 iff all are. A sanitizer report ends the
 * program with a non-zero status of its own.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "board.h"
#include "cvae.h"

#define HW (CVAE_OUT_H * CVAE_OUT_W)

static cvae_pixel_t whole[CVAE_OUT_SIZE], streamed[CVAE_OUT_SIZE];
static unsigned rows_seen;
static int rows_in_order;
static uint32_t state;

static uint32_t next(void)
{
    uint32_t x = state;
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    return state = x;
}

static cvae_z_t random_z(void)
{
#ifdef CVAE_INT8
    return (cvae_z_t)(int8_t)(uint8_t)(next() >> 24);
#else
    return (float)(next() >> 8) * (8.0f / 16777216.0f) - 4.0f;
#endif
}

/* Row callback: rows in order 0..H-1, [c][x] back into CHW. */
static void collect(uint16_t y, const cvae_pixel_t *row, void *ctx)
{
    cvae_pixel_t *out = ctx;
    unsigned c, x;
    if (y != rows_seen++ || y >= CVAE_OUT_H) {
        rows_in_order = 0;
        return;
    }
    for (c = 0; c < CVAE_OUT_C; c++)
        for (x = 0; x < CVAE_OUT_W; x++)
            out[c * HW + y * CVAE_OUT_W + x] = row[c * CVAE_OUT_W + x];
}

/* One draw; NULL when it behaved, else what went wrong. */
static const char *draw(uint8_t label, const cvae_z_t *z)
{
    const int bad = label >= CVAE_NUM_CLASSES;
    int rc1, rc2;
    memset(whole, 0, sizeof whole);
    memset(streamed, 0xA5, sizeof streamed);
    rows_seen = 0;
    rows_in_order = 1;
    rc1 = cvae_generate(label, z, whole);
    rc2 = cvae_generate_rows(label, z, collect, streamed);
    if (bad)
        return rc1 != -1 || rc2 != -1 ? "a bad label did not give -1"
               : rows_seen       ? "a bad label emitted rows"
                                 : NULL;
    if (rc1 != 0 || rc2 != 0)
        return "a good label did not give 0";
    if (!rows_in_order || rows_seen != CVAE_OUT_H)
        return "rows out of order or missing";
    return memcmp(whole, streamed, sizeof whole) ? "streamed rows differ from the whole image" : NULL;
}

/* FNV-1a of the image into h (integer pixels only) */
static uint32_t digest(uint32_t h)
{
#ifdef CVAE_INT8
    unsigned i;
    for (i = 0; i < CVAE_OUT_SIZE; i++)
        h = (h ^ whole[i]) * 16777619u;
#endif
    return h;
}

static int fuzz(unsigned long count, uint32_t seed)
{
    unsigned long i, ok = 0, failures = 0;
    uint32_t h = 2166136261u;
    cvae_z_t z[CVAE_LATENT];

    state = seed;
    if (state == 0)
        state = 1; /* xorshift's one fixed point */
    for (i = 0; i < count; i++) {
        const uint8_t label = (uint8_t)(next() >> 24);
        const char *why;
        unsigned j;
        for (j = 0; j < CVAE_LATENT; j++)
            z[j] = random_z();
        why = draw(label, z);
        if (!why) {
            ok++;
            h = label < CVAE_NUM_CLASSES ? digest(h) : h;
        } else if (failures++ < 10)
            printf("fuzz draw %lu (label %u): %s\n", i, (unsigned)label, why);
    }
    printf("fuzz: %lu/%lu ok\n", ok, count);
#ifdef CVAE_INT8
    printf("fuzz images: %08lx\n", (unsigned long)h);
#else
    printf("fuzz images: 0\n");
#endif
    return ok == count ? 0 : 1;
}

#ifdef FUZZ_NO_ARGS
int main(void)
{
    board_init(); /* QEMU mps2-an385: the semihosting that printf writes through */
    return fuzz(FUZZ_COUNT, FUZZ_SEED);
}
#else
int main(int argc, char **argv)
{
    return fuzz(argc > 1 ? strtoul(argv[1], NULL, 10) : 400ul,
                argc > 2 ? (uint32_t)strtoul(argv[2], NULL, 10) : 1u);
}
#endif
