"""queue.Queue producers and consumers in an unmodified CPython.

Output is exact (compared with queue_pc.expected) and the same with OS
threads and under greenrun, where the threads are greenlets and every
blocking put/get parks one.
"""
import queue
import threading
import time


def simple():
    """One producer, one consumer, a queue of size 2: exact order."""
    q = queue.Queue(maxsize=2)
    out = []

    def producer():
        for i in range(8):
            q.put(f"item {i}")
        q.put(None)

    def consumer():
        while (item := q.get()) is not None:
            out.append(f"got {item}")
            time.sleep(0.001)

    ts = [threading.Thread(target=consumer), threading.Thread(target=producer)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    print("\n".join(out))


def many():
    """3 producers x 100 items, 4 consumers, bounded queue, task_done/join."""
    q = queue.Queue(maxsize=5)
    taken = {c: [] for c in range(4)}
    full_seen = threading.Event()

    def producer(p):
        for i in range(100):
            if q.full():
                full_seen.set()
            q.put((p, i))

    def consumer(c):
        while True:
            item = q.get()
            try:
                if item is None:
                    return
                taken[c].append(item)
                if item[1] % 10 == 0:
                    time.sleep(0.001)
            finally:
                q.task_done()

    cons = [threading.Thread(target=consumer, args=(c,)) for c in range(4)]
    prods = [threading.Thread(target=producer, args=(p,)) for p in range(3)]
    for t in cons + prods:
        t.start()
    for t in prods:
        t.join()
    q.join()  # every item processed
    print(f"all items processed before the stop markers: {sum(map(len, taken.values())) == 300}")
    for _ in cons:
        q.put(None)
    for t in cons:
        t.join()
    items = sorted(x for lst in taken.values() for x in lst)
    print(f"consumed {len(items)} items, all distinct: {len(set(items)) == len(items)}")
    for p in range(3):
        print(f"producer {p}: {sum(1 for x in items if x[0] == p)} items, "
              f"complete: {[i for (pp, i) in items if pp == p] == list(range(100))}")
    in_order = all([i for (pp, i) in lst if pp == p] == sorted(i for (pp, i) in lst if pp == p)
                   for lst in taken.values() for p in range(3))
    print(f"each consumer got each producer's items in order: {in_order}")
    print(f"producers found the queue full: {full_seen.is_set()}")


def timeouts():
    q = queue.Queue(maxsize=1)
    t0 = time.monotonic()
    try:
        q.get(timeout=0.05)
        print("get on an empty queue: returned?!")
    except queue.Empty:
        print(f"get(timeout=0.05) on an empty queue: Empty after >= 0.05 s: {time.monotonic() - t0 >= 0.05}")
    q.put(1)
    t0 = time.monotonic()
    try:
        q.put(2, timeout=0.05)
        print("put on a full queue: returned?!")
    except queue.Full:
        print(f"put(timeout=0.05) on a full queue: Full after >= 0.05 s: {time.monotonic() - t0 >= 0.05}")

    # A get that a later put satisfies, within its timeout.
    q2 = queue.Queue()
    threading.Timer(0.05, q2.put, args=("late value",)).start()
    print(f"get(timeout=5) waited for: {q2.get(timeout=5)}")


def pipeline():
    """Stages connected by queues: square, then add one, then collect."""
    a, b, c = queue.Queue(), queue.Queue(), queue.Queue()

    def stage(src, dst, f):
        while (x := src.get()) is not None:
            dst.put(f(x))
        dst.put(None)

    ts = [threading.Thread(target=stage, args=(a, b, lambda x: x * x)),
          threading.Thread(target=stage, args=(b, c, lambda x: x + 1))]
    for t in ts:
        t.start()
    for i in range(10):
        a.put(i)
    a.put(None)
    out = []
    while (x := c.get()) is not None:
        out.append(x)
    for t in ts:
        t.join()
    print(f"pipeline: {out}")


simple()
many()
timeouts()
pipeline()
print("done")
