/* cvae_pipe (host only): batch generation for the Python evaluator.
 *
 * stdin:  records until EOF, each 1 byte label then CVAE_LATENT z values
 *         (int8: one signed byte each; fp32: little-endian float32).
 * stdout: CVAE_OUT_SIZE pixels per record, CHW (int8: uint8 bytes;
 *         fp32: little-endian float32).
 * A bad label or a truncated record: a one-line message on stderr, exit 1.
 */
#include <stdio.h>
#include <string.h>

#include "cvae.h"

#define Z_BYTES (CVAE_LATENT * sizeof(cvae_z_t))

int main(void)
{
    static unsigned char rec[1 + Z_BYTES];
    static unsigned char obuf[CVAE_OUT_SIZE * sizeof(cvae_pixel_t)];
    static cvae_z_t z[CVAE_LATENT];
    static cvae_pixel_t out[CVAE_OUT_SIZE];
    unsigned long n;

    for (n = 0;; n++) {
        size_t got = fread(rec, 1, sizeof rec, stdin);
        unsigned j;
        if (got == 0 && !ferror(stdin))
            break;
        if (got != sizeof rec) {
            fprintf(stderr, "cvae_pipe: %s record %lu: %lu of %lu bytes\n",
                    ferror(stdin) ? "read error in" : "truncated", n, (unsigned long)got,
                    (unsigned long)sizeof rec);
            return 1;
        }
        if (rec[0] >= CVAE_NUM_CLASSES) {
            fprintf(stderr, "cvae_pipe: bad label %u in record %lu (%d classes)\n", rec[0], n,
                    CVAE_NUM_CLASSES);
            return 1;
        }
        for (j = 0; j < CVAE_LATENT; j++) {
#ifdef CVAE_INT8
            z[j] = (cvae_z_t)rec[1 + j];
#else
            const unsigned char *b = &rec[1 + 4 * j];
            uint32_t u = (uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 | (uint32_t)b[3] << 24;
            memcpy(&z[j], &u, 4);
#endif
        }
        cvae_generate(rec[0], z, out);
        for (j = 0; j < CVAE_OUT_SIZE; j++) {
#ifdef CVAE_INT8
            obuf[j] = out[j];
#else
            uint32_t u;
            memcpy(&u, &out[j], 4);
            obuf[4 * j] = (unsigned char)u;
            obuf[4 * j + 1] = (unsigned char)(u >> 8);
            obuf[4 * j + 2] = (unsigned char)(u >> 16);
            obuf[4 * j + 3] = (unsigned char)(u >> 24);
#endif
        }
        if (fwrite(obuf, 1, sizeof obuf, stdout) != sizeof obuf) {
            fprintf(stderr, "cvae_pipe: write error at record %lu\n", n);
            return 1;
        }
    }
    if (fflush(stdout) != 0) {
        fprintf(stderr, "cvae_pipe: write error\n");
        return 1;
    }
    return 0;
}
