/* Cortex-M startup for QEMU mps2-an385: vector table, stack painting,
 * .data/.bss, main(); and board_stack_used(), the stack high-water mark. */
#include <stdint.h>

#include "board.h"

extern uint32_t __data_load[], __data_start[], __data_end[], __bss_start[], __bss_end[];
extern uint32_t __stack_top[], __stack_limit[];
int main(void);
void Reset_Handler(void);

#define STACK_PAINT 0xDEADBEEFu
void board_stack_paint(void);

static void Default_Handler(void)
{
    for (;;) {
    }
}

void NMI_Handler(void) __attribute__((weak, alias("Default_Handler")));
void HardFault_Handler(void) __attribute__((weak, alias("Default_Handler")));
void SVC_Handler(void) __attribute__((weak, alias("Default_Handler")));
void PendSV_Handler(void) __attribute__((weak, alias("Default_Handler")));
void SysTick_Handler(void) __attribute__((weak, alias("Default_Handler")));

/* ARMv6-M core exceptions; the SysTick one is used for the instruction count. */
__attribute__((section(".vectors"), used)) void (*const vectors[16])(void) = {
    (void (*)(void))(uintptr_t)__stack_top, Reset_Handler, NMI_Handler, HardFault_Handler,
    0, 0, 0, 0, 0, 0, 0, SVC_Handler, 0, 0, PendSV_Handler, SysTick_Handler,
};

void Reset_Handler(void)
{
    uint32_t *src = __data_load, *dst = __data_start;
    board_stack_paint();
    while (dst < __data_end)
        *dst++ = *src++;
    for (dst = __bss_start; dst < __bss_end;)
        *dst++ = 0;
    board_exit(main());
}

/* Fills the stack with STACK_PAINT from its limit up to this function's own sp,
 * i.e. below every live frame (the caller's and its own). A leaf: nothing is
 * pushed below sp once it is read (volatile: the loop does not become a call to
 * memset). Called at reset, and again by board_init() after semihosting setup. */
void __attribute__((noinline)) board_stack_paint(void)
{
    uint32_t *sp;
    volatile uint32_t *p;
    __asm__ volatile("mov %0, sp" : "=r"(sp));
    for (p = __stack_limit; p < sp; p++)
        *p = STACK_PAINT;
}

/* Bytes between the stack top and the deepest word that no longer holds the
 * paint (scanned up from the limit): the deepest stack use since the last
 * board_stack_paint(). */
int board_stack_used(void)
{
    const uint32_t *p = __stack_limit;
    while (p < __stack_top && *p == STACK_PAINT)
        p++;
    return (int)((uintptr_t)__stack_top - (uintptr_t)p);
}
