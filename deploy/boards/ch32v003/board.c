/* CH32V003 board: USART1 TX on PD5, 115200 8N1, polling. HCLK is set to the
 * 24 MHz HSI undivided (the reset value of HPRE divides it). Minimal and
 * UNTESTED ON HARDWARE: check the CH32V003 reference manual. */
#include "board.h"

#define REG(addr) (*(volatile uint32_t *)(addr))
#define RCC_CFGR0 REG(0x40021004u)     /* HPRE bits 7:4 = 0: HCLK = SYSCLK (HSI) */
#define RCC_APB2PCENR REG(0x40021018u) /* bit 0: AFIOEN, bit 5: IOPDEN, bit 14: USART1EN */
#define GPIOD_CFGLR REG(0x40011400u)   /* PD5: bits 23:20, 0xB = AF push-pull, 30 MHz */
#define USART1_STATR REG(0x40013800u)  /* bit 7: TXE, bit 6: TC */
#define USART1_DATAR REG(0x40013804u)
#define USART1_BRR REG(0x40013808u)
#define USART1_CTLR1 REG(0x4001380Cu)  /* bit 13: UE, bit 3: TE */

void board_init(void)
{
    RCC_CFGR0 &= ~(15u << 4);
    RCC_APB2PCENR |= (1u << 0) | (1u << 5) | (1u << 14);
    GPIOD_CFGLR = (GPIOD_CFGLR & ~(15u << 20)) | (0xBu << 20);
    USART1_BRR = 208u; /* 24 MHz / 115200 = 16 * 13.0 */
    USART1_CTLR1 = (1u << 13) | (1u << 3);
}

void board_putc(char c)
{
    while (!(USART1_STATR & (1u << 7)))
        ;
    USART1_DATAR = (uint8_t)c;
}

void board_puts(const char *s)
{
    while (*s)
        board_putc(*s++);
}

void board_exit(int code)
{
    (void)code;
    while (!(USART1_STATR & (1u << 6))) /* let the last byte go out */
        ;
    for (;;)
        ;
}

int board_stack_used(void) { return -1; } /* not measured */
