/* The stack switch of every greenlet (x86-64, System V, ELF): our own
 * jump_fcontext, which the runtime's Boost.Context fibers call in place of
 * Boost's (this object is linked before libboost_context.a, whose member is
 * then never pulled in).
 *
 * Why: Boost's jump_fcontext (1.74) leaves by `jmp *%r8` after loading the
 * resumed context's return address, so the `call` that entered it is never
 * matched by a `ret`: the CPU's return-stack predictor stays one entry off
 * after every switch, and each return on the way back to the program's code
 * mispredicts (bench/analysis.md, point 1: ~10 ns per frame per switch).
 * This one leaves by `ret`: the predictor's top entry (the switching side's
 * call site) is consumed, and when the resumed side switched away from the
 * same code (two threads that wait in the same call, the usual case: a
 * condition variable's ping-pong, two greenlets in switch_to) every return
 * after it is predicted.
 *
 * Same contract and context layout as Boost's, so Boost's make_fcontext and
 * ontop_fcontext (and the dump's unwinder, diag.cpp) work on its contexts
 * unchanged:
 *   transfer_t jump_fcontext(fcontext_t to, void* data)
 *   saves the callee-saved registers, the MXCSR and the x87 control word on
 *   the current stack, below the return address: [rsp+0x00] MXCSR,
 *   [+0x04] x87 CW, [+0x08] r12, r13, r14, r15, rbx, rbp, [+0x38] the return
 *   address; returns in `to`'s context {rax: the saved context (fctx),
 *   rdx: data}, also passed as the first argument (rdi, rsi) for a context
 *   that starts in make_fcontext's trampoline. */
#if defined(__x86_64__) && defined(__ELF__)
    .text

/* Both switches below: save this side's registers below its return address
 * (rax := this context), then load the other side's (rsp := rdi, just above
 * its return address). */
.macro SAVE_THIS_SIDE
    leaq    -0x38(%rsp), %rsp
    stmxcsr (%rsp)
    fnstcw  0x4(%rsp)
    movq    %r12, 0x8(%rsp)
    movq    %r13, 0x10(%rsp)
    movq    %r14, 0x18(%rsp)
    movq    %r15, 0x20(%rsp)
    movq    %rbx, 0x28(%rsp)
    movq    %rbp, 0x30(%rsp)
    movq    %rsp, %rax          /* this context: returned to the other side */
.endm
.macro LOAD_OTHER_SIDE
    movq    %rdi, %rsp          /* the other side's context */
    ldmxcsr (%rsp)
    fldcw   0x4(%rsp)
    movq    0x8(%rsp), %r12
    movq    0x10(%rsp), %r13
    movq    0x18(%rsp), %r14
    movq    0x20(%rsp), %r15
    movq    0x28(%rsp), %rbx
    movq    0x30(%rsp), %rbp
.endm

    .globl  jump_fcontext
    .hidden jump_fcontext
    .type   jump_fcontext, @function
    .align  16
jump_fcontext:
    SAVE_THIS_SIDE
    LOAD_OTHER_SIDE
    leaq    0x38(%rsp), %rsp    /* at its return address */
    movq    %rsi, %rdx          /* transfer_t {rax, rdx} */
    movq    %rax, %rdi          /* and as the trampoline's first argument */
    ret
    .size   jump_fcontext, .-jump_fcontext

/* void* greenshim_jump_direct(void* to): the switch of Greenlet::switch_to's
 * inline fast path (greenlet.hpp), called straight from the program's code.
 * Same contract and layout as jump_fcontext above (data is always null),
 * but it leaves by `jmp`, as Boost's does: the two sides of a switch_to
 * ping-pong call it from different places of the program, so a `ret` would
 * mispredict every time (the predictor's top entry is the switching side's
 * call site), while the indirect jump's predictor learns the alternation.
 * Exported: the program's inline code calls it. */
    .globl  greenshim_jump_direct
    .type   greenshim_jump_direct, @function
    .align  16
greenshim_jump_direct:
    SAVE_THIS_SIDE
    LOAD_OTHER_SIDE
    movq    0x38(%rsp), %r8     /* its return address */
    leaq    0x40(%rsp), %rsp
    xorl    %edx, %edx          /* transfer_t {rax, rdx = no data} */
    movq    %rax, %rdi
    jmp     *%r8
    .size   greenshim_jump_direct, .-greenshim_jump_direct
    .section .note.GNU-stack, "", %progbits
#endif
