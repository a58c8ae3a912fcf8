"""socketserver echo servers and their clients in one process.

A ThreadingTCPServer runs serve_forever() in a thread while ten client
threads talk to it line by line; then the same over a Unix socket with a
ThreadingUnixStreamServer. Everything printed is deterministic. (No forking
server: its children would inherit the client threads' sockets and never see
EOF, with or without greenshim.)
"""
import os
import tempfile
import socket
import socketserver
import threading


class UpperEcho(socketserver.StreamRequestHandler):
    def handle(self):
        for line in self.rfile:
            self.wfile.write(line.upper())


def exercise(server_class, address, family, nclients=10, nlines=20):
    srv = server_class(address, UpperEcho)
    srv.daemon_threads = True
    address = srv.server_address
    loop = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05})
    loop.start()
    results = {}

    def client(i):
        with socket.socket(family) as s, s.makefile("rwb") as f:
            s.connect(address)
            got = []
            for j in range(nlines):
                f.write(f"client {i} line {j}\n".encode())
                f.flush()
                got.append(f.readline())
            results[i] = got

    threads = [threading.Thread(target=client, args=(i,)) for i in range(nclients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    srv.shutdown()
    loop.join()
    srv.server_close()
    name = server_class.__name__
    for i in range(nclients):
        got = results.get(i, [])
        want = [f"CLIENT {i} LINE {j}\n".encode() for j in range(nlines)]
        print(f"{name}: client {i}: {len(got)} lines, {'all upper-cased' if got == want else 'WRONG: %r' % got[:3]}")
    print(f"{name}: shut down")


exercise(socketserver.ThreadingTCPServer, ("127.0.0.1", 0), socket.AF_INET)
with tempfile.TemporaryDirectory() as d:
    exercise(socketserver.ThreadingUnixStreamServer, os.path.join(d, "sock"), socket.AF_UNIX)
