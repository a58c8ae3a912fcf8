#!/usr/bin/env python3
"""greenrun --compare: run a command unpatched and patched, compare, measure.

    greenrun --compare [-n RUNS] [--normalize REGEX]... [--json FILE]
                       [--junit FILE] [--timeout SECONDS] -- CMD [ARGS...]

scripts/greenrun finds the library and runs this file as
`python3 compare.py --lib LIB [options] -- CMD ...`.

CMD runs RUNS times as it is ("unpatched": the environment without
libgreenshim.so in LD_PRELOAD) and RUNS times with the library added to
LD_PRELOAD ("patched"), alternating, each in a session of its own, stdin from
/dev/null, stdout and stderr to temporary files. Every run must give the exit
status, stdout and stderr of the first unpatched run (after --normalize, which
replaces each match of REGEX with a placeholder in both). Per run: wall time,
CPU time (user+sys from wait4's rusage: the process and the children it
waited for), peak RSS (ru_maxrss: the largest of them; the command is started
through `setsid --fork` so that this python's size is not counted, see
Launcher) and the peak number of OS threads, sampled every 5 ms from /proc.

Exit status: 0 same behaviour, 1 different (a run that exceeds --timeout is
killed with its process group and is a difference), 2 usage error.
Stdlib only.
"""
import difflib
import hashlib
import json
import os
import re
import resource
import select
import shlex
import shutil
import signal
import statistics
import sys
import tempfile
import time
import xml.etree.ElementTree as ET

PROG = "greenrun --compare"
SAMPLE_INTERVAL = 0.005  # seconds between two samples of the thread count
PLACEHOLDER = b"<normalized>"
DIFF_LINES = 40          # diff lines printed (the JSON and JUnit files get more)
DIFF_LINES_FILE = 2000
DIFF_WINDOW = 5000       # lines of each stream diffed, from just before the first difference
DIFF_LINE_MAX = 1000     # characters of one diff line kept
LINE_WIDTH = 200         # characters of one printed diff line

USAGE = f"""\
usage: {PROG} [-n RUNS] [--normalize REGEX]... [--json FILE] [--junit FILE]
                          [--timeout SECONDS] -- CMD [ARGS...]

Runs CMD unpatched and with libgreenshim.so preloaded, alternating, RUNS times
each; compares exit status, stdout and stderr; prints wall time, CPU time,
peak RSS and peak OS threads (median, min-max, patched/unpatched ratio).

  -n RUNS             runs of each kind (default 3)
  --normalize REGEX   replace matches (Python re, bytes, MULTILINE) with {PLACEHOLDER.decode()}
                      in stdout and stderr before comparing; repeatable
  --json FILE         write every figure, the medians, ratios and verdict as JSON
  --junit FILE        write JUnit XML: one testcase each for exit status, stdout, stderr
  --timeout SECONDS   kill a run (its process group) after this long; a
                      difference (default 600)

stdin is /dev/null. Exit status: 0 same behaviour, 1 different, 2 usage error."""


class UsageError(Exception):
    pass


class Terminated(Exception):
    """SIGTERM or SIGHUP: kill the run under way, as for ^C."""


# ---------------------------------------------------------------- arguments

def parse_args(argv):
    opts = {"lib": None, "runs": 3, "normalize": [], "json": None, "junit": None,
            "timeout": 600.0}
    i = 0

    def value(name):
        nonlocal i
        if i + 1 >= len(argv):
            raise UsageError(f"{name} needs a value")
        i += 1
        return argv[i]

    while i < len(argv):
        a = argv[i]
        name, eq, inline = a.partition("=") if a.startswith("--") else (a, "", "")
        if a == "--":
            i += 1
            break
        if a in ("-h", "--help"):
            try:
                print(USAGE)
            except BrokenPipeError:
                pass
            sys.exit(0)
        if not a.startswith("-") or a == "-":
            break
        if a.startswith("-n") and not a.startswith("--"):
            v = a[2:] or value("-n")
            opts["runs"] = v
        elif name == "--runs":
            opts["runs"] = inline if eq else value(name)
        elif name in ("--normalize", "--json", "--junit", "--timeout", "--lib"):
            v = inline if eq else value(name)
            key = name[2:]
            if key == "normalize":
                opts[key].append(v)
            else:
                opts[key] = v
        else:
            raise UsageError(f"unknown option {a} (see greenrun --compare --help)")
        i += 1
    cmd = argv[i:]

    try:
        runs = int(opts["runs"])
        if runs < 1 or runs > 1000:
            raise ValueError
    except ValueError:
        raise UsageError(f"-n {opts['runs']}: expected a whole number of runs, 1 to 1000")
    opts["runs"] = runs

    try:
        t = float(opts["timeout"])
        if not (0 < t < 1e7):
            raise ValueError
    except ValueError:
        raise UsageError(f"--timeout {opts['timeout']}: expected a positive number of seconds")
    opts["timeout"] = t

    pats = []
    for r in opts["normalize"]:
        try:
            pats.append(re.compile(os.fsencode(r), re.M))
        except re.error as e:
            raise UsageError(f"--normalize {r!r}: bad regular expression: {e}")
    opts["patterns"] = pats

    for key in ("json", "junit"):
        f = opts[key]
        if f is None:
            continue
        d = os.path.dirname(os.path.abspath(f))
        if os.path.isdir(f):
            raise UsageError(f"--{key} {f}: is a directory")
        if not os.path.isdir(d) or not os.access(d, os.W_OK):
            raise UsageError(f"--{key} {f}: cannot write in {d}")

    lib = opts["lib"]
    if not lib:
        raise UsageError("no library given (run this through scripts/greenrun --compare)")
    if not os.path.isfile(lib):
        raise UsageError(f"{lib}: no such library")
    opts["lib"] = os.path.abspath(lib)

    if not cmd:
        raise UsageError(f"no command given (usage: {PROG} [options] -- CMD [ARGS...])")
    prog = cmd[0]
    found = prog if "/" in prog else shutil.which(prog)
    if not found or not os.path.isfile(found) or not os.access(found, os.X_OK):
        raise UsageError(f"{prog}: command not found" if "/" not in prog
                         else f"{prog}: no such executable")
    opts["cmd"] = cmd
    return opts


# ---------------------------------------------------------------- environment

def is_greenshim(entry, lib):
    return entry and (entry == lib or os.path.basename(entry) == "libgreenshim.so"
                      or os.path.realpath(entry) == os.path.realpath(lib))


def run_envs(lib):
    """The unpatched environment (without libgreenshim.so) and the patched
    LD_PRELOAD value (the same, with the library added)."""
    base = dict(os.environ)
    keep = [e for e in re.split(r"[: ]+", base.get("LD_PRELOAD", "")) if e and not is_greenshim(e, lib)]
    if keep:
        base["LD_PRELOAD"] = ":".join(keep)
    else:
        base.pop("LD_PRELOAD", None)
    return base, ":".join(keep + [lib])


# ---------------------------------------------------------------- one run

def proc_threads(pid):
    """Threads of pid plus those of its descendants (children listed by the
    main thread of each process: /proc/P/task/P/children)."""
    total, todo, seen = 0, [pid], set()
    while todo:
        p = todo.pop()
        if p in seen:
            continue
        seen.add(p)
        try:
            with open(f"/proc/{p}/status", "rb") as f:
                for line in f:
                    if line.startswith(b"Threads:"):
                        total += int(line.split()[1])
                        break
        except (OSError, ValueError):
            continue
        try:
            with open(f"/proc/{p}/task/{p}/children", "rb") as f:
                todo.extend(int(c) for c in f.read().split())
        except (OSError, ValueError):
            pass
    return total


def exited(pid):
    """True once pid has terminated; it stays a zombie (WNOWAIT): its pid and
    process group id cannot be reused until it is reaped."""
    try:
        return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except ChildProcessError:
        return True


def kill_group(pid):
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


class Run:
    def __init__(self, index, kind, kind_index):
        self.index, self.kind, self.kind_index = index, kind, kind_index
        self.label = f"{kind} run {kind_index}"


class Launcher:
    """Starts the command so that wait4's ru_maxrss is the command's own.

    Linux carries a process's peak RSS across execve, so a command forked
    straight from this python would report at least this python's ~12 MiB.
    Instead this process becomes a child subreaper and starts
    `setsid --fork env [LD_PRELOAD=...] CMD`: setsid (small) forks the command's
    process, which is a child of setsid's fresh small image, and exits; the
    command's process is handed to us, in a session of its own, and is waited
    for with wait4. Without setsid or prctl, the command is forked directly and
    peak RSS has this python's size as a floor (said in the output)."""

    def __init__(self):
        self.setsid = shutil.which("setsid")
        self.env = "/usr/bin/env" if os.access("/usr/bin/env", os.X_OK) else shutil.which("env")
        self.subreaper = False
        if self.setsid and self.env:
            try:
                import ctypes
                libc = ctypes.CDLL(None, use_errno=True)
                PR_SET_CHILD_SUBREAPER = 36
                self.subreaper = libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
            except (ImportError, OSError, AttributeError):
                self.subreaper = False
        self.floor_kib = None
        if not self.subreaper:
            self.floor_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

    @staticmethod
    def children():
        me = os.getpid()
        try:
            with open(f"/proc/{me}/task/{me}/children", "rb") as f:
                return {int(c) for c in f.read().split()}
        except OSError:
            return set()

    def start(self, cmd, env_u, preload, out, err):
        """Returns the pid of the command's process, a child of this one.
        preload: None (unpatched) or the patched LD_PRELOAD value."""
        via_setsid = self.subreaper and "=" not in cmd[0]
        if via_setsid:
            argv = [self.setsid, "--fork", self.env, "--"]
            argv += [f"LD_PRELOAD={preload}"] if preload is not None else []
            argv += cmd
            env = env_u
            before = self.children()
        else:
            argv, env = cmd, dict(env_u, LD_PRELOAD=preload) if preload is not None else env_u
        # python ignores SIGPIPE and SIGXFSZ: the command gets the defaults
        pid = os.posix_spawnp(argv[0], argv, env, setsid=True, setsigmask=(), setsigdef=(
            signal.SIGINT, signal.SIGQUIT, signal.SIGPIPE, signal.SIGTERM, signal.SIGXFSZ,
            signal.SIGCHLD), file_actions=[
            (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
            (os.POSIX_SPAWN_DUP2, out.fileno(), 1),
            (os.POSIX_SPAWN_DUP2, err.fileno(), 2)])
        if not via_setsid:
            return pid
        _, status = os.waitpid(pid, 0)
        new = self.children() - before
        if status != 0 or len(new) != 1:
            for p in new:
                kill_group(p)
            raise RuntimeError(f"setsid --fork did not start the command (status {status}, "
                               f"new children {sorted(new)})")
        pid = new.pop()
        # setsid's child calls setsid() after its parent may have exited: wait
        # for it, so that its process group can be killed by its pid
        limit = time.monotonic() + 5
        while session_of(pid) not in (pid, None) and time.monotonic() < limit:
            time.sleep(0.0002)
        return pid

    def reap_orphans(self):
        """Descendants the command left behind come to us (subreaper): reap
        the dead ones."""
        while True:
            try:
                pid, _ = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return


def session_of(pid):
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
        return int(stat[stat.rindex(b")") + 2:].split()[3])
    except (OSError, ValueError, IndexError):
        return None


def run_once(run, cmd, env_u, preload, timeout, current, launcher):
    out = tempfile.TemporaryFile()
    err = tempfile.TemporaryFile()
    start = time.monotonic()  # includes starting setsid (~1 ms), in both kinds of run
    pid = launcher.start(cmd, env_u, preload, out, err)
    current[0] = pid
    pidfd = None
    try:
        pidfd = os.pidfd_open(pid)
        poller = select.poll()
        poller.register(pidfd, select.POLLIN)
    except (AttributeError, OSError):
        poller = None
    peak, samples, timed_out = 0, 0, False
    deadline = start + timeout
    try:
        while True:
            if exited(pid):
                break
            peak = max(peak, proc_threads(pid))
            samples += 1
            now = time.monotonic()
            if now >= deadline:
                timed_out = True
                break
            wait = min(SAMPLE_INTERVAL, deadline - now)
            if poller is not None:
                poller.poll(max(1, int(wait * 1000)))
            else:
                time.sleep(wait)
        wall = time.monotonic() - start
        kill_group(pid)  # a timed-out run, and whatever the command left behind
        _, status, ru = os.wait4(pid, 0)
        current[0] = None  # (left set on ^C: main kills its group)
    finally:
        if pidfd is not None:
            os.close(pidfd)
    launcher.reap_orphans()
    run.wall = wall
    run.cpu_user, run.cpu_sys = ru.ru_utime, ru.ru_stime
    run.cpu = ru.ru_utime + ru.ru_stime
    run.rss_kib = ru.ru_maxrss
    run.threads = peak
    run.samples = samples
    run.timed_out = timed_out
    run.status = status
    run.code = os.WEXITSTATUS(status) if os.WIFEXITED(status) else None
    run.signal = os.WTERMSIG(status) if os.WIFSIGNALED(status) else None
    out.seek(0)
    err.seek(0)
    run.stdout, run.stderr = out.read(), err.read()
    out.close()
    err.close()
    return run


def status_text(run, timeout):
    if run.timed_out:
        return f"timed out after {fmt_num(timeout)} s (killed)"
    if run.signal is not None:
        try:
            name = signal.Signals(run.signal).name
        except ValueError:
            name = "?"
        return f"killed by signal {run.signal} ({name})"
    return f"exit {run.code}"


# ---------------------------------------------------------------- comparison

def normalize(data, patterns):
    for p in patterns:
        data = p.sub(PLACEHOLDER, data)
    return data


CONTROL = {c: f"\\x{c:02x}" for c in range(32) if c not in (9, 10)}
CONTROL[127] = "\\x7f"


def show_lines(data):
    text = data.decode("utf-8", "replace").translate(CONTROL)
    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()
    else:
        lines.append("\\ No newline at end of file")
    return lines


def unified(a, b, a_name, b_name):
    """Unified diff lines of two byte strings: from a little before the first
    differing line, at most DIFF_WINDOW lines of each, each line cut to
    DIFF_LINE_MAX characters, at most DIFF_LINES_FILE diff lines."""
    a_lines, b_lines = show_lines(a), show_lines(b)
    same = 0
    for x, y in zip(a_lines, b_lines):
        if x != y:
            break
        same += 1
    start = max(0, same - 3)
    a_w, b_w = a_lines[start:start + DIFF_WINDOW], b_lines[start:start + DIFF_WINDOW]
    cut = lambda ls: [l if len(l) <= DIFF_LINE_MAX else l[:DIFF_LINE_MAX] + " ..." for l in ls]
    diff = list(difflib.unified_diff(cut(a_w), cut(b_w), a_name, b_name, lineterm="", n=2))

    def renumber(m):  # hunk headers count from the start of the window
        def side(sign, first, count):
            first = int(first) + (start if int(first) or count != ",0" else 0)
            return f"{sign}{first}{count or ''}"
        return f"@@ {side('-', m[1], m[2])} {side('+', m[3], m[4])} @@"
    diff = [re.sub(r"^@@ -(\d+)(,\d+)? \+(\d+)(,\d+)? @@", renumber, l) if l.startswith("@@") else l
            for l in diff]
    if max(len(a_lines), len(b_lines)) > start + DIFF_WINDOW:
        diff.append(f"... (compared lines {start + 1} to {start + DIFF_WINDOW} only)")
    more = len(diff) - DIFF_LINES_FILE
    if more > 0:
        diff = diff[:DIFF_LINES_FILE] + [f"... {more} more diff lines"]
    return diff


def compare(runs, patterns, timeout):
    """Per aspect: {'same', 'detail', 'diff' (list of lines, untruncated up to
    DIFF_LINES_FILE)}, against the first unpatched run."""
    ref = runs[0]
    aspects = {}
    # exit status
    bad = [r for r in runs if r.timed_out]
    if bad:
        r = bad[0]
        labels = [b.label for b in bad]
        detail = (", ".join(labels[:-1]) + " and " if len(labels) > 1 else "") + labels[-1]
        detail += f" timed out after {fmt_num(timeout)} s (killed)"
        diff = ([f"--- exit status, {ref.label}", f"+++ exit status, {r.label}",
                 f"-{status_text(ref, timeout)}", f"+{status_text(r, timeout)}"]
                if r is not ref else [f"{ref.label}: {status_text(ref, timeout)}"])
        aspects["exit status"] = {"same": False, "detail": detail, "run": r, "diff": diff}
    else:
        aspects["exit status"] = diff_aspect(
            runs, "exit status", lambda r: status_text(r, timeout).encode() + b"\n")
    for stream in ("stdout", "stderr"):
        aspects[stream] = diff_aspect(runs, stream, lambda r: normalize(getattr(r, stream), patterns))
    return aspects


def diff_aspect(runs, name, get):
    ref = runs[0]
    want = get(ref)
    differing = [r for r in runs[1:] if get(r) != want]
    if not differing:
        return {"same": True, "detail": f"every run as {ref.label}", "run": None, "diff": []}
    # show a patched run if one differs; say if the unpatched ones disagree
    patched = [r for r in differing if r.kind == "patched"]
    unpatched = [r for r in differing if r.kind == "unpatched"]
    r = (patched or unpatched)[0]
    detail = f"{r.label} differs from {ref.label}"
    if len(patched) > 1:
        detail += (f"; so do {len(patched) - 1} other patched runs" if len(patched) > 2
                   else "; so does the other patched run" if len(runs) == 4
                   else "; so does 1 other patched run")
    if unpatched:
        detail += ("; the unpatched runs differ among themselves"
                   + (" too" if patched else "") + " (varying output: --normalize?)")
    diff = unified(want, get(r), f"{name}, {ref.label}", f"{name}, {r.label}")
    return {"same": False, "detail": detail, "run": r, "diff": diff}


# ---------------------------------------------------------------- figures

FIGURES = [  # key, label, run attribute
    ("wall_s", "wall time", "wall"),
    ("cpu_s", "CPU time (user+sys)", "cpu"),
    ("max_rss_kib", "peak RSS", "rss_kib"),
    ("peak_threads", "peak OS threads (*)", "threads"),
]


def fmt_num(x):
    return f"{x:g}"


def summary(values):
    if not values:
        return None
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def unit_for(key, values):
    """(scale, suffix, decimals) giving one unit for the whole row."""
    top = max(values) if values else 0
    if key in ("wall_s", "cpu_s"):
        if top < 0.1:
            return (1000, " ms", 1)
        if top < 1:
            return (1000, " ms", 0)
        return (1, " s", 3) if top < 10 else (1, " s", 2)
    if key == "max_rss_kib":
        return (1, " KiB", 0) if top < 10240 else (1 / 1024, " MiB", 1)
    return (1, "", 0)


def figures(runs):
    out = {}
    for key, _, attr in FIGURES:
        u = [getattr(r, attr) for r in runs if r.kind == "unpatched"]
        p = [getattr(r, attr) for r in runs if r.kind == "patched"]
        su, sp = summary(u), summary(p)
        ratio = None
        if su and sp and su["median"]:
            ratio = sp["median"] / su["median"]
        out[key] = {"unpatched": su, "patched": sp, "ratio": ratio}
    return out


def table(figs, runs, dash):
    """Rows of: figure, then median (min-max) unpatched and patched, ratio."""
    rows = []
    for key, label, attr in FIGURES:
        f = figs[key]
        scale, suffix, dec = unit_for(key, [getattr(r, attr) for r in runs])
        row = [label]
        for kind in ("unpatched", "patched"):
            s = f[kind]
            if not s:
                row += ["-", ""]
                continue
            v = lambda x: f"{x * scale:.{dec}f}"
            row += [v(s["median"]) + suffix, f"({v(s['min'])}{dash}{v(s['max'])})"]
        r = f["ratio"]
        row.append("n/a" if r is None else f"{r:.2f}")
        rows.append(row)
    w = [max(len(row[i]) for row in rows) for i in range(6)]
    cw = [w[1] + 2 + w[2], w[3] + 2 + w[4]]  # the two value columns
    cw = [max(c, len("median (min" + dash + "max)")) for c in cw]
    wr = max(w[5], len("unpatched"))
    lines = [
        "  " + "".ljust(w[0]) + "   " + "unpatched".ljust(cw[0]) + "   " + "patched".ljust(cw[1])
        + "   " + "patched/".rjust(wr),
        "  " + "".ljust(w[0]) + "   " + ("median (min" + dash + "max)").ljust(cw[0]) + "   "
        + ("median (min" + dash + "max)").ljust(cw[1]) + "   " + "unpatched".rjust(wr),
    ]
    for row in rows:
        cells = [(row[1].rjust(w[1]) + "  " + row[2].ljust(w[2])).ljust(cw[0]),
                 (row[3].rjust(w[3]) + "  " + row[4].ljust(w[4])).ljust(cw[1])]
        lines.append("  " + row[0].ljust(w[0]) + "   " + cells[0] + "   " + cells[1]
                     + "   " + row[5].rjust(wr))
    return [l.rstrip() for l in lines]


# ---------------------------------------------------------------- reports

def write_json(path, opts, runs, figs, aspects, verdict, skipped):
    def run_dict(r):
        return {
            "index": r.index, "kind": r.kind, "kind_index": r.kind_index,
            "exit": {"code": r.code, "signal": r.signal, "timed_out": r.timed_out,
                     "text": status_text(r, opts["timeout"])},
            "wall_s": r.wall, "cpu_user_s": r.cpu_user, "cpu_sys_s": r.cpu_sys, "cpu_s": r.cpu,
            "max_rss_kib": r.rss_kib, "peak_threads": r.threads, "thread_samples": r.samples,
            "stdout_bytes": len(r.stdout), "stderr_bytes": len(r.stderr),
            "stdout_sha256": hashlib.sha256(r.stdout).hexdigest(),
            "stderr_sha256": hashlib.sha256(r.stderr).hexdigest(),
        }
    doc = {
        "command": opts["cmd"],
        "library": opts["lib"],
        "runs_each": opts["runs"],
        "runs_skipped": skipped,
        "timeout_s": opts["timeout"],
        "normalize": opts["normalize"],
        "placeholder": PLACEHOLDER.decode(),
        "thread_sampling_interval_s": SAMPLE_INTERVAL,
        "runs": [run_dict(r) for r in runs],
        "figures": figs,
        "verdict": {
            "same": verdict[0],
            "text": verdict[1],
            "aspects": {name.replace(" ", "_"): {"same": a["same"], "detail": a["detail"],
                                                 "diff": "\n".join(a["diff"])}
                        for name, a in aspects.items()},
        },
    }
    with open(path, "w") as f:
        json.dump(doc, f, indent=2)
        f.write("\n")


def write_junit(path, opts, runs, aspects, report_text):
    total = sum(r.wall for r in runs)
    failures = sum(1 for a in aspects.values() if not a["same"])
    suites = ET.Element("testsuites", name=PROG, tests=str(len(aspects)), failures=str(failures),
                        errors="0", time=f"{total:.3f}")
    suite = ET.SubElement(suites, "testsuite", name=PROG, tests=str(len(aspects)),
                          failures=str(failures), errors="0", skipped="0", time=f"{total:.3f}",
                          timestamp=time.strftime("%Y-%m-%dT%H:%M:%S"))
    props = ET.SubElement(suite, "properties")
    for k, v in (("command", shlex.join(opts["cmd"])), ("library", opts["lib"]),
                 ("runs_each", str(opts["runs"])), ("normalize", " ".join(opts["normalize"]))):
        ET.SubElement(props, "property", name=k, value=v)
    for name, a in aspects.items():
        case = ET.SubElement(suite, "testcase", classname="greenrun.compare", name=name,
                             time=f"{total / max(1, len(aspects)):.3f}")
        if not a["same"]:
            fail = ET.SubElement(case, "failure", message=f"{name}: {a['detail']}", type="difference")
            fail.text = "\n".join(a["diff"]) + "\n"
    ET.SubElement(suite, "system-out").text = report_text
    tree = ET.ElementTree(suites)
    if hasattr(ET, "indent"):  # python 3.9+
        ET.indent(tree)
    tree.write(path, encoding="utf-8", xml_declaration=True)


class Progress:
    def __init__(self):
        self.tty = sys.stderr.isatty()
        self.width = 0

    def show(self, text):
        if self.tty:
            sys.stderr.write("\r" + text.ljust(self.width))
            self.width = len(text)
        else:
            sys.stderr.write(text + "\n")
        sys.stderr.flush()

    def done(self):
        if self.tty and self.width:
            sys.stderr.write("\r" + " " * self.width + "\r")
            sys.stderr.flush()


# ---------------------------------------------------------------- main

def main(argv):
    try:
        opts = parse_args(argv)
    except UsageError as e:
        print(f"{PROG}: {e}", file=sys.stderr)
        return 2
    cmd, n, timeout = opts["cmd"], opts["runs"], opts["timeout"]
    def terminated(signum, frame):
        raise Terminated()
    for sig in (signal.SIGTERM, signal.SIGHUP):
        if signal.getsignal(sig) != signal.SIG_IGN:
            signal.signal(sig, terminated)
    env_u, preload = run_envs(opts["lib"])
    launcher = Launcher()
    current = [None]
    progress = Progress()
    runs = []
    total = 2 * n
    try:
        for i in range(total):
            kind = "unpatched" if i % 2 == 0 else "patched"
            run = Run(i + 1, kind, i // 2 + 1)
            progress.show(f"{PROG}: run {i + 1}/{total} ({kind} {run.kind_index}/{n})...")
            runs.append(run_once(run, cmd, env_u, preload if kind == "patched" else None, timeout,
                                 current, launcher))
            # after a timeout, stop once both kinds have run
            if any(r.timed_out for r in runs) and len(runs) >= 2:
                break
    except (OSError, RuntimeError) as e:
        progress.done()
        print(f"{PROG}: cannot start {cmd[0]}: {e}", file=sys.stderr)
        return 2
    except (KeyboardInterrupt, Terminated):
        if current[0] is not None:
            kill_group(current[0])
            try:
                os.waitpid(current[0], 0)
            except ChildProcessError:
                pass
        progress.done()
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    progress.done()
    skipped = total - len(runs)

    dash = "\u2013" if (sys.stdout.encoding or "").lower().replace("-", "") == "utf8" else "-"
    figs = figures(runs)
    aspects = compare(runs, opts["patterns"], timeout)
    differing = [name for name, a in aspects.items() if not a["same"]]
    same = not differing

    out = []
    out.append(f"{PROG}: {shlex.join(cmd)}")
    out.append(f"{n} run{'s' if n > 1 else ''} of each, alternating; patched: LD_PRELOAD+={opts['lib']}"
               + (f"; {len(opts['patterns'])} --normalize pattern(s)" if opts["patterns"] else ""))
    if skipped:
        out.append(f"a run timed out after {fmt_num(timeout)} s: the {skipped} remaining "
                   f"run{'s were' if skipped > 1 else ' was'} skipped")
    out.append("")
    out.extend(table(figs, runs, dash))
    out.append(f"  (*) sampled every {SAMPLE_INTERVAL * 1000:g} ms from /proc/PID/status, summed over the command"
               " and its children")
    out.append("  CPU time, peak RSS: wait4 rusage of the command and the children it waited for"
               + (f"; peak RSS floor: {launcher.floor_kib} KiB (no setsid --fork)" if launcher.floor_kib else ""))
    out.append("")
    ref = runs[0]
    for name, a in aspects.items():
        if not a["same"]:
            out.append(f"  {name + ':':13} DIFFERENT ({a['detail']})")
            continue
        if name == "exit status":
            what = status_text(ref, timeout)
        else:
            size = len(normalize(getattr(ref, name), opts["patterns"]))
            what = f"{size} byte{'' if size == 1 else 's'}" + (" after --normalize" if opts["patterns"] else "")
        out.append(f"  {name + ':':13} same in every run ({what})")
    out.append("")
    if same:
        verdict = "same behaviour"
        out.append(verdict)
    else:
        verdict = "DIFFERENT: " + ", ".join(differing)
        out.append(verdict)
        # the exit status in one line, then a diff of the first differing stream
        ex = aspects["exit status"]
        streams = [s for s in ("stdout", "stderr") if not aspects[s]["same"]]
        first = streams[0] if streams else "exit status"
        if first != "exit status" and not ex["same"]:
            r = ex["run"]
            out.append(f"exit status: {ref.label}: {status_text(ref, timeout)}; "
                       f"{r.label}: {status_text(r, timeout)}" if r is not ref else
                       f"exit status: {ex['detail']}")
        diff = aspects[first]["diff"]
        shown = diff[:DIFF_LINES]
        for line in shown:
            out.append(line if len(line) <= LINE_WIDTH else line[:LINE_WIDTH] + " ...")
        if len(diff) > DIFF_LINES:
            out.append(f"... {len(diff) - DIFF_LINES} more diff lines"
                       + (" (more of them in the --json/--junit file)" if opts["json"] or opts["junit"] else ""))
        if len(streams) > 1:
            out.append(f"({streams[1]} differs too" + ("; see the --json/--junit file)"
                                                         if opts["json"] or opts["junit"] else ")"))
    text = "\n".join(out) + "\n"
    sys.stdout.write(text)
    sys.stdout.flush()

    try:
        if opts["json"]:
            write_json(opts["json"], opts, runs, figs, aspects, (same, verdict), skipped)
        if opts["junit"]:
            write_junit(opts["junit"], opts, runs, aspects, text)
    except OSError as e:
        print(f"{PROG}: cannot write report: {e}", file=sys.stderr)
        return 2
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
