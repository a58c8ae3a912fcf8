# asyncio's SelectorEventLoop with a SIGCHLD-driven child watcher: the
# handler writes to the loop's wakeup fd during select(); the loop must see
# it and reap the child (patched, the sets came back cleared and it hung).
import asyncio, selectors, sys, warnings
warnings.simplefilter("ignore", DeprecationWarning)

async def main():
    for i in range(3):
        p = await asyncio.create_subprocess_exec("/bin/sh", "-c", "sleep 0.1; exit %d" % i)
        print("child", i, "exited with", await asyncio.wait_for(p.wait(), 20))

for sel in (selectors.SelectSelector, selectors.PollSelector, selectors.EpollSelector):
    for watcher in (asyncio.SafeChildWatcher, asyncio.FastChildWatcher):
        loop = asyncio.SelectorEventLoop(sel())
        w = watcher()
        asyncio.set_child_watcher(w)
        w.attach_loop(loop)
        print(sel.__name__, watcher.__name__)
        loop.run_until_complete(main())
        w.close()
        loop.close()
