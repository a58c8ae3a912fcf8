#!/usr/bin/env python3
"""Runs CPython's own test suite (Debian's libpython3.11-testsuite) under greenrun.

usage: run.py GREENRUN TEST [TEST...]

Uses /usr/bin/python3.11, the interpreter the test suite matches; skips the
patterns in skip.txt (with their reasons) and test_socket's VSOCK classes.
Exits with the test runner's status.
"""
import os
import subprocess
import sys

here = os.path.dirname(os.path.abspath(__file__))


def skips():
    out = []
    with open(os.path.join(here, "skip.txt")) as f:
        for line in f:
            line = line.split("#", 1)[0].strip()
            if line:
                out.append(line)
    return out


def main():
    if len(sys.argv) < 3:
        print(__doc__, file=sys.stderr)
        return 2
    greenrun, tests = sys.argv[1], sys.argv[2:]
    python = "/usr/bin/python3.11"
    if not os.path.exists(os.path.join("/usr/lib/python3.11/test", "test_threading.py")):
        print("run.py: libpython3.11-testsuite is not installed", file=sys.stderr)
        return 2
    cmd = [greenrun, "--", python, "-m", "test", "-u", "all,-gui,-network", "--timeout", "300"]
    for pattern in skips() + ["*VSOCK*"]:
        cmd += ["-i", pattern]
    cmd += tests
    print(" ".join(cmd), flush=True)
    return subprocess.call(cmd, cwd=os.environ.get("TMPDIR", "/tmp"))


if __name__ == "__main__":
    sys.exit(main())
