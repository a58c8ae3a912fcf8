// The unwinder, loaded when first needed.
//
// Our private libstdc++ (cxxabi.cpp) and the shim's own pthread_exit
// (thread.cpp) call libgcc_s's unwinder: a throw, a catch, a forced unwind.
// Linked against libgcc_s.so.1, the library made every process started with
// the preload map it, relocate it and run its constructor (on this kind of VM
// that is ~7 us per cpuid, of which it runs several), though most of those
// processes are C programs that never unwind anything: ~15-20% of what the
// preload added to `true`'s start.
//
// So the shim defines the unwinder's entry points itself, not exported
// (exports.map: they never stand in for the program's), and each forwards
// to libgcc_s's own, found with dlvsym at the first call. There is still one
// unwinder in the process, libgcc_s's: a C++ program has it loaded already
// (RTLD_NOLOAD then finds it), and glibc loads the same file for its own
// cancellation. It is loaded ahead of time at the first pthread_create
// (unwinder_load), on a big stack and with no lock of ours held, since a
// greenlet's exit and a failed thread creation unwind; what is left to a
// first use is an exception some other path of ours throws. The one entry
// point that never loads it is _Unwind_Backtrace (the diagnostics', below).
//
// Cost: one indirect jump per call into the unwinder. Caveat: a process
// without libgcc_s.so.1 at all aborts, with a message, at its first unwind.
#include <dlfcn.h>
#include <unistd.h>
#include <unwind.h>

#include <cstdlib>
#include <cstring>

#include "shim.hpp"

#if !GREENSHIM_OWN_UNWINDER
// (A build that links libstdc++.so, and libgcc_s with it: nothing to load.)
void greenshim::shim::unwinder_load() noexcept {}
#else

namespace greenshim::shim {

namespace {

struct Entry {
    const char* name;
    const char* version;
};

// The entry points our copy of libstdc++ and our own code import, with the
// versions libgcc_s gives them (nm -D --undefined-only libgreenshim.so).
enum Fn {
    kRaiseException,
    kResume,
    kResumeOrRethrow,
    kDeleteException,
    kForcedUnwind,
    kBacktrace,
    kGetCFA,
    kGetDataRelBase,
    kGetIPInfo,
    kGetLanguageSpecificData,
    kGetRegionStart,
    kGetTextRelBase,
    kSetGR,
    kSetIP,
    kFnCount
};
constexpr Entry kEntries[kFnCount] = {
    {"_Unwind_RaiseException", "GCC_3.0"},
    {"_Unwind_Resume", "GCC_3.0"},
    {"_Unwind_Resume_or_Rethrow", "GCC_3.3"},
    {"_Unwind_DeleteException", "GCC_3.0"},
    {"_Unwind_ForcedUnwind", "GCC_3.0"},
    {"_Unwind_Backtrace", "GCC_3.3"},
    {"_Unwind_GetCFA", "GCC_3.3"},
    {"_Unwind_GetDataRelBase", "GCC_3.0"},
    {"_Unwind_GetIPInfo", "GCC_4.2.0"},
    {"_Unwind_GetLanguageSpecificData", "GCC_3.0"},
    {"_Unwind_GetRegionStart", "GCC_3.0"},
    {"_Unwind_GetTextRelBase", "GCC_3.0"},
    {"_Unwind_SetGR", "GCC_3.0"},
    {"_Unwind_SetIP", "GCC_3.0"},
};

void* g_fns[kFnCount];
bool g_loaded = false;  // every slot filled (release: the slots first)

[[noreturn]] void no_unwinder(const char* what) noexcept {
    static const char head[] = "greenshim: cannot load libgcc_s.so.1, the unwinder: ";
    write_fully(2, head, sizeof head - 1);
    write_fully(2, what, std::strlen(what));
    write_fully(2, "\n", 1);
    std::abort();
}

// Two threads may both get here first: each fills the same values.
void load_now() noexcept {
    void* lib = dlopen("libgcc_s.so.1", RTLD_NOW | RTLD_NOLOAD);
    if (!lib) lib = dlopen("libgcc_s.so.1", RTLD_NOW);
    if (!lib) {
        const char* e = dlerror();
        no_unwinder(e ? e : "not found");
    }
    for (int i = 0; i < kFnCount; ++i) {
        void* f = dlvsym(lib, kEntries[i].name, kEntries[i].version);
        if (!f) f = dlsym(lib, kEntries[i].name);
        if (!f) no_unwinder(kEntries[i].name);
        __atomic_store_n(&g_fns[i], f, __ATOMIC_RELAXED);
    }
    __atomic_store_n(&g_loaded, true, __ATOMIC_RELEASE);
}

template <class F>
inline F fn(Fn i) noexcept {
    if (__builtin_expect(!__atomic_load_n(&g_loaded, __ATOMIC_ACQUIRE), 0)) load_now();
    return reinterpret_cast<F>(g_fns[i]);
}

}  // namespace

void unwinder_load() noexcept {
    if (!__atomic_load_n(&g_loaded, __ATOMIC_ACQUIRE)) load_now();
}

}  // namespace greenshim::shim

using greenshim::shim::fn;
namespace s = greenshim::shim;

// Each a tail call (-O2): the frame the unwinder starts from is its caller's,
// as with the real entry point; where it is not (-O0), this frame has its
// CFI and no personality, and the unwinder steps over it.
// (Not exported: exports.map makes them local, as unwind.h declares them
// under visibility "default".)
extern "C" {

_Unwind_Reason_Code _Unwind_RaiseException(_Unwind_Exception* e) {
    return fn<decltype(&_Unwind_RaiseException)>(s::kRaiseException)(e);
}
void _Unwind_Resume(_Unwind_Exception* e) {
    fn<decltype(&_Unwind_Resume)>(s::kResume)(e);
    __builtin_unreachable();
}
_Unwind_Reason_Code _Unwind_Resume_or_Rethrow(_Unwind_Exception* e) {
    return fn<decltype(&_Unwind_Resume_or_Rethrow)>(s::kResumeOrRethrow)(e);
}
void _Unwind_DeleteException(_Unwind_Exception* e) { fn<decltype(&_Unwind_DeleteException)>(s::kDeleteException)(e); }
_Unwind_Reason_Code _Unwind_ForcedUnwind(_Unwind_Exception* e, _Unwind_Stop_Fn stop, void* arg) {
    return fn<decltype(&_Unwind_ForcedUnwind)>(s::kForcedUnwind)(e, stop, arg);
}
// The diagnostics' backtraces, taken in signal handlers (a dump, the
// monitor, a stack overflow), where a dlopen could wait for ever on a lock
// the interrupted code holds (the loader's, malloc's): no frames instead,
// until something else has loaded the unwinder.
_Unwind_Reason_Code _Unwind_Backtrace(_Unwind_Trace_Fn trace, void* arg) {
    if (!__atomic_load_n(&s::g_loaded, __ATOMIC_ACQUIRE)) return _URC_END_OF_STACK;
    return fn<decltype(&_Unwind_Backtrace)>(s::kBacktrace)(trace, arg);
}
_Unwind_Word _Unwind_GetCFA(_Unwind_Context* c) { return fn<decltype(&_Unwind_GetCFA)>(s::kGetCFA)(c); }
_Unwind_Ptr _Unwind_GetDataRelBase(_Unwind_Context* c) {
    return fn<decltype(&_Unwind_GetDataRelBase)>(s::kGetDataRelBase)(c);
}
_Unwind_Ptr _Unwind_GetIPInfo(_Unwind_Context* c, int* before) {
    return fn<decltype(&_Unwind_GetIPInfo)>(s::kGetIPInfo)(c, before);
}
void* _Unwind_GetLanguageSpecificData(_Unwind_Context* c) {
    return fn<decltype(&_Unwind_GetLanguageSpecificData)>(s::kGetLanguageSpecificData)(c);
}
_Unwind_Ptr _Unwind_GetRegionStart(_Unwind_Context* c) {
    return fn<decltype(&_Unwind_GetRegionStart)>(s::kGetRegionStart)(c);
}
_Unwind_Ptr _Unwind_GetTextRelBase(_Unwind_Context* c) {
    return fn<decltype(&_Unwind_GetTextRelBase)>(s::kGetTextRelBase)(c);
}
void _Unwind_SetGR(_Unwind_Context* c, int i, _Unwind_Word v) { fn<decltype(&_Unwind_SetGR)>(s::kSetGR)(c, i, v); }
void _Unwind_SetIP(_Unwind_Context* c, _Unwind_Ptr ip) { fn<decltype(&_Unwind_SetIP)>(s::kSetIP)(c, ip); }

}  // extern "C"

#endif  // GREENSHIM_OWN_UNWINDER
