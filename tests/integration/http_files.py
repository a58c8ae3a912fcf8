#!/usr/bin/python3.11
"""Writes the files the HTTP tests serve: deterministic bytes, the same on
every machine and every Python (SHA-256 in counter mode).

    http_files.py NAME:SIZE:PATH ...
"""
import hashlib
import sys


def main():
    for spec in sys.argv[1:]:
        name, size, path = spec.split(":", 2)
        size = int(size)
        with open(path, "wb") as f:
            i = 0
            while size > 0:
                block = hashlib.sha256(f"{name} {i}".encode()).digest()
                f.write(block[:size])
                size -= len(block)
                i += 1


if __name__ == "__main__":
    main()
