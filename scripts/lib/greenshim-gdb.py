# greenshim-gdb.py: gdb commands for the greenlet threads of a program running
# under greenshim (LD_PRELOAD=libgreenshim.so) or linking its runtime, as Go's
# runtime-gdb.py does for goroutines. gdb shows only the OS threads; every
# greenlet thread but the running one is a suspended Boost.Context fiber.
#
#   info greenlets                  every live greenlet: id, name, state, the
#                                   call it waits in, its start function
#   greenlet bt N [BT-OPTIONS]      greenlet N's backtrace
#   greenlet apply all|N... CMD     CMD with each greenlet's frames in place
#                                   (greenlet apply all bt)
#
# Works on a live process and on a core file: nothing in the program is
# called or written. It reads the runtime's own data (libgreenshim.so, the
# preload that carries the runtime, or libgreenshim-runtime.so, built with
# -g as the default debugoptimized build is): the calling OS
# thread's state greenshim::detail::t_state (a thread-local, read through
# libthread_db) and its list of live greenlets. A suspended greenlet's frames
# come from the context Boost.Context's jump_fcontext saved on its stack
# (x86-64: mxcsr/x87 control word, r12, r13, r14, r15, rbx, rbp, return
# address): a Python unwinder makes that context the caller of the OS
# thread's innermost frame, and gdb's own DWARF unwinder goes on from there.
# That innermost frame (#0, the OS thread's, usually epoll_wait in the hub) is
# left out of bt: a greenlet's frames start at #1. The running greenlet (the
# one the hub was running when the process stopped) is its OS thread's own
# backtrace.
#
# Loading: installed as share/greenshim/greenshim-gdb.py, and auto-loaded for
# libgreenshim.so and libgreenshim-runtime.so.0 by the stubs
# share/gdb/auto-load/<libdir>/<library>-gdb.py when gdb's auto-load safe-path
# allows it (a /usr install is in the default one; otherwise
# `add-auto-load-safe-path PREFIX/share/gdb/auto-load` and
# `add-auto-load-scripts-directory PREFIX/share/gdb/auto-load` in ~/.gdbinit,
# or simply `source PREFIX/share/greenshim/greenshim-gdb.py`).
import itertools

import gdb

try:
    from gdb.unwinder import Unwinder, register_unwinder
except ImportError:  # a gdb without Python unwinders
    Unwinder = None

if getattr(gdb, "_greenshim_loaded", False):
    # Loaded twice (auto-load and source): the commands exist already.
    pass
else:
    gdb._greenshim_loaded = True

    STATES = ["fresh", "running", "suspended", "runnable", "parked", "dead"]
    ARG_KINDS = ["none", "fd", "address", "pid", "signal"]

    def _ptr(v):
        return int(v.cast(gdb.lookup_type("unsigned long")))

    def _first_word(v):
        """The pointer a libstdc++ unique_ptr or shared_ptr holds (its first word)."""
        voidpp = gdb.lookup_type("void").pointer().pointer()
        return v.address.cast(voidpp).dereference()

    def _string(v):
        try:
            n = int(v["_M_string_length"])
            return v["_M_dataplus"]["_M_p"].string(length=n)
        except gdb.error:
            return "?"

    def _cstring(p):
        try:
            return p.string() if _ptr(p) else ""
        except gdb.error:
            return "?"

    class Greenlet:
        def __init__(self, value, thread, ts):
            self.g = value  # greenshim::Greenlet*
            self.thread = thread
            impl_type = gdb.lookup_type("greenshim::Greenlet::Impl").pointer()
            self.impl = _first_word(value["impl_"]).cast(impl_type)
            self.id = int(value["id_"])
            self.name = _string(value["name_"])
            state = value["state_"]
            try:  # a std::atomic (another hub may claim a parked greenlet)
                state = state["_M_i"]
            except gdb.error:
                pass
            self.state = STATES[int(state)] if 0 <= int(state) < len(STATES) else "?"
            self.is_hub = bool(self.impl["is_hub"])
            self.is_main = bool(value["is_main_"])
            self.current = _ptr(value) == _ptr(ts["current"])
            self.fctx = _ptr(self.impl["ctx"]["fctx_"])

        def wait(self):
            site = self.impl["site"]
            if not _ptr(site):
                return "an unnamed wait", "api"
            call = _cstring(site["call"])
            family = _cstring(site["family"])
            kind = int(site["arg_kind"])
            arg = int(self.impl["wait_arg"])
            kind = ARG_KINDS[kind] if 0 <= kind < len(ARG_KINDS) else "none"
            if kind == "fd":
                call += " fd %d" % arg
            elif kind == "address":
                call += " 0x%x" % (arg & 0xFFFFFFFFFFFFFFFF)
            elif kind == "pid":
                call += " pid %d" % arg
            return call, family

        def entry(self):
            e = _ptr(self.impl["entry"])
            if not e:
                return None
            try:
                s = gdb.execute("info symbol 0x%x" % e, to_string=True).strip()
            except gdb.error:
                s = ""
            if not s or s.startswith("No symbol"):
                return "0x%x" % e
            name, _, rest = s.partition(" in section ")
            module = rest.split(" of ")[-1].rsplit("/", 1)[-1] if " of " in rest else ""
            return name + (" (%s)" % module if module else "")

        def describe(self):
            waiting = self.state == "parked" or (self.current and _ptr(self.impl["site"]))
            text = "waiting" if waiting else self.state
            if waiting:
                call, family = self.wait()
                text += " in %s [%s]" % (call, family)
            e = self.entry()
            if e:
                text += "; started at " + e
            return "greenlet %d (%s): %s" % (self.id, self.name, text)

    def _thread_states():
        """(gdb thread, ThreadState value) for each OS thread that has one."""
        out = []
        inferior = gdb.selected_inferior()
        selected = gdb.selected_thread()
        try:
            sym = gdb.lookup_global_symbol("greenshim::detail::t_state")
            if sym is None:
                raise gdb.GdbError("greenshim: no symbol greenshim::detail::t_state: is libgreenshim.so (or "
                                   "libgreenshim-runtime.so) loaded, with its debug info (a -g build)?")
            for thread in sorted(inferior.threads(), key=lambda t: t.num):
                thread.switch()
                try:
                    ts = sym.value(gdb.newest_frame())
                except gdb.error:
                    continue
                if _ptr(ts):
                    out.append((thread, ts.dereference()))
        finally:
            if selected is not None and selected.is_valid():
                selected.switch()
        return out

    def greenlets():
        result = []
        for thread, ts in _thread_states():
            gp = gdb.lookup_type("greenshim::Greenlet").pointer()
            main = _first_word(ts["main"]).cast(gp)
            if _ptr(main):
                g = Greenlet(main, thread, ts)
                if g.state != "dead":
                    result.append(g)
            p = ts["live_head"]
            seen = 0
            while _ptr(p) and seen < 1000000:
                g = Greenlet(p, thread, ts)
                if not g.is_hub:
                    result.append(g)
                p = g.impl["live_next"]
                seen += 1
        return result

    # ---- a suspended greenlet's frames: the unwinder ----

    _target = {"fctx": 0}

    if Unwinder is not None:

        class _FrameId:
            def __init__(self, sp, pc):
                self.sp = sp
                self.pc = pc

        class GreenletUnwinder(Unwinder):
            """While _target['fctx'] is set: the innermost frame's caller is the
            context jump_fcontext saved there."""

            def __init__(self):
                super().__init__("greenshim-greenlet")

            def __call__(self, pending_frame):
                fctx = _target["fctx"]
                if not fctx or pending_frame.level() != 0:
                    return None
                ulong = gdb.lookup_type("unsigned long")
                ulongp = ulong.pointer()

                def word(off):
                    return gdb.Value(fctx + off).cast(ulongp).dereference()

                pc = pending_frame.read_register("rip")
                # The frame's id is placed just below the greenlet's stack
                # pointer, so that its frames are outer to it (gdb stops a
                # backtrace that goes "inward").
                info = pending_frame.create_unwind_info(_FrameId(gdb.Value(fctx).cast(ulong), pc))
                for reg, off in (("r12", 0x8), ("r13", 0x10), ("r14", 0x18), ("r15", 0x20), ("rbx", 0x28),
                                 ("rbp", 0x30), ("rip", 0x38)):
                    info.add_saved_register(reg, word(off))
                info.add_saved_register("rsp", gdb.Value(fctx + 0x40).cast(ulong))
                return info

        register_unwinder(None, GreenletUnwinder(), replace=True)

    class _SkipInnermost:
        """Leaves the OS thread's innermost frame out of bt while a greenlet's
        frames are shown."""

        def __init__(self):
            self.name = "greenshim-greenlet"
            self.priority = 100
            self.enabled = True
            gdb.frame_filters[self.name] = self

        def filter(self, frames):
            if _target["fctx"]:
                return itertools.islice(frames, 1, None)
            return frames

    _SkipInnermost()

    def run_in(g, command, from_tty):
        """Runs command with greenlet g's frames in place."""
        selected = gdb.selected_thread()
        try:
            g.thread.switch()
            if g.current or g.state == "fresh":
                if g.state == "fresh":
                    print("  (not started yet)")
                    return
                gdb.execute(command, from_tty)
                return
            if Unwinder is None:
                print("  (this gdb has no Python unwinders: no backtrace)")
                return
            if not g.fctx:
                print("  (no saved context)")
                return
            _target["fctx"] = g.fctx
            gdb.invalidate_cached_frames()
            try:
                try:  # the greenlet's innermost frame, for CMDs like info locals
                    older = gdb.newest_frame().older()
                    if older is not None:
                        older.select()
                except gdb.error:
                    pass
                gdb.execute(command, from_tty)
            finally:
                _target["fctx"] = 0
                gdb.invalidate_cached_frames()
        finally:
            if selected is not None and selected.is_valid():
                selected.switch()

    def _lang_cpp(fn):
        # The running frame is often C (libc): parse our names as C++.
        def wrapped(*args):
            lang = gdb.parameter("language")
            gdb.execute("set language c++", to_string=True)
            try:
                return fn(*args)
            finally:
                gdb.execute("set language %s" % lang, to_string=True)
        return wrapped

    class InfoGreenlets(gdb.Command):
        """List the live greenlets of the program (greenshim): id, name, state, the
call it waits in, and the function it started at. '*' marks the running one
(its OS thread's own frames)."""

        def __init__(self):
            super().__init__("info greenlets", gdb.COMMAND_STACK)

        @_lang_cpp
        def invoke(self, arg, from_tty):
            gs = greenlets()
            if not gs:
                print("No greenlets (is this a greenshim process?).")
                return
            threads = {g.thread.num for g in gs}
            for g in gs:
                where = " [thread %d]" % g.thread.num if len(threads) > 1 else ""
                print("%s %s%s" % ("*" if g.current else " ", g.describe(), where))

    class GreenletPrefix(gdb.Command):
        """Commands for greenshim's greenlets: greenlet bt N, greenlet apply all|N... CMD."""

        def __init__(self):
            super().__init__("greenlet", gdb.COMMAND_STACK, prefix=True)

    def _find(gs, text):
        try:
            n = int(text, 0)
        except ValueError:
            raise gdb.GdbError("greenlet: %r is not a greenlet number" % text)
        for g in gs:
            if g.id == n:
                return g
        raise gdb.GdbError("greenlet: no live greenlet %d (info greenlets lists them)" % n)

    class GreenletBt(gdb.Command):
        """greenlet bt N [BT-OPTIONS]: the backtrace of greenlet N (its number in
info greenlets). A suspended greenlet's frames start at #1."""

        def __init__(self):
            super().__init__("greenlet bt", gdb.COMMAND_STACK)

        @_lang_cpp
        def invoke(self, arg, from_tty):
            argv = gdb.string_to_argv(arg)
            if not argv:
                raise gdb.GdbError("usage: greenlet bt N [BT-OPTIONS]")
            g = _find(greenlets(), argv[0])
            print(g.describe())
            run_in(g, "bt " + " ".join(argv[1:]), from_tty)

    class GreenletApply(gdb.Command):
        """greenlet apply all|N... CMD: runs CMD for each greenlet named (all: every
live one) with that greenlet's frames in place, e.g. greenlet apply all bt."""

        def __init__(self):
            super().__init__("greenlet apply", gdb.COMMAND_STACK)

        @_lang_cpp
        def invoke(self, arg, from_tty):
            argv = arg.split()
            if len(argv) < 2:
                raise gdb.GdbError("usage: greenlet apply all|N... CMD")
            gs = greenlets()
            if argv[0] == "all":
                chosen, rest = gs, argv[1:]
            else:
                chosen = []
                while argv and argv[0].isdigit():
                    chosen.append(_find(gs, argv.pop(0)))
                rest = argv
            if not rest:
                raise gdb.GdbError("greenlet apply: which command?")
            for g in chosen:
                print("\n%s" % g.describe())
                run_in(g, " ".join(rest), from_tty)

    InfoGreenlets()
    GreenletPrefix()
    GreenletBt()
    GreenletApply()
