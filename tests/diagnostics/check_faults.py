#!/usr/bin/env python3
"""Stack overflow report and SIGSEGV/SIGBUS chaining (suite 'diagnostics').

    check_faults.py GREENRUN DEEP_RECURSION FAULT_HANDLER CASE

Overflow cases run examples/blocking/deep_recursion under greenrun: a thread
recursing ~4 MiB deep overflows its greenlet stack (1 MiB by default), and
greenshim must say which greenlet, which start function and what to set, then
abort (death by SIGABRT). Chaining cases ("chain_MODE") run
examples/blocking/fault_handler MODE unpatched and under greenrun: same stdout,
same exit status or signal, same core-dump flag, and no word from greenshim.

Each process runs in its own session, with a timeout, and is killed with its
group by pid if it overruns. Core dumps (when the kernel writes them to the
working directory) land in a scratch directory that is removed.
"""
import os
import re
import resource
import select
import shutil
import signal
import subprocess
import sys
import tempfile

TIMEOUT = 20

DEPTH_OUTPUT = "depth 4000: sum 8002000\n"


def overflow_report(size_kib, advice, name=""):
    prefix = f"{name}, " if name else ""
    return (rf"^greenshim: greenlet \d+ \({prefix}started at run_recursion \(blocking_deep_recursion\)\) "
            rf"overflowed its {size_kib} KiB stack; {advice}\n$")


def set_advice(now, suggestion):
    return re.escape(f"set GREENSHIM_STACK_SIZE (now {now}) to more, e.g. GREENSHIM_STACK_SIZE={suggestion}")


ATTR_ADVICE = re.escape("that is the size its pthread_attr_t asked for (GREENSHIM_STACK_SIZE does not change it)")

# case -> (extra environment, deep_recursion options, expected stderr regex)
OVERFLOWS = {
    "overflow": ({}, [], overflow_report(1024, set_advice("unset", "2M"))),
    "overflow_size_set": ({"GREENSHIM_STACK_SIZE": "512K"}, [], overflow_report(512, set_advice("512 KiB", "1M"))),
    # The program's own SIGSEGV handler does not hide the report (nor run).
    "overflow_program_handler": ({}, ["handler"], overflow_report(1024, set_advice("unset", "2M"))),
    "overflow_named": ({}, ["named"], overflow_report(1024, set_advice("unset", "2M"), name="recurser")),
    "overflow_attr_size": ({"GREENSHIM_STACK_SIZE": "16M"}, ["attr"], overflow_report(256, ATTR_ADVICE)),
    # The recursion runs past GREENSHIM_HANDOFF (1 ms: its ~1,000 new stack
    # pages take longer) and overflows on a carrier OS thread, which had no
    # sigaltstack, blocked SIGSEGV, and was not searched for the greenlet:
    # the process died of SIGSEGV without a word.
    "overflow_carried": ({"GREENSHIM_HANDOFF": "1"}, ["named"],
                         overflow_report(1024, set_advice("unset", "2M"), name="recurser")),
}

# fault_handler MODE -> the exit status both runs must have (negative: killed by that signal)
CHAINS = {
    "longjmp": 0, "mprotect": 0, "mask": 0, "query": 0, "thread": 0, "bus": 0,
    "raise": 0, "raise_ignored": 0, "raise_default": -signal.SIGSEGV,
    "resethand": -signal.SIGSEGV, "null": -signal.SIGSEGV, "dfl": -signal.SIGSEGV,
    "ignored": -signal.SIGSEGV,
}


def core_pattern_is_local():
    try:
        with open("/proc/sys/kernel/core_pattern") as f:
            pattern = f.read().strip()
    except OSError:
        return False
    return bool(pattern) and not pattern.startswith("|") and "/" not in pattern


def run(argv, env_extra=None, cores=False):
    """Runs argv; returns (status, core_dumped, stdout, stderr)."""
    env = dict(os.environ)
    env.pop("LD_PRELOAD", None)
    env.update(env_extra or {})
    scratch = tempfile.mkdtemp(prefix="greenshim-faults-")

    def child_setup():  # core dumps only when asked for (and then into scratch)
        hard = resource.getrlimit(resource.RLIMIT_CORE)[1]
        resource.setrlimit(resource.RLIMIT_CORE, (hard if cores else 0, hard))

    try:
        with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=err, env=env,
                                    cwd=scratch, start_new_session=True, preexec_fn=child_setup)
            status = wait_status(proc, TIMEOUT)
            if status is None:
                raise SystemExit(f"FAIL: {argv} did not finish in {TIMEOUT} s (killed)")
            out.seek(0)
            err.seek(0)
            code = -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
            dumped = os.WIFSIGNALED(status) and os.WCOREDUMP(status)
            return code, dumped, out.read().decode(errors="replace"), err.read().decode(errors="replace")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def wait_status(proc, timeout):
    """The raw wait status (Popen keeps no core-dump flag), or None after
    killing the process's group when it overran."""
    pidfd = os.pidfd_open(proc.pid)
    try:
        ready, _, _ = select.select([pidfd], [], [], timeout)
        if not ready:
            os.killpg(proc.pid, signal.SIGKILL)  # its own session: the group is ours
        _, status = os.waitpid(proc.pid, 0)
        proc.returncode = 0  # reaped here: Popen must not wait again
        return status if ready else None
    finally:
        os.close(pidfd)


fails = 0


def check(what, ok, detail=""):
    global fails
    print(("ok: " if ok else "FAIL: ") + what + ("" if ok or not detail else f"\n  {detail}"))
    if not ok:
        fails += 1


def overflow_case(greenrun, deep, case):
    env, options, report = OVERFLOWS[case]
    status, _, out, err = run([greenrun, "--", deep, "4000", *options], env)
    check(f"{case}: killed by SIGABRT", status == -signal.SIGABRT, f"status {status}, stderr {err!r}")
    check(f"{case}: the report on stderr", re.match(report, err) is not None, f"stderr {err!r}\n  want {report}")
    check(f"{case}: nothing on stdout", out == "", repr(out))


def bigger_stack_case(greenrun, deep):
    status, _, out, err = run([greenrun, "--", deep, "4000", "handler"], {"GREENSHIM_STACK_SIZE": "16M"})
    check("GREENSHIM_STACK_SIZE=16M: completes", status == 0 and out == DEPTH_OUTPUT, f"status {status}, {out!r}")
    check("GREENSHIM_STACK_SIZE=16M: nothing on stderr", err == "", repr(err))


def unpatched_case(deep):
    # An OS thread has RLIMIT_STACK (8 MiB here): the same recursion fits.
    status, _, out, err = run([deep, "4000", "handler"])
    check("unpatched: an OS thread's 8 MiB stack suffices", status == 0 and out == DEPTH_OUTPUT,
          f"status {status}, {out!r}, {err!r}")


def chain_case(greenrun, faulty, mode):
    want = CHAINS[mode]
    cores = want < 0 and core_pattern_is_local()
    ref = run([faulty, mode], cores=cores)
    got = run([greenrun, "--", faulty, mode], cores=cores)
    check(f"{mode}: unpatched status {want}", ref[0] == want, f"status {ref[0]}, stdout {ref[2]!r}, stderr {ref[3]!r}")
    check(f"{mode}: same status under greenrun", got[0] == ref[0], f"{got[0]} vs {ref[0]}; stderr {got[3]!r}")
    check(f"{mode}: same stdout under greenrun", got[2] == ref[2], f"{got[2]!r} vs {ref[2]!r}")
    check(f"{mode}: same core dump flag ({ref[1]})", got[1] == ref[1], f"{got[1]} vs {ref[1]}")
    check(f"{mode}: greenshim says nothing", "greenshim" not in got[3], repr(got[3]))


def caught_signals(argv, env=None):
    status, _, out, _ = run(argv, env)
    m = re.search(r"^SigCgt:\s*([0-9a-f]+)$", out, re.M)
    return int(m.group(1), 16) if status == 0 and m else None


def disabled_case(greenrun):
    bits = (1 << (signal.SIGSEGV - 1)) | (1 << (signal.SIGBUS - 1))
    on = caught_signals([greenrun, "--", "cat", "/proc/self/status"])
    off = caught_signals([greenrun, "--disable", "--", "cat", "/proc/self/status"])
    check("enabled: SIGSEGV and SIGBUS caught", on is not None and on & bits == bits, f"SigCgt {on}")
    check("GREENSHIM_DISABLE=1: neither caught", off is not None and off & bits == 0, f"SigCgt {off}")


def main():
    if len(sys.argv) != 5:
        raise SystemExit(__doc__)
    greenrun, deep, faulty = (os.path.abspath(p) for p in sys.argv[1:4])  # they run in a scratch directory
    case = sys.argv[4]
    if case in OVERFLOWS:
        overflow_case(greenrun, deep, case)
    elif case == "bigger_stack":
        bigger_stack_case(greenrun, deep)
    elif case == "unpatched":
        unpatched_case(deep)
    elif case.startswith("chain_") and case[6:] in CHAINS:
        chain_case(greenrun, faulty, case[6:])
    elif case == "disabled":
        disabled_case(greenrun)
    else:
        raise SystemExit(f"unknown case {case}")
    print(f"{fails} failed")
    sys.exit(1 if fails else 0)


if __name__ == "__main__":
    main()
