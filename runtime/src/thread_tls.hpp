// Per-thread TLS for greenlet threads (issue 13): a static TLS block, a DTV
// and a TCB (glibc's struct pthread) for each greenlet thread, allocated as
// glibc allocates them for a new thread, and a cheap switch of the thread
// pointer (the FS base) between them. The design note, with every glibc fact
// relied on, is at the top of thread_tls.cpp.
//
// Life of a block, all on the OS thread that made it:
//
//   if (!ThreadTls::supported()) { warn once: ThreadTls::unsupported_reason(); share TLS }
//   ThreadTls* t = ThreadTls::create();        // by the creating thread (its TLS current)
//   t->set_stack(bottom, size);                // optional: the thread's stack, for glibc's alloca limit
//   ThreadTls::switch_to(t);                   // right before the context switch into the thread
//   ...                                        // the thread runs: __thread, errno, keys... are its own
//   ThreadTls::switch_to(os);                  // right before switching away (os = the OS thread's block,
//                                              //  ThreadTls::current() taken before the first switch)
//   t->exit_duties();                          // at thread exit, with t current: thread_local dtors, keys
//   ThreadTls::destroy(t);                     // with t NOT current (free()s the block and the DTV)
//
// Costs (tests/bench/bench_thread_tls.cpp on this 2-core VM, glibc 2.36; two
// runs, the spread shown):
//   switch_to       one `wrfsbase` when the kernel allows it (HWCAP2_FSGSBASE):
//                   +12-16 ns per switch on top of a 5-7 ns fiber switch (it
//                   is not free here: skip it when the target's block is the
//                   current one). Else an arch_prctl(ARCH_SET_FS) system call:
//                   +160-230 ns (always under valgrind, which hides HWCAP2 and
//                   traps wrfsbase).
//   create+destroy  120-180 ns: glibc mallocs static TLS + TCB (4,224 B for a
//                   C program: _dl_get_tls_static_info) and callocs the DTV,
//                   clears the TCB and copies the TLS images; then ~25 words
//                   of the TCB are set here. A whole fiber "thread" with its
//                   own block and exit duties: 190-580 ns, against 31 ns with
//                   shared TLS (5.3M/s at best, 1.7M/s at worst: far above
//                   issue 13's 500k thread create+join per second).
//   memory          4,624 B of heap per block for a C program (static TLS +
//                   TCB + alignment + the DTV), all of it touched in practice
//                   (RSS: 4,631 B per parked block); create_in() at the top of
//                   an 8 KiB mapping touches one page. Plus what the thread
//                   itself allocates (dynamic TLS of dlopen'ed modules on
//                   first use, glibc's keys past the 32nd).
//   current()       one load from %fs:0.
//
// Caveats (details in thread_tls.cpp):
//  * A block belongs to the OS thread that made it (its tid and malloc
//    tcache are that thread's): switch to it on another OS thread only
//    after lend() (a carrier, carrier.cpp), and give_back() before it runs
//    on its own again.
//  * The compiler may keep the thread pointer (and TLS addresses made from it)
//    in a register across switch_to(): switch right before the stack switch
//    and touch no thread_local between the two. Each greenlet thread always
//    runs with its own block, so what its frames cached stays right.
//  * glibc malloc's tcache is shared by all blocks of one OS thread (copied
//    from the creator): greenlets of one OS thread never run malloc
//    concurrently, and an exiting thread has no tcache to free (glibc 2.36
//    exports no way to free one). Every block allocates from one thread
//    arena, the one glibc picks for the first (not the main thread's: there
//    calloc clears memory a thread arena leaves untouched; thread_tls.cpp).
//  * Not under AddressSanitizer (unsupported: ASan keeps its thread state in
//    its own TLS). Under valgrind, the arch_prctl switch.
//  * fork() from a thread with its own block: see thread_tls.cpp ("fork").
#pragma once

#include <cstddef>
#include <cstdint>

namespace greenshim::detail {

// true when wrfsbase may be used (set once by ThreadTls::supported()).
extern bool g_tls_wrfsbase;
// Switches with the arch_prctl system call (out of line).
void tls_set_fs_syscall(void* tp) noexcept;
// Greenlet::process_has_threads (create() calls it).
void process_has_threads() noexcept;

class ThreadTls {
public:
    // The start-up checks (glibc version and symbols, the TCB layout, each
    // checked against the running thread), done once; thread-safe. Calls
    // malloc and dlsym: not from inside malloc. The first call must run on an
    // OS thread's own TLS (before any block exists, that is always so).
    static bool supported() noexcept;
    // Why not, as one line ("" when supported).
    static const char* unsupported_reason() noexcept;
    // A sanitizer runtime is loaded (ASan, TSan, MSan keep their thread state
    // in their own TLS): unsupported by design, not by a failed check.
    static bool sanitizer_loaded() noexcept;

    // The per-thread layout checks again, on the running thread (supported()
    // ran them on the thread that called it first): for a real OS thread
    // other than main, say. Only for tests: a failure overwrites the reason.
    static bool verify_running_thread() noexcept;

    // What was found (valid once supported() returned true).
    struct Info {
        const char* glibc_version;
        std::size_t static_size;   // _dl_get_tls_static_info: static TLS + TCB
        std::size_t static_align;
        std::size_t tcb_size;      // sizeof(struct pthread)
        std::size_t block_bytes;   // what create() allocates: static_size + align + 8 (+ the DTV)
        bool wrfsbase;             // the switch uses wrfsbase (else arch_prctl)
        bool malloc_shared;        // glibc malloc is in use: its tcache is shared, its arena a thread arena
        std::ptrdiff_t tcache_offset, arena_offset;  // of malloc's __thread variables, from the TP
    };
    static const Info& info() noexcept;

    // A block for a new thread of the calling thread: what glibc's
    // pthread_create sets up, copied from the calling thread's TCB where glibc
    // copies it (the guards, the tid). nullptr when out of memory or
    // unsupported. create() lets glibc malloc it; create_in() places it at
    // the top of [mem, mem + size) (size >= bytes_for_create_in()), as glibc
    // places it at the top of a thread's stack; the memory must be zeroed
    // (fresh mmap) or at least its top tcb_size bytes are cleared here.
    static ThreadTls* create() noexcept;
    static ThreadTls* create_in(void* mem, std::size_t size) noexcept;
    static std::size_t bytes_for_create_in() noexcept;

    // The stack the thread runs on, recorded where glibc keeps it (glibc sizes
    // its internal alloca()s by it: at most a quarter of it, 64 KiB at most).
    void set_stack(void* bottom, std::size_t size) noexcept;

    // The thread pointer value of this block (its TCB; pthread_self() of the
    // thread while it runs).
    void* thread_pointer() noexcept { return this; }

    // The block of the running thread (%fs:0): the OS thread's own before any
    // switch.
    static ThreadTls* current() noexcept {
        void* tp;
        __asm__ volatile("mov %%fs:0, %0" : "=r"(tp));
        return static_cast<ThreadTls*>(tp);
    }

    // Makes t the running thread's block. The "memory" clobber orders memory
    // accesses, but see the caveat above about cached thread pointers.
    static void switch_to(ThreadTls* t) noexcept {
        if (__builtin_expect(g_tls_wrfsbase, 1))
            __asm__ volatile("wrfsbase %0" : : "r"(t) : "memory");
        else
            tls_set_fs_syscall(t);
    }

    // A thread's exit, as glibc's start_thread ends it; run with this block
    // current (it checks): C++ thread_local destructors (__call_tls_dtors),
    // the destructors of glibc's own pthread keys (up to
    // PTHREAD_DESTRUCTOR_ITERATIONS rounds), then what glibc frees for a thread
    // (its dlerror result, resolver state, strerror/strsignal buffers, the
    // keys' second-level arrays). Idempotent.
    void exit_duties() noexcept;

    // Frees the block (the DTV, dynamic TLS, and the block itself if create()
    // allocated it); t must not be current.
    static void destroy(ThreadTls* t) noexcept;

    // Registers a static-TLS variable (initial-exec: of the program or of a
    // library loaded at start-up) whose value every new block inherits from
    // its creator (the runtime's pointer to its per-OS-thread state, say).
    // At most 16; before the first create(). false if it is not in static TLS.
    static bool inherit(const void* tls_var, std::size_t size) noexcept;

    // The same static-TLS variable as seen by another block (var is its
    // address in the running thread).
    template <class T>
    static T& in(ThreadTls* other, T& var) noexcept {
        auto off = reinterpret_cast<char*>(&var) - reinterpret_cast<char*>(current());
        return *reinterpret_cast<T*>(reinterpret_cast<char*>(other) + off);
    }

    // After fork() in the child, made with the OS thread's block current:
    // the kernel gave that block the child's tid; a block that lives on as
    // the child's (the greenlet that forked) takes it too.
    static void copy_tid(ThreadTls* to, const ThreadTls* from) noexcept;

    // A block run on another OS thread than the one that made it (a carrier,
    // carrier.cpp): lend() gives it the running OS thread's tid and malloc
    // tcache and arena words (so that glibc's owner checks and the tcache,
    // which is never shared between two OS threads, stay right, and the two
    // threads do not contend for one arena's lock), saving its own in
    // `saved`; give_back() puts those back. Both on the carrier, with its own
    // block current and t not running anywhere. Cost: six words.
    struct Lent {
        void* tcache = nullptr;
        void* arena = nullptr;
        int tid = 0;
    };
    static void lend(ThreadTls* t, Lent& saved) noexcept;
    static void give_back(ThreadTls* t, const Lent& saved) noexcept;

    // A block that stands in for another on the same OS thread while that
    // one runs elsewhere (the OS thread's main greenlet, which runs with the
    // OS thread's own block, handed to a carrier: Hub::hand_off_running; the
    // hub goes on with the stand-in). `to` takes `from`'s tid, malloc tcache
    // and arena words and this library's own thread-locals as they are now,
    // so that the hub finds in it what it found in `from`. No allocation and
    // no system call (a signal handler may call it), but own_tls_found()
    // must have returned true first. Cost: a copy of this library's static
    // TLS (a few hundred bytes).
    static void stand_in(ThreadTls* to, const ThreadTls* from) noexcept;
    // Finds this library's static TLS block, for stand_in(): once,
    // thread-safe; calls dladdr and dl_iterate_phdr (not in a signal
    // handler). false when unsupported or not in static TLS.
    static bool own_tls_found() noexcept;
    // Whether p (an address in block's thread-locals, say errno's) is in its
    // static TLS, which every block lays out alike.
    static bool in_static_tls(const ThreadTls* block, const void* p) noexcept;

    // A block made on another OS thread, for a thread that has never run,
    // made the calling OS thread's for good: its tid, its malloc tcache word
    // and the inherited words (inherit()) become the running OS thread's,
    // whose own block (or one of its blocks) must be current. For a thread
    // placed on another hub (Hub::start): the block is made by the creator,
    // which may wait for the allocator's locks, and moved without allocating
    // on the hub that runs it. Cost: a few words; the first call on an OS
    // thread with no tcache yet mallocs once (glibc's malloc).
    static void rehome(ThreadTls* t) noexcept;

    // For the benchmark: switch with arch_prctl even when wrfsbase works.
    static void force_syscall_switch(bool on) noexcept;

    ThreadTls() = delete;
    ThreadTls(const ThreadTls&) = delete;
};

}  // namespace greenshim::detail
