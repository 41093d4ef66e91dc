/* QEMU virt board for the CH32V003's code: the same rv32ec instruction stream
 * (-march=rv32ec -mabi=ilp32e -Os, picolibc), run by qemu-system-riscv32 -M virt
 * -bios none in M-mode. Output: the 16550 UART at 0x10000000 (picolibc's stdout
 * and stderr write to it); exit: the SiFive test device at 0x100000 ends QEMU
 * with the program's status.
 *
 * Instruction count (BOARD_ICOUNT): the minstret CSR, read with csrr (Zicsr,
 * enabled for that instruction only with `.option arch, +zicsr`: the CH32V003
 * code needs neither). QEMU models no cycles: without -icount, minstret and
 * mcycle follow the host's clock and mean nothing; with -icount shift=0 (what
 * check-qemu-rv32 runs) both read QEMU's virtual clock, which advances exactly
 * 2^0 = 1 ns per executed guest instruction, so minstret counts retired
 * instructions one by one. The first board_icount_start() checks that rather
 * than trust it: two reads around n iterations of addi + bnez must differ by
 * exactly 2 * n more than two reads around nothing; it prints what it read,
 * with a warning if that is not 2 * n. A measurement is then exact: the
 * instructions executed between the two reads (the calls into this board
 * included). These are RV32EC instruction counts, not CH32V003 cycles (QEMU
 * models no pipeline and no flash wait states).
 *
 * Stack high-water mark (board_stack_used()): startup.S paints the STACK_SIZE
 * bytes below the stack top at reset; the deepest word that lost the paint
 * gives the deepest stack use since then (there is no setup to paint over
 * again, unlike the Arm board's semihosting).
 */
#include <stdio.h>
#include <stdlib.h>

#include "board.h"

#define REG8(addr) (*(volatile uint8_t *)(addr))
#define UART_THR REG8(0x10000000u) /* 16550: transmit holding register */
#define UART_LSR REG8(0x10000005u) /* line status, bit 5: THR empty */
#define TEST_DEV (*(volatile uint32_t *)0x00100000u) /* sifive_test finisher */
#define TEST_PASS 0x5555u                           /* QEMU exits with 0 */
#define TEST_FAIL 0x3333u                           /* with status << 16: exits with status */
#define STACK_PAINT 0xDEADBEEFu

extern uint32_t __stack_top[], __stack_limit[];
void board_trap(void) __attribute__((noreturn));

void board_init(void) {}

void board_putc(char c)
{
    while (!(UART_LSR & 0x20u))
        ;
    UART_THR = (uint8_t)c;
}

void board_puts(const char *s)
{
    while (*s)
        board_putc(*s++);
}

void board_exit(int code)
{
    TEST_DEV = code ? ((uint32_t)(code & 0xFFFF) << 16) | TEST_FAIL : TEST_PASS;
    for (;;)
        ;
}

/* Bytes between the stack top and the deepest word that no longer holds the
 * paint (scanned up from the limit). */
int board_stack_used(void)
{
    const uint32_t *p = __stack_limit;
    while (p < __stack_top && *p == STACK_PAINT)
        p++;
    return (int)((uintptr_t)__stack_top - (uintptr_t)p);
}

/* csrr from an rv32ec file: Zicsr for this one instruction. */
#define CSR_READ(name)                                                                        \
    __extension__({                                                                           \
        uint32_t v_;                                                                          \
        __asm__ volatile(".option push\n\t.option arch, +zicsr\n\tcsrr %0, " #name            \
                         "\n\t.option pop"                                                    \
                         : "=r"(v_));                                                         \
        v_;                                                                                   \
    })

static void put_hex(uint32_t v)
{
    int i;
    board_puts("0x");
    for (i = 28; i >= 0; i -= 4)
        board_putc("0123456789abcdef"[(v >> i) & 15u]);
}

/* From startup.S's mtvec handler, on a fresh stack. */
void board_trap(void)
{
    board_puts("\ntrap: mcause ");
    put_hex(CSR_READ(mcause));
    board_puts(", mepc ");
    put_hex(CSR_READ(mepc));
    board_puts(", mtval ");
    put_hex(CSR_READ(mtval));
    board_putc('\n');
    board_exit(3);
}

/* picolibc's stdio: stdout and stderr on the UART. exit() (through _exit()) and
 * abort() (a failed assert) end QEMU with their status. */
static int uart_put(char c, FILE *f)
{
    (void)f;
    board_putc(c);
    return (unsigned char)c;
}
static FILE uart = FDEV_SETUP_STREAM(uart_put, NULL, NULL, _FDEV_SETUP_WRITE);
FILE *const stdout = &uart;
FILE *const stderr = &uart;

void _exit(int code) { board_exit(code); }

void abort(void) { board_exit(134); } /* 128 + SIGABRT, as a shell reports it */

#ifdef BOARD_ICOUNT
#define CALIB_LOOPS 1000000u

static uint32_t t_start, overhead;
static int calibrated;

/* minstret read twice around n iterations of addi + bnez: exactly 2 * n
 * instructions more than around nothing (n = 0: the two reads alone). */
static uint32_t __attribute__((noinline)) around_spin(uint32_t n)
{
    uint32_t t0, t1;
    __asm__ volatile(".option push\n\t.option arch, +zicsr\n\t"
                     "csrr %0, minstret\n\t"
                     "beqz %2, 2f\n"
                     "1:\taddi %2, %2, -1\n\t"
                     "bnez %2, 1b\n"
                     "2:\tcsrr %1, minstret\n\t"
                     ".option pop"
                     : "=&r"(t0), "=&r"(t1), "+r"(n));
    return t1 - t0;
}

void board_icount_start(void)
{
    if (!calibrated) {
        uint32_t n;
        calibrated = 1;
        overhead = around_spin(0) - 1u; /* 1: the beqz */
        n = around_spin(CALIB_LOOPS) - 1u - overhead;
        printf("minstret: %lu for %lu instructions%s\n", (unsigned long)n,
               (unsigned long)(2u * CALIB_LOOPS),
               n == 2u * CALIB_LOOPS ? " (calibrated: one per instruction)"
                                     : " -- NOT an instruction count: run QEMU with -icount shift=0");
    }
    t_start = CSR_READ(minstret);
}

/* Instructions since board_icount_start() read minstret, less one read's cost. */
uint32_t board_icount_stop(void) { return CSR_READ(minstret) - t_start - overhead; }
#endif
