#!/usr/bin/env python3
"""The README's table of GREENSHIM_* variables is the one the table of
settings makes (shim/config.hpp): `greenshim-config --markdown`.

    readme_table.py CONFIG README            exit 1 (and a diff) if not
    readme_table.py CONFIG README --write    puts the made table in README

The table is the block of `|` lines that follows "### Configuration".
Stdlib only.
"""
import difflib
import os
import subprocess
import sys


def table_span(lines):
    """First and past-last line of the table under ### Configuration."""
    start = lines.index("### Configuration\n") + 1
    while not lines[start].startswith("|"):
        start += 1
    end = start
    while end < len(lines) and lines[end].startswith("|"):
        end += 1
    return start, end


def main():
    if len(sys.argv) not in (3, 4) or sys.argv[3:] not in ([], ["--write"]):
        print(__doc__, file=sys.stderr)
        return 2
    config, readme = sys.argv[1:3]
    made = subprocess.run([config, "--markdown"], capture_output=True, text=True, check=True).stdout
    made = made.splitlines(keepends=True)
    with open(readme, encoding="utf-8") as f:
        lines = f.readlines()
    start, end = table_span(lines)
    if lines[start:end] == made:
        print("README's table of variables is the generated one")
        return 0
    if sys.argv[3:] == ["--write"]:
        lines[start:end] = made
        with open(readme, "w", encoding="utf-8") as f:
            f.writelines(lines)
        print(f"{readme}: table of variables written")
        return 0
    sys.stdout.writelines(difflib.unified_diff(lines[start:end], made, "README.md", "greenshim-config --markdown"))
    print(f"FAIL: README's table of variables is not the generated one; update it with\n"
          f"  {' '.join(os.path.normpath(a) for a in sys.argv[:3])} --write")
    return 1


if __name__ == "__main__":
    sys.exit(main())
