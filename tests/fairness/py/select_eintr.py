# A signal during select(): Linux returns EINTR and leaves the caller's fd sets
# as they were; CPython runs the Python handler and selects again with the
# same sets. 1) set_wakeup_fd: the handler's byte on the wakeup pipe ends the
# select. 2) a handler without a wakeup fd runs when the signal comes, not at
# select's timeout. The signal comes from a child process.
import os, select, signal, subprocess, sys, time

def send_later(sig, delay):
    return subprocess.Popen([sys.executable, "-c",
        "import os, sys, time; time.sleep(%r); os.kill(%d, %d)" % (delay, os.getpid(), sig)])

ran = []
signal.signal(signal.SIGUSR1, lambda *a: ran.append(time.monotonic()))

# 1. set_wakeup_fd
r, w = os.pipe()
os.set_blocking(w, False)
signal.set_wakeup_fd(w)
t0 = time.monotonic()
child = send_later(signal.SIGUSR1, 0.2)
readable, _, _ = select.select([r], [], [], 10)
took = time.monotonic() - t0
child.wait()
print("wakeup fd: select returned the wakeup pipe:", readable == [r])
print("wakeup fd: woke in under 5 s:", took < 5)
print("wakeup fd: byte is the signal number:", os.read(r, 16) == bytes([signal.SIGUSR1]))
signal.set_wakeup_fd(-1)

# 2. no wakeup fd: the handler runs at once, select goes on to its timeout
ran.clear()
r2, w2 = os.pipe()
t0 = time.monotonic()
child = send_later(signal.SIGUSR1, 0.2)
readable, _, _ = select.select([r2], [], [], 1.5)
took = time.monotonic() - t0
child.wait()
print("handler: ran once:", len(ran) == 1)
print("handler: ran before the timeout:", bool(ran) and ran[0] - t0 < 1.2)
print("handler: select still timed out, nothing ready:", readable == [] and took >= 1.5)
