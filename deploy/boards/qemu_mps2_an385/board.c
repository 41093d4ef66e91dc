/* QEMU mps2-an385 board: newlib semihosting (rdimon) for output, exit() ends
 * QEMU with the program's status. The code is ARMv6-M (-mcpu=cortex-m0plus),
 * which the emulated Cortex-M3 runs unchanged: counts are Cortex-M0+
 * instruction counts.
 *
 * Instruction count (BOARD_ICOUNT). QEMU models no cycles. With -icount
 * shift=0 its virtual clock advances exactly 2^0 = 1 ns per executed guest
 * instruction, and the SysTick (CLKSOURCE = 1: the 25 MHz system clock of the
 * AN385) decrements once per 40 ns of virtual time: one tick per 40
 * instructions, not one per instruction. Rather than trust that figure, the
 * first board_icount_start() calibrates it: spin() executes exactly 2 * n
 * instructions (subs + bne per iteration) and the ticks it takes give the
 * instructions per tick (measured here: 40). A measurement is then
 * ticks * instructions per tick, so its resolution is one tick (40
 * instructions); SysTick wraps (every 2^24 ticks) are counted by the SysTick
 * interrupt. Without -icount the SysTick follows the host's real time and the
 * figures mean nothing.
 *
 * Stack high-water mark (board_stack_used()): board_init() paints the STACK_SIZE
 * bytes below the stack top (below its own frame) once the semihosting setup is
 * done; the deepest word that lost the paint gives the deepest stack use since.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "board.h"

extern void initialise_monitor_handles(void);
extern uint32_t __stack_top[], __stack_limit[]; /* link.ld */

#define STACK_PAINT 0xDEADBEEFu
void board_stack_paint(void);

/* The semihosting setup runs about 300 bytes deep, more than some decoders
 * and nothing an MCU board does: paint the stack again once it is done, so
 * that board_stack_used() measures the program, not the setup. */
void board_init(void)
{
    initialise_monitor_handles();
    board_stack_paint();
}

void board_putc(char c) { putchar(c); }

void board_puts(const char *s) { fputs(s, stdout); }

void board_exit(int code)
{
    fflush(stdout);
    exit(code); /* semihosting SYS_EXIT: QEMU exits with this status */
}

#ifdef BOARD_ICOUNT
#define SYST_CSR (*(volatile uint32_t *)0xE000E010u)
#define SYST_RVR (*(volatile uint32_t *)0xE000E014u)
#define SYST_CVR (*(volatile uint32_t *)0xE000E018u)
#define SYST_ENABLE_TICKINT_CPUCLK 7u
#define CALIB_LOOPS 5000000u

static volatile uint32_t wraps;
static uint32_t t_start, cal_insns, cal_ticks;

void SysTick_Handler(void) { wraps++; }

/* Ticks since the SysTick was started (a 24-bit down-counter plus its wraps). */
static uint32_t ticks(void)
{
    uint32_t w, v;
    do {
        w = wraps;
        v = SYST_CVR;
    } while (w != wraps);
    return (w << 24) + (0xFFFFFFu - v);
}

/* Exactly 2 * n instructions: subs, bne per iteration. */
static void __attribute__((noinline)) spin(uint32_t n)
{
    __asm__ volatile(".syntax unified\n1:\tsubs %0, %0, #1\n\tbne 1b" : "+l"(n) : : "cc");
}

void board_icount_start(void)
{
    if (!cal_ticks) {
        uint32_t t0, t1, empty;
        SYST_RVR = 0xFFFFFFu;
        SYST_CVR = 0;
        SYST_CSR = SYST_ENABLE_TICKINT_CPUCLK;
        while (SYST_CVR == 0) /* reads 0 until the first reload */
            ;
        t0 = ticks();
        t1 = ticks();
        empty = t1 - t0;
        t0 = ticks();
        spin(CALIB_LOOPS);
        t1 = ticks();
        cal_ticks = t1 - t0 - empty;
        cal_insns = 2u * CALIB_LOOPS;
        if (!cal_ticks)
            cal_ticks = 1;
        printf("systick: %lu instructions per tick (calibrated: %lu instructions in %lu ticks)\n",
               (unsigned long)((cal_insns + cal_ticks / 2) / cal_ticks), (unsigned long)cal_insns,
               (unsigned long)cal_ticks);
    }
    t_start = ticks();
}

uint32_t board_icount_stop(void)
{
    uint32_t t = ticks() - t_start;
    return (uint32_t)((uint64_t)t * cal_insns / cal_ticks);
}
#endif

/* Fills the stack with STACK_PAINT from its limit up to this function's own sp,
 * i.e. below every live frame (the caller's and its own). A leaf: nothing is
 * pushed below sp once it is read (volatile: the loop does not become a call to
 * memset). Called by board_init() after the semihosting setup. */
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
