// GREENSHIM_COLD_BSS: for a large zero-initialised array that a process's
// start touches at most a corner of (the fd table's directory, the pthread
// keys, the vfork records). It goes to .lbss, which the linker places after
// the whole of .bss, so that the small variables the start does touch share
// a few pages instead of being spread between the arrays: each page of .bss
// written is a page fault (~20 us on a VM), and LD_PRELOAD'ed `true` wrote 7
// of them, now 3-4.
//
// GREENSHIM_STARTUP_CODE: for a function that every process runs at start-up
// (the constructor's callees in other files than init.cpp, which the compiler
// cannot see to be start-up code; it places its own constructors' there
// already). They go to .text.startup, which the linker places together at the
// start of .text, so that the start faults in one or two windows of our code
// instead of one for each file it passes through (each such fault maps 64 KiB
// around it, ~20 us on a VM).
//
// GREENSHIM_STARTUP_DATA: for a small zero-initialised variable that every
// process's start writes (the real functions' slots, the held signals' table,
// the program's operators), or its exit reads (a static's destructor). It goes
// to .data, whose pages the loader writes anyway (relocations, and the zeroing
// of the tail of its last page), rather than .bss, where each such variable
// faulted in a page of its own: three page faults of every process.
#pragma once

#define GREENSHIM_COLD_BSS __attribute__((section(".lbss.greenshim")))
#define GREENSHIM_STARTUP_CODE __attribute__((section(".text.startup")))
#define GREENSHIM_STARTUP_DATA __attribute__((section(".data.greenshim.startup")))
// The same for code that runs at every exit (static destructors): .text.exit,
// which the linker places beside .text.startup.
#define GREENSHIM_EXIT_CODE __attribute__((section(".text.exit")))
