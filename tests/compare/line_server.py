#!/usr/bin/env python3
"""A small threaded TCP server for the tests of greenrun --compare --server.

    line_server.py [--silent] [--exit-after N] [--fail-patched]

Listens on a free loopback port and prints "listening PORT" on stdout (with
--silent, nothing). Each connection gets a thread that
answers every line with the line in capitals. --exit-after N: after N
connections, print "served N" and exit 0. --fail-patched: under greenrun
(libgreenshim.so in LD_PRELOAD), exit 3 after the first connection instead.
"""
import os
import socket
import sys
import threading


def serve(conn):
    with conn, conn.makefile("rwb") as f:
        for line in f:
            f.write(line.upper())
            f.flush()


def main():
    args = sys.argv[1:]
    silent, exit_after, fail = False, None, False
    while args:
        a = args.pop(0)
        if a == "--silent":
            silent = True
        elif a == "--exit-after":
            exit_after = int(args.pop(0))
        elif a == "--fail-patched":
            fail = "libgreenshim" in os.environ.get("LD_PRELOAD", "")
        else:
            sys.exit(f"line_server.py: unknown argument {a}")
    srv = socket.create_server(("127.0.0.1", 0))
    if not silent:
        print("listening", srv.getsockname()[1], flush=True)
    served, threads = 0, []
    while exit_after is None or served < exit_after:
        conn, _ = srv.accept()
        t = threading.Thread(target=serve, args=(conn,))
        t.start()
        threads.append(t)
        served += 1
        if fail:
            t.join()
            sys.exit(3)
    for t in threads:
        t.join()
    print("served", served, flush=True)


if __name__ == "__main__":
    main()
