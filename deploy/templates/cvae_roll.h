/* Die-roll helpers for deploy/main.c and the board projects (ch32fun, PlatformIO, Arduino
 * library): the same draws everywhere (fixed seed, a random class, then z), so a board
 * prints the same three first rolls as `make -C deploy run-qemu`. Integer and
 * division-free on int8 and int4; the fp32 reference draws its floats from the same
 * generator. Written by `python src/export.py` from deploy/templates/cvae_roll.h. */
#ifndef CVAE_ROLL_H
#define CVAE_ROLL_H

#include "cvae.h"

static uint32_t cvae_roll_state = 0x9E3779B9u; /* fixed seed: the same rolls every reset */

static inline uint32_t cvae_roll_next(void)
{
    uint32_t x = cvae_roll_state;
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    return cvae_roll_state = x;
}

/* Uniform integer in [0, n), n <= 65536, without a division. */
static inline uint32_t cvae_roll_uniform(uint32_t n) { return ((cvae_roll_next() >> 16) * n) >> 16; }

/* A random class: the die's face. */
static inline uint8_t cvae_roll_label(void) { return (uint8_t)cvae_roll_uniform(CVAE_NUM_CLASSES); }

#ifdef CVAE_INT8
/* One latent: a known factor uniform in [-1, 1] (CVAE_BYPASS), else ~N(0, std^2). */
static inline cvae_z_t cvae_roll_one_z(void)
{
#if CVAE_BYPASS
    return (cvae_z_t)((int32_t)cvae_roll_uniform(2u * CVAE_Z_ONE + 1u) - CVAE_Z_ONE);
#else
    /* 12 bytes uniform in 0..255: sum - 1530 has mean 0 and std ~256 */
    int32_t s = -1530, v;
    int i;
    for (i = 0; i < 12; i++)
        s += (int32_t)(cvae_roll_next() >> 24);
#define CVAE_ROLL_ZMUL ((int32_t)(((int64_t)CVAE_SAMPLE_STD_X1000 * CVAE_Z_ONE * 65536) / 256000))
    v = (s * CVAE_ROLL_ZMUL + 32768) >> 16;
    return (cvae_z_t)(v < -128 ? -128 : v > 127 ? 127 : v);
#endif
}

/* The ramp step (0..9) of the sum of a pixel's CVAE_OUT_C channels (0..C*255). */
static inline unsigned cvae_roll_level(uint32_t sum)
{
    return (sum * ((10u << 16) / (CVAE_OUT_C * 255u + 1u))) >> 16;
}
typedef uint32_t cvae_roll_sum_t;
#else
static inline float cvae_roll_unit(void) /* [0, 1) */
{
    return (float)(cvae_roll_next() >> 8) * (1.0f / 16777216.0f);
}

static inline cvae_z_t cvae_roll_one_z(void)
{
#if CVAE_BYPASS
    return 2.0f * cvae_roll_unit() - 1.0f;
#else
    float s = -6.0f;
    int i;
    for (i = 0; i < 12; i++)
        s += cvae_roll_unit();
    return s * (CVAE_SAMPLE_STD_X1000 / 1000.0f);
#endif
}

static inline unsigned cvae_roll_level(float sum)
{
    float l = sum * (10.0f / CVAE_OUT_C);
    return l <= 0.0f ? 0u : l >= 9.0f ? 9u : (unsigned)l;
}
typedef float cvae_roll_sum_t;
#endif

/* z[CVAE_LATENT], drawn one after the other. */
static inline void cvae_roll_z(cvae_z_t *z)
{
    unsigned j;
    for (j = 0; j < CVAE_LATENT; j++)
        z[j] = cvae_roll_one_z();
}

/* One output row (CVAE_OUT_C x CVAE_OUT_W pixels) as CVAE_OUT_W ASCII characters and a
 * '\0' in line[CVAE_OUT_W + 1]: the channels' sum on a 10-step ramp. */
static inline void cvae_ascii_row(const cvae_pixel_t *row, char *line)
{
    static const char ramp[] = " .:-=+*#%@";
    unsigned x, c;
    for (x = 0; x < CVAE_OUT_W; x++) {
        cvae_roll_sum_t sum = 0;
        for (c = 0; c < CVAE_OUT_C; c++)
            sum += row[c * CVAE_OUT_W + x];
        line[x] = ramp[cvae_roll_level(sum)];
    }
    line[CVAE_OUT_W] = '\0';
}

#endif /* CVAE_ROLL_H */
