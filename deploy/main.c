/* Demo: roll the die three times and print each image as ASCII art.
 *
 * label = a random class; z = the known factors, each uniform in [-1, 1]
 * (CVAE_BYPASS), or approximately N(0, std^2) from a sum of 12 uniforms.
 * No printf (it costs flash on an MCU): output goes through board_putc. On the
 * int8 path everything is integer and division-free.
 */
#include "board.h"
#include "cvae.h"

#define ROLLS 3

static uint32_t rng_state = 0x9E3779B9u; /* fixed seed: the same rolls every run */

static uint32_t xorshift32(void)
{
    uint32_t x = rng_state;
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    return rng_state = x;
}

/* Uniform integer in [0, n), n <= 65536, without a division. */
static uint32_t uniform(uint32_t n) { return ((xorshift32() >> 16) * n) >> 16; }

#ifdef CVAE_INT8
static cvae_z_t sample_z(void)
{
#if CVAE_BYPASS
    return (cvae_z_t)((int32_t)uniform(2u * CVAE_Z_ONE + 1u) - CVAE_Z_ONE);
#else
    /* 12 bytes uniform in 0..255: sum - 1530 has mean 0 and std ~256 */
    int32_t s = -1530, z;
    int i;
    for (i = 0; i < 12; i++)
        s += (int32_t)(xorshift32() >> 24);
    /* z = s / 256 * std * Z_ONE, in fixed point (ZMUL / 2^16 = std * Z_ONE / 256) */
#define ZMUL ((int32_t)(((int64_t)CVAE_SAMPLE_STD_X1000 * CVAE_Z_ONE * 65536) / 256000))
    z = (s * ZMUL + 32768) >> 16;
    return (cvae_z_t)(z < -128 ? -128 : z > 127 ? 127 : z);
#endif
}

/* sum of C pixels (0..C*255) -> 0..9 */
#define LEVEL_MUL ((10u << 16) / (CVAE_OUT_C * 255u + 1u))
static unsigned level(uint32_t sum) { return (sum * LEVEL_MUL) >> 16; }
typedef uint32_t sum_t;
#else
static float unit(void) { return (float)(xorshift32() >> 8) * (1.0f / 16777216.0f); } /* [0, 1) */

static cvae_z_t sample_z(void)
{
#if CVAE_BYPASS
    return 2.0f * unit() - 1.0f;
#else
    float s = -6.0f;
    int i;
    for (i = 0; i < 12; i++)
        s += unit();
    return s * (CVAE_SAMPLE_STD_X1000 / 1000.0f);
#endif
}

static unsigned level(float sum)
{
    float l = sum * (10.0f / CVAE_OUT_C);
    return l <= 0.0f ? 0u : l >= 9.0f ? 9u : (unsigned)l;
}
typedef float sum_t;
#endif

/* Decimal without a division (rv32ec has none). */
static void put_uint(uint32_t v)
{
    static const uint32_t p10[] = {1000000000u, 100000000u, 10000000u, 1000000u, 100000u,
                                   10000u,      1000u,      100u,      10u,      1u};
    unsigned i, started = 0;
    for (i = 0; i < sizeof p10 / sizeof p10[0]; i++) {
        char d = '0';
        while (v >= p10[i]) {
            v -= p10[i];
            d++;
        }
        if (d != '0' || started || p10[i] == 1u) {
            board_putc(d);
            started = 1;
        }
    }
}

static void print_row(uint16_t y, const cvae_pixel_t *row, void *ctx)
{
    static const char ramp[] = " .:-=+*#%@";
    unsigned x, c;
    (void)y;
    (void)ctx;
    for (x = 0; x < CVAE_OUT_W; x++) {
        sum_t sum = 0;
        for (c = 0; c < CVAE_OUT_C; c++)
            sum += row[c * CVAE_OUT_W + x];
        board_putc(ramp[level(sum)]);
    }
    board_putc('\n');
}

int main(void)
{
    unsigned roll, j;
    board_init();
    for (roll = 1; roll <= ROLLS; roll++) {
        cvae_z_t z[CVAE_LATENT];
        uint8_t label = (uint8_t)uniform(CVAE_NUM_CLASSES);
        for (j = 0; j < CVAE_LATENT; j++)
            z[j] = sample_z();
        board_puts("roll ");
        put_uint(roll);
        board_puts(": class ");
        put_uint(label);
        board_putc('\n');
        if (cvae_generate_rows(label, z, print_row, 0) != 0) {
            board_puts("error\n");
            board_exit(1);
        }
    }
    board_exit(0);
}
