// greenshim runtime: a system call made inline, past libc, for the runtime's
// and the shim's own calls where libc's function is the shim's interposer
// (syscall(), write()), or costs what the caller must not pay (recvfrom's
// cancellation-point bookkeeping, shim.hpp). Returns the kernel's answer:
// -errno on failure; errno is untouched. x86-64, as the runtime's switch.
#pragma once

namespace greenshim::detail {

inline long raw_syscall(long n, long a = 0, long b = 0, long c = 0, long d = 0, long e = 0, long f = 0) noexcept {
    register long r10 __asm__("r10") = d;
    register long r8 __asm__("r8") = e;
    register long r9 __asm__("r9") = f;
    long ret;
    __asm__ volatile("syscall"
                     : "=a"(ret)
                     : "0"(n), "D"(a), "S"(b), "d"(c), "r"(r10), "r"(r8), "r"(r9)
                     : "rcx", "r11", "memory");
    return ret;
}

}  // namespace greenshim::detail
