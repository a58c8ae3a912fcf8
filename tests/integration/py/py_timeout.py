"""Socket timeouts: what Python's timeouts and SO_RCVTIMEO do, nothing more.

Prints only outcomes and whether each wait lasted as long as it must (and not
absurdly longer), never raw times.
"""
import select
import socket
import struct
import threading
import time


def timed(what, fn, at_least, at_most=1.5):
    t0 = time.monotonic()
    try:
        r = fn()
        outcome = f"returned {r!r}"
    except OSError as e:
        outcome = f"raised {type(e).__name__}" + (f" errno {e.errno}" if e.errno else "") + f" ({e})"
    dt = time.monotonic() - t0
    print(f"{what}: {outcome}; waited >= {at_least} s: {dt >= at_least}; < {at_most} s: {dt < at_most}")


# settimeout(0.2) on recv with nothing coming: socket.timeout after >= 0.2 s.
a, b = socket.socketpair()
a.settimeout(0.2)
timed("socketpair recv, timeout 0.2", lambda: a.recv(10), 0.2)
print("socket.timeout is TimeoutError:", socket.timeout is TimeoutError)

# Data that comes within the timeout is received (the timer starts inside
# the timed call, so the wait is never shorter than 0.1 s).
a.settimeout(1.0)


def recv_in_time():
    threading.Timer(0.1, lambda: b.send(b"in time")).start()
    return a.recv(10)


timed("socketpair recv, data after 0.1, timeout 1.0", recv_in_time, 0.1)
a.close()
b.close()

# TCP: accept and recv with timeouts, connect refused.
lst = socket.socket()
lst.bind(("127.0.0.1", 0))
lst.listen()
port = lst.getsockname()[1]
lst.settimeout(0.2)
timed("accept, timeout 0.2", lambda: lst.accept(), 0.2)
c = socket.create_connection(("127.0.0.1", port), timeout=0.3)
s, _ = lst.accept()
print("create_connection with a timeout: gettimeout", c.gettimeout(), "accepted gettimeout", s.gettimeout())
timed("tcp recv, timeout 0.3", lambda: c.recv(10), 0.3)
f = c.makefile("rb")
timed("makefile readline, timeout 0.3", lambda: f.readline(), 0.3)
f.close()
s.sendall(b"line\n")
c.settimeout(1.0)
timed("tcp recv after sendall", lambda: c.recv(10), 0.0)

# SO_RCVTIMEO on a blocking socket (Python's own timeout unset): the kernel
# fails the recv with EAGAIN after 0.25 s.
c.settimeout(None)
c.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, struct.pack("ll", 0, 250_000))
print("SO_RCVTIMEO reads back", struct.unpack("ll", c.getsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, 16)))
timed("recv with SO_RCVTIMEO 0.25", lambda: c.recv(10), 0.25)
s.close()
c.close()

# Nobody listens on a port we just closed: refused, at once.
lst.close()
r = socket.socket()
r.settimeout(2.0)
timed("connect to a closed port", lambda: r.connect(("127.0.0.1", port)), 0.0, 1.0)
r.close()

# select() and poll() with timeouts and nothing ready; time.sleep.
x, y = socket.socketpair()
timed("select, 0.2, nothing ready", lambda: select.select([x], [], [], 0.2), 0.2)
p = select.poll()
p.register(x, select.POLLIN)
timed("poll, 200 ms, nothing ready", lambda: p.poll(200), 0.2)
timed("time.sleep(0.2)", lambda: time.sleep(0.2), 0.2)
y.send(b"!")
timed("select, 5 s, something ready", lambda: len(select.select([x], [], [], 5)[0]), 0.0)
x.close()
y.close()
