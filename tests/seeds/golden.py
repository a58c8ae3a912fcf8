#!/usr/bin/env python3
"""Golden-output check for one seed example program.

    golden.py --expected FILE [--min-seconds S] [--max-seconds S] -- PROGRAM [ARGS...]

Runs PROGRAM, then fails (exit 1) unless its exit status is 0, its stdout is
byte-for-byte the content of FILE and, if given, its wall time lies in
[min-seconds, max-seconds). Stderr is passed through for the log.
"""
import argparse
import difflib
import subprocess
import sys
import time


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--expected", required=True, help="file with the exact expected stdout")
    ap.add_argument("--min-seconds", type=float, default=None,
                    help="fail if the program ran for less than this")
    ap.add_argument("--max-seconds", type=float, default=None,
                    help="fail if the program ran for this long or longer")
    ap.add_argument("--timeout", type=float, default=20.0,
                    help="kill the program after this many seconds")
    ap.add_argument("command", nargs=argparse.REMAINDER, help="-- PROGRAM [ARGS...]")
    opts = ap.parse_args()

    cmd = opts.command[1:] if opts.command[:1] == ["--"] else opts.command
    if not cmd:
        ap.error("no program given")

    with open(opts.expected, "rb") as f:
        expected = f.read()

    start = time.monotonic()
    try:
        proc = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, timeout=opts.timeout)
    except subprocess.TimeoutExpired as e:
        sys.stderr.write(f"FAIL: {cmd[0]} still running after {opts.timeout} s\n")
        if e.stdout:
            sys.stderr.write("stdout so far:\n" + e.stdout.decode("utf-8", "replace"))
        return 1
    elapsed = time.monotonic() - start

    if proc.stderr:
        sys.stderr.write(f"--- stderr of {cmd[0]}:\n")
        sys.stderr.write(proc.stderr.decode("utf-8", "replace"))

    failures = []
    if proc.returncode != 0:
        how = (f"killed by signal {-proc.returncode}" if proc.returncode < 0
               else f"exit status {proc.returncode}")
        failures.append(f"{how}, expected exit status 0")
    if proc.stdout != expected:
        diff = difflib.unified_diff(
            expected.decode("utf-8", "replace").splitlines(keepends=True),
            proc.stdout.decode("utf-8", "replace").splitlines(keepends=True),
            fromfile=opts.expected, tofile="stdout")
        failures.append("stdout differs from the expected output:\n" + "".join(diff))
    if opts.min_seconds is not None and elapsed < opts.min_seconds:
        failures.append(f"ran for {elapsed:.3f} s, expected at least {opts.min_seconds} s")
    if opts.max_seconds is not None and elapsed >= opts.max_seconds:
        failures.append(f"ran for {elapsed:.3f} s, expected less than {opts.max_seconds} s")

    for msg in failures:
        sys.stderr.write(f"FAIL: {msg}\n")
    if failures:
        return 1
    print(f"ok: {cmd[0]} ({elapsed:.3f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
