/* Host board: the machine's C library. */
#include <stdio.h>
#include <stdlib.h>

#include "board.h"

void board_init(void) {}

void board_putc(char c) { putchar(c); }

void board_puts(const char *s) { fputs(s, stdout); }

void board_exit(int code)
{
    fflush(stdout);
    exit(code);
}

int board_stack_used(void) { return -1; } /* not measured */
