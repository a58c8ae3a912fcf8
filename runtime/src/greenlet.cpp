// Greenlets: Boost.Context fibers with greenlet's switch/parent/throw rules.
//
// Symmetric switching on top of boost::context::fiber: resume() hands the
// resumed fiber the suspended context of whoever resumed it, so the resumer
// records itself in ThreadState::from and the resumed side stores the context
// it receives into from->ctx (Runtime::after_resume). A dying greenlet returns
// its successor's context from the fiber function; Boost then frees the dead
// stack on top of the successor and the successor sees an empty fiber.
//
// In an ASan build every one of those switches is announced to ASan
// (sanitizers.hpp): start_switch_fiber on the way out, finish_switch_fiber on
// arrival. The plain build compiles none of it.
#include <cxxabi.h>
#include <pthread.h>
#include <sys/mman.h>
#include <unistd.h>

#include <atomic>
#include <cstddef>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <new>

#include "greenshim/cold.hpp"
#include "greenshim/symbols.hpp"
#include "internal.hpp"

namespace ctx = boost::context;

namespace greenshim {
namespace detail {

thread_local ThreadState* t_state GREENSHIM_TLS = nullptr;
// InternalScopes open on this OS thread (a pool thread sets it for life).
thread_local int t_internal GREENSHIM_TLS = 0;
// The main greenlet's owner id: only its address is used.
thread_local char t_main_token GREENSHIM_TLS;
// LoopFdsScopes open on this OS thread (making_loop_fds).
thread_local int t_loop_fds GREENSHIM_TLS = 0;

namespace {
// The exceptions being handled, saved and restored with each switch of a
// greenlet that shares its OS thread's thread-locals (one with its own block
// keeps them there). Ours, and the program's libstdc++'s when the process's
// __cxa_get_globals is another (a preload that links libstdc++ statically):
// found once at load, before any switch (a switch may run in a signal
// handler, where dlsym may not be called), and before the shim's constructor
// sets up the main thread (init_thread_state reads it). Each OS thread then
// keeps where its own are (ThreadState::eh_ours, eh_program, errno_at).
using GetEhGlobals = EhGlobals* (*)() noexcept;
GREENSHIM_STARTUP_DATA GetEhGlobals g_program_eh = nullptr;
__attribute__((constructor(101))) void find_program_eh_globals() noexcept {
    auto f = reinterpret_cast<GetEhGlobals>(find_global("__cxa_get_globals"));
    if (f && reinterpret_cast<void*>(f) != reinterpret_cast<void*>(&abi::__cxa_get_globals)) g_program_eh = f;
}
// A greenlet that shares its OS thread's thread-locals leaves and comes back.
void save_shared_locals(const ThreadState& t, Greenlet::Impl& g) noexcept {
    g.saved_errno = *t.errno_at;
    g.saved_eh.ours = *t.eh_ours;
    if (EhGlobals* p = t.eh_program) g.saved_eh.program = *p;
}
void restore_shared_locals(const ThreadState& t, const Greenlet::Impl& g) noexcept {
    *t.eh_ours = g.saved_eh.ours;
    if (EhGlobals* p = t.eh_program) *p = g.saved_eh.program;
    *t.errno_at = g.saved_errno;
}

std::atomic<std::uint64_t> g_next_id{1};
std::atomic<std::size_t> g_default_stack{256 * 1024};

// A thread's state and its main greenlet live in one block of pages of their
// own, never on the heap: the first thing that sets a thread up may be a lock
// taken inside malloc (an allocator's own mutex, contended), and operator new
// there would call that malloc again, before it is ready (jemalloc recursed
// ~116,000 frames deep that way). The block goes when both the thread state
// and the last reference to the main greenlet are gone.
struct ThreadBlock {
    ThreadState state;
    alignas(Greenlet) unsigned char main[sizeof(Greenlet)];
    alignas(Greenlet::Impl) unsigned char main_impl[sizeof(Greenlet::Impl)];
    alignas(std::max_align_t) unsigned char main_ctrl[64];  // the main greenlet's shared_ptr control block
    std::atomic<int> refs{2};  // the thread state + the main greenlet's control block
};
constexpr std::size_t kThreadBlockBytes = (sizeof(ThreadBlock) + 4095) / 4096 * 4096;

void release_block(ThreadBlock* b) noexcept {
    if (b->refs.fetch_sub(1, std::memory_order_acq_rel) != 1) return;
#if GREENSHIM_ASAN
    __lsan_unregister_root_region(b, kThreadBlockBytes);
#endif
    munmap(b, kThreadBlockBytes);  // its state was destroyed by thread_exit
}

// Allocates the main greenlet's control block in its thread's block.
template <class T>
struct BlockAllocator {
    using value_type = T;
    ThreadBlock* block;
    explicit BlockAllocator(ThreadBlock* b) noexcept : block(b) {}
    template <class U>
    BlockAllocator(const BlockAllocator<U>& o) noexcept : block(o.block) {}
    T* allocate(std::size_t n) {
        static_assert(sizeof(T) <= sizeof(ThreadBlock::main_ctrl) && alignof(T) <= alignof(std::max_align_t));
        if (n != 1) throw std::bad_alloc();
        return reinterpret_cast<T*>(block->main_ctrl);
    }
    void deallocate(T*, std::size_t) noexcept { release_block(block); }  // the control block's last act
    template <class U>
    bool operator==(const BlockAllocator<U>& o) const noexcept { return block == o.block; }
};

struct MainDeleter {
    void operator()(Greenlet* g) const noexcept { g->~Greenlet(); }
};

// Thread exit: tear down what a thread that only ever had its main greenlet
// (and perhaps an idle hub) created. A thread that exits with live greenlets
// keeps them, as a process that exits keeps its threads: nothing runs them.
// Called as the destructor of a libc thread-specific key (registering a C++
// thread_local destructor would calloc, see init_thread_state).
void thread_exit(void*) noexcept {
    ThreadState* t = t_state;
    if (!t || t->current != t->main.get()) return;
    // The hub's own greenlet counts as alive once it has run.
    std::size_t hub_alive = t->hub && t->hub->greenlet().started() && !t->hub->greenlet().dead() ? 1 : 0;
    if (t->alive != hub_alive) return;
    t->release_later.reset();
    delete std::exchange(t->hub, nullptr);
    t->pool.drain();
    t_state = nullptr;
    auto* block = reinterpret_cast<ThreadBlock*>(t);
    t->~ThreadState();  // drops its reference to the main greenlet
    release_block(block);
}
}  // namespace

}  // namespace detail
}  // namespace greenshim

// libc's own key functions, past any interposer of pthread_key_create and
// pthread_setspecific (the shim emulates those per greenlet thread; this key
// is the OS thread's): __pthread_key_create is libc's public alias, and
// __pthread_setspecific is reached at its one version.
extern "C" int __pthread_key_create(pthread_key_t* key, void (*dtor)(void*));
extern "C" int greenshim_libc_setspecific(pthread_key_t key, const void* value);
__asm__(".symver greenshim_libc_setspecific, __pthread_setspecific@GLIBC_2.2.5");

namespace greenshim {
namespace detail {
namespace {
#if GREENSHIM_ASAN
StackRange fiber_range(const ctx::stack_context& sc) noexcept {
    return {static_cast<char*>(sc.sp) - sc.size, sc.size};
}

// The way out: fake_stack_save keeps the leaving greenlet's fake stack (ASan's
// stack-use-after-return frames) until it is back; nullptr says it is dying.
void asan_leave(void** fake_stack_save, StackRange to) noexcept {
    __sanitizer_start_switch_fiber(fake_stack_save, to.bottom, to.size);
}

// Arrival; returns the stack we came from.
StackRange asan_finish(void* fake_stack_save) noexcept {
    StackRange from;
    __sanitizer_finish_switch_fiber(fake_stack_save, &from.bottom, &from.size);
    return from;
}

// Arrival by a switch from t_state->from. A main greenlet's stack is not ours
// to know (it is the OS thread's): ASan tells it here whenever main has just
// switched away, always before anything switches back to main.
void asan_arrive(void* fake_stack_save) noexcept {
    StackRange from = asan_finish(fake_stack_save);
    Greenlet* g = t_state->from;
    if (g && g->is_main()) detail::impl_of(*g).asan_stack = from;
}

// resume() announced to ASan. Normally we come back by someone's switch to us;
// if instead our last reference goes while we are suspended, we come back
// by the forced_unwind exception of ~Greenlet's unwind(), and our last switch
// (fiber_entry's, once unwound) goes back to the stack that destroys us.
ctx::fiber asan_resume(ctx::fiber&& to, Greenlet::Impl& target, Greenlet::Impl& self) {
    void* fake_stack = nullptr;
    asan_leave(&fake_stack, target.asan_stack);
    ctx::fiber back;
    try {
        back = std::move(to).resume();
    } catch (ctx::detail::forced_unwind const&) {
        self.asan_unwind_to = asan_finish(fake_stack);
        throw;
    }
    asan_arrive(fake_stack);
    return back;
}
#endif

// The whole pages a thread-locals block placed at the top of a stack mapping
// may take (ThreadTls::create_in's most), which the mapping grows by. Asked
// once: each ThreadTls query goes through a call_once.
std::size_t block_pages() noexcept {
    static const std::size_t pages = [] {
        const std::size_t page = static_cast<std::size_t>(sysconf(_SC_PAGESIZE));
        return (ThreadTls::bytes_for_create_in() + page - 1) / page * page;
    }();
    return pages;
}

struct PoolAllocator {
    Greenlet::Impl* impl;
    std::size_t size;
    void** asan_fake_stack;  // used only by an ASan build: see ensure_fiber
    ctx::stack_context allocate() {
        if (impl->mapping.size) {
            // The pages below the thread-locals block's: the size asked for,
            // right above the guard page (the overflow report finds it
            // there). The block's lowest bytes, in its last page, are
            // glibc's spare static TLS, untouched: the frames sharing that
            // page would save nothing.
            impl->stack.sp = static_cast<char*>(impl->mapping.sp) - block_pages();
            impl->stack.size = impl->mapping.size - block_pages();
        } else {
            impl->stack = ts().pool.allocate(size);
        }
#if GREENSHIM_ASAN
        impl->asan_stack = fiber_range(impl->stack);
        asan_leave(asan_fake_stack, impl->asan_stack);
#endif
        return impl->stack;
    }
    void deallocate(ctx::stack_context& sc) noexcept {
        // (The mapping outlives the fiber: its block goes after the switch
        // off this stack, or with the greenlet; drop_thread_locals.)
        if (!impl->mapping.size) ts().pool.deallocate(sc);
    }
};
}  // namespace

// Frees a greenlet's own thread-locals (not the running block) and the
// stack mapping they live in, if they do: once no fiber runs on it.
void drop_thread_locals(Greenlet::Impl& im) noexcept {
    if (im.tls) ThreadTls::destroy(std::exchange(im.tls, nullptr));
    if (im.mapping.size) {
        StackPool::release(im.mapping);
        im.mapping = {};
    }
}

// Sets up the calling thread without the heap: the block is mmap'd, the
// thread-exit clean-up is a libc key (whose value lives in libc's per-thread
// array: no allocation either). Meanwhile the thread is the runtime's
// (InternalScope): an interposed call it makes goes straight to libc.
ThreadState& init_thread_state() {
    InternalScope setting_up;
    static pthread_key_t exit_key = [] {
        pthread_key_t k{};
        if (__pthread_key_create(&k, thread_exit) != 0) {
            std::fputs("greenshim: no thread-specific key left for the thread clean-up\n", stderr);
            std::abort();
        }
        return k;
    }();
    void* mem = mmap(nullptr, kThreadBlockBytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (mem == MAP_FAILED) throw std::bad_alloc();
    auto* block = new (mem) ThreadBlock;
    // The block is released through its state (thread_exit), and the shim
    // reads the state's head through the thread-local (thread_state.hpp).
    assert(static_cast<void*>(&block->state) == mem);
    assert(static_cast<ThreadStateHead*>(&block->state) == reinterpret_cast<ThreadStateHead*>(&block->state));
#if GREENSHIM_ASAN
    // LeakSanitizer does not scan mmap'd memory of its own accord: what the
    // thread state points to (the hub) is reachable.
    __lsan_register_root_region(block, kThreadBlockBytes);
#endif
    ThreadState* t = &block->state;
    auto* impl = new (block->main_impl) Greenlet::Impl;
    Greenlet* main = Runtime::construct_main(block->main, impl);
    t->main = std::shared_ptr<Greenlet>(main, MainDeleter{}, BlockAllocator<Greenlet>(block));
    Runtime::set_state(*t->main, GreenletState::running);
    t->current = main;
    t->os_tls = ThreadTls::current();  // no block of a greenlet's exists on this thread yet
    t->errno_at = &errno;              // (so these are the OS thread's own)
    t->eh_ours = reinterpret_cast<EhGlobals*>(abi::__cxa_get_globals());
    t->eh_program = g_program_eh ? g_program_eh() : nullptr;
    t->main_token = &t_main_token;
    t->current_owner = t->main_token;
    impl->owner_token = &t_main_token;
    t_state = t;
    greenshim_libc_setspecific(exit_key, block);
    return *t;
}

// What current_owner is while g runs: a main greenlet's is its own OS
// thread's token (set with it: init_thread_state), wherever it runs (a main
// greenlet carried to another OS thread keeps its own).
inline const void* owner_of(const Greenlet& g) noexcept { return g.is_main() ? impl_of(g).owner_token : &g; }

namespace {
template <class T>
T* moved(T* p, ThreadTls* from, ThreadTls* to) noexcept {
    return reinterpret_cast<T*>(reinterpret_cast<char*>(to) + (reinterpret_cast<char*>(p) - reinterpret_cast<char*>(from)));
}
// Where the shared errno and exception globals are, from one block to another
// (each in static TLS: Hub::let_main_be_handed_off checked).
void shared_locals_move(ThreadState& t, ThreadTls* from, ThreadTls* to) noexcept {
    t.errno_at = moved(t.errno_at, from, to);
    t.eh_ours = moved(t.eh_ours, from, to);
    if (t.eh_program) t.eh_program = moved(t.eh_program, from, to);
}
}  // namespace

// g, about to run on t's OS thread, is its main greenlet back from a
// carrier (on the carrier that resumes it, t is the carrier's: no stand-in).
inline bool coming_home(const ThreadState& t, const Greenlet& g) noexcept {
    return g.is_main() && t.stand_in && t.os_tls == t.stand_in;
}

void main_leaves(ThreadState& t, Greenlet::Impl& m) noexcept {
    ThreadTls* own = t.os_tls;
    ThreadTls::stand_in(t.stand_in, own);
    m.tls = own;  // (so the switch away saves nothing: its block keeps its errno)
    t.os_tls = t.stand_in;
    shared_locals_move(t, own, t.stand_in);
}

void main_returns(ThreadState& t, Greenlet::Impl& m) noexcept {
    ThreadTls* own = m.tls;
    shared_locals_move(t, t.os_tls, own);
    save_shared_locals(t, m);  // what it left in its block, for the arrival to restore
    m.tls = nullptr;
    t.os_tls = own;
}

// Makes the thread-locals target runs with current: its own block, or the
// OS thread's. Called right before the stack switch to target, with nothing
// thread-local touched in between (the compiler may keep the thread pointer
// in a register: see thread_tls.hpp). Cost when nothing changes: two loads,
// one read of %fs:0 and a compare; a switch: one wrfsbase (~15 ns here).
inline void enter_tls(ThreadState& t, Greenlet::Impl& target) noexcept {
    ThreadTls* want = target.tls ? target.tls : t.os_tls;
    if (__builtin_expect(ThreadTls::current() != want, 0)) ThreadTls::switch_to(want);
}

void Runtime::live_link(Greenlet& g, bool counted) noexcept {
    ThreadState& t = *t_state;
    Greenlet::Impl& im = *g.impl_;
    im.live_prev = nullptr;
    im.live_next = t.live_head;
    if (t.live_head) t.live_head->impl_->live_prev = &g;
    t.live_head = &g;
    ++t.alive;
    if (counted && !im.is_hub) greenlet_started();
}

void Runtime::live_unlink(Greenlet& g, bool counted) noexcept {
    ThreadState& t = *t_state;
    Greenlet::Impl& im = *g.impl_;
    if (im.live_prev) im.live_prev->impl_->live_next = im.live_next;
    else if (t.live_head == &g) t.live_head = im.live_next;
    else return;  // not linked
    if (im.live_next) im.live_next->impl_->live_prev = im.live_prev;
    im.live_prev = im.live_next = nullptr;
    --t.alive;
    if (counted && !im.is_hub) greenlet_ended();
}

Greenlet& Runtime::first_live(Greenlet& g) noexcept {
    Greenlet* p = &g;
    while (p->dead() && p->parent_) p = p->parent_.get();
    return *p;
}

void Runtime::after_resume(ctx::fiber&& f) noexcept {
    ThreadState& t = *t_state;
    Greenlet* from = t.from;
    t.from = nullptr;
    end_switch(t);
    // errno and libstdc++'s exception state are thread-locals: a greenlet
    // with its own block keeps its own (what runs here to free the dead must
    // not change its errno); the ones that share the OS thread's take theirs
    // back here (saved by jump).
    Greenlet::Impl& cur = *t.current->impl_;
    if (f) {
        from->impl_->ctx = std::move(f);
    } else if (from && from->dead()) {
        // Its stack is gone, and we run with our own thread-locals: its
        // block may go, and the object too.
        int own_errno = errno;
        drop_thread_locals(*from->impl_);
        std::shared_ptr<Greenlet> last = std::move(from->impl_->keepalive);
        last.reset();
        errno = own_errno;
    }
    if (t.release_later) {
        int own_errno = errno;
        std::shared_ptr<Greenlet> drop = std::move(t.release_later);
        drop.reset();
        errno = own_errno;
    }
    // (Only a switch that frees touches errno: the common one makes no call.)
    if (!cur.tls) restore_shared_locals(t, cur);
}

void Runtime::ensure_fiber(Greenlet& target) {
    Greenlet::Impl& ti = *target.impl_;
    if (ti.fiber_created) return;
    ti.fiber_created = true;
    live_link(target);
    Greenlet* g = &target;
    void* fake_stack = nullptr;
    ti.ctx = ctx::fiber(std::allocator_arg, PoolAllocator{&ti, target.stack_size_, &fake_stack},
                        [g](ctx::fiber&& caller) -> ctx::fiber {
#if GREENSHIM_ASAN
                            asan_arrive(nullptr);
#endif
                            after_resume(std::move(caller));
                            ThreadState& t = *t_state;
                            std::any arg = std::move(t.xfer_value);
                            t.xfer_value.reset();
                            std::exception_ptr incoming = std::exchange(t.xfer_error, nullptr);
                            std::any result;
                            std::exception_ptr err;
                            try {
                                // An exception switched into a greenlet that never ran kills
                                // it at once (greenlet's rule): it goes on up to the parent.
                                if (incoming) std::rethrow_exception(incoming);
                                result = g->fn_(std::move(arg));
                                Greenlet::run_thread_exit();
                            } catch (ctx::detail::forced_unwind const&) {
#if GREENSHIM_ASAN
                                asan_leave(nullptr, g->impl_->asan_unwind_to);
#endif
                                throw;
                            } catch (GreenletExit const&) {
                                Greenlet::run_thread_exit();
                            } catch (...) {
                                err = std::current_exception();
                                Greenlet::run_thread_exit();
                            }
                            return finish(*g, std::move(result), std::move(err));
                        });
    if (ti.tls && !ti.mapping.size)  // (one in the mapping has the whole mapping: set_own_thread_locals)
        ti.tls->set_stack(static_cast<char*>(ti.stack.sp) - ti.stack.size, ti.stack.size);
#if GREENSHIM_ASAN
    // The constructor went to the new stack and straight back (fiber_entry
    // saves its context there); the way there was announced in allocate().
    // Announce the way back: ASan's finish takes us to the stack it was told
    // of, so a second switch, to where we came from, puts us back.
    StackRange here = asan_finish(fake_stack);
    asan_leave(&fake_stack, here);
    asan_finish(fake_stack);
#endif
}

void Runtime::jump(Greenlet& target) {
    ThreadState& t = ts();
    begin_switch(t);
    Greenlet* self = t.current;
    if (!self->impl_->tls) save_shared_locals(t, *self->impl_);  // (else its block keeps them: after_resume)
    t.from = self;
    t.current = &target;
    t.current_owner = owner_of(target);
    target.state_.store(GreenletState::running, std::memory_order_relaxed);
    Greenlet::Impl& ti = *target.impl_;
    if (__builtin_expect(ti.tls != nullptr, 0) && coming_home(t, target)) main_returns(t, ti);
    if (__builtin_expect(!ti.fiber_created, 0)) ensure_fiber(target);
    enter_tls(t, ti);
#if GREENSHIM_ASAN
    ctx::fiber f = asan_resume(std::move(ti.ctx), ti, *self->impl_);
#else
    ctx::fiber f = std::move(ti.ctx).resume();
#endif
    after_resume(std::move(f));
}

ctx::fiber Runtime::finish(Greenlet& g, std::any result, std::exception_ptr err) {
    g.fn_ = nullptr;  // captured state dies on its own stack, while it still exists
    ThreadState& t = *t_state;
    g.state_.store(GreenletState::dead, std::memory_order_relaxed);
    g.error_ = err;
    live_unlink(g);
    if (g.impl_->homed) {  // (the spawn queue's fair shares: Hub::spawn_allowance)
        g.impl_->homed = false;
        g.impl_->hub->homed_.fetch_sub(1, std::memory_order_relaxed);
    }
    Greenlet& next = first_live(*g.parent_);
    if (err && next.state() != GreenletState::suspended && next.state() != GreenletState::fresh) {
        // The parent is not waiting in switch_to() (it is the hub, or parked):
        // nobody could catch this, so say it rather than drop it.
        try {
            std::rethrow_exception(err);
        } catch (std::exception const& e) {
            std::fprintf(stderr, "greenshim: greenlet #%llu (%s) raised: %s\n",
                         (unsigned long long)g.id_, g.name_.c_str(), e.what());
        } catch (...) {
            std::fprintf(stderr, "greenshim: greenlet #%llu (%s) raised a non-std exception\n",
                         (unsigned long long)g.id_, g.name_.c_str());
        }
        err = nullptr;
    }
    t.xfer_value = std::move(result);
    t.xfer_error = std::move(err);
    g.impl_->saved_errno = errno;
    begin_switch(t);
    t.from = &g;
    t.current = &next;
    t.current_owner = owner_of(next);
    ensure_fiber(next);  // a fresh parent starts now, as greenlet does
    next.state_.store(GreenletState::running, std::memory_order_relaxed);
#if GREENSHIM_ASAN
    // Dying: ASan frees our fake stack now. Only returns follow, through frames
    // of this file (kept off the fake stack: runtime/meson.build), until
    // fiber_entry makes the switch.
    asan_leave(nullptr, next.impl_->asan_stack);
#endif
    if (__builtin_expect(next.impl_->tls != nullptr, 0) && coming_home(t, next)) main_returns(t, *next.impl_);
    enter_tls(t, *next.impl_);  // only returns follow, then Boost's switch
    return std::move(next.impl_->ctx);
}

void Runtime::unwind(Greenlet& g) noexcept {
#if GREENSHIM_ASAN
    void* fake_stack = nullptr;
    asan_leave(&fake_stack, g.impl_->asan_stack);
#endif
    // Its destructors run on its stack with its thread-locals, and we come
    // back with ours.
    // Meanwhile the program's destructors run on its stack while the state
    // says we run: no preemption (ThreadState::switching).
    ThreadState* t = t_state;
    bool was = t && t->switching;
    if (t) begin_switch(*t);
    ThreadTls* back = ThreadTls::current();
    if (g.impl_->tls) ThreadTls::switch_to(g.impl_->tls);
    { ctx::fiber doomed = std::move(g.impl_->ctx); }
    if (ThreadTls::current() != back) ThreadTls::switch_to(back);
    if (t && !was) end_switch(*t);
#if GREENSHIM_ASAN
    asan_finish(fake_stack);
#endif
}

std::shared_ptr<Greenlet> Runtime::make(Greenlet::Fn fn, std::string name, std::size_t stack,
                                        std::shared_ptr<Greenlet> parent) {
    if (stack == 0) stack = g_default_stack.load(std::memory_order_relaxed);
    long page = sysconf(_SC_PAGESIZE);
    stack = (stack + page - 1) / page * page;
    auto g = std::make_shared<Greenlet>(Greenlet::Token{}, std::move(fn), std::move(name), stack, false);
    g->parent_ = std::move(parent);
    return g;
}

}  // namespace detail

using detail::Runtime;
using detail::ThreadState;
using detail::ts;

Greenlet::Greenlet(Token, Fn fn, std::string name, std::size_t stack_size, bool is_main)
    : impl_(std::make_unique<Impl>()),
      fn_(std::move(fn)),
      name_(std::move(name)),
      id_(is_main ? 0 : detail::g_next_id.fetch_add(1, std::memory_order_relaxed)),
      stack_size_(stack_size),
      is_main_(is_main) {
    if (name_.empty()) name_ = "greenlet-" + std::to_string(id_);
    if (is_main) impl_->fiber_created = true;
}

Greenlet::Greenlet(Token, Impl* impl) : impl_(impl), name_("main"), id_(0), stack_size_(0), is_main_(true),
                                       impl_in_place_(true) {
    impl_->fiber_created = true;
}

Greenlet::~Greenlet() {
    if (impl_in_place_) {  // a main greenlet: its Impl is in its thread's block
        impl_.release()->~Impl();
        return;
    }
    // A suspended greenlet is unwound by ~fiber (forced_unwind runs the
    // destructors on its stack); account for it first. One a fork left
    // behind is dead already but still has its fiber.
    if (impl_->fiber_created && !is_main_ && impl_->ctx) {
        if (state() != GreenletState::dead) {
            state_.store(GreenletState::dead, std::memory_order_relaxed);
            if (detail::t_state) Runtime::live_unlink(*this);
        }
        Runtime::unwind(*this);
    }
    detail::drop_thread_locals(*impl_);  // (never current here)
}

std::shared_ptr<Greenlet> Greenlet::create(Fn fn, std::string name, std::size_t stack_size) {
    Greenlet& cur = current();
    return Runtime::make(std::move(fn), std::move(name), stack_size, cur.shared_from_this());
}

std::shared_ptr<Greenlet> Greenlet::create(std::function<void()> fn, std::string name, std::size_t stack_size) {
    return create(Fn([f = std::move(fn)](std::any) -> std::any { f(); return {}; }), std::move(name),
                  stack_size);
}

Greenlet& Greenlet::current() { return *ts().current; }

const void* Greenlet::current_owner_id() noexcept { return detail::current_owner_id(); }

const void* Greenlet::owner_id() const noexcept {
    if (!is_main_) return this;
    // (Its own thread's token, asked from whichever thread: a lock handed
    // to a main greenlet by a thread of another hub.)
    if (impl_ && impl_->owner_token) return impl_->owner_token;
    ThreadState* t = detail::t_state;
    return t ? t->main_token : &detail::t_main_token;
}

namespace {
// The start-up checks once; then t_state is carried into every block made
// (each greenlet's block points at its OS thread's state).
bool thread_locals_ready() noexcept {
    static const bool ready = [] {
        if (!detail::ThreadTls::supported() || !detail::ThreadTls::inherit(&detail::t_state, sizeof detail::t_state))
            return false;
        Hub::note_hot_thread_local(&detail::t_state);  // (read first thing after each switch)
        return true;
    }();
    return ready;
}
}  // namespace

bool Greenlet::set_own_thread_locals() noexcept {
    // (a spawned greenlet is queued, "ready", but has not run: no fiber yet)
    if (impl_->fiber_created || is_main_ || impl_->tls || impl_->is_hub || !thread_locals_ready()) return false;
    // As glibc places a thread's: at the top of its stack's mapping, which is
    // larger by the block's whole pages (the program keeps the stack size it
    // asked for). The block's ~4.2 KiB then touch one page, its lowest bytes
    // being glibc's spare static TLS, instead of a 4.6 KiB heap chunk. A
    // thread with no runtime state of its own (no pool) gets a heap block.
    if (detail::ThreadState* t = detail::t_state) {
        using detail::ThreadTls;
        const std::size_t block = detail::block_pages();
        boost::context::stack_context m;
        try {
            m = t->pool.allocate(stack_size_ + block);
        } catch (...) {
            return false;
        }
        ThreadTls* tls = ThreadTls::create_in(static_cast<char*>(m.sp) - block, block);
        if (!tls) {
            t->pool.deallocate(m);
            return false;
        }
        tls->set_stack(static_cast<char*>(m.sp) - m.size, m.size);
        impl_->tls = tls;
        impl_->mapping = m;
        return true;
    }
    impl_->tls = detail::ThreadTls::create();
    return impl_->tls != nullptr;
}

bool Greenlet::has_own_thread_locals() const noexcept { return impl_->tls != nullptr; }

const char* Greenlet::own_thread_locals_unsupported() noexcept {
    return thread_locals_ready() ? nullptr : detail::ThreadTls::unsupported_reason();
}

OsThreadLocalsScope::OsThreadLocalsScope() noexcept {
    detail::ThreadState* t = detail::t_state;
    if (!t || !detail::impl_of(*t->current).tls) return;
    own_ = detail::impl_of(*t->current).tls;
    detail::ThreadTls::switch_to(t->os_tls);
}

OsThreadLocalsScope::~OsThreadLocalsScope() {
    if (own_) detail::ThreadTls::switch_to(static_cast<detail::ThreadTls*>(own_));
}

void OsThreadLocalsScope::after_fork_child() noexcept {
    if (own_) detail::ThreadTls::copy_tid(static_cast<detail::ThreadTls*>(own_), detail::ThreadTls::current());
}

bool Greenlet::own_thread_locals_off_under_sanitizer() noexcept { return detail::ThreadTls::sanitizer_loaded(); }

void Greenlet::process_has_threads() noexcept { detail::process_has_threads(); }

bool Greenlet::own_thread_locals_switch_by_syscall() noexcept {
    return thread_locals_ready() && !detail::ThreadTls::info().wrfsbase;
}

void Greenlet::run_thread_exit() noexcept {
    detail::ThreadState* t = detail::t_state;
    if (!t) return;
    if (detail::ThreadTls* b = detail::impl_of(*t->current).tls) b->exit_duties();
}

namespace detail {
// What the switch that resumed us carried: its value, or its exception raised.
std::any receive(ThreadState& t) {
    std::any back = std::move(t.xfer_value);
    t.xfer_value.reset();
    if (std::exception_ptr e = std::exchange(t.xfer_error, nullptr)) std::rethrow_exception(e);
    return back;
}
}  // namespace detail

namespace {
// The common switch: carries a value or an exception to target and returns what
// comes back to us.
std::any switch_with(Greenlet& self, Greenlet& target, std::any value, std::exception_ptr err) {
    ThreadState& t = ts();
    if (&target == &self) {
        if (err) std::rethrow_exception(err);
        return value;
    }
    if (target.state() == GreenletState::parked || target.state() == GreenletState::ready)
        throw std::logic_error("greenshim: switch_to() a greenlet that the hub has parked");
    t.xfer_value = std::move(value);
    t.xfer_error = std::move(err);
    Runtime::set_state(self, GreenletState::suspended);
    Runtime::jump(target);
    return receive(t);
}
}  // namespace

std::any Greenlet::switch_general(std::any value) {
    Greenlet& self = current();
    return switch_with(self, Runtime::first_live(*this), std::move(value), nullptr);
}

// switch_to's fast path (greenlet.hpp). Why the stack switch is called from
// the program's frame: a switch_to round trip through switch_general, with
// the runtime's ret-leaving jump_fcontext three calls deep, cost 63 ns
// against 11 ns for a raw fiber (bench_switch): the return after the switch
// goes to the other side's caller, which the CPU's return predictor cannot
// know. Called inline, only two ordinary calls (which return where they were
// called from) sit around greenshim_jump_direct, as the raw fiber's resume
// sits in its loop. The contexts it saves and resumes are the same as
// jump_fcontext's: either side may be in the general path.
namespace detail {
void* switch_begin(Greenlet& target) noexcept {
#if GREENSHIM_ASAN || !GREENSHIM_INLINE_SWITCH
    (void)target;
    return nullptr;  // ASan must hear of every switch (the general path tells it)
#else
    ThreadState* t = t_state;
    if (!t || target.state() != GreenletState::suspended) return nullptr;
    Greenlet* self = t->current;
    Greenlet::Impl& si = *self->impl_;
    Greenlet::Impl& ti = *target.impl_;
    if (si.tls || ti.tls) return nullptr;  // a thread pointer to switch (enter_tls)
    begin_switch(*t);  // (the jump and the arrival run in the program's code)
    save_shared_locals(*t, si);
    Runtime::set_state(*self, GreenletState::suspended);
    t->from = self;
    t->current = &target;
    t->current_owner = owner_of(target);
    Runtime::set_state(target, GreenletState::running);
    // Taken out of its fiber, as fiber::resume() does.
    void* to = fcontext_of(ti.ctx);
    set_fcontext(ti.ctx, nullptr);
    return to;
#endif
}

bool switch_arrived(void* from_context) noexcept {
    ThreadState& t = *t_state;
    if (__builtin_expect(from_context && !t.release_later && !t.xfer_value.has_value() && !t.xfer_error, 1)) {
        // Runtime::after_resume's common case: the one who switched to us is
        // alive (its context is its fiber again), nothing to free or carry.
        set_fcontext(impl_of(*std::exchange(t.from, nullptr)).ctx, from_context);
        restore_shared_locals(t, impl_of(*t.current));  // (we left by switch_begin: no block of our own)
        end_switch(t);
        return true;
    }
    return false;
}

std::any switch_end(void* from_context) {
    if (switch_arrived(from_context)) return {};
    ThreadState& t = *t_state;
    ctx::fiber from;  // an empty fiber, then given the context we were resumed from
    set_fcontext(from, from_context);
    Runtime::after_resume(std::move(from));
    return receive(t);
}
}  // namespace detail

std::any Greenlet::throw_in(std::exception_ptr e) {
    Greenlet& self = current();
    if (state() == GreenletState::fresh) {
        // Never started: it dies at once and the exception goes to its parent,
        // unless it is GreenletExit (a quiet death).
        state_.store(GreenletState::dead, std::memory_order_relaxed);
        fn_ = nullptr;
        bool quiet = false;
        try {
            std::rethrow_exception(e);
        } catch (GreenletExit const&) {
            quiet = true;
        } catch (...) {
        }
        if (!quiet) error_ = e;
        Greenlet& next = Runtime::first_live(*parent_);
        return switch_with(self, next, {}, quiet ? nullptr : e);
    }
    return switch_with(self, Runtime::first_live(*this), {}, std::move(e));
}

void Greenlet::set_parent(std::shared_ptr<Greenlet> p) {
    if (!p) throw std::invalid_argument("greenshim: parent cannot be null");
    for (Greenlet* q = p.get(); q; q = q->parent_.get())
        if (q == this) throw std::invalid_argument("greenshim: cyclic parent chain");
    parent_ = std::move(p);
}

void* Greenlet::stack_bottom() const noexcept {
    if (is_main_ || !impl_->fiber_created || dead()) return nullptr;
    return static_cast<char*>(impl_->stack.sp) - impl_->stack.size;
}

void* Greenlet::stack_top() const noexcept {
    if (is_main_ || !impl_->fiber_created || dead()) return nullptr;
    return impl_->stack.sp;
}

void Greenlet::set_default_stack_size(std::size_t bytes) noexcept {
    if (bytes >= 16 * 1024) detail::g_default_stack.store(bytes, std::memory_order_relaxed);
}
std::size_t Greenlet::default_stack_size() noexcept {
    return detail::g_default_stack.load(std::memory_order_relaxed);
}

const char* to_string(GreenletState s) noexcept {
    switch (s) {
    case GreenletState::fresh: return "fresh";
    case GreenletState::running: return "running";
    case GreenletState::suspended: return "suspended";
    case GreenletState::ready: return "ready";
    case GreenletState::parked: return "parked";
    case GreenletState::dead: return "dead";
    }
    return "?";
}

GREENSHIM_STARTUP_CODE InternalScope::InternalScope() noexcept { ++detail::t_internal; }
GREENSHIM_STARTUP_CODE InternalScope::~InternalScope() { --detail::t_internal; }
bool runtime_internal() noexcept { return detail::internal(); }

StackPoolStats stack_pool_stats() noexcept { return ts().pool.stats(); }

}  // namespace greenshim
