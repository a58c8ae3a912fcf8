// Greenlet stacks: one mmap per stack, a PROT_NONE guard page at its low end
// (stacks grow down, so an overflow faults instead of corrupting a
// neighbour), pooled per thread for reuse. MAP_NORESERVE: only the pages a
// greenlet touches are committed, so a large default size costs address space,
// not memory. Each stack is two kernel mappings (vm.max_map_count matters
// beyond ~30k live greenlets).
//
// Valgrind is told of each stack while it is mapped, LeakSanitizer scans each
// while a greenlet uses it, and ASan forgets a stack's redzones when it comes
// back (sanitizers.hpp says why).
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <new>

#include "internal.hpp"

namespace greenshim::detail {

namespace {
constexpr std::size_t kPoolMaxStacks = 1024;
constexpr std::size_t kPoolMaxBytes = 64u << 20;

std::size_t page_size() noexcept {
    static const std::size_t p = static_cast<std::size_t>(sysconf(_SC_PAGESIZE));
    return p;
}

char* usable_bottom(const boost::context::stack_context& sc) noexcept {
    return static_cast<char*>(sc.sp) - sc.size;
}

void unmap(boost::context::stack_context& sc) noexcept {
    ::munmap(usable_bottom(sc) - page_size(), sc.size + page_size());
}

// A suspended greenlet's locals keep what they point to alive, but LSan
// scans only the threads' own stacks.
void lsan_scan(const boost::context::stack_context& sc) noexcept {
#if GREENSHIM_ASAN
    __lsan_register_root_region(usable_bottom(sc), sc.size);
#endif
    (void)sc;
}

void lsan_unscan(const boost::context::stack_context& sc) noexcept {
#if GREENSHIM_ASAN
    __lsan_unregister_root_region(usable_bottom(sc), sc.size);
    // A dead fiber's outermost frame (Boost's fiber_entry) never returns, so
    // its redzones stay poisoned; the stack's next greenlet must not find them.
    ASAN_UNPOISON_MEMORY_REGION(usable_bottom(sc), sc.size);
#endif
    (void)sc;
}
}  // namespace

void StackPool::valgrind_register(const boost::context::stack_context& sc) {
#if GREENSHIM_VALGRIND
    if (RUNNING_ON_VALGRIND) valgrind_ids_[sc.sp] = VALGRIND_STACK_REGISTER(usable_bottom(sc), sc.sp);
#endif
    (void)sc;
}

void StackPool::valgrind_deregister(const boost::context::stack_context& sc) noexcept {
#if GREENSHIM_VALGRIND
    auto it = valgrind_ids_.find(sc.sp);
    if (it == valgrind_ids_.end()) return;
    VALGRIND_STACK_DEREGISTER(it->second);
    valgrind_ids_.erase(it);
#endif
    (void)sc;
}

boost::context::stack_context StackPool::allocate(std::size_t size) {
    for (auto it = free_.rbegin(); it != free_.rend(); ++it) {
        if (it->size == size) {
            boost::context::stack_context sc = *it;
            free_.erase(std::next(it).base());
            pooled_bytes_ -= size;
            ++reused_;
            lsan_scan(sc);
            return sc;
        }
    }
    std::size_t guard = page_size();
    void* p = ::mmap(nullptr, size + guard, PROT_READ | PROT_WRITE,
                     MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_STACK, -1, 0);
    if (p == MAP_FAILED) throw std::bad_alloc();
    if (::mprotect(p, guard, PROT_NONE) != 0) {
        ::munmap(p, size + guard);
        throw std::bad_alloc();
    }
    boost::context::stack_context sc;
    sc.size = size;
    sc.sp = static_cast<char*>(p) + guard + size;
    try {
        valgrind_register(sc);
    } catch (...) {
        unmap(sc);
        throw;
    }
    ++mapped_;
    lsan_scan(sc);
    return sc;
}

void StackPool::deallocate(boost::context::stack_context& sc) noexcept {
    lsan_unscan(sc);
    if (free_.size() < kPoolMaxStacks && pooled_bytes_ + sc.size <= kPoolMaxBytes) {
        try {
            free_.push_back(sc);
            pooled_bytes_ += sc.size;
            return;
        } catch (...) {
        }
    }
    valgrind_deregister(sc);
    unmap(sc);
    --mapped_;
}

void StackPool::release(boost::context::stack_context& sc) noexcept {
    if (ThreadState* t = t_state) return t->pool.deallocate(sc);
    lsan_unscan(sc);
    unmap(sc);
}

void StackPool::drain() noexcept {
    for (auto& sc : free_) {
        valgrind_deregister(sc);
        unmap(sc);
        --mapped_;
    }
    free_.clear();
    pooled_bytes_ = 0;
}

}  // namespace greenshim::detail

namespace greenshim {

bool discard_own_stack_pages(void* from, void* to) noexcept {
#if GREENSHIM_ASAN
    (void)from;
    (void)to;
    return false;
#else
#if GREENSHIM_VALGRIND
    if (RUNNING_ON_VALGRIND) return false;
#endif
    detail::ThreadState* t = detail::t_state;  // not ts(): never set anything up from here
    if (!t || !t->current) return false;
    // (null for main, and for a greenlet not started or dead)
    char* bottom = static_cast<char*>(t->current->stack_bottom());
    char* top = static_cast<char*>(t->current->stack_top());
    if (!bottom) return false;
    char* b = static_cast<char*>(from);
    char* e = static_cast<char*>(to);
    if (b < bottom || e > top || b >= e) return false;
    return ::madvise(b, std::size_t(e - b), MADV_DONTNEED) == 0;
#endif
}

}  // namespace greenshim
