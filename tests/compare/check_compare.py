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
    argv = [greenrun, "--compare", "--json", js, "--junit", xml] + args
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
    check(doc["verdict"]["same"] == (want_rc == 0), f"JSON verdict {doc['verdict']}")
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
    verdict = [l for l in lines if l == "same behaviour" or l.startswith("DIFFERENT: ")]
    check(len(verdict) == 1, f"no single verdict line: {verdict}")
    check(verdict[0] == doc["verdict"]["text"], "the JSON verdict is not the printed one")
    # the JSON: raw figures of every run, medians, ratios
    runs = doc["runs"]
    check([r["kind"] for r in runs] == ["unpatched", "patched"] * (len(runs) // 2),
          "runs do not alternate unpatched, patched")
    for r in runs:
        for key in ("wall_s", "cpu_s", "max_rss_kib", "peak_threads"):
            check(isinstance(r[key], (int, float)) and r[key] >= 0, f"run {r['index']}: bad {key}")
    for key in ("wall_s", "cpu_s", "max_rss_kib", "peak_threads"):
        f = doc["figures"][key]
        for kind in ("unpatched", "patched"):
            s = f[kind]
            check(s["min"] <= s["median"] <= s["max"], f"{key} {kind}: median outside min-max")
        if f["unpatched"]["median"]:
            check(abs(f["ratio"] - f["patched"]["median"] / f["unpatched"]["median"]) < 1e-9,
                  f"{key}: ratio is not patched/unpatched of the medians")


def check_junit(root, doc):
    cases = {c.get("name"): c for c in root.iter("testcase")}
    check(set(cases) == {"exit status", "stdout", "stderr"}, f"JUnit testcases {sorted(cases)}")
    for name, a in doc["verdict"]["aspects"].items():
        failed = cases[name.replace("_", " ")].find("failure") is not None
        check(failed == (not a["same"]), f"JUnit {name}: failure={failed}, JSON same={a['same']}")
    suite = root.find("testsuite") if root.tag == "testsuites" else root
    check(int(suite.get("tests")) == 3, "JUnit tests count")
    check(int(suite.get("failures")) == sum(not a["same"] for a in doc["verdict"]["aspects"].values()),
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
    left = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if marker.encode() in f.read() and int(pid) != os.getpid():
                    left.append(pid)
        except OSError:
            pass
    check(not left, f"the timed-out run's child was not killed: pids {left}")


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
    ]
    for args in bad:
        argv = [greenrun, "--compare"] + args
        p = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=30)
        print(f"$ {' '.join(argv)}\n  -> {p.returncode}: {p.stderr.strip()}")
        check(p.returncode == 2, f"{args}: exit status {p.returncode}, expected 2")
        check(len(p.stderr.splitlines()) == 1, f"{args}: stderr is not one line: {p.stderr!r}")
        check(p.stdout == "", f"{args}: output on stdout: {p.stdout!r}")
    p = subprocess.run([greenrun, "--compare", "--help"], capture_output=True, text=True, timeout=30)
    check(p.returncode == 0 and "--normalize" in p.stdout, "--help")


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
