"""asyncio: an echo server and clients, timeouts, a subprocess, signals and
run_in_executor, all in one event loop (its own epoll, non-blocking sockets,
a self-pipe, a child watcher)."""
import asyncio
import os
import signal
import sys
import time


async def handle(reader, writer):
    while data := await reader.readline():
        writer.write(data.upper())
        await writer.drain()
    writer.close()
    await writer.wait_closed()


async def client(port, i):
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    lines = []
    for j in range(10):
        writer.write(f"client {i} line {j}\n".encode())
        await writer.drain()
        lines.append(await reader.readline())
    writer.close()
    await writer.wait_closed()
    return lines == [f"CLIENT {i} LINE {j}\n".encode() for j in range(10)]


async def main():
    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    results = await asyncio.gather(*(client(port, i) for i in range(20)))
    print("echo clients ok:", sum(results), "of", len(results))
    server.close()
    await server.wait_closed()

    t0 = time.monotonic()
    try:
        await asyncio.wait_for(asyncio.sleep(5), 0.2)
    except asyncio.TimeoutError:
        print("wait_for timed out; after >= 0.2 s:", time.monotonic() - t0 >= 0.2)

    proc = await asyncio.create_subprocess_exec(
        "sh", "-c", "sleep 0.2; echo from the child; exit 3", stdout=asyncio.subprocess.PIPE)
    out, _ = await proc.communicate()
    print("subprocess:", out, "exit", proc.returncode)

    loop = asyncio.get_running_loop()
    got = loop.create_future()
    loop.add_signal_handler(signal.SIGUSR1, lambda: got.set_result("SIGUSR1"))
    loop.call_later(0.1, os.kill, os.getpid(), signal.SIGUSR1)
    print("signal handler:", await asyncio.wait_for(got, 5))

    r = await loop.run_in_executor(None, lambda: (time.sleep(0.2), "slept in a thread")[1])
    print("executor:", r)
    r = await asyncio.to_thread(sum, range(1000))
    print("to_thread:", r)


asyncio.run(main())
print("done")
