"""A selectors-based non-blocking echo server and its clients, all in one
thread: the listening socket, 20 non-blocking connects (EINPROGRESS) and every
transfer are driven by one DefaultSelector loop."""
import errno
import selectors
import socket

NCLIENTS, ROUNDS, SIZE = 20, 10, 3000

sel = selectors.DefaultSelector()
lst = socket.socket()
lst.bind(("127.0.0.1", 0))
lst.listen(64)
lst.setblocking(False)
sel.register(lst, selectors.EVENT_READ, ("listener", None))
port = lst.getsockname()[1]


class Conn:
    """Either side of a connection: a buffer to send, bytes received."""

    def __init__(self, sock, role, ident):
        self.sock, self.role, self.ident = sock, role, ident
        self.out = b""
        self.got = b""
        self.round = 0
        self.done = False


def payload(i, r):
    return bytes((i * 13 + r * 7 + k) % 251 for k in range(SIZE))


clients = []
connect_results = set()
for i in range(NCLIENTS):
    s = socket.socket()
    s.setblocking(False)
    connect_results.add(errno.errorcode.get(s.connect_ex(("127.0.0.1", port)), "0"))
    c = Conn(s, "client", i)
    c.out = payload(i, 0)
    clients.append(c)
    sel.register(s, selectors.EVENT_WRITE | selectors.EVENT_READ, ("conn", c))
print("connect_ex said:", sorted(connect_results))

servers = []
echoed = 0
finished = 0
while finished < NCLIENTS:
    events = sel.select(timeout=10)
    if not events:
        raise SystemExit("stuck: no events in 10 s")
    for key, mask in events:
        kind, c = key.data
        if kind == "listener":
            while True:
                try:
                    s, _ = lst.accept()
                except BlockingIOError:
                    break
                s.setblocking(False)
                sc = Conn(s, "server", len(servers))
                servers.append(sc)
                sel.register(s, selectors.EVENT_READ, ("conn", sc))
            continue
        if mask & selectors.EVENT_READ:
            try:
                data = c.sock.recv(65536)
            except BlockingIOError:
                data = None
            if data == b"":
                sel.unregister(c.sock)
                c.sock.close()
                continue
            if data:
                if c.role == "server":
                    c.out += data
                    echoed += len(data)
                else:
                    c.got += data
                    if len(c.got) == SIZE:
                        assert c.got == payload(c.ident, c.round), f"client {c.ident}: echo differs"
                        c.got = b""
                        c.round += 1
                        if c.round == ROUNDS:
                            sel.unregister(c.sock)
                            c.sock.close()
                            c.done = True
                            finished += 1
                            continue
                        c.out = payload(c.ident, c.round)
        if c.out and not c.done:
            try:
                n = c.sock.send(c.out)
                c.out = c.out[n:]
            except BlockingIOError:
                pass
        if not c.done and c.sock.fileno() >= 0:
            want = selectors.EVENT_READ | (selectors.EVENT_WRITE if c.out else 0)
            if sel.get_key(c.sock).events != want:
                sel.modify(c.sock, want, ("conn", c))

# Let the server side see every EOF.
while any(s.sock.fileno() >= 0 for s in servers):
    for key, mask in sel.select(timeout=10) or [(None, None)]:
        if key is None:
            raise SystemExit("stuck waiting for EOFs")
        kind, c = key.data
        if kind == "conn" and c.sock.recv(65536) == b"":
            sel.unregister(c.sock)
            c.sock.close()
print(f"{finished} clients x {ROUNDS} rounds of {SIZE} bytes echoed; server side echoed {echoed} bytes "
      f"over {len(servers)} connections")
sel.close()
lst.close()
