// Diagnostics: counters, the park/wake trace, the greenlet table, the guard
// page lookup and the blocking monitor (diag.hpp).
//
// Reports are written with snprintf into a stack buffer and write(2) inside an
// InternalScope, so that an interposed write() goes straight to libc and the
// report never parks or allocates.
#include <dlfcn.h>
#include <fcntl.h>
#include <ucontext.h>
#include <unwind.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <algorithm>
#include <mutex>

#include "greenshim/cold.hpp"
#include "greenshim/trace_families.hpp"
#include "internal.hpp"
#include "os_sync.hpp"
// Last: its <elf.h> defines EV_NONE, which ev.h (from internal.hpp) declares
// as a constant of its own, of the same value, 0.
#include <sys/auxv.h>

namespace greenshim {

namespace detail {

Counters g_counters;
std::atomic<bool> g_tracing{false};

namespace {
std::atomic<bool> g_timing{false};
std::atomic<std::int64_t> g_first_hub_ns{0};

// The registry of hubs (created once per OS thread that waits): a list under
// a mutex, touched at hub creation and destruction and by readers.
// The monitor thread takes it every period/2: a fork() at that moment would
// leave the child's copy locked forever (its stats at exit would hang), so
// fork takes it first and both sides let go after.
OsMutex& registry_mu() {
    static OsMutex* mu = [] {
        auto* m = new OsMutex;  // never destroyed: used from exit paths
        pthread_atfork([] { registry_mu().lock(); }, [] { registry_mu().unlock(); },
                       [] { registry_mu().reset(); });
        return m;
    }();
    return *mu;
}
Hub* g_hubs = nullptr;
// The idle book (internal.hpp), under the registry's lock.
unsigned g_hub_count = 0;
unsigned g_idle_hubs = 0;

// The registry of WaitSites: a lock-free push-only list.
std::atomic<WaitSite*> g_sites{nullptr};

// set_trace's families, as a bitmask over kFamilies (trace_families.hpp).
constexpr const char* const* kFamilies = kTraceFamilies;
std::atomic<unsigned> g_trace_mask{0};

int family_index(const char* f, std::size_t len) noexcept {
    for (int i = 0; kFamilies[i]; ++i)
        if (std::strlen(kFamilies[i]) == len && std::memcmp(kFamilies[i], f, len) == 0) return i;
    return -1;
}

void register_site(WaitSite& site) noexcept {
    bool expected = false;
    if (!site.registered.compare_exchange_strong(expected, true, std::memory_order_acq_rel)) return;
    WaitSite* head = g_sites.load(std::memory_order_relaxed);
    do site.next = head;
    while (!g_sites.compare_exchange_weak(head, &site, std::memory_order_release, std::memory_order_relaxed));
}

// Where a report goes: fd, and a copy to also (-1: none) that may not block
// the process (write_guarded).
struct Sink {
    int fd;
    int also = -1;
};

// Writes to an fd that may be a pipe nobody reads: waits at most 200 ms for
// it to take each piece, then gives up on it.
void write_guarded(int fd, const char* buf, std::size_t len) noexcept {
    int saved = errno;
    InternalScope internal;
    for (std::size_t off = 0; off < len;) {
        pollfd p{fd, POLLOUT, 0};
        int r = ::poll(&p, 1, 200);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0 || (p.revents & (POLLERR | POLLNVAL))) break;
        ssize_t w = ::write(fd, buf + off, len - off);
        if (w < 0 && (errno == EINTR || errno == EAGAIN)) continue;
        if (w <= 0) break;
        off += std::size_t(w);
    }
    errno = saved;
}

// Formatted output for reports: never parks, never allocates.
void vsink(const Sink& s, const char* fmt, va_list ap) noexcept {
    char buf[512];
    int n = std::vsnprintf(buf, sizeof buf, fmt, ap);
    if (n <= 0) return;
    std::size_t len = std::min<std::size_t>(std::size_t(n), sizeof buf - 1);
    write_fully(s.fd, buf, len);
    if (s.also >= 0) write_guarded(s.also, buf, len);
}

void sink_out(const Sink& s, const char* fmt, ...) noexcept __attribute__((format(printf, 2, 3)));
void sink_out(const Sink& s, const char* fmt, ...) noexcept {
    va_list ap;
    va_start(ap, fmt);
    vsink(s, fmt, ap);
    va_end(ap);
}
void out(int fd, const char* fmt, ...) noexcept __attribute__((format(printf, 2, 3)));
void out(int fd, const char* fmt, ...) noexcept {
    va_list ap;
    va_start(ap, fmt);
    vsink(Sink{fd}, fmt, ap);
    va_end(ap);
}

// "read fd 5", "pthread_mutex_lock 0x55d0c0", "pthread_join" for a wait.
void describe_wait(const Greenlet::Impl& im, char* buf, std::size_t size) noexcept {
    const WaitSite* s = im.site;
    if (!s) {
        std::snprintf(buf, size, "an unnamed wait");
        return;
    }
    switch (s->arg_kind) {
    case WaitSite::Arg::none: std::snprintf(buf, size, "%s", s->call); break;
    case WaitSite::Arg::fd: std::snprintf(buf, size, "%s fd %ld", s->call, long(im.wait_arg)); break;
    case WaitSite::Arg::address: std::snprintf(buf, size, "%s %p", s->call, reinterpret_cast<void*>(im.wait_arg)); break;
    case WaitSite::Arg::pid: std::snprintf(buf, size, "%s pid %ld", s->call, long(im.wait_arg)); break;
    case WaitSite::Arg::signal: std::snprintf(buf, size, "%s", s->call); break;
    }
}

const char* family_of(const Greenlet::Impl& im) noexcept { return im.site ? im.site->family : "api"; }
}  // namespace

struct Diag {
    static void poll_begins(Hub& h) noexcept {
        h.poll_started_ = monotonic_ns();
        h.polling_.store(true, std::memory_order_relaxed);
    }
    static void poll_ends(Hub& h) noexcept {
        h.polling_.store(false, std::memory_order_relaxed);
        bump(h.turn_);
        h.wait_ns_.store(h.wait_ns_.load(std::memory_order_relaxed) + (monotonic_ns() - h.poll_started_),
                         std::memory_order_relaxed);
    }
    static void start_timing(Hub& h) noexcept;
    static void poll_flag(Hub& h, bool in_poll) noexcept { h.polling_.store(in_poll, std::memory_order_relaxed); }
    static void watch_polls(Hub& h) noexcept;  // untimed: only poll_flag
    static Hub*& next(Hub& h) noexcept { return h.registry_next_; }
    static bool& idle(Hub& h) noexcept { return h.idle_; }
    static std::uint64_t turn(Hub& h) noexcept { return h.turn_.load(std::memory_order_relaxed); }
    static bool polling(Hub& h) noexcept { return h.polling_.load(std::memory_order_relaxed); }
    static Greenlet* running(Hub& h) noexcept { return h.running_.load(std::memory_order_relaxed); }
    static pthread_t thread(Hub& h) noexcept { return h.thread_; }
    static int tid(Hub& h) noexcept { return h.tid_; }
    static std::uint32_t fd_bit(Hub& h) noexcept { return h.fd_bit_; }
    static ThreadState* state(Hub& h) noexcept { return h.state_; }
    static void count_park(Hub& h) noexcept { bump(h.parks_); }
    static void add(Hub& h, RuntimeStats& s) noexcept {
        s.switches += h.switches_.load(std::memory_order_relaxed);
        s.parks += h.parks_.load(std::memory_order_relaxed);
        s.preemptions += h.preemptions_.load(std::memory_order_relaxed);
        s.hand_offs += h.hand_offs_.load(std::memory_order_relaxed);
        s.steals += h.steals_.load(std::memory_order_relaxed);
        std::int64_t waited = h.wait_ns_.load(std::memory_order_relaxed);
        s.hub_wait_ns += waited;
        // Each hub's own time since its timing began, less its waits (with
        // several hubs the sum of their lives, not the wall time, is split).
        if (h.timing_since_) {
            s.hub_run_ns += monotonic_ns() - h.timing_since_ - waited;
            ++s.hubs_timed;
        }
    }
};

bool timing_enabled() noexcept { return g_timing.load(std::memory_order_relaxed); }

void greenlet_started() noexcept {
    g_counters.spawned.fetch_add(1, std::memory_order_relaxed);
    std::uint64_t alive = g_counters.alive.fetch_add(1, std::memory_order_relaxed) + 1;
    std::uint64_t peak = g_counters.peak_alive.load(std::memory_order_relaxed);
    while (alive > peak && !g_counters.peak_alive.compare_exchange_weak(peak, alive, std::memory_order_relaxed)) {
    }
}

void greenlet_ended() noexcept { g_counters.alive.fetch_sub(1, std::memory_order_relaxed); }

void count_park(Greenlet& g) noexcept {
    Greenlet::Impl& im = detail::impl_of(g);
    if (im.hub) Diag::count_park(*im.hub);
    if (WaitSite* s = im.site) {
        if (!s->registered.load(std::memory_order_relaxed)) register_site(*s);
        // Not a locked add (~20 cycles on every park): two parks at one site
        // on two hubs at the same instant may count once (a statistic).
        bump(s->parks);
    }
}

bool site_traced(WaitSite& site) noexcept {
    int t = site.traced.load(std::memory_order_relaxed);
    if (t < 0) {
        int i = family_index(site.family, std::strlen(site.family));
        t = i >= 0 && (g_trace_mask.load(std::memory_order_relaxed) & (1u << i)) ? 1 : 0;
        site.traced.store(t, std::memory_order_relaxed);
    }
    return t == 1;
}

namespace {
bool traced(Greenlet::Impl& im) noexcept {
    if (im.site) return site_traced(*im.site);
    return (g_trace_mask.load(std::memory_order_relaxed) & (1u << family_index("api", 3))) != 0;
}
double since_start_ms() noexcept {
    std::int64_t t0 = g_first_hub_ns.load(std::memory_order_relaxed);
    return t0 ? double(monotonic_ns() - t0) / 1e6 : 0.0;
}
}  // namespace

void trace_park(Greenlet& g, Deadline deadline) noexcept {
    Greenlet::Impl& im = detail::impl_of(g);
    if (!traced(im)) return;
    im.parked_at = monotonic_ns();
    char what[128];
    describe_wait(im, what, sizeof what);
    char limit[48] = "";
    if (deadline != kForever) std::snprintf(limit, sizeof limit, " for at most %.3f ms", double(deadline - im.parked_at) / 1e6);
    out(2, "greenshim[%d] %10.3f ms: greenlet %llu (%s) parks in %s%s\n", int(getpid()), since_start_ms(),
        (unsigned long long)g.id(), g.name().c_str(), what, limit);
}

void trace_wake(Greenlet& g) noexcept {
    Greenlet::Impl& im = detail::impl_of(g);
    if (!traced(im)) return;
    char what[128];
    describe_wait(im, what, sizeof what);
    double waited = im.parked_at ? double(monotonic_ns() - im.parked_at) / 1e6 : 0.0;
    out(2, "greenshim[%d] %10.3f ms: greenlet %llu (%s) wakes (%s) from %s after %.3f ms\n", int(getpid()),
        since_start_ms(), (unsigned long long)g.id(), g.name().c_str(), to_string(im.wake), what, waited);
}


namespace {
void on_poll_release(struct ev_loop* loop) noexcept {
    Hub* h = static_cast<Hub*>(ev_userdata(loop));
    Diag::poll_begins(*h);
}
void on_poll_acquire(struct ev_loop* loop) noexcept {
    Hub* h = static_cast<Hub*>(ev_userdata(loop));
    Diag::poll_ends(*h);
}
// Untimed hubs: only whether the hub is in its poll's system call
// (Hub::blocked_in_poll). Cost: a store on each side of each poll.
void on_poll_release_untimed(struct ev_loop* loop) noexcept {
    Diag::poll_flag(*static_cast<Hub*>(ev_userdata(loop)), true);
}
void on_poll_acquire_untimed(struct ev_loop* loop) noexcept {
    Diag::poll_flag(*static_cast<Hub*>(ev_userdata(loop)), false);
}
}  // namespace


void Diag::watch_polls(Hub& h) noexcept { ev_set_loop_release_cb(h.loop_, on_poll_release_untimed, on_poll_acquire_untimed); }

void Diag::start_timing(Hub& h) noexcept {
    h.timing_since_ = monotonic_ns();
    ev_set_loop_release_cb(h.loop_, on_poll_release, on_poll_acquire);
}

void hub_register(Hub* h) noexcept {
    std::int64_t zero = 0;
    g_first_hub_ns.compare_exchange_strong(zero, monotonic_ns(), std::memory_order_relaxed);
    InternalScope internal;
    std::lock_guard<detail::OsMutex> lk(registry_mu());
    Diag::next(*h) = g_hubs;
    g_hubs = h;
    if (++g_hub_count > 1) g_several_hubs.store(true, std::memory_order_relaxed);
    if (timing_enabled()) Diag::start_timing(*h);
    else Diag::watch_polls(*h);
}

std::atomic<bool> g_several_hubs{false};

void post_fd_closed(std::uint32_t hubs, int fd, Hub* except) noexcept {
    InternalScope internal;
    std::lock_guard<detail::OsMutex> lk(registry_mu());  // (a listed hub is not gone)
    for (Hub* h = g_hubs; h; h = Diag::next(*h))
        if (h != except && (Diag::fd_bit(*h) & hubs)) post_closed_fd(*h, fd);
}

namespace {
// Whether the calling hub, not marked idle, is the last one awake and no
// wake is on its way. Under registry_mu.
bool last_awake() noexcept { return g_idle_hubs + 1 >= g_hub_count && g_wakes_in_flight.load() == 0; }
}  // namespace

bool idle_begin(Hub* h, bool always_mark) noexcept {
    InternalScope internal;
    std::lock_guard<detail::OsMutex> lk(registry_mu());
    bool last = last_awake();
    if (last && !always_mark) return false;
    if (!Diag::idle(*h)) {
        Diag::idle(*h) = true;
        ++g_idle_hubs;
    }
    return !last;
}

void idle_end(Hub* h) noexcept {
    // Only h's own thread sets its mark (idle_begin, here, its unregistering):
    // it may look without the lock, and a hub that was not idle (on_async's
    // every cross-hub wake) takes no lock.
    if (!Diag::idle(*h)) return;
    InternalScope internal;
    std::lock_guard<detail::OsMutex> lk(registry_mu());
    if (Diag::idle(*h)) {
        Diag::idle(*h) = false;
        --g_idle_hubs;
    }
}

std::atomic<int> g_own_threads{0};

bool others_could_wake() noexcept {
    InternalScope internal;  // (the reads below go straight to libc)
    char buf[1024];
    std::lock_guard<detail::OsMutex> lk(registry_mu());
    if (!last_awake()) return true;
    int fd = ::open("/proc/self/stat", O_RDONLY | O_CLOEXEC);
    if (fd < 0) return false;
    ssize_t n = ::read(fd, buf, sizeof buf - 1);
    ::close(fd);
    if (n <= 0) return false;
    buf[n] = 0;
    // Field 20, num_threads, is the 18th after the command's closing ')'.
    const char* p = std::strrchr(buf, ')');
    for (int field = 2; p && field < 20; ++field) p = std::strchr(p + 1, ' ');
    if (!p) return false;
    long threads = std::strtol(p + 1, nullptr, 10);
    return threads > long(g_hub_count) + g_own_threads.load();
}

// In a fork's child only the forking thread's hub is left (the others'
// threads did not come along): the registry and the idle book keep it alone.
void registry_after_fork_child(Hub* h) noexcept {
    g_hubs = h;
    Diag::next(*h) = nullptr;
    Diag::idle(*h) = false;
    g_hub_count = 1;
    g_idle_hubs = 0;
    g_own_threads.store(0);  // (theirs did not come along either)
}

// Stats of hubs that are gone, kept so that the exit report still counts them.
RuntimeStats g_gone;

void hub_unregister(Hub* h) noexcept {
    InternalScope internal;
    std::lock_guard<detail::OsMutex> lk(registry_mu());
    for (Hub** p = &g_hubs; *p; p = &Diag::next(**p)) {
        if (*p == h) {
            *p = Diag::next(*h);
            Diag::add(*h, g_gone);
            --g_hub_count;
            if (Diag::idle(*h)) {
                Diag::idle(*h) = false;
                --g_idle_hubs;
            }
            // The hubs left may all be idle now, with nothing that could wake
            // them: one of them finds the deadlock when it looks again.
            if (g_idle_hubs != 0 && g_idle_hubs == g_hub_count && g_wakes_in_flight.load() == 0) {
                for (Hub* o = g_hubs; o; o = Diag::next(*o)) {
                    if (Diag::idle(*o)) {
                        poke(*o);
                        break;
                    }
                }
            }
            return;
        }
    }
}

}  // namespace detail

using detail::Diag;
using detail::ts;

WaitScope::WaitScope(WaitSite& site, std::intptr_t arg) noexcept {
    Greenlet::Impl& im = detail::impl_of(detail::current_greenlet());
    impl_ = &im;
    saved_site_ = im.site;
    saved_arg_ = im.wait_arg;
    im.site = &site;
    im.wait_arg = arg;
}

WaitScope::~WaitScope() {
    auto& im = *static_cast<Greenlet::Impl*>(impl_);
    im.site = saved_site_;
    im.wait_arg = saved_arg_;
}

ParkScope::ParkScope(WaitSite& site, std::intptr_t arg, InterruptMask accepts) noexcept {
    Greenlet::Impl& im = detail::impl_of(detail::current_greenlet());
    impl_ = &im;
    saved_site_ = im.site;
    saved_arg_ = im.wait_arg;
    saved_mask_ = im.interrupt_mask;
    im.site = &site;
    im.wait_arg = arg;
    im.interrupt_mask = accepts;
}

ParkScope::~ParkScope() {
    auto& im = *static_cast<Greenlet::Impl*>(impl_);
    im.site = saved_site_;
    im.wait_arg = saved_arg_;
    im.interrupt_mask = saved_mask_;
}

void set_greenlet_entry(Greenlet& g, void* code) noexcept { detail::impl_of(g).entry = code; }
void* greenlet_entry(const Greenlet& g) noexcept { return detail::impl_of(g).entry; }

RuntimeStats runtime_stats() noexcept {
    RuntimeStats s;
    {
        InternalScope internal;
        std::lock_guard<detail::OsMutex> lk(detail::registry_mu());
        s = detail::g_gone;
        for (Hub* h = detail::g_hubs; h; h = Diag::next(*h)) Diag::add(*h, s);
    }
    s.spawned = detail::g_counters.spawned.load(std::memory_order_relaxed);
    s.alive = detail::g_counters.alive.load(std::memory_order_relaxed);
    s.peak_alive = detail::g_counters.peak_alive.load(std::memory_order_relaxed);
    s.helper_threads = detail::g_counters.helpers.load(std::memory_order_relaxed);
    s.peak_helper_threads = detail::g_counters.peak_helpers.load(std::memory_order_relaxed);
    s.helper_jobs = detail::g_counters.helper_jobs.load(std::memory_order_relaxed);
    s.carriers = detail::g_counters.carriers.load(std::memory_order_relaxed);
    return s;
}

void enable_timing() noexcept {
    if (detail::g_timing.exchange(true)) return;
    InternalScope internal;
    std::lock_guard<detail::OsMutex> lk(detail::registry_mu());
    // Hubs of other threads: their loops are not ours to touch; only this
    // thread's hub (if any) starts timing now, the rest from their creation.
    if (Hub* mine = Hub::existing()) Diag::start_timing(*mine);
}

void write_stats(int fd, const char* prefix) noexcept {
    RuntimeStats s = runtime_stats();
    using detail::out;
    out(fd, "%s greenlets: %llu spawned, %llu alive at exit, peak %llu alive\n", prefix,
        (unsigned long long)s.spawned, (unsigned long long)s.alive, (unsigned long long)s.peak_alive);
    out(fd, "%s switches: %llu; parks: %llu; preemptions: %llu; hand-offs: %llu; steals: %llu\n", prefix,
        (unsigned long long)s.switches, (unsigned long long)s.parks, (unsigned long long)s.preemptions,
        (unsigned long long)s.hand_offs, (unsigned long long)s.steals);
    // Parks per family, summed over the registered sites.
    std::uint64_t per_family[16] = {};
    for (WaitSite* w = detail::g_sites.load(std::memory_order_acquire); w; w = w->next) {
        int i = detail::family_index(w->family, std::strlen(w->family));
        if (i >= 0) per_family[i] += w->parks.load(std::memory_order_relaxed);
    }
    std::uint64_t named = 0;
    char line[400];
    int len = std::snprintf(line, sizeof line, "%s parks by family:", prefix);
    for (int i = 0; detail::kFamilies[i]; ++i) {
        named += per_family[i];
        if (per_family[i] && len < int(sizeof line))
            len += std::snprintf(line + len, sizeof line - std::size_t(len), " %s %llu", detail::kFamilies[i],
                                 (unsigned long long)per_family[i]);
    }
    if (s.parks > named && len < int(sizeof line))
        len += std::snprintf(line + len, sizeof line - std::size_t(len), " other %llu",
                             (unsigned long long)(s.parks - named));
    out(fd, "%s\n", line);
    // They are OS threads a user sees in /proc/PID/status beside the one
    // that runs the greenlets: say what they are and when they go.
    if (s.peak_helper_threads)
        out(fd, "%s helper threads (DNS lookups, file I/O on the pool): %llu alive, peak %llu, %llu calls run; "
                "an idle one ends after %d s\n",
            prefix, (unsigned long long)s.helper_threads, (unsigned long long)s.peak_helper_threads,
            (unsigned long long)s.helper_jobs, detail::kHelperIdleSeconds);
    if (s.carriers)
        out(fd, "%s carrier threads (run a thread that did not wait, or sat blocked in a system call, beside the others): %llu started; an idle one "
                "ends after %d s\n",
            prefix, (unsigned long long)s.carriers, detail::kHelperIdleSeconds);
    if (detail::timing_enabled()) {
        double total = double(s.hub_wait_ns + s.hub_run_ns);
        // (Each hub's own life is split: with several, the sums exceed the
        // wall time, and the line says so.)
        char over[64] = "";
        if (s.hubs_timed > 1)
            std::snprintf(over, sizeof over, ", summed over %llu hubs", (unsigned long long)s.hubs_timed);
        out(fd, "%s hub time: %.3f s waiting for events, %.3f s running greenlets (%.1f%% busy)%s\n", prefix,
            double(s.hub_wait_ns) / 1e9, double(s.hub_run_ns) / 1e9,
            total > 0 ? 100.0 * double(s.hub_run_ns) / total : 0.0, over);
    }
}

namespace detail {
namespace {
// One greenlet's line of the table: "  greenlet 3 (name): waiting in read fd 5
// [io]; started at worker (prog)".
void write_row(const Sink& s, Greenlet& g) noexcept {
    Greenlet::Impl& im = impl_of(g);
    char what[200] = "";
    // The greenlet writing the report (main, woken to hear of a deadlock)
    // still shows where it waits.
    bool waiting = g.state() == GreenletState::parked || (&g == t_state->current && im.site);
    if (waiting) {
        char w[128];
        describe_wait(im, w, sizeof w);
        int n = std::snprintf(what, sizeof what, " in %s [%s]", w, family_of(im));
        // A timed park's timer runs while it waits (im.deadline is stale otherwise).
        if (g.state() == GreenletState::parked && ev_is_active(&im.timer) && n > 0 && n < int(sizeof what)) {
            std::int64_t left = im.deadline - monotonic_ns();
            std::snprintf(what + n, sizeof what - std::size_t(n), " (%.3f s left)",
                          double(left > 0 ? left : 0) / 1e9);
        }
    }
    char code[280] = "";
    if (im.entry) {
        std::memcpy(code, "; started at ", 14);
        describe_code(im.entry, code + 13, sizeof code - 13);
    }
    const char* state = waiting ? "waiting"
                        : g.state() == GreenletState::ready ? "runnable"
                                                             : to_string(g.state());
    sink_out(s, "  greenlet %llu (%s): %s%s%s\n", (unsigned long long)g.id(), g.name().c_str(), state, what, code);
}

template <class F>
void for_each_row(F&& f, ThreadState* t = t_state, bool with_main = true) noexcept {
    if (with_main && t->main && !t->main->dead()) f(*t->main);
    for (Greenlet* g = t->live_head; g; g = impl_of(*g).live_next)
        if (!impl_of(*g).is_hub) f(*g);
}
}  // namespace
}  // namespace detail

void write_greenlet_table(int fd) noexcept {
    if (!detail::t_state) return;
    detail::Sink s{fd};
    detail::for_each_row([&](Greenlet& g) { detail::write_row(s, g); });
}

void write_idle_hubs_table(int fd) noexcept {
    write_greenlet_table(fd);
    InternalScope internal;
    std::lock_guard<detail::OsMutex> lk(detail::registry_mu());
    detail::Sink s{fd};
    for (Hub* h = detail::g_hubs; h; h = Diag::next(*h)) {
        if (h == Hub::existing() || !Diag::idle(*h) || !Diag::state(*h)) continue;
        // (A worker's main greenlet only keeps its OS thread: not a row.)
        bool first = true;
        detail::for_each_row(
            [&](Greenlet& g) {
                if (std::exchange(first, false))
                    detail::sink_out(s, "  on the hub of OS thread %d%s:\n", Diag::tid(*h), h->is_worker() ? " (a worker)" : "");
                detail::write_row(s, g);
            },
            Diag::state(*h), !h->is_worker());
    }
}

// ---- the dump: every greenlet with its backtrace (diag.hpp says how) ----

#if defined(__x86_64__) && defined(__ELF__) && !defined(BOOST_USE_UCONTEXT)
#define GREENSHIM_UNWIND_FCONTEXT 1
// greenshim_unwind_fcontext(fctx, trace, arg): _Unwind_Backtrace(trace, arg),
// called from a frame whose unwind info says that its caller is the context
// jump_fcontext saved at fctx (diag.hpp). After the call r12 still holds fctx
// (callee-saved), which the CFI names the CFA by.
extern "C" __attribute__((visibility("hidden"))) _Unwind_Reason_Code greenshim_unwind_fcontext(
    const void* fctx, _Unwind_Trace_Fn trace, void* arg);
__asm__(R"(
    .text
    .p2align 4
    .globl greenshim_unwind_fcontext
    .hidden greenshim_unwind_fcontext
    .type greenshim_unwind_fcontext, @function
greenshim_unwind_fcontext:
    .cfi_startproc
    pushq %r12
    .cfi_def_cfa_offset 16
    .cfi_offset %r12, -16
    movq %rdi, %r12
    .cfi_remember_state
    .cfi_def_cfa %r12, 0x40
    .cfi_offset %rbp, -0x10
    .cfi_offset %rbx, -0x18
    .cfi_offset %r15, -0x20
    .cfi_offset %r14, -0x28
    .cfi_offset %r13, -0x30
    .cfi_offset %r12, -0x38
    movq %rsi, %rdi
    movq %rdx, %rsi
    call _Unwind_Backtrace@PLT
    nop
    .cfi_restore_state
    popq %r12
    .cfi_def_cfa_offset 8
    ret
    .cfi_endproc
    .size greenshim_unwind_fcontext, .-greenshim_unwind_fcontext
)");
#endif

namespace detail {
namespace {
constexpr int kDumpFrames = 64;

struct Walk {
    static constexpr int kSlots = kDumpFrames + 16;  // the handler's own frames come first
    void* ips[kSlots];
    int n = 0;
    int skip = 0;                 // frames of ours to pass over first
    std::uintptr_t lo = 0, hi = 0;  // the greenlet's stack; hi 0: unknown
    bool more = false;            // stopped at kSlots
};

_Unwind_Reason_Code collect_frame(_Unwind_Context* c, void* arg) {
    Walk& w = *static_cast<Walk*>(arg);
    int before = 0;
    std::uintptr_t ip = _Unwind_GetIPInfo(c, &before);
    if (!ip) return _URC_END_OF_STACK;
    if (w.skip > 0) {
        --w.skip;
        return _URC_NO_REASON;
    }
    if (w.hi) {
        std::uintptr_t cfa = _Unwind_GetCFA(c);
        if (cfa < w.lo || cfa > w.hi) return _URC_END_OF_STACK;
    }
    if (w.n == Walk::kSlots) {
        w.more = true;
        return _URC_END_OF_STACK;
    }
    w.ips[w.n++] = reinterpret_cast<void*>(ip);
    return _URC_NO_REASON;
}

void write_frames(const Sink& s, void* const* ips, int n, bool more) noexcept {
    if (n > kDumpFrames) {
        n = kDumpFrames;
        more = true;
    }
    for (int i = 0; i < n; ++i) {
        char code[280];
        describe_code(ips[i], code, sizeof code);
        sink_out(s, "      #%-2d %p %s\n", i, ips[i], code);
    }
    if (more) sink_out(s, "      ... (more frames)\n");
}

// The running greenlet's (or the hub's) frames: from the instruction the
// signal interrupted, else from our caller.
void write_running_backtrace(const Sink& s, const void* uctx) noexcept {
    Walk w;
    w.skip = 1;  // this function
    _Unwind_Backtrace(collect_frame, &w);
    if (w.n == 0) {  // (the preload's unwinder is loaded at the first thread: shim/unwind.cpp)
        sink_out(s, "      (no backtrace: no unwinder loaded in this process)\n");
        return;
    }
    int from = 0;
    if (uctx) {
        auto pc = reinterpret_cast<void*>(static_cast<const ucontext_t*>(uctx)->uc_mcontext.gregs[REG_RIP]);
        from = -1;
        for (int i = 0; i < w.n && from < 0; ++i)
            if (w.ips[i] == pc) from = i;
        if (from < 0) {
            sink_out(s, "      (the interrupted frame was not found; the signal handler's frames included)\n");
            from = 0;
        }
    } else {
        from = w.n > 0 ? 1 : 0;  // write_greenlet_dump
    }
    write_frames(s, w.ips + from, w.n - from, w.more);
}

void write_suspended_backtrace(const Sink& s, Greenlet& g) noexcept {
#if GREENSHIM_UNWIND_FCONTEXT
    Greenlet::Impl& im = impl_of(g);
    const void* fctx = fcontext_of(im.ctx);
    Walk w;
    w.skip = 1;  // greenshim_unwind_fcontext
    auto at = reinterpret_cast<std::uintptr_t>(fctx);
    if (!g.is_main()) {
        w.hi = reinterpret_cast<std::uintptr_t>(im.stack.sp);
        w.lo = w.hi - im.stack.size;
    }
    if (!fctx || (at & 7) || (w.hi && (at < w.lo || at + 0x40 > w.hi))) {
        sink_out(s, "      (no saved context)\n");
        return;
    }
    greenshim_unwind_fcontext(fctx, collect_frame, &w);
    if (w.n == 0) sink_out(s, "      (no backtrace: no unwinder loaded in this process)\n");
    write_frames(s, w.ips, w.n, w.more);
#else
    (void)g;
    sink_out(s, "      (backtraces of suspended greenlets: x86-64 fcontext builds only)\n");
#endif
}
}  // namespace
}  // namespace detail

namespace detail {
namespace {
// Each row of t's OS thread, followed by its greenlet's backtrace.
void write_rows_with_backtraces(Sink& s, ThreadState* t, const void* uctx, bool with_main) noexcept {
    Greenlet* cur = t->current;
    for_each_row(
        [&](Greenlet& g) {
            write_row(s, g);
            if (&g == cur) write_running_backtrace(s, uctx);
            else if (g.state() == GreenletState::fresh) sink_out(s, "      (not started yet)\n");
            else write_suspended_backtrace(s, g);
        },
        t, with_main);
}
}  // namespace
}  // namespace detail

void write_worker_dump_part(int fd, int also_fd, const void* uctx) noexcept {
    detail::Sink s{fd, also_fd};
    detail::ThreadState* t = detail::t_state;
    if (!t || !t->hub) return;
    Greenlet* cur = t->current;
    bool hub_runs = cur && detail::impl_of(*cur).is_hub;
    detail::sink_out(s, "  on the hub of OS thread %d (a worker; %s):\n", Diag::tid(*t->hub),
                     hub_runs ? "running its loop" : "running a greenlet");
    detail::write_rows_with_backtraces(s, t, uctx, /*with_main=*/false);  // (its main only keeps the thread)
}

void write_dump_end(int fd, int also_fd) noexcept {
    detail::Sink s{fd, also_fd};
    detail::sink_out(s, "greenshim: end of dump\n");
}

void write_greenlet_dump(int fd, int also_fd, const void* uctx, bool end_line) noexcept {
    detail::Sink s{fd, also_fd};
    detail::ThreadState* t = detail::t_state;
    char comm[32] = "";
    {
        InternalScope internal;
        int c = ::open("/proc/self/comm", O_RDONLY | O_CLOEXEC);
        if (c >= 0) {
            ssize_t n = ::read(c, comm, sizeof comm - 1);
            comm[n > 0 ? n : 0] = '\0';
            if (char* nl = std::strchr(comm, '\n')) *nl = '\0';
            ::close(c);
        }
    }
    if (!t) {
        detail::sink_out(s, "greenshim: dump of process %d (%s): no greenlets on this thread yet\n", int(getpid()), comm);
        detail::write_running_backtrace(s, uctx);
    } else {
        std::size_t n = (t->main && !t->main->dead() ? 1 : 0) + t->alive - (t->hub && t->hub->greenlet().started() &&
                                                                           !t->hub->greenlet().dead() ? 1 : 0);
        Greenlet* cur = t->current;
        bool hub_runs = cur && detail::impl_of(*cur).is_hub;
        detail::sink_out(s, "greenshim: dump of process %d (%s): %zu greenlets; %s\n", int(getpid()), comm, n,
                         hub_runs ? "the hub was running its loop (waiting for events, or waking greenlets)"
                                  : "the hub was running a greenlet (marked running)");
        detail::write_rows_with_backtraces(s, t, uctx, true);
    }
    if (end_line) detail::sink_out(s, "greenshim: end of dump\n");
}

pthread_t hub_thread(Hub& hub) noexcept { return Diag::thread(hub); }

bool set_trace(const char* spec) noexcept {
    unsigned mask = 0;
    if (spec && *spec) {
        if (!std::strcmp(spec, "1") || !std::strcmp(spec, "all")) {
            for (int i = 0; detail::kFamilies[i]; ++i) mask |= 1u << i;
        } else if (!std::strcmp(spec, "0")) {
            mask = 0;
        } else {
            for (const char* p = spec; *p;) {
                const char* end = std::strchr(p, ',');
                std::size_t len = end ? std::size_t(end - p) : std::strlen(p);
                int i = detail::family_index(p, len);
                if (i < 0) return false;
                mask |= 1u << i;
                p += len;
                if (*p == ',') ++p;
            }
        }
    }
    detail::g_trace_mask.store(mask, std::memory_order_relaxed);
    for (WaitSite* w = detail::g_sites.load(std::memory_order_acquire); w; w = w->next)
        w->traced.store(-1, std::memory_order_relaxed);
    detail::g_tracing.store(mask != 0, std::memory_order_relaxed);
    return true;
}

const char* const* trace_families() noexcept { return detail::kFamilies; }

// Read at load time: the guard-page lookup runs in a SIGSEGV handler.
// (getauxval, which start-up calls anyway: sysconf's code and table are two
// pages of libc that nothing else at start-up faults in.)
GREENSHIM_STARTUP_DATA static std::uintptr_t g_page_size = std::uintptr_t(getauxval(AT_PAGESZ));

Greenlet* greenlet_for_guard_page(const void* addr) noexcept {
    detail::ThreadState* t = detail::t_state;
    if (!t) return nullptr;
    const std::uintptr_t page = g_page_size;
    auto a = reinterpret_cast<std::uintptr_t>(addr);
    auto guards = [&](Greenlet* g) {
        auto bottom = reinterpret_cast<std::uintptr_t>(g->stack_bottom());
        return bottom && a < bottom && a >= bottom - page;
    };
    // The running greenlet first: a thread carried on another OS thread
    // (GREENSHIM_HANDOFF) is not among that thread's live ones.
    if (t->current && guards(t->current)) return t->current;
    for (Greenlet* g = t->live_head; g; g = detail::impl_of(*g).live_next)
        if (guards(g)) return g;
    return nullptr;
}

// ---- the monitor ----

namespace {
struct Monitor {
    unsigned period_ms;
    StallReport report;
};

struct Seen {
    Hub* hub;
    std::uint64_t turn;
    std::int64_t since;
    bool reported;
};

void* monitor_main(void* arg) {
    detail::t_internal = 1;  // for life: libc calls here go straight to libc
    detail::OwnThread own;
    sigset_t all;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, nullptr);
    Monitor m = *static_cast<Monitor*>(arg);
    delete static_cast<Monitor*>(arg);
    constexpr int kMaxHubs = 64;
    Seen seen[kMaxHubs] = {};
    std::int64_t period = std::int64_t(m.period_ms) * 1000000;
    timespec tick{time_t(m.period_ms / 2 / 1000), long((m.period_ms / 2 % 1000) * 1000000)};
    if (m.period_ms < 2) tick = {0, 500000};
    for (;;) {
        nanosleep(&tick, nullptr);
        std::int64_t now = monotonic_ns();
        std::lock_guard<detail::OsMutex> lk(detail::registry_mu());
        Seen next[kMaxHubs] = {};
        int k = 0;
        for (Hub* h = detail::g_hubs; h && k < kMaxHubs; h = Diag::next(*h), ++k) {
            Seen s{h, Diag::turn(*h), now, false};
            for (const Seen& old : seen)
                if (old.hub == h && old.turn == s.turn) s = old;
            // A hub blocked in its poll is idle, not stalled.
            if (Diag::polling(*h)) s = Seen{h, s.turn, now, false};
            if (!s.reported && now - s.since > period) {
                s.reported = true;
                m.report(Diag::thread(*h), Diag::running(*h), now - s.since);
            }
            next[k] = s;
        }
        std::memcpy(seen, next, sizeof seen);
    }
    return nullptr;
}
}  // namespace

bool start_monitor(unsigned period_ms, StallReport report) noexcept {
    static std::atomic<bool> started{false};
    if (!period_ms || !report || started.exchange(true)) return false;
    enable_timing();
    InternalScope internal;
    auto* m = new (std::nothrow) Monitor{period_ms, report};
    if (!m) return false;
    pthread_t t;
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    pthread_attr_setstacksize(&attr, 256 * 1024);
    int rc = pthread_create(&t, &attr, monitor_main, m);
    pthread_attr_destroy(&attr);
    if (rc != 0) {
        delete m;
        return false;
    }
    return true;
}

void describe_code(const void* code, char* buf, std::size_t size) noexcept {
    if (!code) {
        std::snprintf(buf, size, "-");
        return;
    }
    Dl_info info{};
    if (!dladdr(code, &info) || !info.dli_fname) {
        std::snprintf(buf, size, "%p", code);
        return;
    }
    const char* module = std::strrchr(info.dli_fname, '/') ? std::strrchr(info.dli_fname, '/') + 1 : info.dli_fname;
    const char* at = static_cast<const char*>(code);
    if (info.dli_sname && info.dli_saddr == code) {
        std::snprintf(buf, size, "%s (%s)", info.dli_sname, module);
    } else if (info.dli_sname) {
        std::snprintf(buf, size, "%s+0x%lx (%s)", info.dli_sname,
                      (unsigned long)(at - static_cast<const char*>(info.dli_saddr)), module);
    } else {
        std::snprintf(buf, size, "%s+0x%lx", module, (unsigned long)(at - static_cast<const char*>(info.dli_fbase)));
    }
}

void write_fully(int fd, const char* buf, std::size_t len) noexcept {
    int saved = errno;
    InternalScope internal;
    for (std::size_t off = 0; off < len;) {
        ssize_t w = ::write(fd, buf + off, len - off);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) break;
        off += std::size_t(w);
    }
    errno = saved;
}

}  // namespace greenshim
