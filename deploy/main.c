/* Demo: roll the die three times and print each image as ASCII art.
 *
 * The rolls are drawn by templates/cvae_roll.h, as on the boards (a random class; z
 * the known factors, each uniform in [-1, 1] (CVAE_BYPASS), or approximately
 * N(0, std^2) from a sum of 12 uniforms), so a board prints the same rolls.
 * No printf (it costs flash on an MCU): output goes through board_putc. On the
 * int8 path everything is integer and division-free.
 */
#include "board.h"
#include "cvae.h"
#include "templates/cvae_roll.h"

#define ROLLS 3

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
    char line[CVAE_OUT_W + 1];
    (void)y;
    (void)ctx;
    cvae_ascii_row(row, line);
    board_puts(line);
    board_putc('\n');
}

int main(void)
{
    unsigned roll;
    board_init();
    for (roll = 1; roll <= ROLLS; roll++) {
        cvae_z_t z[CVAE_LATENT];
        uint8_t label = cvae_roll_label();
        cvae_roll_z(z);
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
