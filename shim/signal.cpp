// Signals. A handler the program installs runs through a trampoline that,
// after calling it, tells the hub; the hub then interrupts a parked greenlet
// exactly where the kernel would have interrupted a blocked thread: the main
// greenlet first, with EINTR if the call is one the kernel never restarts or
// the handler lacks SA_RESTART (on_signals, Hub::interrupt_one).
//
// sigaction() reports the program's own handler, never the trampoline.
//
// SIGSEGV and SIGBUS: stack overflow. A greenlet that overflows its stack
// touches the PROT_NONE guard page below it. on_fault, installed at start-up
// with SA_ONSTACK (the greenlet's stack is exhausted), runs on a sigaltstack
// the shim gives the main thread at start-up and any other OS thread when it
// starts greenlet threads, unless the program set one there first; it names
// the greenlet, its start function and its stack size on stderr, then aborts.
// Every other SIGSEGV or SIGBUS is the program's: its sigaction() for them is
// recorded here (on_fault stays the kernel's handler) and on_fault calls its
// handler as the kernel would have (its flags, its sa_mask, SA_RESETHAND,
// SA_NODEFER); with no handler, a fault restores SIG_DFL and returns, so that
// the faulting instruction runs again and the process dies of the real
// signal, core dump and all. Not installed when the shim is disabled or built
// with a sanitizer (which reports faults itself). A program that later
// replaces or disables a sigaltstack is left alone (sigaltstack is not
// interposed): an overflow on a thread without one dies of a plain SIGSEGV,
// as it would without the shim.
//
// The dump signal (SIGRTMAX-2, report.cpp) is held the same way
// (hold_signal): its kernel handler is the shim's, which passes every
// SIGRTMAX-2 that is not a dump request to the program's disposition
// (pass_signal_to_program, as on_fault does for a sent SIGSEGV).
#include <signal.h>
#include <sys/mman.h>
#include <sys/signalfd.h>
#include <ucontext.h>

#include <atomic>
#include <cstring>

#include "greenshim/cold.hpp"
#include "greenshim/diag.hpp"
#include "shim.hpp"
#include "thread.hpp"

using namespace greenshim;
using namespace greenshim::shim;

namespace {

struct Handler {
    std::atomic<void*> fn{nullptr};  // the program's handler; nullptr: not trampolined
    std::atomic<int> flags{0};       // the program's sa_flags
    // For SIGSEGV and SIGBUS while on_fault holds them (the kernel's entry is
    // ours, so the kernel cannot answer for the program):
    std::atomic<bool> ignored{false};  // the program's SIG_IGN (fn is nullptr)
    // The program's sa_mask: Linux's 64 signals, the first word of glibc's
    // 1,024-bit sigset_t. (A whole sigset_t made the table 9 KiB: the few
    // entries set at start-up dirtied three pages of every process.)
    std::uint64_t mask = 0;
};
static_assert(NSIG - 1 <= 64 && sizeof(sigset_t) >= sizeof(std::uint64_t));
sigset_t program_mask(const Handler& h) noexcept {
    sigset_t set;
    sigemptyset(&set);
    std::memcpy(&set, &h.mask, sizeof h.mask);
    return set;
}
// (Start-up data, cold.hpp: the held signals' entries are written at start.)
GREENSHIM_STARTUP_DATA Handler g_handlers[NSIG];
std::atomic<std::uint64_t> g_pending_restart{0};    // signals whose handler had SA_RESTART
std::atomic<std::uint64_t> g_pending_norestart{0};  // signals whose handler had not
std::atomic<std::uint64_t> g_runs_restart{0};       // handlers run so far, with SA_RESTART
std::atomic<std::uint64_t> g_runs_norestart{0};     // and without

// Where the program's handlers run, so that a handler left by siglongjmp (the
// usual way out of a SIGSEGV handler) does not leave its thread believing it
// is still in a handler, never parking again. A handler runs below its signal
// frame: on the sigaltstack if it is there (exact: SIGSEGV and SIGBUS handlers
// always run there), else on the interrupted greenlet's stack, where a call
// made after the siglongjmp from deeper than the dead frame is still taken for
// the handler's (it then does not park). Depths beyond kMaxDepth are counted,
// not located.
struct HandlerFrame {
    std::uintptr_t frame;     // the kernel's ucontext: the handler runs below it
    std::uintptr_t alt_low;   // the sigaltstack's low end when it runs there, else 0
    const Greenlet* greenlet; // the greenlet it interrupted
};
constexpr int kMaxDepth = 8;
// initial-exec (the library is loaded at start-up, with the static TLS):
// t_signal_depth is read by every interposed call (may_park), and a general-dynamic
// access is a call to __tls_get_addr.
thread_local HandlerFrame t_frames[kMaxDepth] __attribute__((tls_model("initial-exec")));
}  // namespace
// How many of the program's handlers run on this stack now (shim.hpp).
thread_local int greenshim::shim::t_signal_depth __attribute__((tls_model("initial-exec"))) = 0;
namespace {

const Greenlet* running_greenlet() noexcept { return greenshim::detail::existing_hub() ? &greenshim::detail::current_greenlet() : nullptr; }

bool runs_in(const HandlerFrame& f, std::uintptr_t sp) noexcept {
    if (sp >= f.frame) return false;
    return f.alt_low ? sp >= f.alt_low : running_greenlet() == f.greenlet;
}

// Forgets the handlers the thread has left without returning.
void drop_left_handlers() noexcept {
    auto sp = reinterpret_cast<std::uintptr_t>(__builtin_frame_address(0));
    while (t_signal_depth > 0 && t_signal_depth <= kMaxDepth && !runs_in(t_frames[t_signal_depth - 1], sp)) --t_signal_depth;
}

void enter_handler(void* uctx) noexcept {
    if (t_signal_depth) drop_left_handlers();
    if (t_signal_depth < kMaxDepth) {
        HandlerFrame& f = t_frames[t_signal_depth];
        f.frame = uctx ? reinterpret_cast<std::uintptr_t>(uctx) : ~std::uintptr_t(0);
        f.alt_low = 0;
        f.greenlet = running_greenlet();
        if (uctx) {
            // The kernel saved the sigaltstack in the frame it pushed.
            const stack_t& alt = static_cast<const ucontext_t*>(uctx)->uc_stack;
            auto low = reinterpret_cast<std::uintptr_t>(alt.ss_sp);
            if (!(alt.ss_flags & SS_DISABLE) && f.frame >= low && f.frame < low + alt.ss_size) f.alt_low = low;
        }
    }
    ++t_signal_depth;
}

void leave_handler() noexcept {
    if (t_signal_depth > 0) --t_signal_depth;
}

// The program's handler, called as the kernel would call it.
void call_program_handler(int sig, siginfo_t* info, void* uctx) {
    Handler& h = g_handlers[sig];
    void* fn = h.fn.load(std::memory_order_acquire);
    int flags = h.flags.load(std::memory_order_relaxed);
    if (flags & SA_RESETHAND) h.fn.store(nullptr, std::memory_order_release);  // the kernel reset it too
    enter_handler(uctx);
    if (fn) {
        if (flags & SA_SIGINFO) reinterpret_cast<void (*)(int, siginfo_t*, void*)>(fn)(sig, info, uctx);
        else reinterpret_cast<void (*)(int)>(fn)(sig);
    }
    leave_handler();
}

void trampoline(int sig, siginfo_t* info, void* uctx) {
    int saved = errno;
    int flags = g_handlers[sig].flags.load(std::memory_order_relaxed);
    call_program_handler(sig, info, uctx);
    std::uint64_t bit = std::uint64_t(1) << (sig & 63);
    (flags & SA_RESTART ? g_pending_restart : g_pending_norestart).fetch_or(bit);
    (flags & SA_RESTART ? g_runs_restart : g_runs_norestart).fetch_add(1);
    Hub::notify_signal_all();
    errno = saved;
}

// In the hub greenlet, after one or more handlers ran.
void on_signals(Hub& hub) {
    sync_after_handlers(hub);  // first: a waiter a handler's sem_post satisfies takes it
    // A handler interrupts the main greenlet's wait (Hub::interrupt_one), on
    // the process hub: a worker hub only scans its semaphore waiters.
    if (&hub != Hub::process_hub()) return;
    std::uint64_t nr = g_pending_norestart.exchange(0);
    std::uint64_t r = g_pending_restart.exchange(0);
    // A handler without SA_RESTART interrupts any interruptible wait; one
    // with it only those the kernel never restarts.
    if (nr) hub.interrupt_one(kByHandler);
    else if (r) hub.interrupt_one(kByRestartingHandler);
}

bool is_trampoline(const struct sigaction& sa) {
    return (sa.sa_flags & SA_SIGINFO) && sa.sa_sigaction == trampoline;
}

void* handler_of(const struct sigaction& sa) {
    return (sa.sa_flags & SA_SIGINFO) ? reinterpret_cast<void*>(sa.sa_sigaction) : reinterpret_cast<void*>(sa.sa_handler);
}

// ---- SIGSEGV and SIGBUS: on_fault ----

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
constexpr bool kSanitizer = true;  // the sanitizer's own SIGSEGV report must win
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
constexpr bool kSanitizer = true;
#else
constexpr bool kSanitizer = false;
#endif
#else
constexpr bool kSanitizer = false;
#endif

GREENSHIM_STARTUP_DATA std::atomic<bool> g_holding_faults{false};           // on_fault is SIGSEGV's and SIGBUS's kernel handler
constexpr std::size_t kSignalStackSize = 256 << 10;  // committed only as touched

// Signals the shim takes for itself as it takes SIGSEGV and SIGBUS (the dump
// signal, report.cpp; the stall tick and its rerun, stall.cpp): each one's kernel handler
// is its Held::handler, the program's sigaction() of it is recorded apart
// (hold_signal). Set up once each, before any can arrive.
struct Held {
    std::atomic<int> sig{0};
    void (*handler)(int, siginfo_t*, void*) = nullptr;
    bool on_stack = true;
};
Held g_held[3];

GREENSHIM_STARTUP_CODE Held* held(int sig) noexcept {
    for (Held& h : g_held)
        if (h.sig.load(std::memory_order_relaxed) == sig) return &h;
    return nullptr;
}

GREENSHIM_STARTUP_CODE bool held_by_on_fault(int sig) noexcept {
    if (held(sig)) return true;
    return (sig == SIGSEGV || sig == SIGBUS) && g_holding_faults.load(std::memory_order_relaxed);
}

// A line of text built without malloc or stdio: usable in a signal handler.
class Line {
public:
    Line& operator<<(const char* s) {
        while (*s && len_ < sizeof buf_ - 1) buf_[len_++] = *s++;
        return *this;
    }
    Line& number(unsigned long long v, unsigned base = 10) {
        char digits[24];
        int n = 0;
        do digits[n++] = "0123456789abcdef"[v % base];
        while ((v /= base) && n < int(sizeof digits));
        while (n > 0 && len_ < sizeof buf_ - 1) buf_[len_++] = digits[--n];
        return *this;
    }
    bool operator==(const char* s) const { return std::strlen(s) == len_ && std::memcmp(s, buf_, len_) == 0; }
    Line& kib(std::size_t bytes) { return number((bytes + 1023) / 1024) << " KiB"; }
    void write_to(int fd) const { write_fully(fd, buf_, len_); }

private:
    char buf_[512];
    std::size_t len_ = 0;
};

void name_code(Line& line, void* code) {
    char name[256];
    describe_code(code, name, sizeof name);
    line << name;
}

// "2M" for a stack of 1 MiB: twice the size, in whole MiB from 1 MiB on.
void suggest_size(Line& line, std::size_t now) {
    std::size_t twice = 2 * now;
    if (twice >= (1u << 20)) line.number((twice + (1u << 20) - 1) >> 20) << "M";
    else line.number((twice + 1023) >> 10) << "K";
}

// The runtime names a greenlet "greenlet-ID" unless told otherwise.
bool is_default_name(const Greenlet& g) {
    const char* name = g.name().c_str();
    if (std::strncmp(name, "greenlet-", 9) != 0) return g.name().empty();
    Line id;
    id.number(g.id());
    return id == name + 9;
}

[[noreturn]] void report_overflow(const Greenlet& g) {
    Line line;
    line << "greenshim: greenlet ";
    line.number(g.id()) << " (";
    if (!is_default_name(g)) line << g.name().c_str() << ", ";  // pthread_setname_np's
    line << "started at ";
    name_code(line, greenlet_entry(g));
    line << ") overflowed its ";
    line.kib(g.stack_size()) << " stack; ";
    GThread* t = gthread_of(reinterpret_cast<pthread_t>(g.user_data()));
    if (t && t->stack_from_attr) {
        line << "that is the size its pthread_attr_t asked for (GREENSHIM_STACK_SIZE does not change it)\n";
    } else {
        line << "set GREENSHIM_STACK_SIZE (now ";
        if (config().stack_size) line.kib(config().stack_size);
        else line << "unset";
        line << ") to more, e.g. GREENSHIM_STACK_SIZE=";
        suggest_size(line, g.stack_size());
        line << "\n";
    }
    line.write_to(2);
    std::abort();
}

int install_on_fault(int sig);

// No handler of the program's: what the kernel would have done.
void default_action(int sig, bool fault, bool ignored) {
    if (!fault && ignored) return;  // an ignored signal sent by kill() is discarded
    struct sigaction dfl;
    std::memset(&dfl, 0, sizeof dfl);
    dfl.sa_handler = SIG_DFL;
    REAL(sigaction)(sig, &dfl, nullptr);
    // A fault: on return its instruction runs again and the default action
    // kills, with a core dump and the fault's own siginfo (the kernel forces
    // the default on an ignored fault too). A signal sent by kill(): sent
    // again, it is delivered as soon as we return (on_fault blocks it).
    if (!fault) raise(sig);
}

void deliver_to_program(int sig, siginfo_t* info, void* uctx, bool fault);

void on_fault(int sig, siginfo_t* info, void* uctx) {
    int saved = errno;
    // Raised by the instruction that ran; not sent, not an asynchronous
    // machine-check report.
    bool fault = info->si_code > 0 && !(sig == SIGBUS && info->si_code == BUS_MCEERR_AO);
    if (fault)
        if (Greenlet* g = greenlet_for_guard_page(info->si_addr)) report_overflow(*g);
    deliver_to_program(sig, info, uctx, fault);
    errno = saved;
}

// What the kernel would have done with a signal whose kernel entry is ours:
// the program's handler, with its mask, or its disposition.
void deliver_to_program(int sig, siginfo_t* info, void* uctx, bool fault) {
    Handler& h = g_handlers[sig];
    if (!h.fn.load(std::memory_order_acquire)) {
        default_action(sig, fault, h.ignored.load(std::memory_order_relaxed));
    } else {
        // The mask the kernel would have given the program's handler.
        sigset_t mask = static_cast<ucontext_t*>(uctx)->uc_sigmask, program = program_mask(h);
        sigorset(&mask, &mask, &program);
        if (!(h.flags.load(std::memory_order_relaxed) & SA_NODEFER)) sigaddset(&mask, sig);
        REAL(pthread_sigmask)(SIG_SETMASK, &mask, nullptr);
        // A fault is handled by the greenlet that made it, running: no parked
        // greenlet is interrupted. A sent SIGSEGV is like any other signal.
        if (fault) call_program_handler(sig, info, uctx);
        else trampoline(sig, info, uctx);
    }
}

GREENSHIM_STARTUP_CODE int install_on_fault(int sig) {
    struct sigaction sa;
    std::memset(&sa, 0, sizeof sa);
    Held* h = held(sig);
    sa.sa_sigaction = h ? h->handler : on_fault;
    sa.sa_flags = SA_SIGINFO | SA_RESTART | (!h || h->on_stack ? SA_ONSTACK : 0);
    sigfillset(&sa.sa_mask);
    // A held signal's handler may fault: the stall tick's rerun runs on the
    // interrupted greenlet's stack, and its frame (1-3 KiB) can be what
    // overflows it. The fault must reach on_fault (on the sigaltstack) and
    // be reported.
    if (h) let_faults_through(sa.sa_mask);
    return REAL(sigaction)(sig, &sa, nullptr);
}

// Records the program's disposition of a signal on_fault holds.
GREENSHIM_STARTUP_CODE void record_program_action(int sig, const struct sigaction& act) {
    Handler& h = g_handlers[sig];
    void* fn = handler_of(act);
    bool dfl = fn == reinterpret_cast<void*>(SIG_DFL), ign = fn == reinterpret_cast<void*>(SIG_IGN);
    if (!dfl && !ign) {
        Hub::set_signal_callback(on_signals);
        Hub::set_signals_can_wake(true);
    }
    std::memcpy(&h.mask, &act.sa_mask, sizeof h.mask);
    h.flags.store(act.sa_flags, std::memory_order_relaxed);
    h.ignored.store(ign, std::memory_order_relaxed);
    h.fn.store(dfl || ign ? nullptr : fn, std::memory_order_release);
}

// sigaction() of SIGSEGV and SIGBUS while on_fault holds them: the kernel's
// entry stays on_fault; the program sees and changes only its own.
int fault_sigaction(int sig, const struct sigaction* act, struct sigaction* old) {
    Handler& h = g_handlers[sig];
    struct sigaction view;
    std::memset(&view, 0, sizeof view);
    void* fn = h.fn.load(std::memory_order_acquire);
    view.sa_flags = h.flags.load(std::memory_order_relaxed);
    view.sa_mask = program_mask(h);
    if (!fn) view.sa_handler = h.ignored.load(std::memory_order_relaxed) ? SIG_IGN : SIG_DFL;
    else if (view.sa_flags & SA_SIGINFO) view.sa_sigaction = reinterpret_cast<void (*)(int, siginfo_t*, void*)>(fn);
    else view.sa_handler = reinterpret_cast<void (*)(int)>(fn);
    if (act) {
        record_program_action(sig, *act);
        if (install_on_fault(sig) != 0) return -1;  // again: after a default_action, say
    }
    if (old) *old = view;
    return 0;
}

GREENSHIM_STARTUP_CODE int do_sigaction(int sig, const struct sigaction* act, struct sigaction* old) {
    if (!config().enabled || in_vfork_child() || sig <= 0 || sig >= NSIG || sig == SIGKILL || sig == SIGSTOP)
        return REAL(sigaction)(sig, act, old);
    if (held_by_on_fault(sig)) return fault_sigaction(sig, act, old);
    struct sigaction current;
    if (REAL(sigaction)(sig, nullptr, &current) != 0) return -1;
    struct sigaction view = current;
    Handler& h = g_handlers[sig];
    if (is_trampoline(current)) {  // what the program installed, not our trampoline
        int flags = h.flags.load();
        view.sa_flags = flags;
        if (flags & SA_SIGINFO) view.sa_sigaction = reinterpret_cast<void (*)(int, siginfo_t*, void*)>(h.fn.load());
        else view.sa_handler = reinterpret_cast<void (*)(int)>(h.fn.load());
    }
    if (act) {
        void* fn = handler_of(*act);
        if (fn == reinterpret_cast<void*>(SIG_DFL) || fn == reinterpret_cast<void*>(SIG_IGN)) {
            if (REAL(sigaction)(sig, act, nullptr) != 0) return -1;
            h.fn.store(nullptr);
        } else {
            Hub::set_signal_callback(on_signals);
            Hub::set_signals_can_wake(true);
            h.flags.store(act->sa_flags);
            h.fn.store(fn);
            struct sigaction real = *act;
            real.sa_flags |= SA_SIGINFO;
            real.sa_sigaction = trampoline;
            if (REAL(sigaction)(sig, &real, nullptr) != 0) return -1;
        }
    }
    if (old) *old = view;
    return 0;
}

}  // namespace

namespace greenshim::shim {
bool in_signal_handler_slow() noexcept {
    if (t_signal_depth == 0) return false;
    drop_left_handlers();
    return t_signal_depth != 0;
}

SignalMark signal_mark() noexcept { return {g_runs_restart.load(), g_runs_norestart.load()}; }

bool handlers_ran_since(const SignalMark& mark) noexcept {
    return g_runs_restart.load() != mark.restart || g_runs_norestart.load() != mark.norestart;
}

bool interrupted_since(const SignalMark& mark, Interruptible mode) noexcept {
    if (!by_handler(mode)) return false;
    // Signals interrupt the main greenlet (another only once main is gone).
    Hub* hub = greenshim::detail::existing_hub();
    if (!hub || !(greenshim::detail::current_greenlet().is_main() || hub->main().dead())) return false;
    if (g_runs_norestart.load() != mark.norestart) return true;
    return (InterruptMask(mode) & kByRestartingHandler) != 0 && g_runs_restart.load() != mark.restart;
}

void wake_hub_from_handler() noexcept {
    Hub::set_signal_callback(on_signals);  // (set already if a handler of the program's runs)
    Hub::notify_signal_all();
}

GREENSHIM_STARTUP_CODE void hold_fault_signals() noexcept {
    if (kSanitizer || !config().enabled) return;
    // The real functions on_fault calls are resolved now, not in a handler.
    // None is found after us when libc itself is preloaded ahead of the shim
    // (whose interposers are then never called): stay out of the way.
    for (const char* name : {"sigaction", "write", "pthread_sigmask"})
        if (!dlsym(RTLD_NEXT, name)) return;
    (void)REAL(write);
    (void)REAL(pthread_sigmask);
    for (int sig : {SIGSEGV, SIGBUS}) {
        struct sigaction program;  // inherited SIG_IGN, or a library's handler from its constructor
        if (do_sigaction(sig, nullptr, &program) != 0) continue;
        record_program_action(sig, program);
        install_on_fault(sig);
    }
    g_holding_faults.store(true, std::memory_order_relaxed);
    // The main thread's signal stack waits for its first pthread_create
    // (thread.cpp): the overflows reported are greenlet threads', and a
    // process that makes none saves the mapping and its three system calls
    // (~20 us of every start on a VM).
}

GREENSHIM_STARTUP_CODE bool hold_signal(int sig, void (*own)(int, siginfo_t*, void*), bool on_stack) noexcept {
    if (!config().enabled || held_by_on_fault(sig)) return false;
    Held* slot = held(0);
    if (!slot) return false;
    for (const char* name : {"sigaction", "pthread_sigmask"})
        if (!dlsym(RTLD_NEXT, name)) return false;
    struct sigaction program;  // inherited SIG_IGN, or a library's handler from its constructor
    if (do_sigaction(sig, nullptr, &program) != 0) return false;
    slot->handler = own;
    slot->on_stack = on_stack;
    slot->sig.store(sig);
    record_program_action(sig, program);
    if (install_on_fault(sig) == 0) return true;
    slot->sig.store(0);
    return false;
}

void pass_signal_to_program(int sig, siginfo_t* info, void* uctx) noexcept {
    deliver_to_program(sig, info, uctx, false);
}

void ensure_signal_stack() noexcept {
    static thread_local bool checked = false;
    if (checked || !g_holding_faults.load(std::memory_order_relaxed)) return;
    checked = true;
    stack_t current;
    if (sigaltstack(nullptr, &current) != 0 || !(current.ss_flags & SS_DISABLE)) return;  // the program's: kept
    // A guard page below it too: a handler overflowing it dies of SIGSEGV.
    // Never unmapped: it serves the OS thread for its life.
    std::size_t page = std::size_t(sysconf(_SC_PAGESIZE));
    void* p = mmap(nullptr, kSignalStackSize + page, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_STACK, -1, 0);
    if (p == MAP_FAILED) return;
    stack_t ss;
    ss.ss_sp = static_cast<char*>(p) + page;
    ss.ss_size = kSignalStackSize;
    ss.ss_flags = 0;
    if (mprotect(p, page, PROT_NONE) != 0 || sigaltstack(&ss, nullptr) != 0) munmap(p, kSignalStackSize + page);
}
}  // namespace greenshim::shim

// A thread may loop on sigaction waiting for another (CPython's
// test_stress_modifying_handlers): the calls count against its budget.
SHIM_EXPORT int sigaction(int sig, const struct sigaction* act, struct sigaction* old) {
    SHIM_ENTER;
    if (Hub* hub; may_park(hub)) coop_tick(hub);
    return do_sigaction(sig, act, old);
}

// A signal to this OS thread, its handler run before this returns (as a
// thread's raise). A worker hub's OS thread blocks the program's signals
// (thread.cpp, start_workers): there the signal is let through for the call,
// unless the calling thread blocks it itself. 0 or an errno.
int greenshim::shim::raise_here(int sig) noexcept {
    Hub* hub = greenshim::detail::existing_hub();
    GThread* t = gthread_current();
    if (!hub || !hub->is_worker() || sig <= 0 || sig >= NSIG || (t && sigismember(&t->sigmask, sig) == 1))
        return REAL(pthread_kill)(REAL(pthread_self)(), sig);
    sigset_t one, old;
    sigemptyset(&one);
    sigaddset(&one, sig);
    REAL(pthread_sigmask)(SIG_UNBLOCK, &one, &old);
    int r = REAL(pthread_kill)(REAL(pthread_self)(), sig);  // (delivered as the mask goes back, at the latest)
    REAL(pthread_sigmask)(SIG_SETMASK, &old, nullptr);
    return r;
}

// raise: the handler runs at once, on this greenlet, as unpatched; a thread
// that loops raising signals counts the calls against its budget.
SHIM_EXPORT int raise(int sig) {
    SHIM_ENTER;
    if (in_vfork_child()) return REAL(raise)(sig);
    if (Hub* hub; may_park(hub)) coop_tick(hub);
    int r = raise_here(sig);
    if (r == 0) return 0;
    errno = r;
    return -1;
}

// glibc's signal() installs through its internal sigaction; ours keeps its
// BSD semantics (SA_RESTART) and goes through the trampoline.
SHIM_EXPORT sighandler_t signal(int sig, sighandler_t handler) {
    SHIM_ENTER;
    if (Hub* hub; may_park(hub)) coop_tick(hub);
    struct sigaction act, old;
    std::memset(&act, 0, sizeof act);
    act.sa_handler = handler;
    act.sa_flags = SA_RESTART;
    sigemptyset(&act.sa_mask);
    if (sig > 0 && sig < NSIG) sigaddset(&act.sa_mask, sig);
    if (do_sigaction(sig, &act, &old) != 0) return SIG_ERR;
    return old.sa_handler;
}

// pause/sigsuspend: the thread would sleep until a handler runs; the greenlet
// does, and the others run meanwhile. Once nothing else can run, the thread
// sleeps in the kernel, as unpatched.
SHIM_EXPORT int pause(void) {
    SHIM_CANCEL_POINT;
    if (!may_park()) return REAL(pause)();
    static WaitSite waiting{"pause/sigsuspend", "signal"};
    for (;;) {
        int r = park_as(waiting, -1, cancellable(Interruptible::always), EndsBy::signal_only,
                        [](Hub& hub) { return hub.park(kForever); });
        if (r == -EDEADLK) return REAL(pause)();
        if (r == -EINTR || r == -ENOMEM) {
            errno = -r;
            return -1;
        }
    }
}

// (A signal pending under the old mask that the new one lets through runs
// its handler as the mask changes: pause then returns EINTR at once.)
SHIM_EXPORT int sigsuspend(const sigset_t* mask) {
    SHIM_CANCEL_POINT;
    if (!may_park()) return REAL(sigsuspend)(mask);
    WaitMask waiting(mask);
    return pause();
}

// sigwaitinfo/sigtimedwait/sigwait: the signals are blocked; a signalfd shows
// when one is pending without blocking the thread.
SHIM_EXPORT int sigtimedwait(const sigset_t* set, siginfo_t* info, const struct timespec* timeout) {
    SHIM_CANCEL_POINT;
    // (a timeout pointer the kernel cannot read goes to the kernel: EFAULT)
    if (!may_park() || (timeout && (!kernel_reads(timeout) || (timeout->tv_sec == 0 && timeout->tv_nsec == 0))))
        return REAL(sigtimedwait)(set, info, timeout);
    if (timeout && (timeout->tv_sec < 0 || timeout->tv_nsec < 0 || timeout->tv_nsec >= 1000000000L)) {
        errno = EINVAL;
        return -1;
    }
    Deadline d = timeout ? deadline_after_ns(ns_saturating(timeout->tv_sec, timeout->tv_nsec)) : kForever;
    int fd = REAL(signalfd)(-1, set, SFD_NONBLOCK | SFD_CLOEXEC);
    if (fd < 0) return REAL(sigtimedwait)(set, info, timeout);
    static const struct timespec zero = {0, 0};
    int r;
    for (;;) {
        r = REAL(sigtimedwait)(set, info, &zero);
        if (r >= 0 || errno != EAGAIN) break;
        InterruptScope interruptible{InterruptMask(cancellable(Interruptible::always))};
        if (park_until_ready(fd, kReadable, d) < 0) {
            r = -1;
            break;  // EAGAIN on timeout, as sigtimedwait says; EINTR
        }
    }
    int err = errno;
    fd_closing(fd);
    REAL(close)(fd);
    errno = err;
    return r;
}

SHIM_EXPORT int sigwaitinfo(const sigset_t* set, siginfo_t* info) { SHIM_CANCEL_POINT; return sigtimedwait(set, info, nullptr); }

SHIM_EXPORT int sigwait(const sigset_t* set, int* sig) {
    SHIM_CANCEL_POINT;
    siginfo_t info;
    int r;
    do r = sigtimedwait(set, &info, nullptr);
    while (r < 0 && errno == EINTR && !cancel_woke());  // sigwait never fails with EINTR (a cancellation: ends here)
    if (r < 0) return errno;
    *sig = r;
    return 0;
}

SHIM_EXPORT int signalfd(int fd, const sigset_t* mask, int flags) {
    SHIM_ENTER;
    if (!may_park() || fd != -1) return REAL(signalfd)(fd, mask, flags);
    return OwnedFds::make(flags, SFD_NONBLOCK, {false, false}, [&](int fl) { return REAL(signalfd)(-1, mask, fl); });
}

// Signal masks. The OS thread's mask belongs to the main greenlet: a greenlet
// thread's pthread_sigmask changes only its own recorded view (a thread that
// blocks everything, as CPython's faulthandler watchdog does, must not deaf
// the whole process). Signals are then delivered as Linux would to the main
// thread; a signal that only a greenlet thread unblocks stays pending.
namespace {
int mask_op(int how, const sigset_t* set, sigset_t* old, bool process) {
    GThread* t = config().enabled && !in_vfork_child() ? gthread_current() : nullptr;  // (a vfork child's is the kernel's)
    if (!t) return process ? REAL(sigprocmask)(how, set, old) : REAL(pthread_sigmask)(how, set, old);
    if (old) *old = t->sigmask;
    if (!set) return 0;
    switch (how) {
    case SIG_BLOCK: sigorset(&t->sigmask, &t->sigmask, set); break;
    case SIG_UNBLOCK:
        for (int s = 1; s < NSIG; ++s)
            if (sigismember(set, s)) sigdelset(&t->sigmask, s);
        break;
    case SIG_SETMASK: t->sigmask = *set; break;
    default:
        if (process) {
            errno = EINVAL;
            return -1;
        }
        return EINVAL;
    }
    sigdelset(&t->sigmask, SIGKILL);
    sigdelset(&t->sigmask, SIGSTOP);
    if (t->owns_os_mask) REAL(pthread_sigmask)(SIG_SETMASK, &t->sigmask, nullptr);
    return 0;
}
}  // namespace

WaitMask::WaitMask(const sigset_t* mask) noexcept {
    if (!mask) return;
    since_.emplace();
    set_ = mask_op(SIG_SETMASK, mask, &old_, false) == 0;
}
WaitMask::~WaitMask() {
    if (set_) mask_op(SIG_SETMASK, &old_, nullptr, false);
}

OsMaskOfThread::OsMaskOfThread() noexcept {
    GThread* t = config().enabled ? gthread_current() : nullptr;
    if (!t || t->owns_os_mask) return;  // (the OS thread's mask is its already)
    set_ = REAL(pthread_sigmask)(SIG_SETMASK, &t->sigmask, &old_) == 0;
}
OsMaskOfThread::~OsMaskOfThread() {
    if (set_) REAL(pthread_sigmask)(SIG_SETMASK, &old_, nullptr);
}

void greenshim::shim::fork_child_takes_os_mask() noexcept {
    GThread* t = config().enabled ? gthread_current() : nullptr;
    if (!t) return;
    REAL(pthread_sigmask)(SIG_SETMASK, &t->sigmask, nullptr);
    t->owns_os_mask = true;
}

SHIM_EXPORT int pthread_sigmask(int how, const sigset_t* set, sigset_t* old) { SHIM_ENTER; return mask_op(how, set, old, false); }
SHIM_EXPORT int sigprocmask(int how, const sigset_t* set, sigset_t* old) { SHIM_ENTER; return mask_op(how, set, old, true); }
