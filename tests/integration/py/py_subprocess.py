"""subprocess as programs use it: big input/output through pipes, pipelines,
timeouts that kill, and ten threads each running a child at the same time."""
import hashlib
import subprocess
import threading
import time

data = b"".join(b"%07d\n" % ((i * 7919) % 1000003) for i in range(600_000))  # 4.8 MB
r = subprocess.run(["sort", "-n"], input=data, capture_output=True)
print("sort:", r.returncode, len(r.stdout), hashlib.sha256(r.stdout).hexdigest()[:16],
      "sorted:", r.stdout == b"".join(sorted(data.splitlines(keepends=True), key=int)))

r = subprocess.run(["cat"], input=data, stdout=subprocess.PIPE)
print("cat round trip intact:", r.stdout == data)

p1 = subprocess.Popen(["seq", "1", "300000"], stdout=subprocess.PIPE)
p2 = subprocess.Popen(["sort", "-rn"], stdin=p1.stdout, stdout=subprocess.PIPE)
p1.stdout.close()
out, _ = p2.communicate()
print("pipeline:", out.splitlines()[:3], p1.wait(), p2.returncode)

t0 = time.monotonic()
try:
    subprocess.check_output(["sh", "-c", "echo partial; exec sleep 5"], timeout=0.3)
except subprocess.TimeoutExpired as e:
    print("timeout:", e.output, "after < 2 s:", time.monotonic() - t0 < 2)

print("exit status:", subprocess.call(["sh", "-c", "exit 42"]))
try:
    subprocess.run(["/nonexistent/program"])
except FileNotFoundError as e:
    print("missing program:", type(e).__name__, e.errno)

results = {}


def child(i):
    results[i] = subprocess.run(["sh", "-c", f"sleep 0.3; echo child {i}"], capture_output=True).stdout


t0 = time.monotonic()
threads = [threading.Thread(target=child, args=(i,)) for i in range(10)]
for t in threads:
    t.start()
for t in threads:
    t.join()
print("ten children in threads:", [results[i].decode().strip() for i in range(10)])
print("ran at the same time (< 2 s in all):", time.monotonic() - t0 < 2)
