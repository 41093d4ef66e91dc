/* Startup for QEMU virt (-bios none: the reset ROM jumps to 0x80000000 in
 * M-mode). Set gp, sp and tp (picolibc's thread-local errno), point mtvec at a
 * handler that reports a trap and ends QEMU, paint the stack, copy .data, zero
 * .bss, board_exit(main()). As boards/ch32v003/startup.S, plus tp, mtvec and
 * the paint; the code is rv32ec, the CSR write needs Zicsr (assembler only). */
    .section .init, "ax"
    .globl _start
_start:
    .option push
    .option norelax
    la gp, __global_pointer$
    .option pop
    la sp, __stack_top
    la tp, __tls_base
    la t0, trap_entry
    .option push
    .option arch, +zicsr
    csrw mtvec, t0
    .option pop
    /* the stack's STACK_SIZE bytes, for board_stack_used() */
    la a0, __stack_limit
    li t0, 0xDEADBEEF
0:  bgeu a0, sp, 1f
    sw t0, 0(a0)
    addi a0, a0, 4
    j 0b
1:  la a0, __data_load
    la a1, __data_start
    la a2, __data_end
2:  bgeu a1, a2, 3f
    lw t0, 0(a0)
    sw t0, 0(a1)
    addi a0, a0, 4
    addi a1, a1, 4
    j 2b
3:  la a1, __bss_start
    la a2, __bss_end
4:  bgeu a1, a2, 5f
    sw zero, 0(a1)
    addi a1, a1, 4
    j 4b
5:  call main
    tail board_exit

/* Any exception (an instruction the emulated CPU lacks, a bad access):
 * board_trap() prints mcause and mepc and ends QEMU with status 3. */
    .balign 4
trap_entry:
    la sp, __stack_top
    tail board_trap
