// A C++ program that replaces operator new and delete with an allocator that
// is not malloc, links the runtime's API and runs with libgreenshim.so
// preloaded. The preload carries a private libstdc++ (shim/meson.build); its
// operator new and delete must still be this program's (shim/cxxabi.cpp),
// because memory crosses: the std::function, std::string and shared state
// that spawn() hands to the runtime are freed by the runtime, and what the
// runtime allocates for a task is freed by the program's handles. A delete of
// memory this allocator did not hand out aborts here.
//
// Exceptions cross the two copies too: a greenlet's exception, thrown by the
// program's libstdc++, is kept by the runtime (std::current_exception in the
// preload's copy) and rethrown to the program by value(); a GreenletExit is
// thrown by the preload's copy, whose exception allocation is the shim's own
// (shim/cxxabi.cpp), into the program's catch. That allocation leaves room for
// libstdc++'s header before each object (kExceptionHeader): checked here
// against the header this program's libstdc++.so writes, the same GCC's.
#include <cxxabi.h>
#include <link.h>
#include <unistd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include <cstddef>
#include <new>
#include <stdexcept>
#include <string>
#include <vector>

#include <greenshim/gevent.hpp>

#include "../../shim/cxxabi.hpp"

namespace {

// A bump allocator over one mapping: every block has a header with a magic
// word and its size; delete checks the header and poisons it.
constexpr std::size_t kArena = 64u << 20;
constexpr std::size_t kMagic = 0x6e65776e65776e65ULL;
char* g_arena = nullptr;
std::size_t g_used = 0;
std::size_t g_news = 0, g_deletes = 0;

struct Header {
    std::size_t magic;
    std::size_t size;
};

void* bump(std::size_t n) {
    if (!g_arena) {
        void* m = mmap(nullptr, kArena, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (m == MAP_FAILED) abort();
        g_arena = static_cast<char*>(m);
    }
    std::size_t total = (sizeof(Header) + n + 15) & ~std::size_t(15);
    if (g_used + total > kArena) throw std::bad_alloc();
    auto* h = reinterpret_cast<Header*>(g_arena + g_used);
    g_used += total;
    h->magic = kMagic;
    h->size = n;
    ++g_news;
    return h + 1;
}

void unbump(void* p) {
    if (!p) return;
    auto* c = static_cast<char*>(p);
    auto* h = reinterpret_cast<Header*>(p) - 1;
    if (c < g_arena + sizeof(Header) || c >= g_arena + kArena || h->magic != kMagic) {
        static const char msg[] = "replaced_new: operator delete of memory this program's operator new did not allocate\n";
        (void)!write(2, msg, sizeof msg - 1);
        abort();
    }
    h->magic = 0;
    ++g_deletes;
}

}  // namespace

void* operator new(std::size_t n) { return bump(n); }
void* operator new[](std::size_t n) { return bump(n); }
void operator delete(void* p) noexcept { unbump(p); }
void operator delete[](void* p) noexcept { unbump(p); }
void operator delete(void* p, std::size_t) noexcept { unbump(p); }
void operator delete[](void* p, std::size_t) noexcept { unbump(p); }

int main() {
    bool preloaded = false;
    dl_iterate_phdr(
        [](dl_phdr_info* info, std::size_t, void* found) {
            if (strstr(info->dlpi_name, "libgreenshim.so")) *static_cast<bool*>(found) = true;
            return 0;
        },
        &preloaded);
    if (!preloaded) {
        fprintf(stderr, "replaced_new: run it with libgreenshim.so preloaded\n");
        return 2;
    }
    // The header __cxa_init_primary_exception fills, before the object.
    void* object = __cxxabiv1::__cxa_allocate_exception(sizeof(int));
    auto* header = reinterpret_cast<char*>(
        __cxxabiv1::__cxa_init_primary_exception(object, const_cast<std::type_info*>(&typeid(int)), nullptr));
    std::size_t header_size = static_cast<std::size_t>(static_cast<char*>(object) - header);
    __cxxabiv1::__cxa_free_exception(object);
    bool header_fits = header_size <= greenshim::shim::kExceptionHeader && greenshim::shim::kExceptionHeader % 16 == 0;
    printf("replaced_new: libstdc++'s exception header is %zu bytes, the shim leaves %zu: %s\n", header_size,
           greenshim::shim::kExceptionHeader, header_fits ? "ok" : "FAILED");

    std::size_t news_before = g_news;
    const std::string tail(100, 'x');  // longer than the small-string buffer: on the heap
    std::vector<greenshim::Task<std::string>> tasks;
    for (int i = 0; i < 50; ++i)
        tasks.push_back(greenshim::spawn(
            [tail](int k) {
                greenshim::sleep(0.001 * (k % 3));
                if (k % 10 == 7) throw std::runtime_error("task " + std::to_string(k) + " " + tail);
                if (k % 10 == 3) throw greenshim::GreenletExit{};  // value() throws a new one, from the preload
                return std::to_string(k) + tail;
            },
            i));
    int ok = 0, raised = 0, exited = 0;
    for (int i = 0; i < 50; ++i) {
        try {
            if (tasks[i].value() == std::to_string(i) + tail) ++ok;
        } catch (std::runtime_error const& e) {
            if (std::string(e.what()) == "task " + std::to_string(i) + " " + tail) ++raised;
        } catch (greenshim::GreenletExit const&) {
            if (i % 10 == 3) ++exited;
        }
    }
    tasks.clear();
    bool fine = ok == 40 && raised == 5 && exited == 5 && g_news > news_before && g_deletes > 0;
    printf("replaced_new: %d values, %d exceptions, %d GreenletExit, %zu news and %zu deletes through the program's "
           "operators: %s\n",
           ok, raised, exited, g_news - news_before, g_deletes, fine ? "ok" : "FAILED");
    return fine && header_fits ? 0 : 1;
}
