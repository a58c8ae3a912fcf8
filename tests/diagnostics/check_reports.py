#!/usr/bin/env python3
"""Asserts the reports of greenshim's diagnostics on programs that provoke them.

usage: check_reports.py CHECK GREENRUN PROGRAM
  CHECK: deadlock | monitor | stats | trace | fork

Each check runs PROGRAM under greenrun (bounded in time) and asserts what the
report says: who waits where, who hogs the hub, what was counted. Exits 1 with
the failed assertions listed."""
import os
import re
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from expect import expect, failures  # noqa: E402


def run(cmd, env_extra=None, timeout=30):
    env = dict(os.environ)
    for k in list(env):
        if k.startswith("GREENSHIM_") and k != "GREENSHIM_LIB":
            del env[k]
    env.update(env_extra or {})
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    return p.returncode, p.stdout, p.stderr


def check_deadlock(greenrun, prog):
    rc, out, err = run([greenrun, "--", prog])
    expect(rc == 86, f"deadlock: exit status 86 (got {rc})", err)
    expect("greenshim: deadlock:" in err, "deadlock: announced on stderr", err)
    expect(re.search(r"greenlet 0 \(main\): waiting in pthread_join", err) is not None,
           "deadlock: main shown waiting in pthread_join", err)
    for worker in ("transfer_worker", "audit_worker"):
        expect(re.search(r"waiting in pthread_mutex_lock 0x[0-9a-f]+ \[sync\]; started at " + worker, err)
               is not None, f"deadlock: {worker} shown waiting in pthread_mutex_lock", err)
    addrs = re.findall(r"pthread_mutex_lock (0x[0-9a-f]+)", err)
    expect(len(set(addrs)) == 2, "deadlock: the two workers wait on two different mutexes", err)
    expect("this line is buffered when the deadlock strikes" in out,
           "deadlock: output the program buffered is not lost", out)
    # main leaves with pthread_exit (it waits there for the other threads,
    # as glibc's main thread does), the two workers stuck: the same report.
    rc, out, err = run([greenrun, "--", prog, "main-exits"])
    expect(rc == 86, f"deadlock, main gone: exit status 86 (got {rc})", err)
    expect("greenshim: deadlock: every greenlet is waiting (the main one in pthread_exit" in err,
           "deadlock, main gone: announced on stderr", err)
    expect(len(re.findall(r"waiting in pthread_mutex_lock 0x[0-9a-f]+ \[sync\]; started at (?:transfer|audit)_worker",
                          err)) == 2, "deadlock, main gone: both workers shown waiting", err)
    expect(err.count("greenshim: exiting with status 86 (deadlock)") == 1, "deadlock, main gone: one report", err)
    # Two hubs: the threads may be on either (with main busy, the idle worker
    # hub runs them); the report lists every one.
    for args in ([], ["busy-main"]):
        rc, out, err = run([greenrun, "-j", "2", "--", prog] + args)
        expect(rc == 86, f"deadlock, two hubs: exit status 86 (got {rc})", err)
        expect(len(re.findall(r"waiting in pthread_mutex_lock 0x[0-9a-f]+ \[sync\]; started at (?:transfer|audit)_worker",
                              err)) == 2, "deadlock, two hubs: both workers shown waiting", err)
        expect(re.search(r"greenlet 0 \(main\): waiting in pthread_join", err) is not None,
               "deadlock, two hubs: main shown waiting in pthread_join", err)
    expect(re.search(r"on the hub of OS thread \d+ \(a worker\):\n(  greenlet \d+ .*started at (transfer|audit)_worker"
                     r".*\n){1,2}greenshim: exiting", err) is not None,
           "deadlock, two hubs, main busy: the threads the worker hub runs listed under it", err)


def check_monitor(greenrun, prog):
    # (the hog is not preempted, GREENSHIM_HANDOFF=0: the stall lasts)
    rc, out, err = run([greenrun, "--handoff", "0", "--monitor", "100", "--", prog, "700"])
    expect(rc == 0, f"monitor: the hog still runs to the end (status {rc})", err)
    reports = re.findall(r"greenshim: monitor: the hub has not run for (\d+) ms: greenlet \d+ \([^)]*started at "
                         r"hog_worker \(diag_cpu_hog\)\)", err)
    expect(len(reports) == 1, f"monitor: one report for one stall, naming hog_worker (got {len(reports)})", err)
    if reports:
        expect(100 <= int(reports[0]) < 700, f"monitor: reported after more than 100 ms ({reports[0]} ms)", err)
    expect("backtrace of the running greenlet" in err and "spin_for_a_while" in err,
           "monitor: the backtrace shows the spinning function", err)
    # Without a hog (0 ms of spinning) there is nothing to report.
    rc, out, err = run([greenrun, "--monitor", "100", "--", prog, "0"])
    expect(rc == 0 and "monitor:" not in err, "monitor: silent when nothing hogs the hub", err)


def hwcap2():
    """AT_HWCAP2 of this process (0 if absent), from /proc/self/auxv."""
    import struct
    with open("/proc/self/auxv", "rb") as f:
        data = f.read()
    for i in range(0, len(data) - 15, 16):
        key, value = struct.unpack_from("<QQ", data, i)
        if key == 26:  # AT_HWCAP2
            return value
    return 0


def check_stats(greenrun, prog):
    # (--spares 0: the spin stays on the hub's thread, not handed to a carrier)
    rc, out, err = run([greenrun, "--stats", "--spares", "0", "--", prog, "50"])
    expect(rc == 0, f"stats: program ran (status {rc})", err)
    m = re.search(r"greenshim\[\d+\] stats: greenlets: (\d+) spawned, (\d+) alive at exit, peak (\d+) alive", err)
    expect(m is not None and m.groups() == ("2", "0", "2"), "stats: 2 greenlets spawned, 0 alive at exit, peak 2",
           err)
    m = re.search(r"stats: switches: (\d+); parks: (\d+)", err)
    expect(m is not None and int(m.group(1)) >= 2 * int(m.group(2)) > 0, "stats: switches and parks counted", err)
    fam = re.search(r"stats: parks by family:(.*)", err)
    fams = dict(re.findall(r"(\w+) (\d+)", fam.group(1))) if fam else {}
    expect(int(fams.get("join", 0)) >= 1 and int(fams.get("sleep", 0)) >= 1,
           f"stats: parks by family include join and sleep ({fams})", err)
    m = re.search(r"hub time: ([\d.]+) s waiting for events, ([\d.]+) s running greenlets", err)
    expect(m is not None and float(m.group(2)) >= 0.04,
           "stats: hub time shows the 50 ms spin as running time", err)
    # The thread pointer's switch is named only where it is a system call:
    # no FSGSBASE on this machine (AT_HWCAP2 bit 1), and thread-locals not shared.
    fsgsbase = bool(hwcap2() & 2)
    said = "stats: thread pointer: switched with arch_prctl, a system call at each switch" in err
    expect(said != fsgsbase, f"stats: the arch_prctl line {'absent' if fsgsbase else 'present'}, as FSGSBASE is "
                             f"{'there' if fsgsbase else 'not'} (AT_HWCAP2 {hwcap2():#x})", err)
    rc, out, err = run([greenrun, "--stats", "--", prog, "0"], {"GREENSHIM_THREAD_LOCALS": "shared"})
    expect(rc == 0 and "stats: greenlets:" in err and "thread pointer" not in err,
           "stats: no thread pointer line when the threads share thread-locals", err)
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "stats.txt")
        rc, out, err = run([greenrun, "--stats=" + path, "--", prog, "0"])
        text = open(path).read() if os.path.exists(path) else ""
        expect(rc == 0 and "stats: greenlets: 2 spawned" in text and "stats:" not in err,
               "stats: --stats=FILE appends to the file, not stderr", err + text)
    rc, out, err = run([prog, "0"], {"LD_PRELOAD": lib_of(greenrun)})
    expect("stats:" not in err, "stats: nothing printed when not asked for", err)
    # A lookup runs on a helper thread, which ends after 2 s idle; --stats
    # says what the extra OS thread was.
    lookup = ("import re, socket, time\n"
              "threads = lambda: re.search(r'Threads:\\s+(\\d+)', open('/proc/self/status').read())[1]\n"
              "socket.getaddrinfo('localhost', 80); a = threads(); time.sleep(2.6); print(a, threads())\n")
    rc, out, err = run([greenrun, "--stats", "--", "/usr/bin/python3.11", "-c", lookup])
    expect(rc == 0 and out.split() == ["2", "1"],
           f"stats: a lookup's helper thread is there after it and gone 2 s later (threads {out.split()})", err)
    expect(re.search(r"stats: helper threads \(DNS lookups, file I/O on the pool\): 0 alive, peak 1, [1-9]\d* "
                     r"calls run; an idle one ends after 2 s", err) is not None, "stats: helper threads counted", err)


def check_trace(greenrun, prog):
    rc, out, err = run([greenrun, "--trace", "sync", "--", prog])
    parks = re.findall(r"greenshim\[\d+\] +[\d.]+ ms: greenlet (\d+) \([^)]*\) parks in pthread_mutex_lock", err)
    expect(sorted(set(parks)) == ["2", "3"] or len(set(parks)) == 2,
           f"trace: both workers' mutex parks traced (greenlets {sorted(set(parks))})", err)
    expect(re.search(r"wakes \(event\) from pthread_barrier_wait", err) is not None,
           "trace: a wake says why and from what", err)
    expect("parks in pthread_join" not in err, "trace: only the families asked for (join not traced)", err)
    rc, out, err = run([prog], {"LD_PRELOAD": lib_of(greenrun), "GREENSHIM_TRACE": "sync,bogus"}, timeout=30)
    expect(re.search(r"greenshim: ignoring GREENSHIM_TRACE=sync,bogus", err) is not None and " parks in " not in err,
           "trace: an unknown family is warned about and traces nothing", err)
    rc, out, err = run([greenrun, "--trace", "bogus", "--", prog])
    expect(rc == 2 and "GREENSHIM_TRACE=bogus" in err, "trace: greenrun rejects an unknown family", err)


def check_fork(greenrun, prog):
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "stats.txt")
        try:
            rc, out, err = run([greenrun, "--monitor", "1", "--stats=" + path, "--", prog, "600"], timeout=90)
        except subprocess.TimeoutExpired:
            rc, out, err = None, "", "timed out after 90 s"
        expect(rc == 0 and "forks done, bad 0" in out, f"fork: 600 children exit 0 under the monitor (status {rc})",
               out + err)
        text = open(path).read() if os.path.exists(path) else ""
        blocks = len(re.findall(r"stats: greenlets:", text))
        expect(blocks == 601, f"fork: stats written by the parent and every child ({blocks} of 601)", err)


def lib_of(greenrun):
    return subprocess.run([greenrun, "--print-lib"], capture_output=True, text=True, check=True).stdout.strip()


def main():
    check, greenrun, prog = sys.argv[1:4]
    {"deadlock": check_deadlock, "monitor": check_monitor, "stats": check_stats, "trace": check_trace,
     "fork": check_fork}[check](
        greenrun, prog)
    print(f"{len(failures)} failed")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
