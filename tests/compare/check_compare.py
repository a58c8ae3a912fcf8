#!/usr/bin/env python3
"""Tests of `greenrun --compare` (scripts/lib/compare.py).

    check_compare.py GREENRUN CASE

Runs greenrun --compare on a small command and checks its exit status, the
table, the verdict, the --json file (parsed with json) and the --junit file
(parsed with xml.etree). Exit 0 on success, 1 with a message otherwise.
GREENSHIM_LIB (set by meson) names the library under test. Stdlib only.
"""
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET

PY = "/usr/bin/python3.11" if os.access("/usr/bin/python3.11", os.X_OK) else sys.executable
FIGURE_ROWS = ("wall time", "CPU time (user+sys)", "peak RSS", "peak OS threads (*)")


class Failed(Exception):
    pass


def check(cond, msg):
    if not cond:
        raise Failed(msg)


def compare(greenrun, args, tmp, want_rc):
    """Runs greenrun --compare with --json/--junit in tmp; returns (stdout, stderr, json, junit root)."""
    js, xml = os.path.join(tmp, "out.json"), os.path.join(tmp, "out.xml")
    argv = [greenrun, "--compare", "--json", js, "--junit", xml, "--timeout", "20"] + args
    print("$", " ".join(argv), flush=True)
    p = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60)
    print(p.stdout, end="")
    print(p.stderr, end="", file=sys.stderr)
    check(p.returncode == want_rc, f"exit status {p.returncode}, expected {want_rc}")
    with open(js) as f:
        doc = json.load(f)
    root = ET.parse(xml).getroot()
    check_table(p.stdout, doc)
    check_junit(root, doc)
    check((doc["verdict"]["same"] and doc["verdict"]["as_expected"]) == (want_rc == 0),
          f"JSON verdict {doc['verdict']}")
    return p.stdout, p.stderr, doc, root


def check_table(out, doc):
    lines = out.splitlines()
    check(any("unpatched" in l and "patched" in l for l in lines), "no table header")
    check(any("patched/" in l for l in lines) and any(l.strip().endswith("unpatched") for l in lines),
          "no ratio column (patched/unpatched)")
    for row in FIGURE_ROWS:
        line = [l for l in lines if l.strip().startswith(row)]
        check(line, f"no table row {row!r}")
        ratio = line[0].split()[-1]
        check(ratio == "n/a" or float(ratio) >= 0, f"row {row!r}: bad ratio {ratio!r}")
    check("sampled" in out, "the output does not say the thread count is sampled")
    verdict = [l for l in lines if l == "same behaviour" or l.startswith(("DIFFERENT: ", "NOT AS EXPECTED: "))]
    check(len(verdict) == 1, f"no single verdict line: {verdict}")
    check(verdict[0] == doc["verdict"]["text"], "the JSON verdict is not the printed one")
    # the JSON: raw figures of every run, medians, ratios
    runs = doc["runs"]
    check([r["kind"] for r in runs] == ["unpatched", "patched"] * (len(runs) // 2),
          "runs do not alternate unpatched, patched")
    for r in runs:
        for key in ("wall_s", "cpu_s", "max_rss_kib", "peak_threads"):
            check(isinstance(r[key], (int, float)) and r[key] >= 0, f"run {r['index']}: bad {key}")
    for key in doc["figures"]:
        f = doc["figures"][key]
        for kind in ("unpatched", "patched"):
            s = f[kind]
            if s is None:  # no run of that kind ran (a server never ready)
                continue
            check(s["min"] <= s["median"] <= s["max"], f"{key} {kind}: median outside min-max")
        if f["unpatched"] and f["patched"] and f["unpatched"]["median"]:
            check(abs(f["ratio"] - f["patched"]["median"] / f["unpatched"]["median"]) < 1e-9,
                  f"{key}: ratio is not patched/unpatched of the medians")


def check_junit(root, doc):
    cases = {c.get("name"): c for c in root.iter("testcase")}
    checks = {**doc["verdict"]["aspects"], **doc["verdict"]["expectations"]}
    want = {"exit status", "stdout"} | (set() if doc["ignore_stderr"] else {"stderr"})
    if doc["server"]:
        want.add("server exit status")
    check(want <= set(cases), f"JUnit testcases {sorted(cases)}")
    check(set(cases) == {name.replace("_", " ") for name in checks}, f"JUnit testcases {sorted(cases)}")
    for name, a in checks.items():
        failed = cases[name.replace("_", " ")].find("failure") is not None
        check(failed == (not a["same"]), f"JUnit {name}: failure={failed}, JSON same={a['same']}")
    suite = root.find("testsuite") if root.tag == "testsuites" else root
    check(int(suite.get("tests")) == len(checks), "JUnit tests count")
    check(int(suite.get("failures")) == sum(not a["same"] for a in checks.values()),
          "JUnit failures count")


def case_same(greenrun, tmp):
    out, _, doc, _ = compare(greenrun, ["-n", "3", "--", PY, "-c",
                                        "import time; time.sleep(0.1); print(1)"], tmp, 0)
    check("same behaviour" in out.splitlines(), "no 'same behaviour' line")
    check(len(doc["runs"]) == 6, f"{len(doc['runs'])} runs, expected 6")
    check(all(r["exit"]["code"] == 0 for r in doc["runs"]), "a run did not exit 0")
    check(all(r["wall_s"] >= 0.1 for r in doc["runs"]), "a run took less than its 0.1 s sleep")


def case_differs(greenrun, tmp):
    out, _, doc, root = compare(greenrun, ["-n", "1", "--", "sh", "-c", "echo ${LD_PRELOAD:+patched}"], tmp, 1)
    lines = out.splitlines()
    check("DIFFERENT: stdout" in lines, "no 'DIFFERENT: stdout' verdict")
    check("+patched" in lines and "-" in lines, "the diff does not show '-' / '+patched'")
    check(any(l.startswith("--- stdout") for l in lines), "no unified diff header")
    check(not doc["verdict"]["aspects"]["stdout"]["same"], "JSON: stdout not different")
    check(doc["verdict"]["aspects"]["exit_status"]["same"], "JSON: exit status differs")


def case_threads(greenrun, tmp):
    code = ("import threading, time; ts = [threading.Thread(target=time.sleep, args=(0.2,)) "
            "for _ in range(50)]; [t.start() for t in ts]; [t.join() for t in ts]")
    out, _, doc, _ = compare(greenrun, ["-n", "2", "--", PY, "-c", code], tmp, 0)
    th = doc["figures"]["peak_threads"]
    print(f"peak threads: unpatched {th['unpatched']}, patched {th['patched']}")
    check(45 <= th["unpatched"]["median"] <= 51, f"unpatched peak threads {th['unpatched']}, expected ~51")
    check(th["patched"]["max"] == 1, f"patched peak threads {th['patched']}, expected 1")
    row = [l for l in out.splitlines() if l.strip().startswith("peak OS threads")][0]
    check(row.split()[-1] in ("0.02", "0.03"), f"thread ratio in {row!r}")


def case_normalize(greenrun, tmp):
    cmd = ["--", "sh", "-c", "echo pid $$; echo pid $$ >&2"]
    compare(greenrun, ["-n", "2"] + cmd, tmp, 1)
    out, _, doc, _ = compare(greenrun, ["-n", "2", "--normalize", "[0-9]+", "--normalize", "x^"] + cmd, tmp, 0)
    check(doc["normalize"] == ["[0-9]+", "x^"], "JSON normalize")


def case_signal(greenrun, tmp):
    out, _, doc, root = compare(greenrun, ["-n", "1", "--", "sh", "-c",
                                           'echo before; [ -n "$LD_PRELOAD" ] && kill -SEGV $$; echo after'],
                                tmp, 1)
    check("killed by signal 11 (SIGSEGV)" in out, "the death by SIGSEGV is not shown as such")
    p = [r for r in doc["runs"] if r["kind"] == "patched"][0]
    check(p["exit"]["signal"] == 11 and p["exit"]["code"] is None, f"JSON exit {p['exit']}")
    failure = [c for c in root.iter("testcase") if c.get("name") == "exit status"][0].find("failure")
    check(failure is not None and "SIGSEGV" in failure.text, "JUnit exit status failure")


def case_timeout(greenrun, tmp):
    marker = f"greenrun_compare_timeout_{os.getpid()}"
    start = time.monotonic()
    # the patched run hangs (sleep in a child of sh: the whole group must go)
    out, _, doc, _ = compare(greenrun, ["-n", "2", "--timeout", "1", "--", "sh", "-c",
                                        f'[ -n "$LD_PRELOAD" ] && sh -c "sleep 20; true" {marker}; echo done',
                                        ], tmp, 1)
    took = time.monotonic() - start
    check(took < 15, f"took {took:.1f} s")
    check("timed out after 1 s" in out, "no 'timed out' in the output")
    check(any(r["exit"]["timed_out"] for r in doc["runs"] if r["kind"] == "patched"), "JSON timed_out")
    check(not doc["verdict"]["aspects"]["exit_status"]["same"], "a timeout is not a difference")
    time.sleep(0.2)
    left = pids_with(marker)
    check(not left, f"the timed-out run's child was not killed: pids {left}")


# a client of line_server.py: three lines, the answers; then a pause (so that a
# server which ends after the connection has ended before the client does)
CLIENT = ("import socket, sys, time; s = socket.create_connection(('127.0.0.1', int(sys.argv[1]))); "
          "f = s.makefile('rwb'); [f.write(w) for w in (b'one\\n', b'two\\n', b'three\\n')]; f.flush(); "
          "print(*[f.readline().decode().strip() for _ in range(3)]); f.close(); s.close(); time.sleep(0.5)")
LINE_SERVER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "line_server.py")


def server_args(*args):
    return ["--server", " ".join([PY, LINE_SERVER] + list(args))]


def case_server(greenrun, tmp):
    # the server exits by itself: its exit status and stdout are compared too
    out, _, doc, _ = compare(greenrun, ["-n", "1", "--expect-status", "0", "--ready", r"^listening (\d+)$",
                                        "--server-exits"]
                             + server_args("--exit-after", "1") + ["--", PY, "-c", CLIENT, "{port}"], tmp, 0)
    check(doc["patch"] == "both", f"JSON patch {doc['patch']}")
    aspects = doc["verdict"]["aspects"]
    check(set(aspects) == {"exit_status", "stdout", "stderr", "server_exit_status", "server_stdout",
                           "server_stderr"}, f"aspects {sorted(aspects)}")
    for r in doc["runs"]:
        check(r["server"]["exit"] == "exit 0", f"server exit {r['server']['exit']}")
        check(isinstance(r["server"]["port"], int) and r["server"]["port"] > 0, f"port {r['server']['port']}")
        check(r["stdout_bytes"] == len("ONE TWO THREE\n"), f"client stdout {r['stdout_bytes']} bytes")
    check(re.search(r"^  server stdout: +same in every run \(9 bytes\)$", out, re.M),
          "the server's stdout after its ready line is not 'served 1\\n'")
    check("server peak OS threads (*)" in out, "no server figures")
    check("patched runs patch the server and the command" in out, "--patch not said")
    # no announcement, no --ready: ready once it listens; stopped after the client
    for patch in ("server", "client"):
        out, _, doc, _ = compare(greenrun, ["-n", "1", "--patch", patch] + server_args("--silent")
                                 + ["--", PY, "-c", CLIENT, "{port}"], tmp, 0)
        check(doc["patch"] == patch, f"JSON patch {doc['patch']}")
        check(all(r["server"]["exit"] == "running until stopped after the command" for r in doc["runs"]),
              "the server was not running until stopped")
        check("server_stdout" not in doc["verdict"]["aspects"], "server stdout compared without --server-exits")


def case_server_differs(greenrun, tmp):
    # patched, the server exits 3 after its first client, and prints nothing more
    out, _, doc, root = compare(greenrun, ["-n", "1", "--server-exits"]
                                + server_args("--exit-after", "1", "--fail-patched")
                                + ["--", PY, "-c", CLIENT, "{port}"], tmp, 1)
    lines = out.splitlines()
    check("DIFFERENT: server exit status, server stdout" in lines, "verdict")
    check("server exit status: unpatched run 1: exit 0; patched run 1: exit 3" in lines, "the status line")
    check("-served 1" in lines, "the server stdout diff")
    # without --server-exits: the unpatched server runs until stopped, the patched one ended
    out, _, doc, root = compare(greenrun, ["-n", "1"] + server_args("--fail-patched")
                                + ["--", PY, "-c", CLIENT, "{port}"], tmp, 1)
    lines = out.splitlines()
    check("DIFFERENT: server exit status" in lines, "verdict")
    check("+ended before the command did (exit 3)" in lines and
          "-running until stopped after the command" in lines, "the server exit status diff")
    check(doc["verdict"]["aspects"]["stdout"]["same"], "the client's stdout differs")
    failure = [c for c in root.iter("testcase") if c.get("name") == "server exit status"][0].find("failure")
    check(failure is not None and "exit 3" in failure.text, "JUnit server exit status failure")


def case_server_ready(greenrun, tmp):
    marker = f"greenrun_compare_ready_{os.getpid()}"
    # the unpatched server never says it is ready: nothing to compare with (2)
    for args, want in ((["--timeout", "1", "--ready", "never", "--server", f"sh -c 'sleep 20' {marker}"],
                        "not ready after 1 s (killed): no line matched --ready"),
                       (["--server", "sh -c 'echo starting; exit 4'"], "ended (exit 4) before it was ready")):
        argv = [greenrun, "--compare", "-n", "1"] + args + ["--", "true"]
        start = time.monotonic()
        p = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=30)
        print(f"$ {' '.join(argv)}\n  -> {p.returncode}: {p.stderr.strip()}")
        check(p.returncode == 2, f"exit status {p.returncode}, expected 2")
        check(want in p.stderr, f"stderr does not say {want!r}")
        check(time.monotonic() - start < 10, "took too long")
    check("  starting" in p.stderr, "the server's stdout is not shown")
    # ready only unpatched: the patched run is a difference, and the server is killed
    out, _, doc, _ = compare(greenrun, [
        "-n", "2", "--timeout", "1", "--ready", "^up$", "--server",
        f"sh -c '[ -z \"$LD_PRELOAD\" ] && echo up; exec sleep 20' {marker}", "--", "echo", "client"], tmp, 1)
    check("patched run 1: not run: the server not ready after 1 s (killed): no line matched --ready" in out,
          "the patched run's failure is not shown")
    check(len(doc["runs"]) == 2 and doc["runs_skipped"] == 2, "the runs after the failure were not skipped")
    time.sleep(0.2)
    check(not pids_with(marker), f"a server was not killed: pids {pids_with(marker)}")


def case_sort(greenrun, tmp):
    cmd = ["--", "sh", "-c", 'if [ -n "$LD_PRELOAD" ]; then printf "b\\na\\n"; else printf "a\\nb\\n"; fi']
    out, _, _, _ = compare(greenrun, ["-n", "1"] + cmd, tmp, 1)
    check("DIFFERENT: stdout" in out.splitlines(), "verdict without --sort")
    out, _, doc, _ = compare(greenrun, ["-n", "1", "--sort"] + cmd, tmp, 0)
    check(doc["sort"] is True, "JSON sort")
    check(re.search(r"^  stdout: +same in every run \(4 bytes after --sort\)$", out, re.M), "the stdout line")


def case_ignore_stderr(greenrun, tmp):
    cmd = ["--", "sh", "-c", 'echo "pid $$" >&2; echo same; [ -z "$DIFFER" ] || [ -z "$LD_PRELOAD" ] || echo more']
    out, _, _, _ = compare(greenrun, ["-n", "1"] + cmd, tmp, 1)
    check("DIFFERENT: stderr" in out.splitlines(), "verdict without --ignore-stderr")
    out, _, doc, _ = compare(greenrun, ["-n", "1", "--ignore-stderr"] + cmd, tmp, 0)
    check(doc["ignore_stderr"] is True and "stderr" not in doc["verdict"]["aspects"], "JSON: stderr compared")
    check(re.search(r"^  stderr: +not compared \(--ignore-stderr\)$", out, re.M), "the stderr line")
    # a difference shows the end of each run's stderr
    os.environ["DIFFER"] = "1"
    try:
        out, _, _, _ = compare(greenrun, ["-n", "1", "--ignore-stderr"] + cmd, tmp, 1)
    finally:
        del os.environ["DIFFER"]
    lines = out.splitlines()
    check("DIFFERENT: stdout" in lines, "verdict")
    for label in ("unpatched run 1", "patched run 1"):
        i = lines.index(f"stderr of {label} (the end):") if f"stderr of {label} (the end):" in lines else -1
        check(i >= 0 and lines[i + 1].startswith("  pid "), f"the end of the stderr of the {label}")


def case_expect(greenrun, tmp):
    out, _, doc, root = compare(greenrun, ["-n", "1", "--expect-status", "0", "--", "sh", "-c", "echo x; exit 3"],
                                tmp, 1)
    lines = out.splitlines()
    check("NOT AS EXPECTED: exit status" in lines, "verdict")
    check("expected exit status: unpatched run 1: exit 3, expected exit 0" in lines, "the explanation")
    check(doc["verdict"]["same"] and not doc["verdict"]["as_expected"], f"JSON verdict {doc['verdict']}")
    failure = [c for c in root.iter("testcase") if c.get("name") == "expected exit status"][0].find("failure")
    check(failure is not None and failure.get("type") == "unexpected", "JUnit expected exit status")
    want = os.path.join(tmp, "want.txt")
    with open(want, "w") as f:
        f.write("one\ntwo\n")
    compare(greenrun, ["-n", "1", "--expect-status", "0", "--expect-stdout", want, "--",
                       "printf", "one\\ntwo\\n"], tmp, 0)
    out, _, doc, _ = compare(greenrun, ["-n", "1", "--expect-stdout", want, "--", "printf", "one\\nTWO\\n"], tmp, 1)
    lines = out.splitlines()
    check("NOT AS EXPECTED: stdout" in lines, "verdict")
    check("-two" in lines and "+TWO" in lines, "the diff against the expected stdout")


def case_binary(greenrun, tmp):
    code = ("import os, sys; d = bytes(range(256)) * 4; "
            "sys.stdout.buffer.write(d[:500] + b'X' + d[501:] if os.environ.get('LD_PRELOAD') else d)")
    out, _, doc, _ = compare(greenrun, ["-n", "1", "--", PY, "-c", code], tmp, 1)
    lines = out.splitlines()
    check("binary output: the first difference is at byte 500" in lines, "no first differing byte")
    check(any(l.startswith("--- stdout, unpatched run 1: 1024 bytes, sha256 ") for l in lines), "no sizes, hashes")
    check(len(lines) < 30, f"{len(lines)} lines of output")


def pids_with(marker):
    left = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if marker.encode() in f.read() and int(pid) != os.getpid():
                    left.append(pid)
        except OSError:
            pass
    return left



def case_usage(greenrun, tmp):
    bad = [
        ["-n", "0", "--", "true"],
        ["-n", "x", "--", "true"],
        ["-n"],
        ["-n", "2"],
        ["-n", "2", "--"],
        ["--normalize", "(", "--", "true"],
        ["--timeout", "-3", "--", "true"],
        ["--bogus", "--", "true"],
        ["--", "no-such-command-greenrun"],
        ["--json", "/nonexistent-dir/x.json", "--", "true"],
        ["--sort=yes", "--", "true"],
        ["--ignore-stderr=1", "--", "true"],
        ["--expect-status", "256", "--", "true"],
        ["--expect-status", "x", "--", "true"],
        ["--expect-stdout", "/nonexistent-dir/want", "--", "true"],
        ["--patch", "server", "--", "true"],
        ["--ready", "x", "--", "true"],
        ["--server-exits", "--", "true"],
        ["--server", "", "--", "true"],
        ["--server", "sh -c 'unbalanced", "--", "true"],
        ["--server", "no-such-server-greenrun", "--", "true"],
        ["--server", "true", "--patch", "everything", "--", "true"],
        ["--server", "true", "--ready", "(", "--", "true"],
        ["--server", "true", "--ready", "listening", "--", "echo", "{port}"],
    ]
    for args in bad:
        argv = [greenrun, "--compare"] + args
        p = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=30)
        print(f"$ {' '.join(argv)}\n  -> {p.returncode}: {p.stderr.strip()}")
        check(p.returncode == 2, f"{args}: exit status {p.returncode}, expected 2")
        check(len(p.stderr.splitlines()) == 1, f"{args}: stderr is not one line: {p.stderr!r}")
        check(p.stdout == "", f"{args}: output on stdout: {p.stdout!r}")
    p = subprocess.run([greenrun, "--compare", "--help"], capture_output=True, text=True, timeout=30)
    check(p.returncode == 0 and all(o in p.stdout for o in ("--normalize", "--sort", "--ignore-stderr", "--server", "--ready",
                                                             "--server-exits", "--patch", "{port}",
                                                             "--expect-status", "--expect-stdout")), "--help")


CASES = {name[5:]: f for name, f in globals().items() if name.startswith("case_")}


def main():
    if len(sys.argv) != 3 or sys.argv[2] not in CASES:
        print(f"usage: check_compare.py GREENRUN {{{','.join(CASES)}}}", file=sys.stderr)
        return 2
    greenrun, case = sys.argv[1:]
    with tempfile.TemporaryDirectory() as tmp:
        try:
            CASES[case](greenrun, tmp)
        except (Failed, json.JSONDecodeError, ET.ParseError, FileNotFoundError) as e:
            print(f"FAIL {case}: {e}", file=sys.stderr)
            return 1
    print(f"ok {case}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
