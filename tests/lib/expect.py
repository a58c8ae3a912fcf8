"""Assertions for the test drivers that print one line per check
(tests/diagnostics): expect(cond, what, output) prints "ok: what" or
"FAIL: what" (with the output that shows why) and records the failure.

Import with tests/lib on sys.path (each driver adds it)."""

failures = []


def expect(cond, what, output="", tail=None):
    print(("ok: " if cond else "FAIL: ") + what)
    if not cond:
        failures.append(what)
        if output:
            shown = output[-tail:] if tail else output
            print("---- output ----\n" + shown + "\n----------------")
