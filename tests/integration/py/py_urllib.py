"""urllib fetches from an http.server running in a thread of the same process.

Fetches a 2 MiB body from five threads at once, a 404, and a POST echo.
"""
import hashlib
import http.server
import random
import threading
import urllib.error
import urllib.request

BODY = random.Random(7).randbytes(2 * 1024 * 1024)


class Handler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_GET(self):
        if self.path != "/blob":
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(BODY)))
        self.end_headers()
        for off in range(0, len(BODY), 100_000):  # many writes, not one
            self.wfile.write(BODY[off:off + 100_000])

    def do_POST(self):
        data = self.rfile.read(int(self.headers["Content-Length"]))
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data[::-1])


srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
loop = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05})
loop.start()
base = f"http://127.0.0.1:{srv.server_address[1]}"
# No proxy from the environment: loopback only.
opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

digests = {}


def fetch(i):
    with opener.open(base + "/blob", timeout=30) as r:
        digests[i] = (r.status, hashlib.sha256(r.read()).hexdigest())


threads = [threading.Thread(target=fetch, args=(i,)) for i in range(5)]
for t in threads:
    t.start()
for t in threads:
    t.join()
print("expected", hashlib.sha256(BODY).hexdigest())
for i in range(5):
    print(f"fetch {i}:", *digests.get(i, ("missing",)))

try:
    opener.open(base + "/nothing-here", timeout=30)
    print("404: no error?!")
except urllib.error.HTTPError as e:
    print("404:", e.code)

with opener.open(urllib.request.Request(base + "/echo", data=b"hello, greenshim"), timeout=30) as r:
    print("POST:", r.status, r.read())

srv.shutdown()
loop.join()
srv.server_close()
print("done")
