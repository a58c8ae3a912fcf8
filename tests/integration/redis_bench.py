#!/usr/bin/python3.11
"""redis-server serving redis-benchmark, unpatched and under greenrun.

    redis_bench.py --greenrun G --redis-server S --redis-benchmark B --redis-cli C
                   [-n 2000] [-c 20] [-t set,get] [--timeout 60]

Debian's redis-server links jemalloc, whose first malloc (before main) takes a
pthread mutex: under greenshim it once died there with SIGSEGV (issue 11).
For each mode (unpatched, then patched): starts redis-server on a free
loopback port with no persistence and its data in a scratch directory, waits
for "Ready to accept connections", checks that libgreenshim.so is mapped in
the patched server and only there, runs redis-benchmark -n N -c C -t TESTS
with a deadline, then asks the server (INFO commandstats) how many of each
command it served: every request must have completed, N per test. Then
SIGTERM: the server must shut down cleanly (exit 0). The per-command counts
and the shutdown must be the same in both modes. The requests per second of
each run are printed (figures only, never checked).

Every process runs in its own session and is killed by pid; loopback only.
"""
import argparse
import csv
import io
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from childproc import Failure, Proc  # noqa: E402


def free_port():
    """A loopback port nobody listens on now (the server may still lose it to
    someone else: start() retries on "Address already in use")."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def maps_shim(pid):
    with open(f"/proc/{pid}/maps") as f:
        return "libgreenshim.so" in f.read()


def os_threads(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("Threads:"):
                return int(line.split()[1])
    return -1


def start(args, mode, tmp):
    cmd = [args.redis_server]
    if mode == "patched":
        cmd = [args.greenrun, "--"] + cmd
    env = dict(os.environ)
    env.pop("LD_PRELOAD", None)
    for attempt in range(5):
        port = free_port()
        server = Proc(cmd + ["--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                             "--dir", tmp, "--daemonize", "no", "--logfile", ""],
                      f"redis-server ({mode})", env=env)
        try:
            server.wait_line(r".*Ready to accept connections.*", args.timeout)
            return server, port
        except Failure:
            in_use = b"Address already in use" in server.out + server.err
            server.kill()
            if not in_use or attempt == 4:
                raise
    raise Failure("unreachable")


def run_mode(args, mode):
    tmp = tempfile.mkdtemp(prefix=f"greenshim-redis-{mode}-")
    server = None
    try:
        server, port = start(args, mode, tmp)
        mapped = maps_shim(server.pid)
        if mapped != (mode == "patched"):
            raise Failure(f"libgreenshim.so {'not ' if not mapped else ''}mapped in the {mode} server")
        threads = os_threads(server.pid)
        t0 = time.monotonic()
        bench = subprocess.run([args.redis_benchmark, "-h", "127.0.0.1", "-p", str(port), "-n", str(args.n),
                                "-c", str(args.c), "-t", args.t, "--csv"],
                               stdin=subprocess.DEVNULL, capture_output=True, text=True,
                               timeout=args.timeout, start_new_session=True)
        wall = time.monotonic() - t0
        if bench.returncode != 0:
            raise Failure(f"redis-benchmark ({mode}) exited {bench.returncode}: {bench.stderr[-2000:]}")
        rps = {row[0]: row[1] for row in csv.reader(io.StringIO(bench.stdout)) if row and row[0] != "test"}
        info = subprocess.run([args.redis_cli, "-h", "127.0.0.1", "-p", str(port), "INFO", "commandstats"],
                              stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=args.timeout,
                              start_new_session=True)
        calls = {}
        for line in info.stdout.splitlines():
            if line.startswith("cmdstat_") and ":" in line:
                name, fields = line[len("cmdstat_"):].split(":", 1)
                calls[name] = int(dict(f.split("=", 1) for f in fields.split(","))["calls"])
        lines = []
        for test in args.t.split(","):
            lines.append(f"{test.upper()}: {calls.get(test, 0)} requests served")
        os.kill(server.pid, signal.SIGTERM)
        status = server.finish(args.timeout)
        lines.append(f"shut down on SIGTERM: exit {status}")
        figures = ", ".join(f"{k} {float(v):,.0f} req/s" for k, v in rps.items())
        print(f"{mode}: {figures} (benchmark wall {wall:.2f} s; OS threads of the server {threads})", flush=True)
        return lines
    finally:
        if server:
            server.kill()
        shutil.rmtree(tmp, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--greenrun", required=True)
    ap.add_argument("--redis-server", required=True)
    ap.add_argument("--redis-benchmark", required=True)
    ap.add_argument("--redis-cli", required=True)
    ap.add_argument("-n", type=int, default=2000, help="requests per test (default 2000)")
    ap.add_argument("-c", type=int, default=20, help="parallel connections (default 20)")
    ap.add_argument("-t", default="set,get", help="redis-benchmark tests, plain commands (default set,get)")
    ap.add_argument("--timeout", type=float, default=60.0, help="seconds allowed for each step (default 60)")
    args = ap.parse_args()
    try:
        results = {mode: run_mode(args, mode) for mode in ("unpatched", "patched")}
    except (Failure, subprocess.TimeoutExpired, OSError) as e:
        print(f"FAIL: {e}", flush=True)
        return 1
    ok = True
    for line in results["unpatched"]:
        print(line)
    expected = [f"{t.upper()}: {args.n} requests served" for t in args.t.split(",")] + ["shut down on SIGTERM: exit 0"]
    if results["unpatched"] != expected:
        print(f"FAIL: the unpatched run is not as expected: {results['unpatched']} (expected {expected})")
        ok = False
    if results["patched"] != results["unpatched"]:
        print(f"FAIL: patched differs: {results['patched']} (unpatched {results['unpatched']})")
        ok = False
    if ok:
        print("OK: every request completed, patched as unpatched")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
