// Greenlet stacks: one mmap per stack, a PROT_NONE guard page at its low end
// (stacks grow down, so an overflow faults instead of corrupting a
// neighbour), pooled per thread for reuse. MAP_NORESERVE: only the pages a
// greenlet touches are committed, so a large default size costs address space,
// not memory. Each stack is two kernel mappings (vm.max_map_count matters
// beyond ~30k live greenlets).
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

void unmap(boost::context::stack_context& sc) noexcept {
    char* bottom = static_cast<char*>(sc.sp) - sc.size - page_size();
    ::munmap(bottom, sc.size + page_size());
}
}  // namespace

boost::context::stack_context StackPool::allocate(std::size_t size) {
    for (auto it = free_.rbegin(); it != free_.rend(); ++it) {
        if (it->size == size) {
            boost::context::stack_context sc = *it;
            free_.erase(std::next(it).base());
            pooled_bytes_ -= size;
            ++reused_;
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
    ++mapped_;
    boost::context::stack_context sc;
    sc.size = size;
    sc.sp = static_cast<char*>(p) + guard + size;
    return sc;
}

void StackPool::deallocate(boost::context::stack_context& sc) noexcept {
    if (free_.size() < kPoolMaxStacks && pooled_bytes_ + sc.size <= kPoolMaxBytes) {
        try {
            free_.push_back(sc);
            pooled_bytes_ += sc.size;
            return;
        } catch (...) {
        }
    }
    unmap(sc);
    --mapped_;
}

void StackPool::drain() noexcept {
    for (auto& sc : free_) {
        unmap(sc);
        --mapped_;
    }
    free_.clear();
    pooled_bytes_ = 0;
}

}  // namespace greenshim::detail
