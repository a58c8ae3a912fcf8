"""Thread-per-connection echo server with N connections open at once.

    echo_many.py --greenrun G --server ECHO_THREADS --holder CONN_HOLD
                 [--echo-client ECHO_CLIENT --echo-server TPC_ECHO] --n N [--m M] [--size S]
                 --mode patched|unpatched [--timeout T]

Starts examples/blocking/echo_threads (thread per connection, MAX_CLIENTS=N)
and examples/threads/conn_hold, a single-threaded epoll client that opens N
connections, gets one echo on each (so the server has accepted every one and
a thread serves it) and, with all N still open, prints "connected N". At that
moment this reads the server's /proc/PID/status "Threads:" line and counts its
open sockets; then it lets the client exchange the other M-1 messages on every
connection (all checked) and waits for the server's "served N clients, B
bytes" with B = N*M*S.

--mode patched: server and client run under greenrun; the server must show
its hubs' OS threads while serving N connections ("Threads: 1" with one hub),
a spare carrier or more allowed (below). --mode unpatched: both run as they
are; the server must have at least N+1 OS threads (one per client).

--echo-client (patched mode): then examples/blocking/echo_client, a client
with one thread per connection, also under greenrun: N clients x M messages,
all checked by the client. Its server is --echo-server (examples/threads
echo_threads (listen backlog SOMAXCONN), because echo_client
connects all N at once, and a queue of 128 overflows in the kernel: dropped
handshakes, 1-60 s retransmission stalls, even resets -- with or without
greenshim). The Threads line of both processes is sampled every 20 ms during
the run and must never exceed the hubs and the spare carriers
(GREENSHIM_SPARES; auto: the CPUs - 1) that a thread running without waiting is handed to.

Every process is started in its own session and killed by pid at the end.
The soft RLIMIT_NOFILE is raised to the hard limit (inherited by the
children); if that is below N + 64 the test is skipped (exit 77).
"""
import argparse
import os
import resource
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from childproc import Failure, Proc, hubs, spares  # noqa: E402


def log(msg):
    print(msg, flush=True)


def os_threads(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("Threads:"):
                return int(line.split()[1])
    raise Failure(f"no Threads line for pid {pid}")


def socket_fds(pid):
    n = 0
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}").startswith("socket:"):
                n += 1
        except OSError:
            pass
    return n


def shim_mapped(pid):
    with open(f"/proc/{pid}/maps") as f:
        return "libgreenshim" in f.read()


def check_mapped(p, want):
    if shim_mapped(p.pid) != want:
        raise Failure(f"{p.label}: libgreenshim.so is {'not ' if want else ''}mapped")


def phase_holder(opts, wrap):
    """echo_threads + conn_hold: the Threads line with all N connections open."""
    n, m, size = opts.n, opts.m, opts.size
    procs = []
    try:
        t0 = time.monotonic()
        server = Proc(wrap([opts.server, "0", str(n)]), "echo_threads")
        procs.append(server)
        port = int(server.wait_line(r"listening (\d+)", 20).group(1))
        check_mapped(server, opts.mode == "patched")
        holder = Proc(wrap([opts.holder, str(port), str(n), str(m), str(size)]), "conn_hold", stdin=True)
        procs.append(holder)
        holder.wait_line(rf"connected {n}", opts.timeout)
        t_conn = time.monotonic() - t0
        check_mapped(holder, opts.mode == "patched")
        threads = os_threads(server.pid)
        sockets = socket_fds(server.pid)
        client_threads = os_threads(holder.pid)
        log(f"all {n} connections open and echoed once after {t_conn:.2f} s: server Threads: {threads}, "
            f"server sockets: {sockets}, client Threads: {client_threads}")
        holder.proc.stdin.write(b"go\n")
        holder.proc.stdin.flush()
        holder.wait_line(rf"ok {n} {m}", opts.timeout)
        status = holder.finish(opts.timeout)
        served = server.wait_line(r"served (\d+) clients, (\d+) bytes", opts.timeout)
        sstatus = server.finish(opts.timeout)
        t_all = time.monotonic() - t0
        log(f"client: ok {n} {m} (exit {status}); server: {served.group(0).decode()} (exit {sstatus}); "
            f"total {t_all:.2f} s")

        ok = True
        if opts.mode == "patched" and not hubs() <= threads <= hubs() + spares():
            log(f"FAIL: the patched server had {threads} OS threads with {n} clients connected, "
                f"expected {hubs()} (its hubs), and at most {spares()} spare carriers more")
            ok = False
        if opts.mode == "unpatched" and threads < n + 1:
            log(f"FAIL: the unpatched server had {threads} OS threads with {n} clients connected, "
                f"expected at least {n + 1} (one per client and main)")
            ok = False
        if sockets < n:  # (it closed its listening socket after the N-th accept)
            log(f"FAIL: the server had {sockets} sockets open, expected at least {n}")
            ok = False
        if client_threads > hubs():
            log(f"FAIL: conn_hold had {client_threads} OS threads, expected at most {hubs()} (its hubs)")
            ok = False
        if status != 0 or sstatus != 0:
            log(f"FAIL: exit statuses client {status}, server {sstatus}")
            ok = False
        if int(served.group(1)) != n or int(served.group(2)) != n * m * size:
            log(f"FAIL: server says {served.group(0).decode()!r}, expected {n} clients, {n * m * size} bytes")
            ok = False
        return ok
    finally:
        for p in procs:
            p.kill()


def phase_echo_client(opts, wrap):
    """echo_threads + echo_client (thread per connection), both patched."""
    n, m, size = opts.n, opts.m, opts.size
    procs = []
    try:
        t0 = time.monotonic()
        server = Proc(wrap([opts.echo_server, "0", str(n)]), "echo_threads")
        procs.append(server)
        port = int(server.wait_line(r"listening (\d+)", 20).group(1))
        check_mapped(server, True)
        client = Proc(wrap([opts.echo_client, str(port), str(n), str(m), str(size)]), "echo_client")
        procs.append(client)
        max_threads = {"server": 0, "client": 0}
        samples = 0
        client_mapped = None
        deadline = time.monotonic() + opts.timeout
        while client.proc.poll() is None and time.monotonic() < deadline:
            for name, p in (("server", server), ("client", client)):
                try:
                    max_threads[name] = max(max_threads[name], os_threads(p.pid))
                    # once greenrun (a shell script) has exec'd echo_client; asked
                    # again until seen, as the loader maps the preloaded library
                    # only some time after the exec
                    if (name == "client" and not client_mapped and
                            os.path.samefile(f"/proc/{p.pid}/exe", opts.echo_client)):
                        client_mapped = shim_mapped(p.pid)
                except (OSError, Failure):
                    pass  # it just exited
            samples += 1
            client.pump(0.02)
        if not client_mapped:
            raise Failure("echo_client: libgreenshim.so is not mapped" if client_mapped is False
                          else "echo_client: exited before it could be inspected")
        status = client.finish(max(1.0, deadline - time.monotonic()))
        served = server.wait_line(r"served (\d+) clients, (\d+) bytes", opts.timeout)
        sstatus = server.finish(opts.timeout)
        log(f"echo_client: {client.out.decode(errors='replace').strip()!r} (exit {status}) in "
            f"{time.monotonic() - t0:.2f} s; server: {served.group(0).decode()} (exit {sstatus}); "
            f"max Threads over {samples} samples: server {max_threads['server']}, "
            f"client {max_threads['client']}")
        ok = True
        if client.out.strip() != f"ok {n} {m}".encode() or status != 0:
            log(f"FAIL: echo_client: {client.out!r}, exit {status}, stderr {client.err[-2000:]!r}")
            ok = False
        if sstatus != 0 or int(served.group(1)) != n or int(served.group(2)) != n * m * size:
            log(f"FAIL: server: {served.group(0).decode()!r}, exit {sstatus}")
            ok = False
        # (a carrier besides the hubs while a thread runs a hand-off period
        # without waiting: the server's accept loop, draining thousands of
        # connections at once, on a loaded machine)
        if max_threads["server"] > hubs() + spares() or max_threads["client"] > hubs() + spares():
            log(f"FAIL: expected at most Threads: {hubs() + spares()} (the hubs and the spare carriers) "
                f"in both processes throughout, saw {max_threads}")
            ok = False
        return ok
    finally:
        for p in procs:
            p.kill()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--greenrun", required=True)
    ap.add_argument("--server", required=True, help="examples/blocking echo_threads")
    ap.add_argument("--holder", required=True, help="examples/threads conn_hold")
    ap.add_argument("--echo-client", help="examples/blocking echo_client (patched mode only)")
    ap.add_argument("--echo-server", help="examples/blocking echo_threads, the server for --echo-client")
    ap.add_argument("--n", type=int, required=True)
    ap.add_argument("--m", type=int, default=5)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--mode", choices=["patched", "unpatched"], required=True)
    ap.add_argument("--timeout", type=float, default=60.0, help="seconds per step")
    opts = ap.parse_args()

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = opts.n + 64
    if hard != resource.RLIM_INFINITY and hard < need:
        log(f"SKIP: RLIMIT_NOFILE hard limit {hard} < {need} needed for {opts.n} connections")
        return 77
    if soft != resource.RLIM_INFINITY and soft < need:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

    os.environ.pop("LD_PRELOAD", None)  # the unpatched runs really are unpatched
    patched = opts.mode == "patched"
    wrap = (lambda argv: [opts.greenrun, "--"] + argv) if patched else (lambda argv: argv)
    try:
        ok = phase_holder(opts, wrap)
        if ok and opts.echo_client:
            if not patched or not opts.echo_server:
                raise Failure("--echo-client needs --mode patched and --echo-server")
            ok = phase_echo_client(opts, wrap)
    except Failure as e:
        log(f"FAIL: {e}")
        return 1
    log("OK" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
