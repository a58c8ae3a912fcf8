"""Robustness of the thread-per-connection echo server under greenrun.

    robustness.py soak  --greenrun G --server ECHO_THREADS --client SOAK_CLIENT
                        --n N --seconds S --faults SEED:RATE
    robustness.py churn --greenrun G --server ECHO_THREADS --client CHURN_CLIENT
                        --n N [--batch B] [--warmup W] [--warmup-batch WB] [--rss-bound-kib K]

soak: examples/blocking/echo_threads (MAX_CLIENTS=N) runs under greenrun with
GREENSHIM_FAULTS=SEED:RATE and GREENSHIM_FAULTS_REPORT=1; soak_client
(unpatched) keeps N connections busy for S seconds with checksummed data of
varying write sizes. Passes if the client saw every byte come back intact on
every connection (checksums equal, nothing lost), the server's byte count is
the client's, the server ran on one OS thread and exited 0, and its report
shows that every kind of fault (eagain, eintr, short, wake) was injected.

churn: echo_threads (unbounded) under greenrun; churn_client opens and closes
W connections in batches of WB (warm-up: the stack pool and every lazily made
structure reach their steady size), then N connections in batches of B.
After each phase this waits until the server holds no connection (only its
listening socket), then reads its fd count, VmRSS and guard-page mappings (one
per greenlet stack, live or pooled). Passes if the fd count and the stack
mappings are back exactly to their values after warm-up and RSS grew by less
than K KiB. The warm-up batch (500) is well above the churn batch (100; at
most about twice that many server threads are alive at once, the last batch
still closing): after warm-up the stack pool already holds every stack the
churn will need, or is full (64 MiB: 64 stacks of the 1 MiB thread default),
so a stack that is not given back shows as one more mapping.

Every process is started in its own session and killed by pid at the end.
The soft RLIMIT_NOFILE is raised to the hard limit (inherited by children).
Nothing sleeps to synchronise: lines are awaited, /proc is polled for a
condition with a deadline.
"""
import argparse
import os
import re
import resource
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from childproc import Failure, Proc  # noqa: E402


def log(msg):
    print(msg, flush=True)


# ---- what /proc says about the server ----

def status_field(pid, name):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(name + ":"):
                return int(line.split()[1])
    raise Failure(f"no {name} in /proc/{pid}/status")


def fds(pid):
    """(all open fds, sockets among them)."""
    names = os.listdir(f"/proc/{pid}/fd")
    sockets = 0
    for fd in names:
        try:
            sockets += os.readlink(f"/proc/{pid}/fd/{fd}").startswith("socket:")
        except OSError:
            pass
    return len(names), sockets


def stack_guards(pid):
    """Anonymous PROT_NONE mappings: the guard page below each greenlet stack."""
    n = 0
    with open(f"/proc/{pid}/maps") as f:
        for line in f:
            parts = line.split()
            if parts[1] == "---p" and len(parts) == 5:
                n += 1
    return n


def sched_state(pid):
    """R, S, D... from /proc/PID/stat (the field after the command name)."""
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[0]


def snapshot(pid):
    nfds, sockets = fds(pid)
    return {"fds": nfds, "sockets": sockets, "rss_kib": status_field(pid, "VmRSS"),
            "stack_guards": stack_guards(pid), "threads": status_field(pid, "Threads")}


def idle_snapshot(pid):
    """A snapshot taken while the server sleeps (its one thread in the hub's
    epoll_wait, nothing runnable: every finished greenlet has given its stack
    back) holding only its listening socket; None if it is not so."""
    if sched_state(pid) != "S":
        return None
    snap = snapshot(pid)
    if snap["sockets"] != 1 or sched_state(pid) != "S":
        return None
    return snap


def wait_until_idle(pid, timeout, settled=lambda snap: True):
    """Polls until an idle snapshot satisfies settled(); the last idle one on timeout."""
    deadline = time.monotonic() + timeout
    last = None
    while True:
        snap = idle_snapshot(pid)
        if snap:
            last = snap
            if settled(snap):
                return snap
        if time.monotonic() > deadline:
            if last:
                return last
            raise Failure(f"server still busy or holding connections {timeout} s after the client closed "
                          f"them all: {snapshot(pid)}")
        time.sleep(0.02)


# ---- environments ----

def client_env():
    env = {k: v for k, v in os.environ.items() if not k.startswith("GREENSHIM_") or k == "GREENSHIM_LIB"}
    env.pop("LD_PRELOAD", None)
    return env


def server_env(faults):
    env = client_env()
    if faults:
        env["GREENSHIM_FAULTS"] = faults
        env["GREENSHIM_FAULTS_REPORT"] = "1"
    return env


def start_server(opts, max_clients, faults):
    server = Proc([opts.greenrun, "--", opts.server, "0", str(max_clients)], "echo_threads", server_env(faults))
    port = int(server.wait_line(r"listening (\d+)", 30).group(1))
    return server, port


# ---- soak ----

FAULTS_LINE = r"greenshim: faults injected: eagain=(\d+) eintr=(\d+) short=(\d+) wake=(\d+)"


def soak(opts):
    procs = []
    try:
        t0 = time.monotonic()
        server, port = start_server(opts, opts.n, opts.faults)
        procs.append(server)
        client = Proc([opts.client, str(port), str(opts.n), str(opts.seconds), str(opts.seed)], "soak_client",
                      client_env())
        procs.append(client)
        max_threads = [0]

        def sample():
            try:
                max_threads[0] = max(max_threads[0], status_field(server.pid, "Threads"))
            except (OSError, Failure):
                pass  # exiting
            server.pump(0)

        status = client.finish(opts.seconds + opts.timeout, on_tick=sample)
        summary = client.out.decode(errors="replace").strip()
        served = server.wait_line(r"served (\d+) clients, (\d+) bytes", opts.timeout)
        sstatus = server.finish(opts.timeout)
        log(f"soak_client: {summary!r} (exit {status}); server: {served.group(0).decode()} (exit {sstatus}), "
            f"max Threads {max_threads[0]}; {time.monotonic() - t0:.1f} s in all")
        report = re.search(FAULTS_LINE.encode(), server.err)
        log(f"server: {report.group(0).decode() if report else 'no faults report'}")
        failures = []
        m = re.fullmatch(r"connections (\d+) bytes (\d+) checksums-equal (\d+) min-bytes (\d+) seconds \S+", summary)
        if status != 0 or not m:
            failures.append(f"soak_client failed (exit {status}): {client.describe()}")
        else:
            conns, nbytes, equal = int(m.group(1)), int(m.group(2)), int(m.group(3))
            if conns != opts.n or equal != opts.n:
                failures.append(f"{equal} of {conns} connections had equal checksums, expected {opts.n}")
            if int(served.group(2)) != nbytes:
                failures.append(f"server echoed {served.group(2).decode()} bytes, the client sent {nbytes}")
        if sstatus != 0 or int(served.group(1)) != opts.n:
            failures.append(f"server: {served.group(0).decode()!r}, exit {sstatus}; {server.describe()}")
        if max_threads[0] != 1:
            failures.append(f"server had up to {max_threads[0]} OS threads, expected 1")
        if opts.faults:
            if not report:
                failures.append(f"server printed no faults report; stderr {server.err[-2000:]!r}")
            elif min(int(x) for x in report.groups()) == 0:
                failures.append("some kind of fault was never injected")
        for f in failures:
            log(f"FAIL: {f}")
        return not failures
    finally:
        for p in procs:
            p.kill()


# ---- churn ----

def run_client(opts, port, total, batch):
    client = Proc([opts.client, str(port), str(total), str(batch)], "churn_client", client_env())
    try:
        status = client.finish(opts.timeout)
        if status != 0 or not client.out.startswith(f"ok {total} ".encode()):
            raise Failure(f"churn_client {total} {batch}: exit {status}; {client.describe()}")
        return float(client.out.split()[2])
    finally:
        client.kill()


def churn(opts):
    server, port = start_server(opts, 0, opts.faults)
    try:
        fresh = snapshot(server.pid)
        warm_s = run_client(opts, port, opts.warmup, opts.warmup_batch)
        before = wait_until_idle(server.pid, opts.timeout)
        churn_s = run_client(opts, port, opts.n, opts.batch)
        # What a leak keeps, it keeps: a transient difference may settle.
        after = wait_until_idle(server.pid, opts.settle, lambda snap: all(
            snap[k] == before[k] for k in ("fds", "stack_guards")))
        log(f"fresh server: {fresh}")
        log(f"after warm-up ({opts.warmup} connections, batches of {opts.warmup_batch}, {warm_s:.2f} s): {before}")
        log(f"after churn ({opts.n} connections, batches of {opts.batch}, {churn_s:.2f} s, "
            f"{opts.n / max(churn_s, 1e-9):.0f}/s): {after}")
        growth = after["rss_kib"] - before["rss_kib"]
        log(f"RSS growth {growth} KiB (bound {opts.rss_bound_kib} KiB), fds {before['fds']} -> {after['fds']}, "
            f"stack guard mappings {before['stack_guards']} -> {after['stack_guards']}")
        failures = []
        if after["fds"] != before["fds"]:
            failures.append(f"fd count {before['fds']} -> {after['fds']}")
        if after["stack_guards"] != before["stack_guards"]:
            failures.append(f"greenlet stacks (guard mappings) {before['stack_guards']} -> {after['stack_guards']}")
        if growth >= opts.rss_bound_kib:
            failures.append(f"RSS grew by {growth} KiB, bound {opts.rss_bound_kib} KiB")
        if after["threads"] != 1:
            failures.append(f"server has {after['threads']} OS threads, expected 1")
        if server.proc.poll() is not None:
            failures.append(f"server exited ({server.proc.returncode}); {server.describe()}")
        for f in failures:
            log(f"FAIL: {f}")
        return not failures
    finally:
        server.kill()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("mode", choices=["soak", "churn"])
    ap.add_argument("--greenrun", required=True)
    ap.add_argument("--server", required=True, help="examples/blocking echo_threads")
    ap.add_argument("--client", required=True, help="soak_client or churn_client")
    ap.add_argument("--n", type=int, required=True, help="connections")
    ap.add_argument("--seconds", type=float, default=3.0, help="soak: how long the data flows")
    ap.add_argument("--seed", type=int, default=1, help="soak: the client's data")
    ap.add_argument("--faults", default="", help="GREENSHIM_FAULTS for the server (SEED:RATE)")
    ap.add_argument("--batch", type=int, default=100, help="churn: connections open at once")
    ap.add_argument("--warmup", type=int, default=1000)
    ap.add_argument("--warmup-batch", type=int, default=500)
    # 2 MiB: a leak of 21 bytes per connection over 100,000 (210 over 10,000)
    # crosses it; one stack page or fd-table entry per connection would be
    # hundreds of MiB. Measured: 0 KiB after 100,000, with and without faults.
    ap.add_argument("--rss-bound-kib", type=int, default=2048)
    ap.add_argument("--timeout", type=float, default=120.0, help="seconds per step")
    ap.add_argument("--settle", type=float, default=10.0,
                    help="churn: seconds for the server to get back to its state after warm-up")
    opts = ap.parse_args()

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = max(opts.n if opts.mode == "soak" else opts.warmup_batch, opts.batch) + 64
    if hard != resource.RLIM_INFINITY and hard < need:
        log(f"SKIP: RLIMIT_NOFILE hard limit {hard} < {need}")
        return 77
    if soft != resource.RLIM_INFINITY and soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    try:
        ok = soak(opts) if opts.mode == "soak" else churn(opts)
    except Failure as e:
        log(f"FAIL: {e}")
        return 1
    log("OK" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
