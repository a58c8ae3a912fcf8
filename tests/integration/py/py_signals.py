"""Signals during blocking calls, as Python programs use them.

A handler that raises interrupts the blocking call at once (PEP 475: a
handler that returns lets the call go on). Printed: outcomes and whether each
call ended near the signal, not raw times.
"""
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time


class Alarm(Exception):
    pass


def raise_alarm(signum, frame):
    raise Alarm()


def timed(what, fn, signal_at, ends_by):
    t0 = time.monotonic()  # before the timer is armed: the wait is never shorter
    signal.setitimer(signal.ITIMER_REAL, signal_at)
    try:
        outcome = f"returned {fn()!r}"
    except Alarm:
        outcome = "interrupted by the handler's exception"
    except OSError as e:
        outcome = f"raised {type(e).__name__}"
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
    dt = time.monotonic() - t0
    print(f"{what}: {outcome}; after >= {signal_at} s: {dt >= signal_at}; before {ends_by} s: {dt < ends_by}")


signal.signal(signal.SIGALRM, raise_alarm)
timed("time.sleep(3)", lambda: time.sleep(3), 0.2, 1.5)
a, b = socket.socketpair()
timed("recv", lambda: a.recv(10), 0.2, 1.5)
timed("select", lambda: select.select([a], [], []), 0.2, 1.5)
lst = socket.create_server(("127.0.0.1", 0))
timed("accept", lambda: lst.accept(), 0.2, 1.5)
r, w = os.pipe()
timed("os.read", lambda: os.read(r, 10), 0.2, 1.5)
timed("threading.Event().wait()", lambda: threading.Event().wait(), 0.2, 1.5)
lock = threading.Lock()
lock.acquire()
timed("Lock.acquire()", lambda: lock.acquire(), 0.2, 1.5)

# A handler that returns: the call resumes and completes (PEP 475).
hits = []
signal.signal(signal.SIGALRM, lambda s, f: hits.append(s))
threading.Timer(0.4, lambda: b.send(b"after the signal")).start()
timed("recv, quiet handler, data at 0.4 s", lambda: a.recv(100), 0.2, 1.5)
print("quiet handler ran:", len(hits), "time(s)")
timed("time.sleep(0.5), quiet handler", lambda: time.sleep(0.5), 0.2, 1.5)

# A child process sends us SIGUSR1 while the main thread waits in a pipe read.
got = []
signal.signal(signal.SIGUSR1, lambda s, f: got.append("SIGUSR1"))
p = subprocess.Popen([sys.executable, "-c",
                      f"import os, time; time.sleep(0.2); os.kill({os.getpid()}, 10); time.sleep(0.2); "
                      f"os.write({w}, b'bye')"], pass_fds=[w])
print("pipe read across a signal from a child:", os.read(r, 10), got, "child exit", p.wait())

# set_wakeup_fd: the C-level handler writes the signal number to a socket.
ws, wr = socket.socketpair()
ws.setblocking(False)
signal.set_wakeup_fd(ws.fileno())
signal.signal(signal.SIGUSR2, lambda s, f: None)
threading.Timer(0.2, lambda: os.kill(os.getpid(), signal.SIGUSR2)).start()
print("wakeup fd got signal number:", wr.recv(1)[0] == signal.SIGUSR2)
signal.set_wakeup_fd(-1)
