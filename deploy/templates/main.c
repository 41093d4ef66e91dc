/* Roll the die on a board: a random class and z, the decoder's image printed as ASCII
 * art, and the cycles one image takes (SysTick, without the printing). One source for
 * both board projects that `python src/export.py` writes (from deploy/templates/main.c):
 *
 *   CH32V003, ch32fun (deploy/model/ch32fun, `make flash`) or PlatformIO's ch32v003fun
 *   framework (`pio run -e ch32v003`): printf as funconfig.h sets it (the debug printf
 *   over SWIO, or USART1 TX on PD5), SysTick->CNT counting HCLK (48 MHz).
 *   STM32F030F4 (Cortex-M0, ARMv6-M like the Cortex-M0+), PlatformIO's cmsis framework
 *   (`pio run -e stm32f030f4`): USART1 TX on PA9, 115200 8N1 from the 8 MHz HSI, and the
 *   core's 24-bit SysTick at the core clock.
 *
 * The runtime is built as the deploy/ MCU images are (-DNDEBUG -DCVAE_STREAM_ONLY): only
 * cvae_generate_rows, which never holds the whole image. UNTESTED ON HARDWARE. */
#include "cvae_roll.h"

#ifdef __arm__
/* STM32F030F4: registers by address (RM0360), no vendor header needed. */
#define REG(addr) (*(volatile uint32_t *)(addr))
#define RCC_AHBENR REG(0x40021014u)   /* bit 17: IOPAEN */
#define RCC_APB2ENR REG(0x40021018u)  /* bit 14: USART1EN */
#define GPIOA_MODER REG(0x48000000u)  /* PA9: bits 19:18, 10 = alternate function */
#define GPIOA_AFRH REG(0x48000024u)   /* PA9: bits 7:4, AF1 = USART1_TX */
#define USART1_CR1 REG(0x40013800u)   /* bit 0: UE, bit 3: TE */
#define USART1_BRR REG(0x4001380Cu)
#define USART1_ISR REG(0x4001381Cu)   /* bit 7: TXE */
#define USART1_TDR REG(0x40013828u)
#define SYST_CSR REG(0xE000E010u)     /* bit 0: ENABLE, bit 2: CLKSOURCE = core clock */
#define SYST_RVR REG(0xE000E014u)
#define SYST_CVR REG(0xE000E018u)     /* counts down */
#define CORE_HZ 8000000u              /* HSI after reset; CMSIS SystemInit keeps it */

static void board_start(void)
{
    RCC_AHBENR |= 1u << 17;
    RCC_APB2ENR |= 1u << 14;
    GPIOA_MODER = (GPIOA_MODER & ~(3u << 18)) | (2u << 18);
    GPIOA_AFRH = (GPIOA_AFRH & ~(15u << 4)) | (1u << 4);
    USART1_BRR = 69u; /* 8 MHz / 115200, oversampling by 16 */
    USART1_CR1 = (1u << 3) | (1u << 0);
    SYST_RVR = 0x00FFFFFFu;
    SYST_CVR = 0u;
    SYST_CSR = 5u;
}

static void put_str(const char *s)
{
    for (; *s; s++) {
        while (!(USART1_ISR & (1u << 7)))
            ;
        USART1_TDR = (uint8_t)*s;
    }
}

/* Decimal without a division (no printf: it costs flash on a 16 KB part). */
static void put_uint(uint32_t v)
{
    static const uint32_t p10[] = {1000000000u, 100000000u, 10000000u, 1000000u, 100000u,
                                   10000u,      1000u,      100u,      10u,      1u};
    char buf[11];
    unsigned i, n = 0;
    for (i = 0; i < sizeof p10 / sizeof p10[0]; i++) {
        char d = '0';
        while (v >= p10[i]) {
            v -= p10[i];
            d++;
        }
        if (d != '0' || n || p10[i] == 1u)
            buf[n++] = d;
    }
    buf[n] = '\0';
    put_str(buf);
}

/* Cycles between two SysTick readings (24-bit, counting down; an image takes far
 * fewer than 2^24 cycles). */
static uint32_t ticks(void) { return SYST_CVR; }
static uint32_t elapsed(uint32_t t0, uint32_t t1) { return (t0 - t1) & 0x00FFFFFFu; }

static void pause(void)
{
    volatile uint32_t i;
    for (i = 0; i < CORE_HZ / 8u; i++) /* a second or so */
        ;
}

#else
/* CH32V003 with ch32fun: SystemInit() clocks the core at 48 MHz and starts SysTick at
 * HCLK (FUNCONF_SYSTICK_USE_HCLK in funconfig.h), a 32-bit counter counting up. */
#include "ch32fun.h"
#include <stdio.h>
#define CORE_HZ FUNCONF_SYSTEM_CORE_CLOCK

static void board_start(void) { SystemInit(); }
static void put_str(const char *s) { printf("%s", s); }
static void put_uint(uint32_t v) { printf("%lu", (unsigned long)v); }
static uint32_t ticks(void) { return SysTick->CNT; }
static uint32_t elapsed(uint32_t t0, uint32_t t1) { return t1 - t0; }
static void pause(void) { Delay_Ms(2000); }
#endif

static void print_row(uint16_t y, const cvae_pixel_t *row, void *ctx)
{
    char line[CVAE_OUT_W + 2];
    (void)y;
    (void)ctx;
    cvae_ascii_row(row, line);
    line[CVAE_OUT_W] = '\n';
    line[CVAE_OUT_W + 1] = '\0';
    put_str(line);
}

static void skip_row(uint16_t y, const cvae_pixel_t *row, void *ctx)
{
    (void)y;
    (void)row;
    (void)ctx;
}

int main(void)
{
    uint32_t roll = 0;
    board_start();
    for (;;) {
        cvae_z_t z[CVAE_LATENT];
        uint8_t label = cvae_roll_label();
        uint32_t t0, cycles;
        cvae_roll_z(z);
        /* timed without the printing, then drawn again to print it */
        t0 = ticks();
        if (cvae_generate_rows(label, z, skip_row, 0) != 0)
            put_str("error\n");
        cycles = elapsed(t0, ticks());
        put_str("roll ");
        put_uint(++roll);
        put_str(": class ");
        put_uint(label);
        put_str("\n");
        cvae_generate_rows(label, z, print_row, 0);
        put_str("cycles per image: ");
        put_uint(cycles);
        put_str(" at ");
        put_uint(CORE_HZ);
        put_str(" Hz\n");
        pause();
    }
}
