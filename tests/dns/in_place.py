#!/usr/bin/env python3
"""getaddrinfo of an address literal with a numeric port, and getnameinfo
asked for a numeric host and service, are answered in place, not on the
helper pool (shim/dns.cpp, answered_in_place, named_in_place); a name still
goes to the pool.

usage: in_place.py GREENRUN
Runs /usr/bin/python3.11 under greenrun --stats: 100 literal lookups (IPv4
and IPv6, the port as a number and as a string), 100 numeric reverse ones,
then one of "localhost";
the stats must count exactly one call run on the helper pool, and the
literal lookups must return what glibc returns for them unpatched."""
import re
import subprocess
import sys

PROGRAM = r"""
import socket
seen = set()
for _ in range(50):
    seen.add(repr(socket.getaddrinfo('127.0.0.1', 80, type=socket.SOCK_STREAM)))
    seen.add(repr(socket.getaddrinfo('::1', '8080', type=socket.SOCK_STREAM)))
    seen.add(repr(socket.getnameinfo(('127.0.0.1', 5432), socket.NI_NUMERICHOST | socket.NI_NUMERICSERV)))
    seen.add(repr(socket.getnameinfo(('::1', 80), socket.NI_NUMERICHOST | socket.NI_NUMERICSERV)))
print(len(seen), sorted(seen))
socket.getaddrinfo('localhost', 80)
"""


def main():
    greenrun = sys.argv[1]
    plain = subprocess.run(["/usr/bin/python3.11", "-c", PROGRAM], capture_output=True, text=True, timeout=60)
    r = subprocess.run([greenrun, "--stats", "--", "/usr/bin/python3.11", "-c", PROGRAM], capture_output=True,
                       text=True, timeout=60)
    failed = []
    if r.returncode != 0 or plain.returncode != 0:
        failed.append(f"exit status {r.returncode} (unpatched {plain.returncode}): {r.stderr[-500:]!r}")
    if r.stdout != plain.stdout:
        failed.append(f"results differ from unpatched: {r.stdout!r} vs {plain.stdout!r}")
    m = re.search(r"helper threads \([^)]*\): \d+ alive, peak \d+, (\d+) calls run", r.stderr)
    calls = int(m.group(1)) if m else 0
    if calls != 1:
        failed.append(f"helper pool calls: {calls}, expected 1 (the name only): {r.stderr[-800:]!r}")
    for f in failed:
        print("FAIL:", f)
    print(f"{len(failed)} failed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
