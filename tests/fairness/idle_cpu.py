#!/usr/bin/python3.11
"""A wait that only a signal can end must sleep in the kernel: CPU ~ 0.

    idle_cpu.py GREENRUN IDLE_WAIT MODE...

For each MODE, starts `GREENRUN -- IDLE_WAIT MODE` (its own session), waits
for its "waiting" line, then measures the CPU it uses over one second from
/proc/PID/stat (utime + stime). Fails if it used more than 20 ms or exited.
Unpatched the same programs use 0. Every process is killed by pid.
"""
import os
import select
import signal
import subprocess
import sys
import time

LIMIT_TICKS = 2  # 20 ms at 100 Hz
TICK = os.sysconf("SC_CLK_TCK")


def cpu_ticks(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def check(greenrun, prog, mode):
    p = subprocess.Popen([greenrun, "--", prog, mode], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         start_new_session=True)
    try:
        ready, _, _ = select.select([p.stdout], [], [], 20)
        line = p.stdout.readline() if ready else b""
        if line.strip() != b"waiting":
            return f"{mode}: no 'waiting' line (got {line!r}, exit {p.poll()})"
        time.sleep(0.2)  # past start-up
        before = cpu_ticks(p.pid)
        time.sleep(1.0)
        if p.poll() is not None:
            return f"{mode}: exited with {p.returncode}: {p.stderr.read().decode(errors='replace')}"
        used = cpu_ticks(p.pid) - before
        verdict = "ok" if used <= LIMIT_TICKS else "FAIL"
        print(f"{mode}: {used * 1000 // TICK} ms of CPU in 1 s ({verdict})", flush=True)
        return None if used <= LIMIT_TICKS else f"{mode}: busy ({used} ticks in 1 s)"
    finally:
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        p.wait()


def main():
    if len(sys.argv) < 4:
        print(__doc__, file=sys.stderr)
        return 2
    greenrun, prog, modes = sys.argv[1], sys.argv[2], sys.argv[3:]
    errors = [e for e in (check(greenrun, prog, m) for m in modes) if e]
    for e in errors:
        print("FAIL:", e)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
