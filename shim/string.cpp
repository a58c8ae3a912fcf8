// memset: a zero-fill of whole pages of the running greenlet's own stack
// gives those pages back to the kernel instead of writing them.
//
// Why: a thread-per-client program often clears a big stack buffer per
// request (siege clears a 384 KiB frame for every response it reads). Real
// threads are queued by the kernel and by the program's own locks, so only
// some of them sit in that frame at a time; greenlets all run their first
// request before any ends, so every stack holds the whole cleared frame at
// once (siege -c 1000: 388 KiB in each of 1,000 stacks). Pages handed back
// with MADV_DONTNEED read as zeros, which is all memset promises, and hold
// no memory until the program writes them.
//
// Every other memset goes straight to libc's: one compare and an indirect
// jump. Only private anonymous memory we mapped ourselves qualifies (the
// runtime checks the span lies in the calling greenlet's stack), so shared
// mappings, files and the heap are never touched this way.
#include <dlfcn.h>

#include <cstddef>
#include <cstdint>
#include <cstring>

#include "shim.hpp"

namespace greenshim::shim {
namespace {

using MemsetFn = void* (*)(void*, int, std::size_t);

// Below this many bytes the madvise costs more than the writes it saves.
constexpr std::size_t kDiscardMin = 64 * 1024;
constexpr std::uintptr_t kPage = 4096;

// Until our constructor has found libc's memset (a call from another
// library's constructor, earlier): plain string stores.
void* fill_bytes(void* d, int c, std::size_t n) noexcept {
    void* p = d;
    asm volatile("rep stosb" : "+D"(p), "+c"(n) : "a"(c) : "memory");
    return d;
}

}  // namespace
}  // namespace greenshim::shim

using greenshim::shim::kPage;
using greenshim::shim::MemsetFn;

// The names memset's stub below uses: plain C symbols, hidden.
extern "C" {
// libc's memset, jumped through; written once, by our constructor.
__attribute__((visibility("hidden"))) MemsetFn greenshim_real_memset = greenshim::shim::fill_bytes;

// memset's slow path: a zero-fill of at least kDiscardMin bytes.
__attribute__((visibility("hidden"), used)) void* greenshim_memset_zero_large(void* d, std::size_t n) noexcept {
    MemsetFn real = __atomic_load_n(&greenshim_real_memset, __ATOMIC_RELAXED);
    auto b = reinterpret_cast<std::uintptr_t>(d);
    std::uintptr_t pb = (b + kPage - 1) & ~(kPage - 1);
    std::uintptr_t pe = (b + n) & ~(kPage - 1);
    if (pe <= pb || !greenshim::discard_own_stack_pages(reinterpret_cast<void*>(pb), reinterpret_cast<void*>(pe)))
        return real(d, 0, n);
    real(d, 0, pb - b);
    real(reinterpret_cast<void*>(pe), 0, b + n - pe);
    return d;
}
}

__attribute__((constructor(101))) static void find_real_memset() noexcept {
    if (void* f = dlsym(RTLD_NEXT, "memset"))
        __atomic_store_n(&greenshim_real_memset, reinterpret_cast<MemsetFn>(f), __ATOMIC_RELAXED);
}

// memset itself, in assembly: GCC calls through the pointer instead of
// jumping (memset is a builtin to it), which costs a return misprediction.
// The common path is two compares and an indirect tail jump: +~0.5 ns on a
// 64-byte memset. 65536 is kDiscardMin.
static_assert(greenshim::shim::kDiscardMin == 65536);
asm(R"(
    .text
    .globl memset
    .type memset, @function
    .p2align 4
memset:
    .cfi_startproc
    testl %esi, %esi
    jne 1f
    cmpq $65535, %rdx
    ja 2f
1:  jmp *greenshim_real_memset(%rip)
2:  movq %rdx, %rsi
    jmp greenshim_memset_zero_large
    .cfi_endproc
    .size memset, .-memset
)");

SHIM_EXPORT void* __memset_chk(void* d, int c, size_t n, size_t dlen) {
    if (dlen < n) __chk_fail();
    return ::memset(d, c, n);
}
