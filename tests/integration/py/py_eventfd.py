"""os.eventfd_read() on an eventfd with nothing in it waits until another
thread writes (glibc's eventfd_read: the read happens inside libc)."""
import os
import threading
import time

fd = os.eventfd(0)
t0 = time.monotonic()
timer = threading.Timer(0.2, lambda: os.eventfd_write(fd, 5))
timer.start()
try:
    print("eventfd_read:", os.eventfd_read(fd), "after >= 0.2 s:", time.monotonic() - t0 >= 0.2)
except OSError as e:
    print("eventfd_read raised", type(e).__name__, e)
timer.join()
# The same through os.read, the interposed read, for comparison.
timer = threading.Timer(0.2, lambda: os.eventfd_write(fd, 7))
timer.start()
print("os.read:", int.from_bytes(os.read(fd, 8), "little"))
timer.join()
os.close(fd)
