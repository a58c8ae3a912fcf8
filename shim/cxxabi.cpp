// The shim's private libstdc++ and the program's operator new.
//
// libgreenshim.so carries its own copy of libstdc++, linked in from
// libstdc++.a with every symbol hidden (shim/meson.build says why: start-up).
// A C++ program has a second one, libstdc++.so.6. The two agree on the ABI
// (one GCC), share libgcc_s's unwinder, and an exception thrown by one is
// caught by the other. What they do not share is state:
//   - the exceptions being handled (__cxa_eh_globals), which the runtime keeps
//     per greenlet: it saves and restores both copies' (greenlet.cpp);
//   - operator new and delete, here.
//
// Memory crosses between the program and us: a std::function or std::string
// handed to the runtime's API and freed by it, a template instantiation of
// the runtime that the program's calls bind to (the preload comes first in
// the lookup order). The copy's own operator new would call malloc whatever
// the program replaced. So ours forward to the process's operator new: the
// program's replacement or libstdc++.so's, found in the global scope (our
// definitions are not exported: exports.map makes them local). A C program
// has neither, and malloc and free stand in, as libstdc++'s own do.
//
// Cost: one indirect call per new and delete; at load, a find_global for
// each (symbols.hpp: a C program, which has none, makes no dlsym call).
// Caveat: a libstdc++.so that is dlopen'ed later, into a local scope, is not
// seen; nothing allocated by its users crosses to us.
//
// Also here, in the static build: the copy's exception allocation (below).
#include "cxxabi.hpp"

#include <greenshim/cold.hpp>
#include <greenshim/symbols.hpp>
#include <stdlib.h>
#include <string.h>

#include <cstddef>
#include <exception>
#include <new>

namespace {

using New = void* (*)(std::size_t);
using NewAligned = void* (*)(std::size_t, std::align_val_t);
using Delete = void (*)(void*);
using DeleteSized = void (*)(void*, std::size_t);
using DeleteAligned = void (*)(void*, std::align_val_t);
using DeleteSizedAligned = void (*)(void*, std::size_t, std::align_val_t);

// The process's operators; null where it has none (then malloc and free).
// Only the throwing forms: the nothrow ones call them, as libstdc++'s do, so
// a program that replaces only the throwing ones is still honoured.
struct ProcessOperators {
    New new_, new_array;
    NewAligned new_aligned, new_array_aligned;
    Delete delete_, delete_array;
    DeleteSized delete_sized, delete_array_sized;
    DeleteAligned delete_aligned, delete_array_aligned;
    DeleteSizedAligned delete_sized_aligned, delete_array_sized_aligned;
};

GREENSHIM_STARTUP_DATA ProcessOperators g_ops;
GREENSHIM_STARTUP_DATA bool g_found = false;

template <class F>
void find(F& slot, const char* mangled) noexcept {
    slot = reinterpret_cast<F>(greenshim::detail::find_global(mangled));
}

// At load (before the runtime's first allocation, from a constructor of
// higher priority than any of ours) and, should a library loaded ahead of us
// allocate through our copy from its own constructor, at that first call.
// dlsym calls malloc, never operator new, so this does not recurse.
__attribute__((constructor(101))) void find_process_operators() noexcept {
    if (__atomic_load_n(&g_found, __ATOMIC_ACQUIRE)) return;
    ProcessOperators o{};
    find(o.new_, "_Znwm");
    find(o.new_array, "_Znam");
    find(o.new_aligned, "_ZnwmSt11align_val_t");
    find(o.new_array_aligned, "_ZnamSt11align_val_t");
    find(o.delete_, "_ZdlPv");
    find(o.delete_array, "_ZdaPv");
    find(o.delete_sized, "_ZdlPvm");
    find(o.delete_array_sized, "_ZdaPvm");
    find(o.delete_aligned, "_ZdlPvSt11align_val_t");
    find(o.delete_array_aligned, "_ZdaPvSt11align_val_t");
    find(o.delete_sized_aligned, "_ZdlPvmSt11align_val_t");
    find(o.delete_array_sized_aligned, "_ZdaPvmSt11align_val_t");
    g_ops = o;
    __atomic_store_n(&g_found, true, __ATOMIC_RELEASE);
}

const ProcessOperators& ops() noexcept {
    if (!__atomic_load_n(&g_found, __ATOMIC_ACQUIRE)) find_process_operators();
    return g_ops;
}

// libstdc++'s own operator new: malloc, the new-handler while it fails.
void* malloc_or_throw(std::size_t n) {
    if (n == 0) n = 1;
    for (;;) {
        if (void* p = std::malloc(n)) return p;
        std::new_handler h = std::get_new_handler();
        if (!h) throw std::bad_alloc();
        h();
    }
}

void* aligned_or_throw(std::size_t n, std::align_val_t a) {
    std::size_t align = static_cast<std::size_t>(a);
    if (align < sizeof(void*)) align = sizeof(void*);
    if (n == 0) n = 1;
    for (;;) {
        void* p = nullptr;
        if (posix_memalign(&p, align, n) == 0) return p;
        std::new_handler h = std::get_new_handler();
        if (!h) throw std::bad_alloc();
        h();
    }
}

}  // namespace

void* operator new(std::size_t n) {
    if (New f = ops().new_) return f(n);
    return malloc_or_throw(n);
}
void* operator new[](std::size_t n) {
    if (New f = ops().new_array) return f(n);
    return malloc_or_throw(n);
}
void* operator new(std::size_t n, std::align_val_t a) {
    if (NewAligned f = ops().new_aligned) return f(n, a);
    return aligned_or_throw(n, a);
}
void* operator new[](std::size_t n, std::align_val_t a) {
    if (NewAligned f = ops().new_array_aligned) return f(n, a);
    return aligned_or_throw(n, a);
}
void* operator new(std::size_t n, const std::nothrow_t&) noexcept {
    try {
        return ::operator new(n);
    } catch (...) {
        return nullptr;
    }
}
void* operator new[](std::size_t n, const std::nothrow_t&) noexcept {
    try {
        return ::operator new[](n);
    } catch (...) {
        return nullptr;
    }
}
void* operator new(std::size_t n, std::align_val_t a, const std::nothrow_t&) noexcept {
    try {
        return ::operator new(n, a);
    } catch (...) {
        return nullptr;
    }
}
void* operator new[](std::size_t n, std::align_val_t a, const std::nothrow_t&) noexcept {
    try {
        return ::operator new[](n, a);
    } catch (...) {
        return nullptr;
    }
}

void operator delete(void* p) noexcept {
    if (Delete f = ops().delete_) return f(p);
    std::free(p);
}
void operator delete[](void* p) noexcept {
    if (Delete f = ops().delete_array) return f(p);
    std::free(p);
}
void operator delete(void* p, std::size_t n) noexcept {
    if (DeleteSized f = ops().delete_sized) return f(p, n);
    std::free(p);
}
void operator delete[](void* p, std::size_t n) noexcept {
    if (DeleteSized f = ops().delete_array_sized) return f(p, n);
    std::free(p);
}
void operator delete(void* p, std::align_val_t a) noexcept {
    if (DeleteAligned f = ops().delete_aligned) return f(p, a);
    std::free(p);
}
void operator delete[](void* p, std::align_val_t a) noexcept {
    if (DeleteAligned f = ops().delete_array_aligned) return f(p, a);
    std::free(p);
}
void operator delete(void* p, std::size_t n, std::align_val_t a) noexcept {
    if (DeleteSizedAligned f = ops().delete_sized_aligned) return f(p, n, a);
    std::free(p);
}
void operator delete[](void* p, std::size_t n, std::align_val_t a) noexcept {
    if (DeleteSizedAligned f = ops().delete_array_sized_aligned) return f(p, n, a);
    std::free(p);
}
void operator delete(void* p, const std::nothrow_t&) noexcept { ::operator delete(p); }
void operator delete[](void* p, const std::nothrow_t&) noexcept { ::operator delete[](p); }
void operator delete(void* p, std::align_val_t a, const std::nothrow_t&) noexcept { ::operator delete(p, a); }
void operator delete[](void* p, std::align_val_t a, const std::nothrow_t&) noexcept { ::operator delete[](p, a); }

#if GREENSHIM_STATIC_CXX
// The copy's exception allocation: libstdc++'s four functions (eh_alloc.cc),
// defined here so that its eh_alloc.o is not linked in. That object carries
// the emergency pool, 73 KiB that its constructor mallocs: every process
// under the preload started malloc for it (brk, the tcache key's getrandom, 5
// page faults) though most never throw. Without the pool, an exception the
// shim throws when malloc fails terminates, as libstdc++'s does once its pool
// is spent; the program's own libstdc++ keeps its pool.
//
// Objects cross: the last std::exception_ptr to one may be dropped by the
// other copy, whose __cxa_free_exception then frees it, and ours frees the
// program's. Both copies malloc each object with its header right before it
// (libstdc++'s own do so outside the pool), so each frees the other's.
// Local (exports.map): the program's are not replaced.
extern "C" {

void* __cxa_allocate_exception(std::size_t size) noexcept {
    using greenshim::shim::kExceptionHeader;
    void* p = std::malloc(size + kExceptionHeader);
    if (!p) std::terminate();
    memset(p, 0, kExceptionHeader);
    return static_cast<char*>(p) + kExceptionHeader;
}

void __cxa_free_exception(void* object) noexcept {
    std::free(static_cast<char*>(object) - greenshim::shim::kExceptionHeader);
}

void* __cxa_allocate_dependent_exception() noexcept {
    void* p = std::calloc(1, greenshim::shim::kExceptionHeader);
    if (!p) std::terminate();
    return p;
}

void __cxa_free_dependent_exception(void* p) noexcept { std::free(p); }

}  // extern "C"
#endif
