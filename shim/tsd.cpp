// Thread-specific data per greenlet thread: pthread_key_create and friends.
//
// Keys are the shim's own (a generation counter per key makes a deleted and
// re-created key read as empty). Values live in a thread-local (t_os_tsd):
// the main greenlet's and real OS threads' in theirs, a greenlet thread's
// with a thread-locals block of its own in its block's (GThread::tsd points
// there); a greenlet thread that shares the OS thread's has a Tsd of its own.
//
// AddressSanitizer's own key is the exception: libc's, untouched. ASan keeps
// its per-thread state under it (the stack it believes it is on, its fake
// stack), and that state is the OS thread's, shared by all its greenlets: the
// runtime tells ASan of every switch between them. Per greenlet thread, ASan
// would lose track of the stacks (and its lookups would recurse into the
// shim through __tls_get_addr).
//
// None of it allocates with malloc: allocators keep their per-thread caches
// under a key (jemalloc sets it inside the first malloc of each thread), so
// the main greenlet's and a real thread's values are in thread-local storage
// and the values of keys past the first kTsdInline are in mmap'd pages.
#include <dlfcn.h>
#include <pthread.h>
#include <sys/mman.h>

#include "greenshim/cold.hpp"
#include "shim.hpp"
#include "thread.hpp"

using namespace greenshim;
using namespace greenshim::shim;

namespace {
constexpr unsigned kKeys = PTHREAD_KEYS_MAX;

struct KeySlot {
    std::uint64_t seq;  // odd: in use
    void (*dtor)(void*);
};
GREENSHIM_COLD_BSS KeySlot g_keys[kKeys];

// Keys [kKeys, 2 * kKeys) stand for libc's keys 0..kKeys-1, made for ASan.
constexpr unsigned kLibcKeys = kKeys;
bool is_libc_key(pthread_key_t key) noexcept { return key >= kLibcKeys && key < kLibcKeys + kKeys; }

extern "C" void __asan_init() __attribute__((weak));

// True when caller is code of the ASan runtime (libasan.so).
bool asan_runtime(const void* caller) noexcept {
    if (!__asan_init) return false;
    Dl_info asan, who;
    return dladdr(reinterpret_cast<void*>(__asan_init), &asan) && dladdr(caller, &who) &&
           asan.dli_fbase == who.dli_fbase;
}

// The running thread's: the main greenlet's, a real thread's, a greenlet
// thread's with its own block (constant-initialised: zero in every new block).
thread_local Tsd t_os_tsd;

// (A greenlet thread's GThread::tsd is set from pthread_create or its
// thread_main's first line on, before any code of the program runs in it.)
Tsd* current_tsd() {
    GThread* t = gthread_current();
    return t ? t->tsd : &t_os_tsd;
}

constexpr std::size_t kRestBytes = (kKeys - kTsdInline) * sizeof(TsdEntry);

TsdEntry* entry(Tsd* tsd, unsigned key, bool create) {
    if (key < kTsdInline) return &tsd->first[key];
    if (!tsd->rest) {
        if (!create) return nullptr;
        void* p = mmap(nullptr, kRestBytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (p == MAP_FAILED) return nullptr;
        tsd->rest = static_cast<TsdEntry*>(p);
    }
    return &tsd->rest[key - kTsdInline];
}
}  // namespace

namespace {
void run_destructors(Tsd* tsd) noexcept;

// An OS thread that is no greenlet thread (a carrier, a helper, a worker
// hub's, one the shim did not make: jemalloc's background thread) keeps its
// values in its own t_os_tsd, and glibc, which knows nothing of the shim's
// keys, ran none of their destructors when it ended. jemalloc's tsd of a
// carrier that ended (2 s idle) stayed in jemalloc's list of tsds; glibc
// gave its stack, static TLS and all, to the next thread it made and zeroed
// the tsd there, still listed: the list broke and a thread's exit crashed
// in jemalloc (SIGSEGV in tsd cleanup, alloc_threads under load, 2 runs in
// ~1,300). So the first value such a thread sets arms a key of glibc's,
// whose destructor, run by glibc as the thread ends, runs the shim's.
pthread_key_t g_exit_key;
int g_exit_key_state = 0;  // 0 not made, 1 being made, 2 made, 3 failed
thread_local bool t_exit_armed = false;

void os_thread_ending(void* tsd) {
    t_exit_armed = false;  // (a destructor that sets a value again arms it again: glibc calls it again)
    run_destructors(static_cast<Tsd*>(tsd));
}

bool exit_key() noexcept {
    int s = __atomic_load_n(&g_exit_key_state, __ATOMIC_ACQUIRE);
    while (s < 2) {
        int expected = 0;
        if (s == 0 && __atomic_compare_exchange_n(&g_exit_key_state, &expected, 1, false, __ATOMIC_ACQ_REL,
                                                  __ATOMIC_ACQUIRE)) {
            bool ok = REAL(pthread_key_create)(&g_exit_key, os_thread_ending) == 0;
            __atomic_store_n(&g_exit_key_state, ok ? 2 : 3, __ATOMIC_RELEASE);
            return ok;
        }
        s = __atomic_load_n(&g_exit_key_state, __ATOMIC_ACQUIRE);  // (made by another thread meanwhile)
    }
    return s == 2;
}

// A value set in this OS thread's own t_os_tsd (not a greenlet thread's).
// (Not before the library's constructor found the real functions: resolving
// one here would call dlsym inside the allocator's first malloc. Only the
// main thread runs then, whose end glibc runs no destructor for anyway.)
void arm_os_thread_exit() noexcept {
    if (!__atomic_load_n(&real_slot_pthread_key_create, __ATOMIC_ACQUIRE) ||
        !__atomic_load_n(&real_slot_pthread_setspecific, __ATOMIC_ACQUIRE))
        return;
    if (t_exit_armed || !exit_key()) return;
    if (REAL(pthread_setspecific)(g_exit_key, &t_os_tsd) == 0) t_exit_armed = true;
}

void run_destructors(Tsd* tsd) noexcept {
    for (int round = 0; round < PTHREAD_DESTRUCTOR_ITERATIONS; ++round) {
        bool again = false;
        for (unsigned k = 0; k < kKeys; ++k) {
            TsdEntry* e = entry(tsd, k, false);
            if (!e) break;
            std::uint64_t seq = __atomic_load_n(&g_keys[k].seq, __ATOMIC_ACQUIRE);
            if (!e->value || e->seq != seq || !(seq & 1)) continue;
            void* v = e->value;
            e->value = nullptr;
            if (g_keys[k].dtor) {
                g_keys[k].dtor(v);
                again = true;
            }
        }
        if (!again) break;
    }
    if (tsd->rest) munmap(tsd->rest, kRestBytes);
    tsd->rest = nullptr;
}
}  // namespace

namespace greenshim::shim {
Tsd* tsd_of_running_thread() noexcept { return &t_os_tsd; }

void tsd_run_destructors(GThread* t) noexcept { run_destructors(t->tsd); }
}  // namespace greenshim::shim

SHIM_EXPORT int pthread_key_create(pthread_key_t* key, void (*dtor)(void*)) {
    SHIM_ENTER;
    if (asan_runtime(__builtin_return_address(0))) {
        pthread_key_t k;
        int r = REAL(pthread_key_create)(&k, dtor);
        if (r == 0 && k >= kKeys) {
            REAL(pthread_key_delete)(k);
            return EAGAIN;
        }
        if (r == 0) *key = kLibcKeys + k;
        return r;
    }
    for (unsigned k = 0; k < kKeys; ++k) {
        std::uint64_t seq = __atomic_load_n(&g_keys[k].seq, __ATOMIC_ACQUIRE);
        if (seq & 1) continue;
        if (__atomic_compare_exchange_n(&g_keys[k].seq, &seq, seq + 1, false, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)) {
            g_keys[k].dtor = dtor;
            *key = k;
            return 0;
        }
    }
    return EAGAIN;
}

SHIM_EXPORT int pthread_key_delete(pthread_key_t key) {
    SHIM_ENTER;
    if (is_libc_key(key)) return REAL(pthread_key_delete)(key - kLibcKeys);
    if (key >= kKeys) return EINVAL;
    std::uint64_t seq = __atomic_load_n(&g_keys[key].seq, __ATOMIC_ACQUIRE);
    if (!(seq & 1)) return EINVAL;
    __atomic_store_n(&g_keys[key].seq, seq + 1, __ATOMIC_RELEASE);
    return 0;
}

SHIM_EXPORT void* pthread_getspecific(pthread_key_t key) {
    SHIM_ENTER;
    if (key >= kKeys) return is_libc_key(key) ? REAL(pthread_getspecific)(key - kLibcKeys) : nullptr;
    TsdEntry* e = entry(current_tsd(), key, false);
    if (!e || e->seq != __atomic_load_n(&g_keys[key].seq, __ATOMIC_ACQUIRE)) return nullptr;
    return e->value;
}

SHIM_EXPORT int pthread_setspecific(pthread_key_t key, const void* value) {
    SHIM_ENTER;
    if (key >= kKeys) return is_libc_key(key) ? REAL(pthread_setspecific)(key - kLibcKeys, value) : EINVAL;
    std::uint64_t seq = __atomic_load_n(&g_keys[key].seq, __ATOMIC_ACQUIRE);
    if (!(seq & 1)) return EINVAL;
    Tsd* tsd = current_tsd();
    TsdEntry* e = entry(tsd, key, true);
    if (!e) return ENOMEM;
    e->seq = seq;
    e->value = const_cast<void*>(value);
    if (tsd == &t_os_tsd && value && !t_exit_armed) arm_os_thread_exit();
    return 0;
}
