// What AddressSanitizer and valgrind must be told about greenlet stacks.
//
// Both assume one stack per OS thread. ASan must hear of every switch
// (__sanitizer_start/finish_switch_fiber, greenlet.cpp), or a throw unpoisons
// "the rest of the stack" over the wrong range and the next greenlet to get a
// reused stack trips over stale redzones; LeakSanitizer must scan the stacks
// of suspended greenlets (stack.cpp). Valgrind must know each stack
// (VALGRIND_STACK_REGISTER, stack.cpp), or it takes every switch for a huge
// stack-pointer move and warns. The ASan parts are compiled only into a build
// with -fsanitize=address (meson -Db_sanitize=address,undefined): the plain
// build's switch path is unchanged. The valgrind requests are a few no-op
// instructions when not under valgrind, and run only when a stack is mapped
// or unmapped.
#pragma once

#include <cstddef>

#if defined(__SANITIZE_ADDRESS__)
#define GREENSHIM_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define GREENSHIM_ASAN 1
#endif
#endif
#ifndef GREENSHIM_ASAN
#define GREENSHIM_ASAN 0
#endif

#if GREENSHIM_ASAN
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>
#include <sanitizer/lsan_interface.h>
#endif

#if __has_include(<valgrind/valgrind.h>)
#include <valgrind/valgrind.h>
#define GREENSHIM_VALGRIND 1
#else
#define GREENSHIM_VALGRIND 0
#endif

namespace greenshim::detail {

// A stack as ASan is told of it: [bottom, bottom + size).
struct StackRange {
    const void* bottom = nullptr;
    std::size_t size = 0;
};

}  // namespace greenshim::detail
