"""http.server.ThreadingHTTPServer (a thread per request), for http_many.py.

    http_server.py N

Prints "listening PORT". GET /hello/I answers "hello I\\n" after the handler
has waited until N requests are in progress at once (at most 10 s) and then
slept 0.5 s, so N concurrent clients are answered in about 0.5 s, while a
server handling them one at a time would take 10 s per request. The handler
that brings the count to N reads /proc/self/status then; so does the server
once it is ready, before any request ("threads_ready": HTTPServer's bind
resolves the host name, which greenshim may run on a helper OS thread of its
own). GET /stats answers JSON: {"max_inflight", "threads_at_max",
"threads_ready", "all_in_flight", "requests"}.
Serves until killed. An unmodified CPython program.
"""
import http.server
import json
import sys
import threading
import time

N = int(sys.argv[1])
lock = threading.Lock()
all_in = threading.Event()
stats = {"max_inflight": 0, "threads_at_max": None, "threads_ready": None, "all_in_flight": False,
         "requests": 0}
inflight = 0


def os_threads():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("Threads:"):
                return int(line.split()[1])


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"

    def log_message(self, *args):
        pass

    def reply(self, body, ctype="text/plain"):
        data = body.encode()
        self.send_response(200)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        global inflight
        if self.path == "/stats":
            with lock:
                self.reply(json.dumps(stats), "application/json")
            return
        if not self.path.startswith("/hello/"):
            self.send_error(404)
            return
        with lock:
            inflight += 1
            stats["requests"] += 1
            if inflight > stats["max_inflight"]:
                stats["max_inflight"] = inflight
            if inflight == N:
                stats["threads_at_max"] = os_threads()
                stats["all_in_flight"] = True
                all_in.set()
        all_in.wait(timeout=10)
        time.sleep(0.5)
        with lock:
            inflight -= 1
        self.reply(f"hello {self.path[len('/hello/'):]}\n")


class Server(http.server.ThreadingHTTPServer):
    request_queue_size = 1024  # N clients connect at once: no SYN drops
    daemon_threads = True


srv = Server(("127.0.0.1", 0), Handler)
stats["threads_ready"] = os_threads()
print(f"listening {srv.server_address[1]}", flush=True)
srv.serve_forever()
