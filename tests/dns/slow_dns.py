#!/usr/bin/env python3
"""A deliberately slow DNS server for tests: answers every A query after DELAY
seconds with 127.0.0.N (N from the query name's digits, else 1), concurrently.

usage: slow_dns.py ADDR PORT DELAY     (prints "ready" once bound)
Stops by itself after 120 s.
"""
import socket
import struct
import sys
import threading
import time


def answer(query: bytes) -> bytes:
    (qid, flags, qd, an, ns, ar) = struct.unpack("!HHHHHH", query[:12])
    # Question: the name, then QTYPE and QCLASS.
    i, labels = 12, []
    while query[i]:
        n = query[i]
        labels.append(query[i + 1:i + 1 + n].decode())
        i += 1 + n
    qtype, qclass = struct.unpack("!HH", query[i + 1:i + 5])
    question = query[12:i + 5]
    digits = "".join(c for c in labels[0] if c.isdigit()) if labels else ""
    last = int(digits) % 250 + 1 if digits else 1
    header = struct.pack("!HHHHHH", qid, 0x8180, 1, 1 if qtype == 1 else 0, 0, 0)
    if qtype != 1:  # only A records; AAAA & co. get an empty answer
        return header + question
    rr = struct.pack("!HHHLH", 0xC00C, 1, 1, 60, 4) + bytes([127, 0, 0, last])
    return header + question + rr


def main():
    addr, port, delay = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((addr, port))
    s.settimeout(1.0)
    print("ready", flush=True)
    end = time.monotonic() + 120
    while time.monotonic() < end:
        try:
            data, peer = s.recvfrom(512)
        except socket.timeout:
            continue
        reply = answer(data)
        threading.Timer(delay, lambda r=reply, p=peer: s.sendto(r, p)).start()


if __name__ == "__main__":
    main()
