/* Golden test: every golden vector through cvae_generate() and
 * cvae_generate_rows(), compared with the Python integer reference
 * (int8: byte-exact; fp32: |diff| <= 1e-5). The two APIs must also agree
 * exactly with each other. Prints one line per failure, then
 * "golden: <ok>/<N> match"; on boards that measure the stack (QEMU) also
 * "stack high-water: <n> bytes", the deepest stack use of the run so far (both
 * APIs, read before the first printf when all match); on boards that count
 * instructions (QEMU with -icount) also "instructions per image: <n>" and
 * "instructions per stage: <n0> <n1> ..." (the same image again, each stage
 * timed by cvae_stage_hook(), less what one hook call costs). Exit
 * status 0 iff all match.
 * Host and QEMU only (it uses printf).
 */
#include <stdio.h>
#include <string.h>

#include "board.h"
#include "cvae.h"
#include "cvae_golden.h"

#define HW (CVAE_OUT_H * CVAE_OUT_W)

static cvae_pixel_t img[CVAE_OUT_SIZE], img_rows[CVAE_OUT_SIZE];

#ifdef BOARD_ICOUNT
/* Instructions since board_icount_start() when each stage starts (k) and when
 * the last ends (k = CVAE_NUM_STAGES), while stage_on. */
static uint32_t stage_at[CVAE_NUM_STAGES + 1];
static int stage_on;
void cvae_stage_hook(unsigned k);
void cvae_stage_hook(unsigned k)
{
    if (stage_on && k <= CVAE_NUM_STAGES)
        stage_at[k] = board_icount_stop();
}
#endif
static unsigned next_row;
static int row_order_ok;

/* Row callback: rows must come in order 0..H-1; scatter [c][x] back to CHW. */
static void collect(uint16_t y, const cvae_pixel_t *row, void *ctx)
{
    cvae_pixel_t *out = ctx;
    unsigned c, x;
    if (y != next_row++)
        row_order_ok = 0;
    if (y >= CVAE_OUT_H)
        return;
    for (c = 0; c < CVAE_OUT_C; c++)
        for (x = 0; x < CVAE_OUT_W; x++)
            out[c * HW + y * CVAE_OUT_W + x] = row[c * CVAE_OUT_W + x];
}

/* Index of the first pixel that differs from the golden image, or -1. */
static long first_mismatch(const cvae_pixel_t *got, const cvae_pixel_t *want)
{
    long i;
    for (i = 0; i < CVAE_OUT_SIZE; i++) {
#ifdef CVAE_INT8
        if (got[i] != want[i])
#else
        float d = got[i] - want[i];
        if (!(d <= 1e-5f && d >= -1e-5f)) /* NaN fails too */
#endif
            return i;
    }
    return -1;
}

static void report(int g, const char *api, long i, const cvae_pixel_t *got, const cvae_pixel_t *want)
{
#ifdef CVAE_INT8
    printf("golden %d (class %u): %s: pixel %ld is %u, expected %u\n", g, (unsigned)cvae_golden_label[g],
           api, i, (unsigned)got[i], (unsigned)want[i]);
#else
    printf("golden %d (class %u): %s: pixel %ld is %.9g, expected %.9g\n", g,
           (unsigned)cvae_golden_label[g], api, i, (double)got[i], (double)want[i]);
#endif
}

int main(void)
{
    int g, ok = 0, label_ok = 1, stack;
    cvae_z_t z0[CVAE_LATENT] = {0};

    board_init();
    for (g = 0; g < CVAE_GOLDEN_COUNT; g++) {
        const cvae_z_t *z = &cvae_golden_z[g * CVAE_LATENT];
        const cvae_pixel_t *want = &cvae_golden_out[g * CVAE_OUT_SIZE];
        int rc1, rc2, good = 1;
        long i;

        memset(img, 0, sizeof img);
        memset(img_rows, 0, sizeof img_rows);
        next_row = 0;
        row_order_ok = 1;
        rc1 = cvae_generate(cvae_golden_label[g], z, img);
        rc2 = cvae_generate_rows(cvae_golden_label[g], z, collect, img_rows);
        if (rc1 != 0 || rc2 != 0) {
            printf("golden %d: cvae_generate returned %d, cvae_generate_rows %d\n", g, rc1, rc2);
            good = 0;
        }
        if (!row_order_ok || next_row != CVAE_OUT_H) {
            printf("golden %d: cvae_generate_rows: rows out of order or %u rows, expected %u\n", g,
                   next_row, (unsigned)CVAE_OUT_H);
            good = 0;
        }
        if ((i = first_mismatch(img, want)) >= 0) {
            report(g, "cvae_generate", i, img, want);
            good = 0;
        }
        if ((i = first_mismatch(img_rows, want)) >= 0) {
            report(g, "cvae_generate_rows", i, img_rows, want);
            good = 0;
        }
        if (memcmp(img, img_rows, sizeof img) != 0) {
            printf("golden %d: cvae_generate and cvae_generate_rows differ\n", g);
            good = 0;
        }
        ok += good;
    }
    if (cvae_generate(CVAE_NUM_CLASSES, z0, img) != -1 ||
        cvae_generate_rows(CVAE_NUM_CLASSES, z0, collect, img_rows) != -1) {
        printf("label %d: expected -1 (bad label)\n", CVAE_NUM_CLASSES);
        label_ok = 0;
    }
    stack = board_stack_used();
    printf("golden: %d/%d match\n", ok, CVAE_GOLDEN_COUNT);
    if (stack >= 0)
        printf("stack high-water: %d bytes\n", stack);
#ifdef BOARD_ICOUNT
    {
        uint32_t n, hook;
        unsigned k;
        board_icount_start();
        cvae_generate(cvae_golden_label[0], cvae_golden_z, img);
        n = board_icount_stop();
        printf("instructions per image: %lu\n", (unsigned long)n);
        /* again with the stages timed, less what one timing hook costs */
        stage_on = 1;
        board_icount_start();
        cvae_stage_hook(0);
        cvae_stage_hook(1);
        hook = stage_at[1] - stage_at[0];
        cvae_generate(cvae_golden_label[0], cvae_golden_z, img);
        stage_on = 0;
        printf("instructions per stage:");
        for (k = 0; k < CVAE_NUM_STAGES; k++)
            printf(" %lu", (unsigned long)(stage_at[k + 1] - stage_at[k] - hook));
        printf("\n");
    }
#endif
    fflush(stdout);
    board_exit(ok == CVAE_GOLDEN_COUNT && label_ok ? 0 : 1);
}
