"""Waits with no timeout must wait as long as it takes: no invented errors.

Each peer answers only after 1.5 s; every blocking call here (recv, accept,
readline on a pipe to a child process, recv from a server in another
process) must simply return the data. The four waits run at the same time,
one in the main thread, so the whole script takes about 1.5 s.
"""
import socket
import subprocess
import sys
import threading
import time

DELAY = 1.5
results = {}


def record(name, fn):
    t0 = time.monotonic()
    try:
        outcome = f"got {fn()!r}"
    except Exception as e:  # noqa: BLE001 - any failure is the finding
        outcome = f"raised {type(e).__name__}: {e}"
    results[name] = f"{outcome}; waited >= {DELAY} s: {time.monotonic() - t0 >= DELAY}"


def late_server(lst):
    s, _ = lst.accept()
    time.sleep(DELAY)
    s.sendall(b"late reply")
    s.close()


def recv_late():
    """recv() on a plain blocking socket; the server thread answers late."""
    lst = socket.create_server(("127.0.0.1", 0))
    threading.Thread(target=late_server, args=(lst,)).start()
    c = socket.create_connection(("127.0.0.1", lst.getsockname()[1]))
    print("client socket timeout:", c.gettimeout(), "default timeout:", socket.getdefaulttimeout())
    try:
        return c.recv(100)
    finally:
        c.close()
        lst.close()


def accept_late():
    """accept() blocks until a client connects 1.5 s later."""
    lst = socket.create_server(("127.0.0.1", 0))
    port = lst.getsockname()[1]
    threading.Timer(DELAY, lambda: socket.create_connection(("127.0.0.1", port)).sendall(b"hi")).start()
    s, _ = lst.accept()
    with s:
        lst.close()
        return s.recv(10)


def pipe_late():
    """readline() on a pipe from a child that writes after 1.5 s."""
    p = subprocess.Popen(["sh", "-c", f"sleep {DELAY}; echo late line"], stdout=subprocess.PIPE)
    line = p.stdout.readline()
    p.stdout.close()
    return line, p.wait()


SERVER = r"""
import socket, sys, time
lst = socket.create_server(("127.0.0.1", 0))
print(lst.getsockname()[1], flush=True)
s, _ = lst.accept()
s.recv(10)
time.sleep(float(sys.argv[1]))
s.sendall(b"reply from another process")
s.close()
"""


def process_late():
    """recv() from a server in a child process that answers after 1.5 s."""
    p = subprocess.Popen([sys.executable, "-c", SERVER, str(DELAY)], stdout=subprocess.PIPE)
    port = int(p.stdout.readline())
    c = socket.create_connection(("127.0.0.1", port))
    t0 = time.monotonic()  # before the request: the server's sleep starts after it
    c.sendall(b"ask")
    try:
        data = c.recv(100)
    finally:
        c.close()
        p.stdout.close()
    # Only the wait after the request counts for this one.
    if time.monotonic() - t0 < DELAY:
        return ("too early", data)
    return data, p.wait()


threads = [threading.Thread(target=record, args=(name, fn))
           for name, fn in [("accept", accept_late), ("pipe", pipe_late), ("process", process_late)]]
for t in threads:
    t.start()
record("recv", recv_late)  # in the main thread
for t in threads:
    t.join()
for name in ["recv", "accept", "pipe", "process"]:
    print(f"{name}: {results[name]}")
