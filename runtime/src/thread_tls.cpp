// Per-thread TLS for greenlet threads: the design note (issue 13).
//
// WHAT A BLOCK IS. glibc on x86-64 puts a thread's static TLS right below its
// TCB (struct pthread, TLS_TCB_AT_TP), and the thread pointer (the FS base)
// points at the TCB, whose first words are tcbhead_t: the TCB itself (0x0),
// the DTV (0x8), self (0x10), multiple_threads (0x18), the stack-protector
// canary (0x28) and the pointer guard (0x30). ld.so exports, as
// GLIBC_PRIVATE, the three functions pthread_create itself uses:
// _dl_allocate_tls (mallocs static TLS + TCB when given NULL, callocs the
// DTV, copies every static module's TLS image), _dl_deallocate_tls (frees the
// DTV, the dynamic TLS blocks, and the malloc'd block) and
// _dl_get_tls_static_info. A block is what they make, with the TCB filled in
// as pthread_create (allocate_stack, start_thread) fills a new thread's.
//
// GLIBC FACTS RELIED ON, verified for glibc 2.36 (Debian 12) only: the
// version string must be "2.36" or supported() says no. Checked at start-up
// against the running thread or against glibc's own descriptions of itself
// (the _thread_db_* tables libc exports for libthread_db, and __rseq_offset):
//   tcbhead_t: tcb 0x0 and self 0x10 point at the TCB (checked), dtv 0x8
//     (thread_db), stack guard 0x28 and pointer guard 0x30 (the pointer guard
//     checked by demangling a jmp_buf that setjmp filled), feature_1 0x48,
//     __padding 0x280..0x2c0 unused by glibc (checked zero; the last word
//     holds this module's mark in our blocks).
//   struct pthread (sizeof 0x940, thread_db): list 0x2c0, tid 0x2d0 (both
//     thread_db; tid checked = gettid()), robust_prev 0x2d8, robust_head
//     0x2e0 (futex_offset checked = -32), cancelhandling 0x308 (thread_db),
//     specific_1stblock 0x310, specific[32] 0x510 (thread_db; specific[0]
//     checked = &specific_1stblock), specific_used 0x610, report_events 0x611
//     (thread_db), user_stack 0x612, stackblock 0x690 and stackblock_size
//     0x698 (main thread: checked = __libc_stack_end; another thread: the
//     TCB lies in its stack block), res 0x6b8 (a thread other than main:
//     checked = __resp), tls_state (strsignal/strerror buffers) 0x900,
//     rseq_area 0x920 (= __rseq_offset, checked; its cpu_id checked against
//     getcpu when rseq is registered). The offsets past nextevent (0x660,
//     thread_db) follow from the member types; rseq_area's offset and the size
//     confirm the sum.
//   __pthread_keys (GLIBC_PRIVATE, thread_db: 1024 x {seq, destr}), the key
//     data a thread keeps in specific_1stblock/specific[] and the rule of
//     __nptl_deallocate_tsd (not exported; done here the same way).
//   __call_tls_dtors (GLIBC_PRIVATE): a thread's thread_local destructors.
//   __resp (GLIBC_PRIVATE TLS, pointed at the block's res) and __ctype_init
//     (GLIBC_PRIVATE): start_thread's first steps for a new thread. The three
//     ctype table pointers __ctype_init sets (their TLS addresses are public:
//     __ctype_b_loc & co.) are copied from a creator on the global locale
//     instead; a creator with its own (uselocale) calls __ctype_init in the
//     new block.
//   The freeing glibc does for an exiting thread (__libc_thread_freeres) is
//     done the same way with public means: a pending dlerror() result (a
//     second dlerror() frees it), res_nclose of a used resolver state, free
//     of the strsignal/strerror buffers (tls_state).
//   malloc's `tcache` and `thread_arena` are static __thread variables of
//     libc. 2.36 exports nothing that frees a thread's tcache
//     (__libc_thread_freeres is internal since 2.34), so instead every block
//     of an OS thread shares that OS thread's tcache: greenlets of one OS
//     thread never run malloc concurrently (malloc never switches), and
//     nothing per thread is left to free. The arena word is not the OS
//     thread's: every block gets one thread arena (g_thread_arena), the one
//     glibc picks for the first block's first malloc, as for a new thread's
//     (a new arena while there are fewer than M_ARENA_MAX, else one it
//     shares). Why: the main thread's arena grows its heap by brk with
//     M_TOP_PAD (128 KiB) to spare and counts all of it as used memory, so
//     calloc clears every chunk it carves there, while a thread arena grows
//     by what a request needs and calloc leaves the fresh part alone (the
//     kernel's zero pages). siege's 80 KiB calloc per request (a hash it
//     touches a few words of), 1,000 threads: 167 MiB of heap RSS on the
//     main arena, 53 MiB on a thread arena (unpatched: 56 MiB over its 16
//     arenas). Any arena is safe to share: each has its lock, and free()
//     finds a chunk's arena from the chunk. The two words are found once in
//     libc's TLS block (see find_malloc_state); the tcache word is copied
//     into each block.
//   __libc_single_threaded is cleared on create(), as pthread_create does
//   (process_has_threads: once glibc finished its own first-thread set-up).
//
// WHAT STAYS PER OS THREAD. The kernel's view: the tid (every block carries
// the OS thread's), the signal mask and sigaltstack, the registered robust
// list and rseq area (the OS thread's own TCB: a block's robust list is its
// own and empty, so a robust mutex a greenlet thread holds is not released
// by the kernel if the OS thread dies; its rseq cpu_id is -2, "registration
// failed", so sched_getcpu asks the vDSO). glibc's lists of threads
// (dl_stack_used/dl_stack_user) hold only real threads: blocks are not in
// them, so glibc's setxid broadcast, __pthread_init_static_tls and dlclose's
// gscope wait do not see them. Consequences: a library with initial-exec
// TLS dlopen'ed after a block was made has no initialised static TLS in that
// block (its TLS image is not copied; dynamic TLS, the usual case, is fine:
// __tls_get_addr updates the block's DTV on first use); setuid & co. called
// from a greenlet thread: glibc's __nptl_setxid (taken because a block's
// multiple_threads is 1, as a new thread's is) signals every listed thread
// but THREAD_SELF, so it signals the OS thread's own TCB, i.e. itself; the
// handler clears the flag in the block, not in that TCB, so glibc signals
// again forever, and before any real thread exists no SIGSETXID handler is
// installed and the process dies of signal 33 (tried). The wiring must
// interpose the setxid family (setuid, setgid, seteuid, setegid, setreuid,
// setregid, setresuid, setresgid, setgroups) and call them with the OS
// thread's block current: then glibc sees the real thread (tried: works).
// Owner checks
// that use the tid (glibc's own recursive/error-checking mutexes, the
// loader's lock) see all greenlet threads of an OS thread as one thread, as
// today. malloc's state is per OS thread (above).
//
// FORK. glibc's fork, called with a block current, treats that block as the
// surviving thread: the kernel writes the child's tid into it, the child's
// reclaim_stacks unlinks it from its list (a block's list links to itself:
// a no-op) and adds it to dl_stack_user (user_stack is set), and the child
// registers its robust list with the kernel. So fork from a greenlet thread
// works (tested) and the child keeps that thread's TLS, but the OS thread's
// own TCB keeps the parent's tid and is on no list in the child. The wiring
// should call the real fork with the OS thread's block current instead (then
// glibc sees the real thread), switch back to the greenlet's block in both
// processes and, in the child, copy the new tid into the blocks that live on
// (the child's kernel tid: the OS block's tid field). Before the child frees a
// block that fork put on dl_stack_user, destroy() unlinks it.
//
// NOT DONE (what glibc does for a new thread that a block does not get):
// initial-exec TLS of a module dlopen'ed after the block was made (above; a
// fix: a registry of live blocks, and after each dlopen the new modules'
// images copied into each, which needs each module's static offset from
// dl_iterate_phdr's dlpi_tls_data); a split-stack limit (tcbhead_t
// __private_ss, 0x70: left 0); rseq registration, set_robust_list and the
// signal mask (the kernel's, per OS thread); __nptl_nthreads is not counted.
//
// SIGNAL HANDLERS run on whatever block is current: the interrupted greenlet
// thread's, as a handler runs on the interrupted thread. A signal between
// switch_to() and the stack switch runs the handler with the next thread's
// TLS on the previous stack: harmless to the handler (it sees one consistent
// thread). sigaltstack is per OS thread.
//
// SANITIZERS. AddressSanitizer (and TSan, MSan) keep their per-thread state
// in their own static TLS: to ASan a block is an unknown thread. Plain use
// works (tried: malloc, strcpy, a __thread, errno in a block), but ASan
// ignores __sanitizer_start/finish_switch_fiber made with a block current
// ("called from unknown thread"), so the runtime's announcements of greenlet
// switches would be lost. supported() says no when a sanitizer runtime is
// loaded. (A way forward: announce each switch with the OS thread's block
// current, switching the thread pointer after the announcement.)
// valgrind traps wrfsbase and hides HWCAP2_FSGSBASE: the arch_prctl switch
// is chosen there (also when RUNNING_ON_VALGRIND), and glibc's malloc is
// valgrind's own, so there is no malloc state to share.
#include "greenshim/raw_syscall.hpp"
#include "thread_tls.hpp"

#include <dlfcn.h>
#include <fcntl.h>
#include <gnu/libc-version.h>
#include <link.h>
#include <locale.h>
#include <sched.h>
#include <setjmp.h>
#include <sys/auxv.h>
#include <sys/single_threaded.h>
#include <sys/syscall.h>
#include <valgrind/valgrind.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>

namespace greenshim::detail {

bool g_tls_wrfsbase = false;

namespace {

// (raw_syscall: the shim interposes syscall(), write() and the like)

constexpr long kArchSetFs = 0x1002;  // ARCH_SET_FS

// ---- glibc 2.36 x86-64 layout (see the note above)
namespace off {
constexpr std::size_t tcb = 0x0, dtv = 0x8, self = 0x10, multiple_threads = 0x18, sysinfo = 0x20,
                      stack_guard = 0x28, pointer_guard = 0x30, feature_1 = 0x48, padding = 0x280,
                      mark = 0x2b8,  // tcbhead_t.__padding[7]
    list = 0x2c0, tid = 0x2d0, robust_prev = 0x2d8, robust_head = 0x2e0, cancelhandling = 0x308,
                      specific_1stblock = 0x310, specific = 0x510, specific_used = 0x610,
                      report_events = 0x611, user_stack = 0x612, nextevent = 0x660, stackblock = 0x690,
                      stackblock_size = 0x698, res = 0x6b8, tls_state = 0x900, rseq = 0x920, size = 0x940;
constexpr std::size_t res_size = 568;  // sizeof(struct __res_state)
}  // namespace off
constexpr std::size_t kKeys = 1024, kKey2nd = 32, kKey1st = 32, kDestructorRounds = 4;
constexpr int kRseqCpuIdRegistrationFailed = -2;

// The member types between nextevent and rseq_area, laid out again from the
// declaration of struct pthread: checked against the offsets above, and in
// turn against __rseq_offset and thread_db's sizeof.
constexpr std::size_t up(std::size_t v, std::size_t a) { return (v + a - 1) / a * a; }
constexpr std::size_t k_exc = up(off::nextevent + 8, 16);                 // struct _Unwind_Exception, 32 B
constexpr std::size_t k_stackblock = k_exc + 32;                          // void*, then size_t x3, tpp
constexpr std::size_t k_res = k_stackblock + 5 * 8;                       // struct __res_state
constexpr std::size_t k_tls_state = up(k_res + off::res_size + 8 + 2, 4) + 4;  // sigmask, c11, exiting, exit_lock
constexpr std::size_t k_rseq = up(up(k_tls_state, 8) + 16, 32);           // struct rseq, aligned 32
static_assert(k_stackblock == off::stackblock && k_res == off::res && up(k_tls_state, 8) == off::tls_state &&
              k_rseq == off::rseq && up(k_rseq + 32, 64) == off::size);

template <class T>
T& at(void* base, std::ptrdiff_t o) noexcept {
    return *reinterpret_cast<T*>(static_cast<char*>(base) + o);
}

// Our mark in a block's tcbhead_t.__padding[7].
constexpr std::uintptr_t kMark = 0x67736e746c730000ULL;  // "gsntls"
constexpr std::uintptr_t kMarkMalloced = 1, kMarkExited = 2;

struct KeyStruct {
    std::uintptr_t seq;
    void (*destr)(void*);
};
struct KeyData {
    std::uintptr_t seq;
    void* data;
};

// ---- what supported() finds
struct State {
    bool ok = false;
    char reason[200] = "";
    ThreadTls::Info info{};
    void* (*allocate_tls)(void*) = nullptr;
    void (*deallocate_tls)(void*, bool) = nullptr;
    void (*call_tls_dtors)() = nullptr;
    void (*ctype_init)() = nullptr;
    void (*res_nclose)(void*) = nullptr;
    KeyStruct* keys = nullptr;
    std::ptrdiff_t resp_offset = 0;  // of __resp, from the TP
    std::ptrdiff_t ctype_offset[3] = {};  // of libc's per-thread ctype table pointers (b, toupper, tolower)
    void* (*glibc_malloc)(std::size_t) = nullptr;
    void (*glibc_free)(void*) = nullptr;
    void* const* stack_end = nullptr;
    const unsigned* rseq_size = nullptr;
};
State g;

struct Inherited {
    std::ptrdiff_t offset;
    std::size_t size;
};
Inherited g_inherited[16];
int g_n_inherited = 0;

bool fail(const char* fmt, ...) __attribute__((format(printf, 1, 2)));
bool fail(const char* fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    std::vsnprintf(g.reason, sizeof g.reason, fmt, ap);
    va_end(ap);
    return false;
}

void* libc_sym(void* libc, const char* name, const char* version) noexcept {
    return dlvsym(libc, name, version);
}

// A thread_db descriptor: {bits, count, offset}.
bool db_field(void* libc, const char* name, std::uint32_t want_off, std::uint32_t want_bits = 0) {
    auto* d = static_cast<const std::uint32_t*>(libc_sym(libc, name, "GLIBC_PRIVATE"));
    if (!d) return fail("%s not found", name);
    if (d[2] != want_off || (want_bits && d[0] != want_bits))
        return fail("%s: offset %#x (expected %#x)", name, d[2], want_off);
    return true;
}

// Reads n bytes at addr without faulting: the kernel copies them into a pipe
// (EFAULT if unreadable).
bool safe_read(std::uintptr_t addr, void* out, std::size_t n) noexcept {
    int fds[2];
    if (raw_syscall(SYS_pipe2, long(fds), O_CLOEXEC) != 0) return false;
    bool ok = raw_syscall(SYS_write, fds[1], long(addr), long(n)) == long(n) &&
              raw_syscall(SYS_read, fds[0], long(out), long(n)) == long(n);
    raw_syscall(SYS_close, fds[0]);
    raw_syscall(SYS_close, fds[1]);
    return ok;
}

__attribute__((noinline)) bool pointer_guard_ok(std::uintptr_t guard) {
    jmp_buf jb;
    volatile char here = 0;
    if (setjmp(jb)) return false;
    auto* w = reinterpret_cast<const std::uintptr_t*>(jb);  // __jmpbuf: rbx rbp r12 r13 r14 r15 rsp pc
    auto demangle = [guard](std::uintptr_t v) { return ((v >> 17) | (v << 47)) ^ guard; };
    std::uintptr_t rsp = demangle(w[6]), pc = demangle(w[7]);
    auto near = [](std::uintptr_t a, std::uintptr_t b) { return (a > b ? a - b : b - a) < 4096; };
    return near(rsp, reinterpret_cast<std::uintptr_t>(&here)) &&
           near(pc, reinterpret_cast<std::uintptr_t>(&pointer_guard_ok));
}

struct LibcTls {
    std::uintptr_t base = 0;  // libc's load address
    char* block = nullptr;    // libc's TLS block in the calling thread
    const char* image = nullptr;
    std::size_t filesz = 0, memsz = 0;
    std::uintptr_t data_lo = 0, data_hi = 0;  // libc's writable segment
};

int find_libc_tls(dl_phdr_info* info, std::size_t, void* arg) {
    auto* l = static_cast<LibcTls*>(arg);
    if (info->dlpi_addr != l->base) return 0;
    l->block = static_cast<char*>(info->dlpi_tls_data);
    for (int i = 0; i < info->dlpi_phnum; ++i) {
        const ElfW(Phdr)& ph = info->dlpi_phdr[i];
        if (ph.p_type == PT_TLS) {
            l->image = reinterpret_cast<const char*>(info->dlpi_addr + ph.p_vaddr);
            l->filesz = ph.p_filesz;
            l->memsz = ph.p_memsz;
        } else if (ph.p_type == PT_LOAD && (ph.p_flags & PF_W)) {
            l->data_lo = info->dlpi_addr + ph.p_vaddr;
            l->data_hi = l->data_lo + ph.p_memsz;
        }
    }
    return 1;
}

// malloc's tcache and thread_arena among libc's __thread words: after
// q = malloc(1100) (too big for the tcache: it comes from the thread's
// arena) and 16 malloc(24)s freed again (one of them is then the head of
// tcache bin 0), the tcache word is the one pointing at a struct whose
// counts[0] >= 1 and entries[0] (at +128: 64 uint16 counts first) is one of
// those chunks; the arena word
// is the one holding q's arena (a non-main arena: heap_info.ar_ptr at the
// 64 MiB-aligned start of q's heap; the main arena: the only word, changed
// since the TLS image, that points into libc's writable data). Both must be
// unique. Uses glibc's malloc directly, whoever interposes malloc.
bool find_malloc_state(char* tp) {
    Dl_info di;
    if (!dladdr(reinterpret_cast<void*>(g.glibc_malloc), &di)) return fail("dladdr(malloc) failed");
    LibcTls l;
    l.base = reinterpret_cast<std::uintptr_t>(di.dli_fbase);
    dl_iterate_phdr(find_libc_tls, &l);
    if (!l.block || !l.memsz) return fail("libc's TLS block not found");
    if (l.block < tp - g.info.static_size || l.block + l.memsz > tp) return fail("libc's TLS is not static TLS");
    void* q = g.glibc_malloc(1100);
    // Small chunks taken and given back: the first ones take what tcache
    // bin 0 holds (up to tcache_count, 7 by default), so the frees find
    // room there whatever the program left in it; its head is then one of
    // ours (which one depends on tcache_count).
    constexpr int kSmall = 16;
    void* small[kSmall];
    for (void*& p : small)
        if (!(p = g.glibc_malloc(24))) return fail("malloc failed");
    if (!q) return fail("malloc failed");
    for (void* p : small) g.glibc_free(p);
    auto ours = [&](void* e) { return std::find(std::begin(small), std::end(small), e) != std::end(small); };
    // The word's struct has one of our chunks at the head of bin 0 ...
    auto holds_ours = [&](std::uintptr_t v) {
        unsigned char buf[136];
        if (!safe_read(v, buf, sizeof buf)) return false;
        std::uint16_t count0;
        void* entry0;
        std::memcpy(&count0, buf, 2);
        std::memcpy(&entry0, buf + 128, 8);
        return count0 >= 1 && ours(entry0);
    };
    // ... or, when the bin was full of chunks malloc had moved there from a
    // fastbin while ours were taken (so ours went back to the fastbin), the
    // shape of a tcache_perthread_struct: a heap chunk of 0x290 bytes whose
    // 64 counts and entries agree (a bin has entries exactly when it has a
    // count, and each entry is a chunk of its bin's size).
    auto looks_like_tcache = [&](std::uintptr_t v) {
        std::uint64_t hdr;
        std::uint16_t counts[64];
        std::uintptr_t entries[64];
        if (!safe_read(v - 8, &hdr, 8) || (hdr & ~std::uint64_t(7)) != 0x290) return false;
        if (!safe_read(v, counts, sizeof counts) || !safe_read(v + sizeof counts, entries, sizeof entries))
            return false;
        int filled = 0;
        for (int i = 0; i < 64; ++i) {
            if (!counts[i] != !entries[i]) return false;
            if (!entries[i]) continue;
            std::uint64_t size;
            if ((entries[i] & 15) || !safe_read(entries[i] - 8, &size, 8)) return false;
            if ((size & ~std::uint64_t(7)) != std::uint64_t(32 + 16 * i)) return false;
            ++filled;
        }
        return filled > 0;
    };
    std::uintptr_t qsize = reinterpret_cast<std::uintptr_t*>(q)[-1];
    bool main_arena = !(qsize & 4);  // NON_MAIN_ARENA
    std::uintptr_t arena =
        main_arena ? 0 : *reinterpret_cast<std::uintptr_t*>(reinterpret_cast<std::uintptr_t>(q) & ~((std::uintptr_t(64) << 20) - 1));
    g.glibc_free(q);
    int n_tc = 0, n_ar = 0;
    std::ptrdiff_t tc = 0, ar = 0;
    for (std::size_t o = 0; o + 8 <= l.memsz; o += 8) {
        std::uintptr_t v = at<std::uintptr_t>(l.block, o);
        std::uintptr_t img = 0;
        if (o + 8 <= l.filesz) std::memcpy(&img, l.image + o, 8);
        if (!v) continue;
        if (!(v & 15) && (holds_ours(v) || looks_like_tcache(v))) {
            ++n_tc;
            tc = l.block + o - tp;
            continue;
        }
        if (v == img) continue;
        if (main_arena ? (v >= l.data_lo && v < l.data_hi) : v == arena) {
            ++n_ar;
            ar = l.block + o - tp;
        }
    }
    if (n_tc != 1 || n_ar != 1)
        return fail("malloc's per-thread state not found in libc's TLS (%d tcache and %d arena candidates)", n_tc, n_ar);
    g.info.tcache_offset = tc;
    g.info.arena_offset = ar;
    g.info.malloc_shared = true;
    return true;
}

// The layout facts that can be seen in the running thread's own TCB.
bool check_thread() {
    char* tp = reinterpret_cast<char*>(ThreadTls::current());
    if (at<char*>(tp, off::tcb) != tp || at<char*>(tp, off::self) != tp) return fail("the TCB's self pointers are not at 0x0/0x10");
    if (!at<void*>(tp, off::dtv)) return fail("no DTV at 0x8");
    long tid = raw_syscall(SYS_gettid);
    if (at<int>(tp, off::tid) != tid) return fail("the tid at %#zx is not gettid()", off::tid);
    for (std::size_t o = off::padding; o < off::list; o += 8)
        if (at<std::uintptr_t>(tp, o) != 0) return fail("tcbhead_t.__padding is in use");
    if (at<char*>(tp, off::specific) != tp + off::specific_1stblock) return fail("specific[0] is not &specific_1stblock");
    if (at<long>(tp, off::robust_head + 8) != -32) return fail("robust_head.futex_offset is not -32");
    if (tid == raw_syscall(SYS_getpid)) {
        if (at<void*>(tp, off::stackblock_size) != *g.stack_end) return fail("stackblock_size is not __libc_stack_end");
    } else {
        char* sb = at<char*>(tp, off::stackblock);
        if (!at<bool>(tp, off::user_stack) && !(sb && tp > sb && tp < sb + at<std::size_t>(tp, off::stackblock_size)))
            return fail("the TCB is not in its stack block");
        if (at<char*>(tp, g.resp_offset) != tp + off::res) return fail("__resp is not &res");
    }
    if (*g.rseq_size > 0) {
        bool same = false;
        for (int i = 0; i < 5 && !same; ++i) {
            unsigned cpu = ~0u;
            raw_syscall(SYS_getcpu, long(&cpu), 0, 0);
            same = at<int>(tp, off::rseq + 4) == int(cpu);
        }
        if (!same) return fail("rseq_area.cpu_id is not the current CPU");
    }
    std::uintptr_t guard;
    __asm__ volatile("mov %%fs:0x30, %0" : "=r"(guard));
    if (!pointer_guard_ok(guard)) return fail("the pointer guard is not at %%fs:0x30");
    return true;
}

bool check() {
    if (ThreadTls::sanitizer_loaded())
        return fail("a sanitizer runtime is loaded (it keeps its thread state in its own TLS)");
    const char* v = gnu_get_libc_version();
    g.info.glibc_version = v;
    if (std::strcmp(v, "2.36") != 0) return fail("glibc %s (the TCB layout is verified for 2.36 only)", v);
    void* libc = dlopen("libc.so.6", RTLD_NOW | RTLD_NOLOAD);
    if (!libc) return fail("libc.so.6 not found");
    g.allocate_tls = reinterpret_cast<void* (*)(void*)>(dlvsym(RTLD_DEFAULT, "_dl_allocate_tls", "GLIBC_PRIVATE"));
    g.deallocate_tls =
        reinterpret_cast<void (*)(void*, bool)>(dlvsym(RTLD_DEFAULT, "_dl_deallocate_tls", "GLIBC_PRIVATE"));
    auto static_info = reinterpret_cast<void (*)(std::size_t*, std::size_t*)>(
        dlvsym(RTLD_DEFAULT, "_dl_get_tls_static_info", "GLIBC_PRIVATE"));
    if (!g.allocate_tls || !g.deallocate_tls || !static_info)
        return fail("_dl_allocate_tls/_dl_deallocate_tls/_dl_get_tls_static_info not found");
    g.call_tls_dtors = reinterpret_cast<void (*)()>(libc_sym(libc, "__call_tls_dtors", "GLIBC_PRIVATE"));
    g.ctype_init = reinterpret_cast<void (*)()>(libc_sym(libc, "__ctype_init", "GLIBC_PRIVATE"));
    g.keys = static_cast<KeyStruct*>(libc_sym(libc, "__pthread_keys", "GLIBC_PRIVATE"));
    g.res_nclose = reinterpret_cast<void (*)(void*)>(libc_sym(libc, "__res_nclose", "GLIBC_2.2.5"));
    auto* resp = static_cast<char*>(libc_sym(libc, "__resp", "GLIBC_PRIVATE"));
    g.glibc_malloc = reinterpret_cast<void* (*)(std::size_t)>(libc_sym(libc, "malloc", "GLIBC_2.2.5"));
    g.glibc_free = reinterpret_cast<void (*)(void*)>(libc_sym(libc, "free", "GLIBC_2.2.5"));
    if (!g.call_tls_dtors || !g.ctype_init || !g.keys || !g.res_nclose || !resp || !g.glibc_malloc || !g.glibc_free)
        return fail("a GLIBC_PRIVATE symbol of libc is missing (__call_tls_dtors, __ctype_init, __pthread_keys, __resp)");
    auto* rseq_offset = static_cast<const std::ptrdiff_t*>(dlvsym(RTLD_DEFAULT, "__rseq_offset", "GLIBC_2.35"));
    auto* rseq_size = static_cast<const unsigned*>(dlvsym(RTLD_DEFAULT, "__rseq_size", "GLIBC_2.35"));
    auto* stack_end = static_cast<void* const*>(dlvsym(RTLD_DEFAULT, "__libc_stack_end", "GLIBC_2.2.5"));
    if (!rseq_offset || !rseq_size || !stack_end) return fail("__rseq_offset/__rseq_size/__libc_stack_end not found");

    // glibc's descriptions of struct pthread.
    if (!db_field(libc, "_thread_db_pthread_dtvp", off::dtv, 64) || !db_field(libc, "_thread_db_pthread_list", off::list) ||
        !db_field(libc, "_thread_db_pthread_tid", off::tid, 32) ||
        !db_field(libc, "_thread_db_pthread_cancelhandling", off::cancelhandling, 32) ||
        !db_field(libc, "_thread_db_pthread_specific", off::specific, 64 * kKey1st) ||
        !db_field(libc, "_thread_db_pthread_report_events", off::report_events, 8) ||
        !db_field(libc, "_thread_db_pthread_nextevent", off::nextevent, 64) ||
        !db_field(libc, "_thread_db_pthread_key_struct_seq", 0, 64) ||
        !db_field(libc, "_thread_db_pthread_key_struct_destr", 8, 64))
        return false;
    auto* db_keys = static_cast<const std::uint32_t*>(libc_sym(libc, "_thread_db___pthread_keys", "GLIBC_PRIVATE"));
    auto* db_size = static_cast<const std::uint32_t*>(libc_sym(libc, "_thread_db_sizeof_pthread", "GLIBC_PRIVATE"));
    if (!db_keys || db_keys[1] != kKeys || db_keys[0] != 128) return fail("__pthread_keys is not 1024 x 16 bytes");
    if (!db_size || *db_size != off::size) return fail("sizeof(struct pthread) is not %#zx", off::size);
    if (*rseq_offset != std::ptrdiff_t(off::rseq)) return fail("__rseq_offset %#tx, expected %#zx", *rseq_offset, off::rseq);
    static_info(&g.info.static_size, &g.info.static_align);
    g.info.tcb_size = off::size;
    g.info.block_bytes = g.info.static_size + g.info.static_align + sizeof(void*);
    if (g.info.static_size < off::size || g.info.static_align < 64 || (g.info.static_align & (g.info.static_align - 1)))
        return fail("static TLS size %zu / align %zu", g.info.static_size, g.info.static_align);

    // The running thread.
    char* tp = reinterpret_cast<char*>(ThreadTls::current());
    g.resp_offset = resp - tp;
    if (g.resp_offset >= 0 || std::size_t(-g.resp_offset) > g.info.static_size) return fail("__resp is not in static TLS");
    // The ctype table pointers __ctype_init sets for a new thread (their
    // addresses are public: __ctype_b_loc & co.).
    const void* ctype_loc[3] = {__ctype_b_loc(), __ctype_toupper_loc(), __ctype_tolower_loc()};
    for (int i = 0; i < 3; ++i) {
        g.ctype_offset[i] = static_cast<const char*>(ctype_loc[i]) - tp;
        if (g.ctype_offset[i] >= 0 || std::size_t(-g.ctype_offset[i]) > g.info.static_size)
            return fail("libc's ctype pointers are not in static TLS");
    }
    g.stack_end = stack_end;
    g.rseq_size = rseq_size;
    if (!check_thread()) return false;

    // malloc's per-thread state. Under valgrind, malloc is valgrind's.
    if (!RUNNING_ON_VALGRIND && !find_malloc_state(tp)) return false;

    // The switch: wrfsbase if the kernel enables it (valgrind hides the bit
    // and traps the instruction).
    constexpr unsigned long kHwcap2FsGsBase = 1ul << 1;
    g.info.wrfsbase = (getauxval(AT_HWCAP2) & kHwcap2FsGsBase) && !RUNNING_ON_VALGRIND;
    if (g.info.wrfsbase) __asm__ volatile("wrfsbase %0" : : "r"(tp) : "memory");  // the same value: a no-op
    g_tls_wrfsbase = g.info.wrfsbase;
    return true;
}

// Runs fn with t current. fn is called, never inlined, so no TLS address is
// computed in this frame between the two switches.
__attribute__((noinline)) void run_in(ThreadTls* t, void (*fn)()) noexcept {
    ThreadTls* back = ThreadTls::current();
    ThreadTls::switch_to(t);
    fn();
    ThreadTls::switch_to(back);
}

void ensure_tcache() { g.glibc_free(g.glibc_malloc(24)); }

// The arena of every block (the note: malloc's state), once glibc has picked
// it. Process-wide: blocks of two OS threads may share it (its lock).
std::atomic<void*> g_thread_arena{nullptr};

// Past the tcache's largest size (1,032 B) and below mmap's threshold: malloc
// asks the block's arena, and with none, picks one (arena_get2).
void first_arena_malloc() { g.glibc_free(g.glibc_malloc(4096)); }

// The arena for block p (t), which is set up but for that word.
void* thread_arena_for(ThreadTls* t, char* p) noexcept {
    if (void* a = g_thread_arena.load(std::memory_order_acquire)) return a;
    at<void*>(p, g.info.arena_offset) = nullptr;  // as a new thread's: glibc picks at its first malloc
    run_in(t, first_arena_malloc);
    void* a = at<void*>(p, g.info.arena_offset);
    void* none = nullptr;
    if (!g_thread_arena.compare_exchange_strong(none, a, std::memory_order_acq_rel)) a = none;
    return a;
}

ThreadTls* finish_create(char* p, bool malloced) noexcept {
    char* cur = reinterpret_cast<char*>(ThreadTls::current());
    at<char*>(p, off::tcb) = p;
    at<char*>(p, off::self) = p;
    at<int>(p, off::multiple_threads) = 1;
    at<std::uintptr_t>(p, off::sysinfo) = at<std::uintptr_t>(cur, off::sysinfo);
    at<std::uintptr_t>(p, off::stack_guard) = at<std::uintptr_t>(cur, off::stack_guard);
    at<std::uintptr_t>(p, off::pointer_guard) = at<std::uintptr_t>(cur, off::pointer_guard);
    at<unsigned>(p, off::feature_1) = at<unsigned>(cur, off::feature_1);
    at<std::uintptr_t>(p, off::mark) = kMark | (malloced ? kMarkMalloced : 0);
    at<char*>(p, off::list) = p + off::list;  // an empty list: fork's list_del is a no-op
    at<char*>(p, off::list + 8) = p + off::list;
    at<int>(p, off::tid) = at<int>(cur, off::tid);
    at<char*>(p, off::robust_prev) = p + off::robust_head;
    at<char*>(p, off::robust_head) = p + off::robust_head;
    at<long>(p, off::robust_head + 8) = at<long>(cur, off::robust_head + 8);
    at<void*>(p, off::robust_head + 16) = nullptr;
    at<char*>(p, off::specific) = p + off::specific_1stblock;
    at<bool>(p, off::user_stack) = true;
    at<std::uint32_t>(p, off::rseq) = 0;                              // cpu_id_start
    at<int>(p, off::rseq + 4) = kRseqCpuIdRegistrationFailed;         // cpu_id
    at<char*>(p, g.resp_offset) = p + off::res;          // (offsets below the TP wrap: fine)
    if (g.info.malloc_shared) {
        if (!at<void*>(cur, g.info.tcache_offset)) ensure_tcache();
        at<void*>(p, g.info.tcache_offset) = at<void*>(cur, g.info.tcache_offset);
    }
    for (int i = 0; i < g_n_inherited; ++i)
        std::memcpy(p + g_inherited[i].offset, cur + g_inherited[i].offset, g_inherited[i].size);
    auto* t = reinterpret_cast<ThreadTls*>(p);
    if (g.info.malloc_shared) at<void*>(p, g.info.arena_offset) = thread_arena_for(t, p);
    // start_thread's __ctype_init: the global locale's tables. A creator on
    // the global locale has them already (two words to copy, not two
    // switches and a call).
    if (uselocale(nullptr) == LC_GLOBAL_LOCALE) {
        for (std::ptrdiff_t o : g.ctype_offset) at<const void*>(p, o) = at<const void*>(cur, o);
    } else {
        run_in(t, g.ctype_init);
    }
    at<int>(cur, off::multiple_threads) = 1;
    process_has_threads();
    return t;
}

std::once_flag g_once;

}  // namespace

void tls_set_fs_syscall(void* tp) noexcept { raw_syscall(SYS_arch_prctl, kArchSetFs, long(tp)); }

// glibc (2.34 on) installs its SIGSETXID and SIGCANCEL handlers at the first
// pthread_create of a process it believes single-threaded (late_init), which
// it tells by __libc_single_threaded (2.36: the same variable). Cleared by
// us first, it never did: a setgid() made while a carrier OS thread was
// alive killed the process with SIGRT_1 (33), glibc's broadcast of the new
// ids finding no handler. So libc's pthread_create (ours would make a
// greenlet) is called first, asking for a stack of 2^62 bytes: its deferred
// set-up runs first thing, then the stack's mmap fails (no address space is
// that large) and it returns EAGAIN, no thread made (a real one, made and
// joined, showed as a second OS thread to greenrun --compare's sampler).
void process_has_threads() noexcept {
    static std::once_flag once;
    std::call_once(once, [] {
        if (!__libc_single_threaded) return;  // (a real thread ran already: glibc cleared it)
        using Create = int (*)(pthread_t*, const pthread_attr_t*, void* (*)(void*), void*);
        using Join = int (*)(pthread_t, void**);
        int saved_errno = errno;  // (the failed mmap sets it; create() keeps the caller's)
        auto create = reinterpret_cast<Create>(dlsym(RTLD_NEXT, "pthread_create"));
        auto join = reinterpret_cast<Join>(dlsym(RTLD_NEXT, "pthread_join"));
        pthread_attr_t attr;
        pthread_attr_init(&attr);
        pthread_t th;
        if (create && join && pthread_attr_setstacksize(&attr, std::size_t(1) << 62) == 0 &&
            create(&th, &attr, [](void*) -> void* { return nullptr; }, nullptr) == 0)
            join(th, nullptr);  // (made after all: gone again)
        pthread_attr_destroy(&attr);
        errno = saved_errno;
    });
    __libc_single_threaded = 0;
}

bool ThreadTls::supported() noexcept {
    std::call_once(g_once, [] { g.ok = check(); });
    return g.ok;
}

const char* ThreadTls::unsupported_reason() noexcept { return supported() ? "" : g.reason; }

const ThreadTls::Info& ThreadTls::info() noexcept {
    supported();
    return g.info;
}

ThreadTls* ThreadTls::create() noexcept {
    if (!supported()) return nullptr;
    auto* p = static_cast<char*>(g.allocate_tls(nullptr));
    if (!p) return nullptr;
    return finish_create(p, true);
}

std::size_t ThreadTls::bytes_for_create_in() noexcept {
    supported();
    return g.info.static_size + g.info.static_align;
}

ThreadTls* ThreadTls::create_in(void* mem, std::size_t size) noexcept {
    if (!supported() || size < bytes_for_create_in()) return nullptr;
    auto top = reinterpret_cast<std::uintptr_t>(mem) + size;
    auto* p = reinterpret_cast<char*>((top - off::size) & ~(g.info.static_align - 1));
    std::memset(p, 0, off::size);
    if (!g.allocate_tls(p)) return nullptr;
    return finish_create(p, false);
}

void ThreadTls::set_stack(void* bottom, std::size_t size) noexcept {
    at<void*>(this, off::stackblock) = bottom;
    at<std::size_t>(this, off::stackblock_size) = size;
}

void ThreadTls::exit_duties() noexcept {
    if (current() != this) {
        std::fputs("greenshim: ThreadTls::exit_duties() called for a block that is not current\n", stderr);
        std::abort();
    }
    std::uintptr_t& mark = at<std::uintptr_t>(this, off::mark);
    if (mark & kMarkExited) return;
    // C++ thread_local destructors (glibc's order: the reverse of construction).
    g.call_tls_dtors();
    // glibc's own pthread keys, as __nptl_deallocate_tsd does (nothing to do
    // unless a key was ever set).
    bool& used = at<bool>(this, off::specific_used);
    if (used) {
        auto** specific = &at<KeyData*>(this, off::specific);
        for (std::size_t round = 0; used && round < kDestructorRounds; ++round) {
            used = false;
            for (std::size_t i = 0; i < kKey1st; ++i) {
                KeyData* level2 = specific[i];
                if (!level2) continue;
                for (std::size_t j = 0; j < kKey2nd; ++j) {
                    void* data = level2[j].data;
                    if (!data) continue;
                    level2[j].data = nullptr;
                    const KeyStruct& k = g.keys[i * kKey2nd + j];
                    if (level2[j].seq == k.seq && k.destr) k.destr(data);
                }
            }
        }
        std::memset(&at<char>(this, off::specific_1stblock), 0, kKey2nd * sizeof(KeyData));
        for (std::size_t i = 1; i < kKey1st; ++i) {
            std::free(specific[i]);
            specific[i] = nullptr;
        }
        used = false;
    }
    // What __libc_thread_freeres frees: a pending dlerror() result (the
    // second call frees one the first returned), the resolver state of a
    // thread that used res_ninit, the strsignal/strerror buffers.
    if (dlerror()) dlerror();
    if (at<int>(this, off::res + 16) != 0) g.res_nclose(&at<char>(this, off::res));  // nscount
    std::free(at<void*>(this, off::tls_state));
    std::free(at<void*>(this, off::tls_state + 8));
    at<void*>(this, off::tls_state) = at<void*>(this, off::tls_state + 8) = nullptr;
    mark |= kMarkExited;
}

void ThreadTls::destroy(ThreadTls* t) noexcept {
    if (!t) return;
    if (current() == t) {
        std::fputs("greenshim: ThreadTls::destroy() of the current block\n", stderr);
        std::abort();
    }
    // A fork from this thread put the block on glibc's list of threads in the
    // child: take it off.
    auto** list = &at<char*>(t, off::list);
    if (list[0] != reinterpret_cast<char*>(list)) {
        at<char*>(list[0], 8) = list[1];  // next->prev = prev
        at<char*>(list[1], 0) = list[0];  // prev->next = next
    }
    bool malloced = at<std::uintptr_t>(t, off::mark) & kMarkMalloced;
    g.deallocate_tls(t, malloced);
}

bool ThreadTls::inherit(const void* tls_var, std::size_t size) noexcept {
    if (!supported() || g_n_inherited == 16) return false;
    auto* tp = reinterpret_cast<const char*>(current());
    auto* v = static_cast<const char*>(tls_var);
    if (v < tp - g.info.static_size + g.info.tcb_size || v + size > tp) return false;
    g_inherited[g_n_inherited++] = {v - tp, size};
    return true;
}

void ThreadTls::copy_tid(ThreadTls* to, const ThreadTls* from) noexcept {
    at<int>(reinterpret_cast<char*>(to), off::tid) = at<int>(reinterpret_cast<char*>(const_cast<ThreadTls*>(from)), off::tid);
}

void ThreadTls::lend(ThreadTls* t, Lent& saved) noexcept {
    char* p = reinterpret_cast<char*>(t);
    char* cur = reinterpret_cast<char*>(current());
    saved.tid = at<int>(p, off::tid);
    at<int>(p, off::tid) = at<int>(cur, off::tid);
    if (g.info.malloc_shared) {
        if (!at<void*>(cur, g.info.tcache_offset)) ensure_tcache();  // (and picks this thread's arena)
        saved.tcache = at<void*>(p, g.info.tcache_offset);
        at<void*>(p, g.info.tcache_offset) = at<void*>(cur, g.info.tcache_offset);
        saved.arena = at<void*>(p, g.info.arena_offset);
        if (void* mine = at<void*>(cur, g.info.arena_offset)) at<void*>(p, g.info.arena_offset) = mine;
    }
}

void ThreadTls::give_back(ThreadTls* t, const Lent& saved) noexcept {
    char* p = reinterpret_cast<char*>(t);
    at<int>(p, off::tid) = saved.tid;
    if (g.info.malloc_shared) {
        at<void*>(p, g.info.tcache_offset) = saved.tcache;
        at<void*>(p, g.info.arena_offset) = saved.arena;
    }
}

namespace {
struct OwnTls {
    bool ok = false;
    std::ptrdiff_t offset = 0;  // of this library's TLS block, from the TP
    std::size_t size = 0;
};
OwnTls g_own_tls;
std::once_flag g_own_tls_once;
}  // namespace

bool ThreadTls::own_tls_found() noexcept {
    std::call_once(g_own_tls_once, [] {
        if (!supported()) return;
        Dl_info di;
        if (!dladdr(reinterpret_cast<void*>(&ThreadTls::own_tls_found), &di)) return;
        LibcTls l;  // (the same walk as for libc's block, over this library)
        l.base = reinterpret_cast<std::uintptr_t>(di.dli_fbase);
        dl_iterate_phdr(find_libc_tls, &l);
        char* tp = reinterpret_cast<char*>(current());
        if (!l.block || !l.memsz || l.block < tp - g.info.static_size + g.info.tcb_size || l.block + l.memsz > tp) return;
        g_own_tls = {true, l.block - tp, l.memsz};
    });
    return g_own_tls.ok;
}

bool ThreadTls::in_static_tls(const ThreadTls* block, const void* p) noexcept {
    auto* tp = reinterpret_cast<const char*>(block);
    auto* v = static_cast<const char*>(p);
    return supported() && v >= tp - g.info.static_size + g.info.tcb_size && v < tp;
}

void ThreadTls::stand_in(ThreadTls* to, const ThreadTls* from) noexcept {
    char* p = reinterpret_cast<char*>(to);
    const char* f = reinterpret_cast<const char*>(from);
    at<int>(p, off::tid) = at<int>(const_cast<char*>(f), off::tid);
    if (g.info.malloc_shared) {
        at<void*>(p, g.info.tcache_offset) = at<void*>(const_cast<char*>(f), g.info.tcache_offset);
        at<void*>(p, g.info.arena_offset) = at<void*>(const_cast<char*>(f), g.info.arena_offset);
    }
    std::memcpy(p + g_own_tls.offset, f + g_own_tls.offset, g_own_tls.size);
}

void ThreadTls::rehome(ThreadTls* t) noexcept {
    char* p = reinterpret_cast<char*>(t);
    char* cur = reinterpret_cast<char*>(current());
    at<int>(p, off::tid) = at<int>(cur, off::tid);
    if (g.info.malloc_shared) {
        if (!at<void*>(cur, g.info.tcache_offset)) ensure_tcache();
        at<void*>(p, g.info.tcache_offset) = at<void*>(cur, g.info.tcache_offset);
    }
    for (int i = 0; i < g_n_inherited; ++i)
        std::memcpy(p + g_inherited[i].offset, cur + g_inherited[i].offset, g_inherited[i].size);
}

bool ThreadTls::sanitizer_loaded() noexcept {
    return dlsym(RTLD_DEFAULT, "__asan_init") || dlsym(RTLD_DEFAULT, "__tsan_init") ||
           dlsym(RTLD_DEFAULT, "__msan_init");
}

bool ThreadTls::verify_running_thread() noexcept { return supported() && check_thread(); }

void ThreadTls::force_syscall_switch(bool on) noexcept { g_tls_wrfsbase = on ? false : info().wrfsbase; }

}  // namespace greenshim::detail
