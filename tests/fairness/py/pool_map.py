# multiprocessing.Pool(4).map with each start method. The pool's handler
# threads loop on connection.wait() with results already waiting (the
# cooperative budget), its locks are named semaphores shared with the
# workers, and "spawn" hands each worker dups of the parent's own pipe ends.
import multiprocessing as mp, sys
if __name__ == "__main__":
    for method in ("fork", "forkserver", "spawn"):
        ctx = mp.get_context(method)
        with ctx.Pool(4) as p:
            print(method, p.map(abs, range(-5, 5)))
