"""socketserver echo servers and their clients in one process.

A ThreadingTCPServer runs serve_forever() in a thread while ten client
threads talk to it line by line; then the same with a ForkingTCPServer (each
connection handled by a fork()ed child). Everything printed is deterministic.
"""
import socket
import socketserver
import threading


class UpperEcho(socketserver.StreamRequestHandler):
    def handle(self):
        for line in self.rfile:
            self.wfile.write(line.upper())


def exercise(server_class, nclients=10, nlines=20):
    srv = server_class(("127.0.0.1", 0), UpperEcho)
    srv.daemon_threads = True
    port = srv.server_address[1]
    loop = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05})
    loop.start()
    results = {}

    def client(i):
        with socket.create_connection(("127.0.0.1", port)) as s, s.makefile("rwb") as f:
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


exercise(socketserver.ThreadingTCPServer)
exercise(socketserver.ForkingTCPServer, nclients=4, nlines=5)
