#!/usr/bin/env python3
"""GREENSHIM_* variables given garbage, empty and huge values.

    config.py GREENRUN LIB PROGRAM CONFIG

CONFIG (build/shim/greenshim-config) lists the variables the library reads,
from the one table of settings (shim/config.hpp); VARIABLES below must have
every one of them, and no other. For every variable and every value of BAD
and of its accepted values, PROGRAM (tests/badinput/threads_ok.c, a small
threaded program) runs

  - with LIB preloaded: it must exit 0 and print what it should (on the
    default configuration when the value is bad); stderr must be empty for an
    accepted value, and exactly one line `greenshim: ignoring NAME=VALUE
    (expected ...)` for a bad one, VALUE shown as `shown()` says;
  - under GREENRUN: an accepted value runs as above; a bad one is refused
    before anything runs: exit status 2, nothing on stdout, one line
    `greenrun: NAME=VALUE: ...` on stderr.

Exit status 0 when every case passes, 1 otherwise. Stdlib only.
"""
import concurrent.futures
import os
import re
import subprocess
import sys
import threading

# The values each variable accepts (besides the empty value, the default for
# all): examples, not generated, so that the test is not the table checking
# itself. A variable of the table missing here fails the test (main).
BOOL = ["0", "1", "no", "yes", "false", "true"]
VARIABLES = {
    "GREENSHIM_DISABLE": BOOL,
    "GREENSHIM_INHERIT": BOOL,
    "GREENSHIM_STACK_SIZE": ["16K", "16k", "65536", "64KB", "256KiB", "00256K", "1M", "8m"],
    "GREENSHIM_FILE_IO": ["direct", "pool"],
    "GREENSHIM_THREAD_LOCALS": ["thread", "shared"],
    # only the values that print nothing here: "1" prints stats, "all" a trace
    "GREENSHIM_STATS": ["0", "no", "false", "/dev/null"],
    "GREENSHIM_MONITOR": ["0", "100000", "3600000"],
    "GREENSHIM_HANDOFF": ["0", "10", "60000"],
    "GREENSHIM_SPARES": ["auto", "0", "1", "1024"],
    "GREENSHIM_HUBS": ["auto", "1", "3"],
    "GREENSHIM_TRACE": ["0"],
    "GREENSHIM_FAULTS": ["42:0.05", "0:1", "7:0.5"],
    "GREENSHIM_FAULTS_REPORT": ["0", "no", "false"],
}
# Values of BAD that a variable accepts (they print things, so they are not in
# its list above): not tried as bad values for it.
VALID_BUT_NOISY = {"GREENSHIM_MONITOR": {"2"}, "GREENSHIM_HANDOFF": {"2"}, "GREENSHIM_SPARES": {"2"},
                   "GREENSHIM_HUBS": {"2"}}

# Values no variable accepts.
BAD = [
    "abc", "-1", "0x", "1e999", "x" * 100000, "18446744073709551616", "\u221e", "1\n2", "1\n",
    " 1", "1 ", "2", "on", "TRUE", "+1", "0x10", "1.5", "256B", "256KBB", "15K", "2G", "99999999999999999999K",
    "pool ", "Direct", "\x1b[31mred", "\\", "%s%s%n", "\udcff", "sync,", ",io", "io,,sync",
]

EXPECTED_OUT = {"passes": "400", "results": "60"}
DEFAULT_STACK_KIB = 1024  # a thread's stack under the shim by default (README)
PAGE = 4096


def shown(value):
    """A value as the library and greenrun echo it: its first 40 bytes,
    control, backslash and non-ASCII bytes as \\xNN, "..." if longer."""
    raw = value.encode("utf-8", "surrogateescape")
    out = "".join(chr(b) if 0x20 <= b < 0x7F and b != 0x5C else f"\\x{b:02x}" for b in raw[:40])
    return out + ("..." if len(raw) > 40 else "")


def size_bytes(v):
    m = re.fullmatch(r"([0-9]+)(([kKmMgG])(i?B)?)?", v)
    mult = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}.get((m.group(3) or "").lower(), 1)
    return int(m.group(1)) * mult


def clean_env():
    env = {k: v for k, v in os.environ.items() if not k.startswith("GREENSHIM_") and k != "LD_PRELOAD"}
    return env


class Checker:
    def __init__(self, greenrun, lib, program):
        self.greenrun, self.lib, self.program = greenrun, lib, program
        self.failures, self.cases = 0, 0
        self.lock = threading.Lock()

    def run(self, argv, env):
        env = dict(env)
        p = subprocess.run(argv, env=env, stdin=subprocess.DEVNULL, capture_output=True, timeout=30)
        return p.returncode, p.stdout.decode("utf-8", "replace"), p.stderr.decode("utf-8", "replace")

    def fail(self, what, msg):
        with self.lock:
            self.failures += 1
            print(f"FAIL {what}: {msg}", flush=True)

    def expect_output(self, what, out, settings):
        """The program's stdout, given the effective settings {name: value}."""
        lines = dict(line.split(": ", 1) for line in out.splitlines() if ": " in line)
        for key, want in EXPECTED_OUT.items():
            if lines.get(key) != want:
                self.fail(what, f"{key}: {lines.get(key)!r}, expected {want!r} (stdout {out[:300]!r})")
                return False
        active = settings.get("GREENSHIM_DISABLE") not in ("1", "yes", "true")
        hubs = settings.get("GREENSHIM_HUBS") or "1"  # several: the threads are spread over them
        hubs = len(os.sched_getaffinity(0)) if hubs == "auto" else int(hubs)
        # (With several hubs a new thread goes to the first hub free: 1 to
        # `hubs` of them.)
        used = int(lines.get("OS threads", "0"))
        if not (used == 1 if active and hubs == 1 else 1 <= used <= min(hubs, 4) if active else used == 4):
            self.fail(what, f"OS threads: {used} with the shim {'active' if active else 'disabled'} and {hubs} hub(s)")
            return False
        if active:
            size = settings.get("GREENSHIM_STACK_SIZE")
            kib = (size_bytes(size) + PAGE - 1) // PAGE * PAGE // 1024 if size else DEFAULT_STACK_KIB
            if lines.get("stack KiB") != str(kib):
                self.fail(what, f"stack KiB: {lines.get('stack KiB')!r}, expected {kib}")
                return False
        return True

    def library(self, name, value, accepted):
        """The program with the library preloaded and name=value."""
        what = f"library {name}={shown(value)}"
        env = clean_env()
        env[name], env["LD_PRELOAD"] = value, self.lib
        rc, out, err = self.run([self.program], env)
        if rc != 0:
            return self.fail(what, f"exit status {rc}; stderr {err[:300]!r}")
        is_ok = value == "" or value in accepted
        if not self.expect_output(what, out, {name: value} if is_ok and value else {}):
            return
        if is_ok and err:
            return self.fail(what, f"an accepted value, but stderr says {err[:300]!r}")
        if not is_ok:
            want = re.compile(rf"greenshim: ignoring {name}={re.escape(shown(value))} \(expected [^\n]+\)\n")
            if not want.fullmatch(err):
                self.fail(what, f"stderr {err[:300]!r}, expected one line 'greenshim: ignoring {name}={shown(value)} "
                                f"(expected ...)'")

    def greenrun_case(self, name, value, accepted):
        """The program under greenrun with name=value."""
        what = f"greenrun {name}={shown(value)}"
        env = clean_env()
        env[name], env["GREENSHIM_LIB"] = value, self.lib
        rc, out, err = self.run([self.greenrun, "--", self.program], env)
        if value == "" or value in accepted:
            if rc != 0 or err:
                return self.fail(what, f"accepted value: exit status {rc}, stderr {err[:300]!r}")
            self.expect_output(what, out, {name: value} if value else {})
            return
        if rc != 2:
            return self.fail(what, f"exit status {rc}, expected 2 (refused); stderr {err[:300]!r}")
        if out:
            return self.fail(what, f"the program ran: stdout {out[:200]!r}")
        if not re.fullmatch(rf"greenrun: {name}={re.escape(shown(value))}: [^\n]+\n", err):
            self.fail(what, f"stderr {err[:300]!r}, expected one line 'greenrun: {name}={shown(value)}: ...'")

    def all_bad_at_once(self):
        """Every variable bad at once: one warning each, still runs."""
        env = clean_env()
        known = list(VARIABLES)
        for n in known:
            env[n] = "\u221e"
        env["LD_PRELOAD"] = self.lib
        rc, out, err = self.run([self.program], env)
        what = "library, every variable bad at once"
        if rc != 0:
            return self.fail(what, f"exit status {rc}")
        self.expect_output(what, out, {})
        lines = err.splitlines()
        for n in known:
            if sum(1 for line in lines if line.startswith(f"greenshim: ignoring {n}=")) != 1:
                self.fail(what, f"not exactly one warning for {n}: {err!r}")
        if len(lines) != len(known):
            self.fail(what, f"{len(lines)} lines on stderr for {len(known)} bad variables: {err!r}")


def main():
    if len(sys.argv) != 5:
        print(__doc__, file=sys.stderr)
        return 2
    names = subprocess.run([sys.argv[4], "--names"], capture_output=True, text=True, check=True).stdout.split()
    if set(names) != set(VARIABLES):
        for n in sorted(set(names) - set(VARIABLES)):
            print(f"FAIL {n}: in the table of settings (shim/config.cpp) but not in VARIABLES here: "
                  f"add the values it accepts")
        for n in sorted(set(VARIABLES) - set(names)):
            print(f"FAIL {n}: in VARIABLES here but not a setting the library reads (shim/config.cpp)")
        return 1
    c = Checker(*sys.argv[1:4])
    cases = [c.all_bad_at_once]
    for name, accepted in VARIABLES.items():
        clash = set(BAD) & set(accepted)
        assert not clash, f"BAD values {clash} are accepted for {name}"
        bad = [v for v in BAD if v not in VALID_BUT_NOISY.get(name, ())]
        for value in [""] + accepted + bad:
            cases.append(lambda n=name, v=value, a=accepted: c.library(n, v, a))
            cases.append(lambda n=name, v=value, a=accepted: c.greenrun_case(n, v, a))
    # Independent short runs: a few at a time keeps the suite within seconds.
    with concurrent.futures.ThreadPoolExecutor(max_workers=4) as pool:
        for f in [pool.submit(case) for case in cases]:
            f.result()
    print(f"{len(cases)} cases, {c.failures} failed")
    return 1 if c.failures else 0


if __name__ == "__main__":
    sys.exit(main())
