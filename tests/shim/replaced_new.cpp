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
// preload's copy) and rethrown to the program by value().
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
    std::size_t news_before = g_news;
    const std::string tail(100, 'x');  // longer than the small-string buffer: on the heap
    std::vector<greenshim::Task<std::string>> tasks;
    for (int i = 0; i < 50; ++i)
        tasks.push_back(greenshim::spawn(
            [tail](int k) {
                greenshim::sleep(0.001 * (k % 3));
                if (k % 10 == 7) throw std::runtime_error("task " + std::to_string(k) + " " + tail);
                return std::to_string(k) + tail;
            },
            i));
    int ok = 0, raised = 0;
    for (int i = 0; i < 50; ++i) {
        try {
            if (tasks[i].value() == std::to_string(i) + tail) ++ok;
        } catch (std::runtime_error const& e) {
            if (std::string(e.what()) == "task " + std::to_string(i) + " " + tail) ++raised;
        }
    }
    tasks.clear();
    bool fine = ok == 45 && raised == 5 && g_news > news_before && g_deletes > 0;
    printf("replaced_new: %d values, %d exceptions, %zu news and %zu deletes through the program's operators: %s\n",
           ok, raised, g_news - news_before, g_deletes, fine ? "ok" : "FAILED");
    return fine ? 0 : 1;
}
