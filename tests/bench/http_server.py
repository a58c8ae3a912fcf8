"""Benchmark 5 (python): the standard library's ThreadingHTTPServer (one OS
thread per connection; one greenlet per connection under greenrun) serving a
fixed 1 KiB body to every GET, with HTTP/1.1 keep-alive.

    python3.11 http_server.py [PORT]        (0 or none: a free port)

Prints "listening PORT" once it listens on 127.0.0.1, then serves until
killed. Three settings differ from `python -m http.server`, the same for both
runs: no access log on stderr; a listen backlog of 1024 instead of
socketserver's 5 (wrk opens all its connections at once); and TCP_NODELAY
(socketserver's own disable_nagle_algorithm switch): BaseHTTPRequestHandler
sends the headers and the body in two writes, and with Nagle on, every
keep-alive response then waits ~40 ms for the client's delayed ACK, which
makes both runs measure the same 40 ms timer instead of the server.
"""
import http.server
import sys

BODY = b"x" * 1023 + b"\n"


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True

    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(BODY)))
        self.end_headers()
        self.wfile.write(BODY)

    def log_message(self, format, *args):
        pass


class Server(http.server.ThreadingHTTPServer):
    request_queue_size = 1024
    daemon_threads = True


def main():
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 0
    srv = Server(("127.0.0.1", port), Handler)
    print("listening", srv.server_address[1], flush=True)
    try:
        srv.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
