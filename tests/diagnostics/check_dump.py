#!/usr/bin/env python3
"""greenrun --dump and the gdb extension on a running server (issue 16).

usage: check_dump.py CHECK GREENRUN SERVER GDB_SCRIPT
  CHECK: dump | gdb | core

SERVER (tests/diagnostics/dump_server.c) runs under greenrun with two threads
reading pipes, one reading a socket, one holding a mutex (sleeping) and two
waiting for it; main joins. Each check asserts that every one of them is
listed with the call it waits in and its start function:
  dump: greenrun --dump PID (the process's stderr gets a copy), --dump-to FILE
        (it does not), each thread's backtrace includes its start function,
        the process goes on; a SIGRTMAX-2 sent by the program itself still
        reaches its own handler path (the server has none: it dies of it, as
        unpatched); errors: no such pid, an unpatched process (exit 2).
  gdb:  gdb -batch -p PID with GDB_SCRIPT sourced: info greenlets lists the
        same greenlets, greenlet bt N shows the start function, greenlet apply
        all bt every one; the process goes on afterwards.
  core: the same on a core file made by gcore.
Only the processes started here are killed, by pid. Exits 1 with the failed
assertions listed."""
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from expect import failures  # noqa: E402
from expect import expect as _expect  # noqa: E402


def expect(cond, what, output=""):
    _expect(cond, what, output, tail=6000)


# What each waiting thread must show: (start function, the wait's words).
WAITERS = [
    ("pipe_reader", r"waiting in read fd \d+ \[io\]"),
    ("pipe_reader", r"waiting in read fd \d+ \[io\]"),
    ("socket_reader", r"waiting in socket read fd \d+ \[socket\]"),
    ("lock_holder", r"waiting in sleep \[sleep\]"),
    ("lock_waiter", r"waiting in pthread_mutex_lock 0x[0-9a-f]+ \[sync\]"),
    ("lock_waiter", r"waiting in pthread_mutex_lock 0x[0-9a-f]+ \[sync\]"),
]


def check_listing(text, label):
    """Every waiter listed once, main waiting in pthread_join."""
    expect(re.search(r"greenlet 0 \(main\): waiting in pthread_join \[join\]", text) is not None,
           f"{label}: main shown waiting in pthread_join", text)
    for fn in sorted(set(f for f, _ in WAITERS)):
        want = [w for f, w in WAITERS if f == fn]
        found = re.findall(r"greenlet \d+ \([^)]*\): (" + want[0] + r")(?: \([0-9.]+ s left\))?; started at "
                           + fn + r"\b", text)
        expect(len(found) == len(want), f"{label}: {len(want)} x {fn} shown {want[0]!r} (found {len(found)})", text)
    expect("(sock-reader)" in text, f"{label}: the name pthread_setname_np gave is shown", text)
    # The two lock waiters wait on the mutex the holder holds: one address.
    addrs = set(re.findall(r"pthread_mutex_lock (0x[0-9a-f]+)", text))
    expect(len(addrs) == 1, f"{label}: both lock waiters wait on the same mutex", text)


def blocks(text):
    """greenlet id -> (its line, the lines after it up to the next greenlet)."""
    out = {}
    cur = None
    for line in text.splitlines():
        m = re.match(r"\s*\*?\s*greenlet (\d+) \(", line)
        if m:
            cur = int(m.group(1))
            out[cur] = [line, []]
        elif cur is not None:
            out[cur][1].append(line)
    return out


def start_server(greenrun, server, env=None):
    e = dict(os.environ)
    for k in list(e):
        if k.startswith("GREENSHIM_") and k != "GREENSHIM_LIB":
            del e[k]
    e.update(env or {})
    err = tempfile.TemporaryFile()
    p = subprocess.Popen([greenrun, "--", server], stdout=subprocess.PIPE, stderr=err, stdin=subprocess.DEVNULL,
                         env=e, start_new_session=True)
    line = p.stdout.readline().decode()
    if not line.startswith("ready"):
        err.seek(0)
        p.kill()
        p.wait()
        raise SystemExit(f"FAIL: the server did not get ready: {line!r} {err.read().decode()!r}")
    wait_settled(greenrun, p.pid)
    return p, err


def wait_settled(greenrun, pid):
    """Dumps, to a scratch file (not the process's stderr, which the checks
    read), until main waits in pthread_join and both lock waiters in
    pthread_mutex_lock: the server prints "ready" just before main's join, so
    a dump can come first on a busy machine. Gives up after 20 s; the checks
    then say what is missing."""
    deadline = time.monotonic() + 20
    with tempfile.TemporaryDirectory() as d:
        target = os.path.join(d, "settle")
        while time.monotonic() < deadline:
            r = subprocess.run([greenrun, "--dump", str(pid), "--dump-to", target], capture_output=True, text=True,
                               timeout=30)
            if (re.search(r"greenlet 0 \(main\): waiting in pthread_join", r.stdout)
                    and len(re.findall(r"waiting in pthread_mutex_lock 0x", r.stdout)) == 2):
                return
            time.sleep(0.05)


def stop(p):
    if p.poll() is None:
        p.kill()  # our own child, by pid
    p.wait()


def stderr_of(err):
    err.seek(0)
    return err.read().decode(errors="replace")


def expect_killed_by_plain_signal(p, label):
    os.kill(p.pid, signal.SIGRTMAX - 2)
    try:
        p.wait(timeout=10)
    except subprocess.TimeoutExpired:
        pass
    expect(p.returncode == -(signal.SIGRTMAX - 2),
           f"{label}a plain SIGRTMAX-2 kills the server as unpatched (status {p.returncode})")


def check_dump(greenrun, server):
    p, err = start_server(greenrun, server)
    try:
        t0 = time.monotonic()
        r = subprocess.run([greenrun, "--dump", str(p.pid)], capture_output=True, text=True, timeout=30)
        took = time.monotonic() - t0
        out = r.stdout
        expect(r.returncode == 0, f"--dump: exit 0 (got {r.returncode}, {r.stderr.strip()!r})", out)
        expect(took < 5, f"--dump: answered in {took:.2f} s")
        # (the process's comm: its first 15 bytes)
        expect(out.startswith(f"greenshim: dump of process {p.pid} (diag_dump_serve): 7 greenlets"),
               "--dump: the header names the process and counts 7 greenlets", out)
        expect(out.rstrip().endswith("greenshim: end of dump"), "--dump: complete", out)
        check_listing(out, "--dump")
        for gid, (line, frames) in blocks(out).items():
            m = re.search(r"started at (\w+)", line)
            if not m:
                continue
            fn = m.group(1)
            expect(any(re.search(r"#\d+\s+0x[0-9a-f]+ " + fn + r"\+0x[0-9a-f]+ \(diag_dump_server\)", f) for f in frames),
                   f"--dump: greenlet {gid}'s backtrace has its start function {fn}", "\n".join([line] + frames))
        main = blocks(out).get(0, ["", []])[1]
        expect(any(" main+" in f for f in main), "--dump: main's backtrace has main", "\n".join(main))
        if shutil.which("addr2line"):
            expect(re.search(r"pipe_reader\+0x[0-9a-f]+ \(diag_dump_server\) at diagnostics/dump_server\.c:\d+", out)
                   is not None, "--dump: frames get file:line from addr2line", out)
        time.sleep(0.2)
        copy = stderr_of(err)
        expect(copy.count("greenshim: end of dump") == 1 and "started at lock_waiter" in copy,
               "--dump: a copy went to the process's stderr", copy)

        with tempfile.TemporaryDirectory() as d:
            target = os.path.join(d, "dump.txt")
            r = subprocess.run([greenrun, "--dump", str(p.pid), "--dump-to", target], capture_output=True, text=True,
                               timeout=30)
            expect(r.returncode == 0, f"--dump-to: exit 0 (got {r.returncode}, {r.stderr.strip()!r})")
            with open(target) as f:
                written = f.read()
            check_listing(written, "--dump-to FILE")
            expect(written.rstrip().endswith("greenshim: end of dump"), "--dump-to: FILE holds the whole dump",
                   written)
            expect("started at socket_reader" in r.stdout, "--dump-to: printed too", r.stdout)
        time.sleep(0.2)
        expect(stderr_of(err).count("greenshim: end of dump") == 1,
               "--dump-to: nothing more went to the process's stderr", stderr_of(err))
        expect(p.poll() is None, "--dump: the process goes on")
        # Many in a row: the process answers each and keeps running.
        for i in range(5):
            r = subprocess.run([greenrun, "--dump", str(p.pid), "--raw"], capture_output=True, text=True, timeout=30)
            if r.returncode != 0 or "end of dump" not in r.stdout:
                break
        expect(r.returncode == 0 and p.poll() is None, "--dump: five more dumps, the process still runs", r.stderr)

        # Errors: no such process, a process without greenshim (exit 2).
        r = subprocess.run([greenrun, "--dump", "999999999"], capture_output=True, text=True, timeout=30)
        expect(r.returncode == 2 and "no process 999999999" in r.stderr,
               f"--dump of a pid that does not exist: exit 2 and says so (got {r.returncode}, {r.stderr!r})")
        plain = subprocess.Popen(["sleep", "30"], start_new_session=True)
        try:
            r = subprocess.run([greenrun, "--dump", str(plain.pid)], capture_output=True, text=True, timeout=30)
            expect(r.returncode == 2 and "is not running under greenshim" in r.stderr,
                   f"--dump of an unpatched process: exit 2 and says so (got {r.returncode}, {r.stderr!r})")
            expect(plain.poll() is None, "--dump of an unpatched process sends it nothing")
        finally:
            stop(plain)
        r = subprocess.run([greenrun, "--dump", "nope"], capture_output=True, text=True, timeout=30)
        expect(r.returncode == 2, f"--dump nope: exit 2 (got {r.returncode})")

        # A SIGRTMAX-2 of somebody else's (no greenshim value) is the
        # program's: this one has no handler, so it dies of it as unpatched.
        expect_killed_by_plain_signal(p, "")
    finally:
        stop(p)
    # A process that never made a thread (Debian's sleep) has not loaded the
    # unwinder (shim/unwind.cpp): the dump, taken while its hub waits in its
    # poll, loads it and still shows main's frames.
    lone = subprocess.Popen([greenrun, "--", "sleep", "30"], start_new_session=True,
                            stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:  # (until the preload is in and main waits in sleep)
            r = subprocess.run([greenrun, "--dump", str(lone.pid)], capture_output=True, text=True, timeout=30)
            if r.returncode == 0 and "waiting in" in r.stdout:
                break
            time.sleep(0.05)
        main = blocks(r.stdout).get(0, ["", []])[1]
        expect(r.returncode == 0 and "waiting in" in r.stdout and
               any("__libc_start_main" in f for f in main),
               "--dump of a process without threads: main's backtrace down to __libc_start_main", r.stdout)
    finally:
        stop(lone)
    # Two hubs: each worker writes its threads' part, under a line naming it.
    p, err = start_server(greenrun, server, {"GREENSHIM_HUBS": "2"})
    try:
        r = subprocess.run([greenrun, "--dump", str(p.pid)], capture_output=True, text=True, timeout=30)
        out = r.stdout
        expect(r.returncode == 0, f"--dump, two hubs: exit 0 (got {r.returncode}, {r.stderr.strip()!r})", out)
        expect(out.count("(a worker;") == 1, "--dump, two hubs: the worker hub's part is there, once", out)
        expect(out.rstrip().endswith("greenshim: end of dump"), "--dump, two hubs: complete", out)
        check_listing(out, "--dump, two hubs")
        # A SIGRTMAX-2 of the program's own, which a worker lets through for
        # the dump's sake, still kills it as unpatched (handled on main).
        expect_killed_by_plain_signal(p, "two hubs: ")
    finally:
        stop(p)


def gdb_cmd(script, *target, commands):
    argv = ["gdb", "-nx", "-batch", "-ex", "set pagination off", "-ex", f"source {script}"]
    for c in commands:
        argv += ["-ex", c]
    argv += list(target)
    r = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    return r.stdout + r.stderr


def check_gdb_output(out, label):
    check_listing(out.split("@@bt@@", 1)[0], label)
    bt = out.split("@@bt@@", 1)[-1].split("@@all@@", 1)[0]
    expect(re.search(r"#\d+ .*lock_waiter \(", bt) is not None and "pthread_mutex_lock" in bt,
           f"{label}: greenlet bt N shows the waiter's frames down to lock_waiter", bt)
    expect(not re.search(r"^#0 ", bt, re.M), f"{label}: greenlet bt leaves out the OS thread's frame #0", bt)
    everything = out.split("@@all@@", 1)[-1]
    for fn in ("pipe_reader", "socket_reader", "lock_holder", "lock_waiter"):
        expect(re.search(r"#\d+ .*\b" + fn + r" \(", everything) is not None,
               f"{label}: greenlet apply all bt has {fn}'s frames", everything)
    expect(re.search(r"#\d+ .*\bmain \(", everything) is not None, f"{label}: greenlet apply all bt has main's",
           everything)


def waiter_id(greenrun, pid):
    r = subprocess.run([greenrun, "--dump", str(pid), "--raw"], capture_output=True, text=True, timeout=30)
    m = re.search(r"greenlet (\d+) \([^)]*\): waiting in pthread_mutex_lock", r.stdout)
    return m.group(1) if m else "0"


def check_gdb(greenrun, server, script):
    p, err = start_server(greenrun, server)
    try:
        wid = waiter_id(greenrun, p.pid)
        out = gdb_cmd(script, "-p", str(p.pid),
                      commands=["info greenlets", "echo @@bt@@\\n", f"greenlet bt {wid}", "echo @@all@@\\n",
                                "greenlet apply all bt"])
        check_gdb_output(out, "gdb -p")
        time.sleep(0.2)
        expect(p.poll() is None, "gdb -p: the process goes on after gdb detached")
        r = subprocess.run([greenrun, "--dump", str(p.pid), "--raw"], capture_output=True, text=True, timeout=30)
        expect(r.returncode == 0 and "started at lock_waiter" in r.stdout,
               "gdb -p: the process still answers --dump afterwards", r.stderr)
    finally:
        stop(p)


def check_core(greenrun, server, script):
    if not shutil.which("gcore"):
        expect(False, "gcore (gdb) is installed")
        return
    p, err = start_server(greenrun, server)
    with tempfile.TemporaryDirectory() as d:
        try:
            wid = waiter_id(greenrun, p.pid)
            r = subprocess.run(["gcore", "-o", os.path.join(d, "core"), str(p.pid)], capture_output=True, text=True,
                               timeout=60)
            core = os.path.join(d, f"core.{p.pid}")
            expect(r.returncode == 0 and os.path.exists(core), "gcore made a core file", r.stdout + r.stderr)
        finally:
            stop(p)
        if not os.path.exists(core):
            return
        out = gdb_cmd(script, server, core,
                      commands=["info greenlets", "echo @@bt@@\\n", f"greenlet bt {wid}", "echo @@all@@\\n",
                                "greenlet apply all bt"])
        check_gdb_output(out, "gdb on a core file")


def main():
    check, greenrun, server, script = sys.argv[1:5]
    if check in ("gdb", "core") and not shutil.which("gdb"):
        expect(False, "gdb is installed (scripts/lib/common.sh installs it)")
    elif check == "dump":
        check_dump(greenrun, server)
    elif check == "gdb":
        check_gdb(greenrun, server, script)
    elif check == "core":
        check_core(greenrun, server, script)
    else:
        raise SystemExit(f"unknown check {check}")
    if failures:
        print(f"{len(failures)} failed")
        sys.exit(1)


main()
