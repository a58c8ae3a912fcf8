# A daemon thread writes '.' to a pipe another process drains, flushing after
# each one; it never has to wait. The main thread's sleep must still end.
import subprocess, sys, threading, time
sink = subprocess.Popen(["cat"], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL)
def writer():
    while True:
        sink.stdin.write(b"."); sink.stdin.flush()
threading.Thread(target=writer, daemon=True).start()
t0 = time.monotonic()
time.sleep(0.5)
el = time.monotonic() - t0
print("slept", "ok" if 0.5 <= el < 5 else "bad %.3f" % el)
sink.kill()
