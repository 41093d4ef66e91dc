/* Cortex-M0+ board (STM32F030F4-class): USART1 TX on PA9 (AF1), 115200 8N1
 * from the 8 MHz HSI the part runs on after reset. Polling, no interrupts.
 * Minimal and UNTESTED ON HARDWARE: check the register map of your part. */
#include "board.h"

#define REG(addr) (*(volatile uint32_t *)(addr))
#define RCC_AHBENR REG(0x40021014u)   /* bit 17: IOPAEN */
#define RCC_APB2ENR REG(0x40021018u)  /* bit 14: USART1EN */
#define GPIOA_MODER REG(0x48000000u)  /* PA9: bits 19:18, 10 = alternate function */
#define GPIOA_AFRH REG(0x48000024u)   /* PA9: bits 7:4, AF1 = USART1_TX */
#define USART1_CR1 REG(0x40013800u)   /* bit 0: UE, bit 3: TE */
#define USART1_BRR REG(0x4001380Cu)
#define USART1_ISR REG(0x4001381Cu)   /* bit 7: TXE, bit 6: TC */
#define USART1_TDR REG(0x40013828u)

void board_init(void)
{
    RCC_AHBENR |= 1u << 17;
    RCC_APB2ENR |= 1u << 14;
    GPIOA_MODER = (GPIOA_MODER & ~(3u << 18)) | (2u << 18);
    GPIOA_AFRH = (GPIOA_AFRH & ~(15u << 4)) | (1u << 4);
    USART1_BRR = 69u; /* 8 MHz / 115200, oversampling by 16 */
    USART1_CR1 = (1u << 3) | (1u << 0);
}

void board_putc(char c)
{
    while (!(USART1_ISR & (1u << 7)))
        ;
    USART1_TDR = (uint8_t)c;
}

void board_puts(const char *s)
{
    while (*s)
        board_putc(*s++);
}

void board_exit(int code)
{
    (void)code;
    while (!(USART1_ISR & (1u << 6))) /* let the last byte go out */
        ;
    for (;;)
        __asm__ volatile("wfi");
}

int board_stack_used(void) { return -1; } /* not measured */
