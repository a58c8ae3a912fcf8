// GREENSHIM_COLD_BSS: for a large zero-initialised array that a process's
// start touches at most a corner of (the fd table's directory, the pthread
// keys, the vfork records). It goes to .lbss, which the linker places after
// the whole of .bss, so that the small variables the start does touch share
// a few pages instead of being spread between the arrays: each page of .bss
// written is a page fault (~20 us on a VM), and LD_PRELOAD'ed `true` wrote 7
// of them, now 3-4.
#pragma once

#define GREENSHIM_COLD_BSS __attribute__((section(".lbss.greenshim")))
