"""multiprocessing's locks and queues are process-shared POSIX semaphores.

Under greenshim they used to be glibc's own, and a wait on one blocked the
only OS thread: the thread that would release it never ran (issue 11 item 3).
Each case prints the same with and without greenshim.
"""
import multiprocessing as mp
import threading
import time

ctx = mp.get_context("fork")

# 1. The one-liner: acquired in main, released by a thread after 0.1 s.
l = mp.Lock(); l.acquire(); threading.Thread(target=lambda: (time.sleep(0.1), l.release())).start(); l.acquire(); print("ok")


# 2. Released by another process while a thread of this one ticks.
def release_later(sem):
    time.sleep(0.2)
    sem.release()


ticks = 0
stop = False


def tick():
    global ticks
    while not stop:
        time.sleep(0.005)
        ticks += 1


sem = ctx.Semaphore(0)
ticker = threading.Thread(target=tick)
ticker.start()
p = ctx.Process(target=release_later, args=(sem,))
p.start()
before = ticks
print("acquired from another process:", sem.acquire(timeout=10))
print("the ticker ran meanwhile:", ticks - before >= 5)
stop = True
ticker.join()
p.join()
print("child exit code:", p.exitcode)

# 3. A timed acquire that times out.
t0 = time.monotonic()
print("timed out:", sem.acquire(timeout=0.05) is False, time.monotonic() - t0 >= 0.045)


# 4. Queues both ways (each put goes through the queue's feeder thread).
def doubler(inq, outq):
    while (x := inq.get()) is not None:
        outq.put(2 * x)
    outq.put(None)


inq, outq = ctx.Queue(), ctx.Queue()
p = ctx.Process(target=doubler, args=(inq, outq))
p.start()
for i in range(200):
    inq.put(i)
inq.put(None)
got = []
while (x := outq.get(timeout=10)) is not None:
    got.append(x)
p.join()
print("queue round trip:", len(got), sum(got))
