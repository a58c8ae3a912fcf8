"""ThreadingHTTPServer under greenrun serves N concurrent clients.

    http_many.py --greenrun G --python PY --server-script http_server.py
                 --n N --mode patched|unpatched [--timeout T]

Starts py/http_server.py (patched: under greenrun; unpatched: as is) and,
from this process (never patched), N client threads that connect and send
GET /hello/I together (a barrier). Each response must be "hello I". The server
answers only once all N requests are in progress at once, then sleeps 0.5 s:
the total must be under 5 s. Finally GET /stats: all N were in flight at once,
and the server's OS thread count at that moment must be no more than it was
before any request (patched: the request threads are greenlets), or grown by
at least N (unpatched: a thread per request). The server is killed by pid.
"""
import argparse
import http.client
import json
import os
import re
import selectors
import signal
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from childproc import hubs  # noqa: E402


def log(msg):
    print(msg, flush=True)


def start_server(argv, timeout):
    env = dict(os.environ)
    env.pop("LD_PRELOAD", None)
    # stderr to a file: a traceback must never block the server on a full pipe
    err = tempfile.TemporaryFile()
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=err, env=env, start_new_session=True)
    proc.errfile = err
    buf = b""
    deadline = time.monotonic() + timeout
    try:
        with selectors.DefaultSelector() as sel:
            sel.register(proc.stdout, selectors.EVENT_READ)
            while not (m := re.search(rb"^listening (\d+)\n", buf, re.M)):
                left = deadline - time.monotonic()
                if left <= 0:
                    raise RuntimeError(f"server not ready after {timeout} s: {buf!r}")
                if sel.select(left):
                    chunk = os.read(proc.stdout.fileno(), 4096)
                    if not chunk:
                        raise RuntimeError(f"server exited before listening: {buf!r} "
                                           f"{server_stderr(proc)!r}")
                    buf += chunk
    except BaseException:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        raise
    return proc, int(m.group(1))


def server_stderr(proc):
    proc.errfile.seek(0)
    return proc.errfile.read()[-2000:]


def get(port, path, timeout):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path)
        r = conn.getresponse()
        return r.status, r.read()
    finally:
        conn.close()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--greenrun", required=True)
    ap.add_argument("--python", required=True)
    ap.add_argument("--server-script", required=True)
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--mode", choices=["patched", "unpatched"], required=True)
    ap.add_argument("--timeout", type=float, default=30.0)
    opts = ap.parse_args()
    n = opts.n
    argv = [opts.python, opts.server_script, str(n)]
    if opts.mode == "patched":
        argv = [opts.greenrun, "--"] + argv
    proc = None
    try:
        proc, port = start_server(argv, opts.timeout)
        with open(f"/proc/{proc.pid}/maps") as f:
            if ("libgreenshim" in f.read()) != (opts.mode == "patched"):
                log(f"FAIL: libgreenshim.so mapping in the server does not match --mode {opts.mode}")
                return 1
        results = [None] * n
        barrier = threading.Barrier(n + 1)

        def client(i):
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=opts.timeout)
            try:
                conn.connect()
                barrier.wait()
                conn.request("GET", f"/hello/{i}")
                r = conn.getresponse()
                results[i] = (r.status, r.read())
            except Exception as e:  # reported below
                results[i] = ("error", repr(e).encode())
            finally:
                conn.close()

        threads = [threading.Thread(target=client, args=(i,)) for i in range(n)]
        for t in threads:
            t.start()
        barrier.wait(timeout=opts.timeout)
        t0 = time.monotonic()
        for t in threads:
            t.join(timeout=opts.timeout)
        took = time.monotonic() - t0
        status, body = get(port, "/stats", opts.timeout)
        stats = json.loads(body)
        good = sum(1 for i, r in enumerate(results) if r == (200, f"hello {i}\n".encode()))
        log(f"{n} concurrent requests ({opts.mode} server): {good} correct responses in {took:.2f} s; "
            f"server stats {stats}")
        ok = True
        if good != n:
            bad = [(i, r) for i, r in enumerate(results) if r != (200, f"hello {i}\n".encode())][:5]
            log(f"FAIL: {n - good} wrong responses, e.g. {bad}")
            ok = False
        if took >= 5.0:
            log(f"FAIL: took {took:.2f} s, expected < 5 s (requests served concurrently)")
            ok = False
        if not stats["all_in_flight"] or stats["max_inflight"] != n or stats["requests"] != n:
            log(f"FAIL: expected all {n} requests in flight at once, stats {stats}")
            ok = False
        th, ready = stats["threads_at_max"], stats["threads_ready"]
        # Patched: the N request threads are greenlets, so N requests in flight
        # add no OS thread to those the server had when it became ready (1, or
        # 2 if greenshim ran HTTPServer's host name lookup on a helper thread
        # that has not yet retired).
        # (With GREENSHIM_HUBS=N, its first thread starts the N-1 worker hubs.)
        workers = hubs() - 1
        if opts.mode == "patched" and (th is None or th > ready + workers):
            log(f"FAIL: the patched server had {th} OS threads with {n} requests in flight, "
                f"expected no more than the {ready} it had before any request and {workers} worker hub(s)")
            ok = False
        if opts.mode == "unpatched" and (th is None or th < ready + n):
            log(f"FAIL: the unpatched server had {th} OS threads with {n} requests in flight, "
                f"expected >= {ready} + {n} (a thread per request)")
            ok = False
        if not ok:
            log(f"server stderr: {server_stderr(proc)!r}")
        log("OK" if ok else "FAILED")
        return 0 if ok else 1
    finally:
        if proc is not None:
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


if __name__ == "__main__":
    sys.exit(main())
