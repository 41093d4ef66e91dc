// Roll the die: a random face and z, the decoder's image as ASCII art on Serial, and the
// microseconds one image takes (without the printing). Written by `python src/export.py`.
#include <tinycvae.h>

static void printRow(uint16_t y, const cvae_pixel_t *row, void *ctx)
{
    char line[CVAE_OUT_W + 1];
    (void)y;
    (void)ctx;
    cvae_ascii_row(row, line);
    Serial.println(line);
}

static void skipRow(uint16_t y, const cvae_pixel_t *row, void *ctx)
{
    (void)y;
    (void)row;
    (void)ctx;
}

static unsigned long rolls = 0;

void setup()
{
    Serial.begin(115200);
}

void loop()
{
    cvae_z_t z[CVAE_LATENT];
    uint8_t label = cvae_roll_label();
    cvae_roll_z(z);
    unsigned long t0 = micros();
    cvae_generate_rows(label, z, skipRow, 0);
    unsigned long us = micros() - t0;
    Serial.print("roll ");
    Serial.print(++rolls);
    Serial.print(": class ");
    Serial.println(label);
    cvae_generate_rows(label, z, printRow, 0);
    Serial.print("microseconds per image: ");
    Serial.println(us);
    delay(2000);
}
