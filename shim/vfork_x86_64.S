/* vfork for x86-64 Linux: process.cpp says why it is a real vfork and what
 * greenshim_vfork_begin and greenshim_vfork_end do around it.
 *
 * The child returns first, on the caller's stack, and runs the caller's
 * code, which overwrites what lies below the caller's frame, our return
 * address included. So, as glibc's vfork does, the return address is popped
 * into a register (a register is the child's own) before the system call
 * and pushed back after it, by each process in turn. The calls to begin and
 * end are made with the return address still on the stack (begin: before
 * the child exists; end: after it has exec'd or exited). */
        .text
        .globl  vfork
        .type   vfork, @function
        .p2align 4
vfork:
        .cfi_startproc
        subq    $8, %rsp                /* (the stack 16-byte aligned for the calls) */
        .cfi_adjust_cfa_offset 8
        call    greenshim_vfork_begin
        addq    $8, %rsp
        .cfi_adjust_cfa_offset -8
        testl   %eax, %eax
        jz      2f
        popq    %rsi                    /* the return address */
        .cfi_adjust_cfa_offset -8
        .cfi_register %rip, %rsi
        movl    $58, %eax               /* SYS_vfork */
        syscall
        pushq   %rsi
        .cfi_adjust_cfa_offset 8
        .cfi_rel_offset %rip, 0
        testq   %rax, %rax
        jz      1f                      /* the child: 0 */
        subq    $8, %rsp
        .cfi_adjust_cfa_offset 8
        movq    %rax, %rdi
        call    greenshim_vfork_end     /* the parent: the pid, or -1 and errno */
        addq    $8, %rsp
        .cfi_adjust_cfa_offset -8
1:      ret
2:      jmp     greenshim_vfork_as_fork
        .cfi_endproc
        .size   vfork, .-vfork

        .section .note.GNU-stack, "", @progbits
