// Threads that never wait: a timer signal on each OS thread that runs
// greenlet threads takes the thread back from one that has run
// GREENSHIM_HANDOFF ms without a switch (shim.hpp, "the program's code and
// the shim's"). Go's sysmon preempts a goroutine that ran 10 ms the same way.
//
// The tick is a POSIX timer (CLOCK_MONOTONIC, SIGEV_THREAD_ID) that fires
// every GREENSHIM_HANDOFF/2 ms on the hub's OS thread, with a signal the shim
// holds (hold_signal: the program's own use of that number is passed on).
// Its handler runs on the OS thread's sigaltstack when it has one, so that
// the common tick (the hub switched since the last one) touches no
// greenlet's stack: a frame there, 1-3 KiB below wherever the tick landed
// (its xsave area included), would keep a page of that stack resident for
// good, and over a few seconds nearly every thread of a busy
// thread-per-connection server would have one more page (echo_threads at
// 1,000 connections: 60% of them after 5 s). Where the tick may take the
// greenlet back, it has to run on the greenlet's stack instead, for its frame
// to stay suspended with the greenlet: it queues its second signal (the
// "rerun", SIGRTMAX-4, installed without SA_ONSTACK) to its own thread, which
// the kernel delivers as the first handler returns, on the interrupted stack.
// (The kernel does not let a handler running on the sigaltstack disable it
// for the return: a restored uc_stack is refused while the sp is on it,
// tried on 6.18.) Each tick compares the hub's
// switch count with the last tick's: unchanged twice in a row means no
// switch for at least GREENSHIM_HANDOFF ms. The greenlet is then taken back
// only where that is safe:
//  - outside every interposer and the runtime (t_shim_depth == 0): the
//    shim's and the runtime's state are never left half-changed;
//  - with its instruction pointer outside libc, the loader, the allocator
//    in use and our own modules: there it may hold a lock of libc's (malloc's
//    arena, the loader's) that the next thread on this OS thread would block
//    on in the kernel;
//  - not inside a signal handler of the program's, not in the hub.
// A greenlet caught elsewhere is looked at again at the next tick.
//
// While the hub sleeps in its poll there is nothing to take back: the tick
// then stops its timer (one timer_settime) and the hub starts it again when
// it next has work (Hub::call_when_back). An idle process gets no ticks. The
// same before a call the shim makes in the kernel because nothing else could
// ever run (pause() with every other thread waiting for a signal, say:
// stall_quiet), which the tick would otherwise interrupt.
//
// Costs: a signal every GREENSHIM_HANDOFF/2 ms while the OS thread runs
// greenlets (~1-2 us each); one timer_settime per busy period that follows
// a sleep of at least half a period.
// What a program may notice: the tick interrupts the program's own system
// calls made without libc's wrappers, like any signal: SA_RESTART is set,
// so the kernel restarts those it restarts for any handler.
#include <dlfcn.h>
#include <sched.h>
#include <link.h>
#include <sys/auxv.h>
#include <signal.h>
#include <sys/syscall.h>
#include <time.h>
#include <ucontext.h>
#include <unistd.h>

#include <cstring>
#include <new>

#include "greenshim/cold.hpp"
#include "greenshim/symbols.hpp"
#include "shim.hpp"


#undef p_type  // resolv.h's (through shim.hpp) renames the ELF field

namespace greenshim::shim {

thread_local int t_shim_depth __attribute__((tls_model("initial-exec"))) = 1;
thread_local bool t_carried __attribute__((tls_model("initial-exec"))) = false;
thread_local bool t_hand_back __attribute__((tls_model("initial-exec"))) = false;

struct StallTicker {
    timer_t timer{};
    bool armed = false;
    std::int64_t period_ns = 0;
    std::uint64_t seen_switches = 0;
    int unchanged = 0;
    std::int64_t cpu_at_switch = 0;  // this OS thread's CPU time at the tick that saw the last switch
};

namespace {
// The tick's signal: SIGRTMAX-3 (the dump has SIGRTMAX-2, the monitor's
// backtrace SIGRTMAX-1), and its rerun's on the interrupted stack, SIGRTMAX-4.
int tick_signal() noexcept { return SIGRTMAX - 3; }
int rerun_signal() noexcept { return SIGRTMAX - 4; }
char g_tick_tag;   // the timer's sigev_value: a tick, not a kill() of the signal
char g_rerun_tag;  // the rerun's sigqueue value
GREENSHIM_STARTUP_DATA bool g_tick_held = false;

// When the current stretch of this greenlet thread on a carrier began.
thread_local std::int64_t t_carried_at __attribute__((tls_model("initial-exec"))) = 0;

// A greenlet thread of the interrupted one: its own, so that a tick that
// lands while it is being taken back (its mask lifted, not yet switched)
// leaves it alone.
thread_local bool t_being_preempted __attribute__((tls_model("initial-exec"))) = false;

// Code where a greenlet may hold a lock that another greenlet thread of the
// same OS thread would wait for in the kernel: libc's and the loader's, the
// allocator's, ours (the runtime, libev, Boost.Context). And the vdso: glibc
// calls it from inside libc's clock_gettime, gettimeofday, time and getcpu,
// so code that holds a lock reaches it too (a preloaded allocator asking the
// time with its lock held: the tick took the thread back in the vdso, and
// the others spun for the lock; tests/threads alloc-spin-lock).
struct Range {
    std::uintptr_t lo, hi;
};
struct Ranges {
    Range* r;
    int cap;
    int n;
    bool has(std::uintptr_t pc) const noexcept {
        for (int i = 0; i < n; ++i)
            if (pc >= r[i].lo && pc < r[i].hi) return true;
        return false;
    }
};
constexpr int kMaxRanges = 24;
Range g_unsafe_r[kMaxRanges];
Ranges g_unsafe{g_unsafe_r, kMaxRanges, 0};
Range g_libc_r[2];
Ranges g_libc{g_libc_r, 2, 0};  // libc's code alone (libc_syscall)
GREENSHIM_STARTUP_DATA Range g_allocator_r[4];
Ranges g_allocator{g_allocator_r, 4, 0};  // written once, by the constructor
// glibc's loader lock (_rtld_global._dl_load_lock), found at the first
// thread (find_load_lock); nullptr if not found: nothing is checked then.
const pthread_mutex_t* g_load_lock = nullptr;

struct ModuleWanted {
    std::uintptr_t pc;
    Ranges* into;
    const ElfW(Phdr)* found;  // the module's program headers: which module it is
};

GREENSHIM_STARTUP_CODE int find_module(struct dl_phdr_info* info, std::size_t, void* arg) {
    auto* w = static_cast<ModuleWanted*>(arg);
    if (!module_holds(info, w->pc)) return 0;
    w->found = info->dlpi_phdr;
    return 1;
}

// The module's code (its executable PT_LOAD segments) into the ranges.
void add_text_of(const struct dl_phdr_info* info, Ranges& into) noexcept {
    for (int i = 0; i < info->dlpi_phnum && into.n < into.cap; ++i) {
        const ElfW(Phdr)& ph = info->dlpi_phdr[i];
        if (ph.p_type != PT_LOAD || !(ph.p_flags & PF_X)) continue;
        std::uintptr_t lo = info->dlpi_addr + ph.p_vaddr;
        if (!into.has(lo)) into.r[into.n++] = {lo, lo + ph.p_memsz};
    }
}

int add_module_text(struct dl_phdr_info* info, std::size_t, void* arg) {
    auto* w = static_cast<ModuleWanted*>(arg);
    if (!module_holds(info, w->pc)) return 0;
    if (info->dlpi_phdr == reinterpret_cast<const ElfW(Phdr)*>(getauxval(AT_PHDR))) return 1;  // (below)
    add_text_of(info, *w->into);
    return 1;
}

// The executable is never added, wherever the symbol was found in it: a
// program that links its allocator in is the program's own code, to be
// taken back like the rest of it; and in an executable built without PIE,
// dlsym's answer for a function whose address the program takes is the
// executable's PLT entry (python3.11's malloc: the whole interpreter would
// have been unsafe, and no thread of it ever taken back).
void add_module_of(const void* code, Ranges& into = g_unsafe) noexcept {
    auto pc = reinterpret_cast<std::uintptr_t>(code);
    if (!code || into.has(pc)) return;  // (that module is in already)
    ModuleWanted w{pc, &into, nullptr};
    dl_iterate_phdr(add_module_text, &w);
}

// The program headers of the module that holds code (nullptr: none).
GREENSHIM_STARTUP_CODE const ElfW(Phdr)* module_of(const void* code) noexcept {
    ModuleWanted w{reinterpret_cast<std::uintptr_t>(code), nullptr, nullptr};
    if (code) dl_iterate_phdr(find_module, &w);
    return w.found;
}

// The libraries a replacement allocator's module needs (its DT_NEEDED):
// its lock is held across its calls into them, and a thread taken back
// there held it in the run queue while the others spun for it. tcmalloc's
// page heap keeps a std::set: libstdc++'s _Rb_tree_insert_and_rebalance,
// called with the page heap's SpinLock held, is where the tick took a
// thread (alloc_threads with tcmalloc_minimal and two hubs: both hubs and
// the carrier in SpinLockDelay, 1 run in ~100 under load).
struct NeededOf {
    std::uintptr_t pc;
    const char* names[8];
    int n;
};

int find_needed(struct dl_phdr_info* info, std::size_t, void* arg) {
    auto* w = static_cast<NeededOf*>(arg);
    if (!module_holds(info, w->pc)) return 0;
    const ElfW(Dyn)* dyn = nullptr;
    for (int i = 0; i < info->dlpi_phnum; ++i)
        if (info->dlpi_phdr[i].p_type == PT_DYNAMIC)
            dyn = reinterpret_cast<const ElfW(Dyn)*>(info->dlpi_addr + info->dlpi_phdr[i].p_vaddr);
    if (!dyn) return 1;
    std::uintptr_t strtab = 0;
    for (const ElfW(Dyn)* d = dyn; d->d_tag != DT_NULL; ++d)
        if (d->d_tag == DT_STRTAB) strtab = d->d_un.d_ptr;
    if (!strtab) return 1;
    if (strtab < info->dlpi_addr) strtab += info->dlpi_addr;  // (glibc relocates it in place; others may not)
    for (const ElfW(Dyn)* d = dyn; d->d_tag != DT_NULL && w->n < 8; ++d)
        if (d->d_tag == DT_NEEDED) w->names[w->n++] = reinterpret_cast<const char*>(strtab + d->d_un.d_val);
    return 1;
}

int add_module_named(struct dl_phdr_info* info, std::size_t, void* arg) {
    if (!module_named(info, static_cast<const char*>(arg))) return 0;
    add_text_of(info, g_unsafe);
    return 1;
}

void add_allocator_needs() noexcept {
    if (g_allocator.n == 0) return;  // (libc's malloc, or the program's own)
    NeededOf w{g_allocator.r[0].lo, {}, 0};
    dl_iterate_phdr(find_needed, &w);
    for (int i = 0; i < w.n; ++i) dl_iterate_phdr(add_module_named, const_cast<char*>(w.names[i]));
}

void find_unsafe_code() noexcept {
    add_module_of(reinterpret_cast<const void*>(REAL(read)));                // libc
    add_module_of(reinterpret_cast<const void*>(REAL(read)), g_libc);
    add_module_of(reinterpret_cast<const void*>(getauxval(AT_SYSINFO_EHDR))); // the vdso (libc's, in effect)
    add_module_of(dlsym(RTLD_DEFAULT, "_dl_find_object"));                  // the loader
    add_module_of(dlsym(RTLD_DEFAULT, "__tls_get_addr"));                   // (older glibc)
    add_module_of(dlsym(RTLD_DEFAULT, "malloc"));                           // a replacement allocator
    add_allocator_needs();                                                   // and what it calls
    add_module_of(reinterpret_cast<const void*>(&find_unsafe_code));        // the shim
    add_module_of(reinterpret_cast<const void*>(&Hub::existing));           // the runtime
    add_module_of(dlsym(RTLD_DEFAULT, "ev_run"));                           // libev, if separate
    add_module_of(dlsym(RTLD_DEFAULT, "jump_fcontext"));                    // Boost.Context, if separate
}

bool in_unsafe_code(std::uintptr_t pc) noexcept { return g_unsafe.has(pc); }

// glibc holds its loader's lock through a dlopen or dlclose (the
// constructors and destructors it runs, the files it opens): a recursive
// mutex that records the kernel tid of the OS thread that took it. A thread
// that holds it must not change OS thread: its unlock, on another tid,
// fails and the lock stays taken for good (every other OS thread's dlopen
// and dlsym then wait for ever: CPython's test_4_daemon_threads hung so with
// two hubs, 1 run in 60 to 100, the lock's owner the main hub's tid and a
// carried thread in dlsym; tests/threads/native/dlopen_ctor.c, a constructor
// that computes 60 ms, every time). The lock is not exported: it is found
// once in _rtld_global as the recursive mutex just before the one
// dl_iterate_phdr holds (_dl_load_write_lock follows _dl_load_lock there).
struct WriteLockSearch {
    const char* base;
    std::size_t size;
    int tid;
    const pthread_mutex_t* found;
};

int find_write_lock(struct dl_phdr_info*, std::size_t, void* arg) {
    auto* f = static_cast<WriteLockSearch*>(arg);
    for (std::size_t off = 0; off + sizeof(pthread_mutex_t) <= f->size; off += alignof(pthread_mutex_t)) {
        auto* m = reinterpret_cast<const pthread_mutex_t*>(f->base + off);
        if (m->__data.__owner == f->tid && m->__data.__count == 1 && m->__data.__kind == PTHREAD_MUTEX_RECURSIVE_NP) {
            f->found = m;
            break;
        }
    }
    return 1;  // (the first module is enough: the lock is held for the whole walk)
}

void find_load_lock() noexcept {
    void* rtld = dlsym(RTLD_DEFAULT, "_rtld_global");
    Dl_info info{};
    void* entry = nullptr;  // (dladdr1 stores a const ElfW(Sym)* there)
    if (!rtld || !dladdr1(rtld, &info, &entry, RTLD_DL_SYMENT) || !entry) return;
    const auto* sym = static_cast<const ElfW(Sym)*>(entry);
    WriteLockSearch f{static_cast<const char*>(rtld), sym->st_size, int(::syscall(SYS_gettid)), nullptr};
    dl_iterate_phdr(find_write_lock, &f);
    if (!f.found || reinterpret_cast<const char*>(f.found - 1) < f.base) return;
    const pthread_mutex_t* load = f.found - 1;
    if (load->__data.__kind == PTHREAD_MUTEX_RECURSIVE_NP && load->__data.__owner != f.tid) g_load_lock = load;
}

}  // namespace

// Whether this OS thread holds the loader's lock (one of its greenlets is
// in a dlopen or dlclose). Cost: a load; a gettid when someone holds it.
bool loader_lock_here() noexcept {
    if (!g_load_lock) return false;
    int owner = __atomic_load_n(&g_load_lock->__data.__owner, __ATOMIC_RELAXED);
    return owner != 0 && owner == int(::syscall(SYS_gettid));
}

namespace {

// The allocator's code, when malloc is another library's than libc's
// (jemalloc, tcmalloc, mimalloc: preloaded or linked), not the program's own.
// Found by malloc's definition: dlsym's answer in a non-PIE executable that
// takes malloc's address is that executable's PLT entry (symbols.hpp), and
// the allocator went unseen (python3.11 with a preloaded allocator).
GREENSHIM_STARTUP_CODE void find_allocator_code() noexcept {
    void* m = greenshim::detail::first_definition("malloc");
    if (!m) m = dlsym(RTLD_DEFAULT, "malloc");
    const ElfW(Phdr)* mine = module_of(m);
    if (!mine || mine == module_of(reinterpret_cast<const void*>(REAL(read)))) return;
    add_module_of(m, g_allocator);
}

// This OS thread's CPU time (a system call: ~0.3 us, once a tick at most).
std::int64_t thread_cpu_ns() noexcept {
    timespec t{};
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
    return std::int64_t(t.tv_sec) * 1000000000 + t.tv_nsec;
}

void arm(StallTicker& k) noexcept {
    k.armed = true;
    k.unchanged = 0;
    k.cpu_at_switch = thread_cpu_ns();
    struct itimerspec it{};
    it.it_interval.tv_sec = time_t(k.period_ns / 1000000000);
    it.it_interval.tv_nsec = long(k.period_ns % 1000000000);
    it.it_value = it.it_interval;
    timer_settime(k.timer, 0, &it, nullptr);
}

void disarm(StallTicker& k) noexcept {
    k.armed = false;
    struct itimerspec it{};
    timer_settime(k.timer, 0, &it, nullptr);
}

// The tick's signals open (SIG_UNBLOCK) or shut (SIG_BLOCK) on this OS thread.
void tick_signal_mask(int how) noexcept {
    sigset_t tick;
    sigemptyset(&tick);
    sigaddset(&tick, tick_signal());
    sigaddset(&tick, rerun_signal());
    REAL(pthread_sigmask)(how, &tick, nullptr);
}

// This OS thread's ticker, if it has one (no allocation: safe in the tick).
StallTicker* this_ticker() noexcept {
    OsThread* o = os_thread(false);
    return o ? o->ticker : nullptr;
}

void rearm(Hub& hub) {
    StallTicker* k = this_ticker();
    if (!k || k->armed) return;
    // Back from a poll with nothing to run (a wake-up that woke no one, or
    // the tick's own EINTR): stay quiet until there is.
    if (hub.ready_count() == 0) {
        hub.call_when_back(rearm);
        return;
    }
    arm(*k);
}

// Nothing to take back until the hub gets control again: stop the timer
// until then.
void quiet(Hub& hub, StallTicker& k) noexcept {
    if (!k.armed) return;
    disarm(k);
    hub.call_when_back(rearm);
}

void arrived_on_carrier() noexcept {
    t_carried = true;
    t_carried_at = monotonic_ns();
}

// The signal frame of a greenlet that moved to another OS thread in its
// handler (a hand-off or a come-back): the handler's return restores the
// signal mask and the sigaltstack from the frame, so they must be those of
// the thread it returns on (its mask as it is now: the handler runs with
// the thread's own).
void land(ucontext_t* uc) noexcept {
    REAL(pthread_sigmask)(SIG_BLOCK, nullptr, &uc->uc_sigmask);
    stack_t here{};
    if (sigaltstack(nullptr, &here) == 0) uc->uc_stack = here;
}

// Whether the interrupted instruction is a `syscall`: the tick interrupted
// a system call made without libc that the kernel restarts there (a blocking
// read on a raw fd, io_uring_enter) once the handler returns. Such a thread
// is handed off, and stays on its carrier: back on the hub's thread it would
// block it.
bool at_syscall(std::uintptr_t pc) noexcept {
    if ((pc & 0xfff) == 0xfff) return false;  // (the second byte on another page: not read)
    const auto* op = reinterpret_cast<const unsigned char*>(pc);
    return op[0] == 0x0f && op[1] == 0x05;
}

// A system call libc makes inside one of its functions, where no interposer
// sees it: stdio's writes to a pipe or a socket (fwrite, printf, fflush),
// its reads (fscanf), the futex wait for one of its locks (a FILE another
// greenlet holds). libc is unsafe code, where a greenlet is never taken
// back, but such a thread may be handed to a carrier: it keeps running
// there, so any lock of libc's it holds stays held by a running thread, and
// what it lends the carrier (its tid, malloc's tcache) is what an OS thread
// blocked there would have. Left on its hub's thread, it stopped every
// other thread: a writer blocked in fwrite to a pipe another thread reads
// hung for ever (tests/threads stalls, stdio-pipe).
bool libc_syscall(std::uintptr_t pc) noexcept { return g_libc.has(pc) && at_syscall(pc); }

// A tick on a carrier: the carried greenlet comes back to its hub when
// another waits for a carrier (so the threads that compute take turns on the
// carriers), where coming back is safe (as for a preemption).
void carrier_tick(ucontext_t* uc) noexcept {
    auto pc = std::uintptr_t(uc->uc_mcontext.gregs[REG_RIP]);
    if (t_shim_depth != 0 || t_being_preempted || in_signal_handler() || in_unsafe_code(pc) || at_syscall(pc))
        return;
    if (!Hub::carrier_awaited()) return;
    if (loader_lock_here()) return;
    t_being_preempted = true;
    t_carried = false;
    REAL(pthread_sigmask)(SIG_SETMASK, &uc->uc_sigmask, nullptr);  // the carrier's own, for its loop
    Hub::come_back(/*carriable=*/true);  // back on the hub's thread, or on a carrier again
    if (Hub::carried_from()) arrived_on_carrier();
    land(uc);
    t_being_preempted = false;
}

// A tick's bookkeeping: true when there is nothing to take back (the hub
// sleeps, or switched since the last tick, or has gone one tick without);
// false, this tick counted, after two ticks or more without a switch. It
// touches no greenlet's stack (on_tick runs it on the sigaltstack).
bool nothing_to_take_back(StallTicker& k, Hub& hub) noexcept {
    if (hub.idle_polling()) {  // asleep: nothing to take back until it has work
        quiet(hub, k);
        return true;
    }
    std::uint64_t s = hub.switches();
    if (s != k.seen_switches) {
        k.seen_switches = s;
        k.unchanged = 0;
        k.cpu_at_switch = thread_cpu_ns();
        return true;
    }
    return ++k.unchanged < 2;
}

void tick(ucontext_t* uc) noexcept {
    if (t_carried) {
        carrier_tick(uc);
        return;
    }
    StallTicker* ticker = this_ticker();
    if (!ticker) return;
    StallTicker& k = *ticker;
    Hub* hub = greenshim::detail::existing_hub();  // (there is one: the ticker hangs on it)
    if (nothing_to_take_back(k, *hub)) return;
    auto pc = std::uintptr_t(uc->uc_mcontext.gregs[REG_RIP]);
    bool in_libc_call = libc_syscall(pc);  // (handed off, never preempted)
    if (t_shim_depth != 0 || t_being_preempted || greenshim::detail::internal() || in_signal_handler() || !hub->can_preempt() ||
        (in_unsafe_code(pc) && !in_libc_call) || loader_lock_here())
        return;  // looked at again next tick (can_preempt: not the hub itself)
    k.unchanged = 0;
    // A carrier for a thread that computed (this OS thread had the CPU at
    // least half of the two periods) or sits in a raw system call, not for
    // one the kernel kept off the CPU (a loaded machine): that one is only
    // preempted.
    std::int64_t cpu = thread_cpu_ns();
    bool computed = cpu - k.cpu_at_switch >= k.period_ns;
    k.cpu_at_switch = cpu;
    t_being_preempted = true;
    // The others run with the OS thread's mask, not this handler's (which
    // blocks every signal); the handler's return restores what the kernel
    // saved for the greenlet.
    REAL(pthread_sigmask)(SIG_SETMASK, &uc->uc_sigmask, nullptr);
    // Blocked: in a system call, and off the CPU there (one caught at a
    // syscall instruction while it computes, making call after call, counts
    // against the spares).
    bool blocked = at_syscall(pc) && !computed;
    if ((computed || blocked) && hub->hand_off_running(blocked)) {  // on a carrier now: it goes on there
        arrived_on_carrier();
        land(uc);
    } else if (!in_libc_call && hub->preempt_running()) {  // back here once it is run again: by the hub, a carrier or another hub
        if (Hub::carried_from()) {
            arrived_on_carrier();
            land(uc);
        } else if (greenshim::detail::existing_hub() != hub) {  // given to another hub (Hub::share_preempted)
            land(uc);
        }
    }
    t_being_preempted = false;
}

// The tick where it may take the greenlet back. The handler's return then
// restores the sigaltstack from its frame on the OS thread it returns on,
// which may be another one than the signal came to (the hub went on on
// another OS thread while the greenlet was suspended here, not only through
// land()): that thread's own, or two threads would share one.
void tick_on_thread_stack(ucontext_t* uc) noexcept {
    tick(uc);
    stack_t here{};
    if (sigaltstack(nullptr, &here) == 0) uc->uc_stack = here;
}

// The tick's part that needs no greenlet's stack: true when it is done,
// false when the rest must run where a greenlet can be taken back (the
// rerun's tick() counts it again: only "two or more" matters).
bool tick_done_on_signal_stack() noexcept {
    if (t_carried) return false;
    StallTicker* ticker = this_ticker();
    return !ticker || nothing_to_take_back(*ticker, *greenshim::detail::existing_hub());
}

// The rerun of this tick on the interrupted stack: queued to this thread,
// blocked until this handler returns (the tick's mask blocks every signal),
// then delivered there before the interrupted code goes on. false if the
// queue of signals is full (RLIMIT_SIGPENDING): looked at again next tick.
// (The pid asked each time: a fork's child has its own, and this runs only
// when a thread may be taken back.)
bool queue_rerun() noexcept {
    const long pid = greenshim::detail::raw_syscall(SYS_getpid);
    siginfo_t si;
    std::memset(&si, 0, sizeof si);
    si.si_signo = rerun_signal();
    si.si_code = SI_QUEUE;
    si.si_pid = pid_t(pid);
    si.si_value.sival_ptr = &g_rerun_tag;
    long tid = greenshim::detail::raw_syscall(SYS_gettid);
    return greenshim::detail::raw_syscall(SYS_rt_tgsigqueueinfo, pid, tid, rerun_signal(), long(&si)) == 0;
}

void on_tick(int sig, siginfo_t* info, void* uctx) {
    if (info->si_code != SI_TIMER || info->si_value.sival_ptr != &g_tick_tag) {
        // The program's own use of the number (on the sigaltstack if the
        // thread has one, whatever the program's SA_ONSTACK said).
        pass_signal_to_program(sig, info, uctx);
        return;
    }
    auto* uc = static_cast<ucontext_t*>(uctx);
    int saved = errno;
    // On the sigaltstack: the kernel saved the interrupted code's view of it,
    // enabled and not in use there.
    bool on_signal_stack = (uc->uc_stack.ss_flags & (SS_DISABLE | SS_ONSTACK)) == 0;
    if (!on_signal_stack) tick_on_thread_stack(uc);  // no sigaltstack here, or interrupted on it
    else if (!tick_done_on_signal_stack() && !sigismember(&uc->uc_sigmask, rerun_signal()))
        queue_rerun();  // (blocked where the interrupted code runs: it would wait there, one more each tick)
    errno = saved;
}

void on_rerun(int sig, siginfo_t* info, void* uctx) {
    if (info->si_code != SI_QUEUE || info->si_value.sival_ptr != &g_rerun_tag ||
        info->si_pid != pid_t(greenshim::detail::raw_syscall(SYS_getpid))) {
        pass_signal_to_program(sig, info, uctx);  // the program's own use of the number
        return;
    }
    int saved = errno;
    tick_on_thread_stack(static_cast<ucontext_t*>(uctx));
    errno = saved;
}

bool make_timer(StallTicker& k) noexcept {
    struct sigevent ev{};
    ev.sigev_notify = SIGEV_THREAD_ID;
    ev.sigev_signo = tick_signal();
    ev.sigev_value.sival_ptr = &g_tick_tag;
    ev._sigev_un._tid = pid_t(::syscall(SYS_gettid));
    if (timer_create(CLOCK_MONOTONIC, &ev, &k.timer) != 0) return false;
    k.period_ns = std::int64_t(config().handoff_ms) * 1000000 / 2;
    if (k.period_ns < 500000) k.period_ns = 500000;
    return true;
}

// A carrier's ticks (Hub::CarrierHooks, on the carrier's thread, with its
// own thread-locals): while it carries a greenlet, and the tick's signal
// open there (the carrier blocks every other; it takes no signal of the
// program's).
void carrier_start(void** slot) noexcept {
    // A carried thread that overflows its stack is reported from the
    // SIGSEGV handler, which needs a stack of its own on this OS thread too
    // (without one the kernel killed the process silently: a recursion that
    // ran past GREENSHIM_HANDOFF before it overflowed). Once per carrier; the
    // tick then runs there as well.
    ensure_signal_stack();
    auto* k = static_cast<StallTicker*>(*slot);
    if (!k) {
        k = new (std::nothrow) StallTicker;
        if (!k) return;
        if (!make_timer(*k)) {
            delete k;
            return;
        }
        *slot = k;
    }
    tick_signal_mask(SIG_UNBLOCK);
    arm(*k);
}

void carrier_stop(void** slot) noexcept {
    auto* k = static_cast<StallTicker*>(*slot);
    if (!k) return;
    disarm(*k);
    tick_signal_mask(SIG_BLOCK);
}

void carrier_retire(void** slot) noexcept {
    auto* k = static_cast<StallTicker*>(*slot);
    if (!k) return;
    timer_delete(k->timer);
    delete k;
    *slot = nullptr;
}

unsigned spares() noexcept {
    unsigned n = config().spares;
    if (n != kSparesAuto) return n;
    unsigned cpus = usable_cpus();
    return cpus > 2 ? cpus - 1 : 1;
}
}  // namespace

void come_back_from_carrier(const void* caller) noexcept {
    // A thread that computed a whole hand-off period on the carrier before
    // this call goes back to one as the call returns, if one is free, rather
    // than compute that long again here first (a loop that computes, then
    // makes a call or two, would otherwise spend most of its time on the
    // hub's thread).
    // In a dlopen made on the carrier: the call runs here, without parking
    // (may_park says no while t_carried is set), as the loader's lock wants.
    if (loader_lock_here()) return;
    // A call the allocator makes (a replacement's: the delay of its spin
    // lock, a futex, sched_yield) is made here too, on the carrier: the
    // allocator may hold a lock of its own that no call of ours sees taken
    // (tcmalloc's SpinLock is a plain word). Back in its hub's run queue, the
    // holder waited behind threads that spun for that lock on every hub, and
    // never ran again (alloc_threads with tcmalloc_minimal and two hubs: 1
    // run in ~100 under load, both hubs and the carrier in SpinLockDelay).
    if (caller && from_allocator(caller)) return;
    bool computes = monotonic_ns() - t_carried_at >= std::int64_t(config().handoff_ms) * 1000000 &&
                    !(caller && in_unsafe_code(reinterpret_cast<std::uintptr_t>(caller)));
    t_carried = false;
    Hub::come_back();
    t_hand_back = computes;
}

void hand_back_to_carrier() noexcept {
    t_hand_back = false;
    Hub* hub = greenshim::detail::existing_hub();
    if (!hub || t_being_preempted || in_signal_handler()) return;
    if (loader_lock_here()) return;
    t_being_preempted = true;  // (a tick meanwhile leaves it alone)
    if (hub->hand_off_running()) arrived_on_carrier();
    t_being_preempted = false;
}

bool from_allocator(const void* caller) noexcept { return g_allocator.has(reinterpret_cast<std::uintptr_t>(caller)); }

GREENSHIM_STARTUP_CODE void stall_init() noexcept {
    t_shim_depth = 0;  // the main thread runs the program's code
    find_allocator_code();
    if (!config().enabled || config().handoff_ms == 0 || config().thread_locals_shared) return;
    // (Both or neither: without its rerun the tick would run on the greenlet's
    // stack, where it takes it back.)
    g_tick_held = hold_signal(rerun_signal(), on_rerun, /*on_stack=*/false) &&
                  hold_signal(tick_signal(), on_tick, /*on_stack=*/true);
}

void stall_quiet() noexcept {
    if (StallTicker* k = this_ticker()) quiet(*greenshim::detail::existing_hub(), *k);
}

int stall_tick_signal() noexcept { return tick_signal(); }
int stall_rerun_signal() noexcept { return rerun_signal(); }

void stall_after_fork_child() noexcept {
    if (OsThread* o = os_thread(false)) o->ticker = nullptr;  // (the parent's timer id means nothing here)
}

void stall_watch(Hub& hub) noexcept {
    if (!g_tick_held) return;
    OsThread* o = os_thread(true);
    if (!o || o->ticker) return;
    // Once, at the first thread (a process that never makes one pays nothing:
    // the walk over the loaded modules costs ~70 us), before any tick: and the
    // carriers, which only a tick calls on (`auto` asks the kernel for the
    // CPUs).
    static bool found = (find_unsafe_code(), find_load_lock(),
                         Hub::set_carriers(spares(), {carrier_start, carrier_stop, carrier_retire}), true);
    (void)found;
    auto* k = new (std::nothrow) StallTicker;
    if (!k) return;
    if (!make_timer(*k)) {
        delete k;
        return;
    }
    k->seen_switches = hub.switches();
    o->ticker = k;
    // The tick may hand the main thread off too, blocked in libc say. (A
    // worker hub's thread gets a stand-in too, unused: its main greenlet runs
    // no program code, and hand_off_running leaves a worker's alone.)
    hub.let_main_be_handed_off();
    arm(*k);
}

}  // namespace greenshim::shim
