// What the C++ thread tests run both ways (pthread_details.cpp,
// shared_sync.cpp) share: the same binary runs with OS threads and under the
// shim, GREENSHIM_THREADS_MODE says which the test expects. Include it
// after doctest.
#pragma once
#include <pthread.h>
#include <time.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>

// Whether libgreenshim.so is mapped: threads are greenlets.
inline bool shim_mapped() {
    std::ifstream f("/proc/self/maps");
    std::string line;
    while (std::getline(f, line))
        if (line.find("libgreenshim") != std::string::npos) return true;
    return false;
}

// False, with one line on stderr, when the run is not the one
// GREENSHIM_THREADS_MODE (patched or unpatched) asks for; else prints which
// it is on stdout.
inline bool runs_as_expected(const char* prog, bool mapped) {
    const char* mode = std::getenv("GREENSHIM_THREADS_MODE");
    if (mode && std::string(mode) == "patched" && !mapped) {
        std::fprintf(stderr, "%s: expected libgreenshim.so to be preloaded, it is not\n", prog);
        return false;
    }
    if (mode && std::string(mode) == "unpatched" && mapped) {
        std::fprintf(stderr, "%s: expected no libgreenshim.so, but it is mapped\n", prog);
        return false;
    }
    std::printf("%s: %s\n", prog, mapped ? "libgreenshim.so preloaded: threads are greenlets"
                                         : "unpatched: threads are OS threads");
    return true;
}

// The absolute time `seconds` from now on `clock`, for timed waits.
inline struct timespec abs_in(double seconds, clockid_t clock = CLOCK_REALTIME) {
    struct timespec ts;
    clock_gettime(clock, &ts);
    long long ns = (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec + (long long)(seconds * 1e9);
    ts.tv_sec = time_t(ns / 1000000000LL);
    ts.tv_nsec = long(ns % 1000000000LL);
    return ts;
}

// Starts a thread running (*f)(), which returns its void* result.
template <class F>
pthread_t spawn(F* f) {
    pthread_t t;
    REQUIRE(pthread_create(
                &t, nullptr, [](void* p) -> void* { return (*static_cast<F*>(p))(); }, f) == 0);
    return t;
}
