/* The board layer: the little the demo and the tests need from a target.
 * Each boards/<name>/board.c implements it (plus startup code and a linker
 * script on bare-metal targets). */
#ifndef BOARD_H
#define BOARD_H

#include <stdint.h>

void board_init(void);
void board_putc(char c);
void board_puts(const char *s);
/* Ends the program: exit status on host and QEMU, a halt loop on an MCU. */
void board_exit(int code) __attribute__((noreturn));
/* Deepest stack use in bytes since board_init() (the frames live then
 * included), or -1 where the board does not measure it (only QEMU does: it
 * paints the stack and finds the deepest word that lost the paint). */
int board_stack_used(void);

#ifdef BOARD_ICOUNT
/* Boards that can count executed instructions (QEMU with -icount). */
void board_icount_start(void);
uint32_t board_icount_stop(void); /* instructions since board_icount_start() */
#endif

#endif /* BOARD_H */
