#!/usr/bin/env python3
"""greenrun --compare: run a command unpatched and patched, compare, measure.

    greenrun --compare [-n RUNS] [--normalize REGEX]... [--sort] [--ignore-stderr]
                       [--expect-status N] [--expect-stdout FILE]
                       [--server CMDLINE [--ready REGEX] [--server-exits]
                        [--patch server|client|both]]
                       [--json FILE] [--junit FILE] [--timeout SECONDS]
                       -- CMD [ARGS...]

scripts/greenrun finds the library and runs this file as
`python3 compare.py --lib LIB [options] -- CMD ...`.

CMD runs RUNS times as it is ("unpatched": the environment without
libgreenshim.so in LD_PRELOAD) and RUNS times with the library added to
LD_PRELOAD ("patched"), alternating, each in a session of its own, stdin from
/dev/null, stdout and stderr to temporary files. Every run must give the exit
status, stdout and stderr of the first unpatched run (after --normalize, which
replaces each match of REGEX with a placeholder in both, and --sort). Per run:
wall time, CPU time (user+sys from wait4's rusage: the process and the
children it waited for), peak RSS (ru_maxrss: the largest of them; the command
is started through `setsid --fork` so that this python's size is not counted,
see Launcher) and the peak number of OS threads, sampled every 5 ms from /proc.

With --server, every run first starts the server (patched or not, see
--patch) and waits until it is ready: a complete line of its stdout or stderr
matches --ready (group 1, if any, is the port), or without --ready, it (or a
child of it) listens on a TCP port. "{port}" in CMD's arguments is that port.
After CMD the server is stopped (SIGTERM to its process group, SIGKILL 2 s
later); it must still have been running, as in the first unpatched run. With
--server-exits it must exit by itself instead, and its exit status, stdout and
stderr (after the ready line) are compared too.

Exit status: 0 same behaviour (and as --expect-* says), 1 different, 2 usage
error or nothing to compare with (CMD cannot be started, the first unpatched
server is never ready). A run that exceeds --timeout is killed with its process
group and is a difference.
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
SERVER_GRACE = 2.0       # seconds between SIGTERM and SIGKILL when the server is stopped
PATCH_WHAT = {"both": "the server and the command", "server": "the server only",
              "client": "the command only"}
DIFF_LINES = 40          # diff lines printed (the JSON and JUnit files get more)
DIFF_LINES_FILE = 2000
DIFF_WINDOW = 5000       # lines of each stream diffed, from just before the first difference
DIFF_LINE_MAX = 1000     # characters of one diff line kept
LINE_WIDTH = 200         # characters of one printed diff line

USAGE = f"""\
usage: {PROG} [-n RUNS] [--normalize REGEX]... [--sort] [--ignore-stderr]
                          [--expect-status N] [--expect-stdout FILE]
                          [--server CMDLINE [--ready REGEX] [--server-exits]
                           [--patch server|client|both]]
                          [--json FILE] [--junit FILE] [--timeout SECONDS]
                          -- CMD [ARGS...]

Runs CMD unpatched and with libgreenshim.so preloaded, alternating, RUNS times
each; compares exit status, stdout and stderr; prints wall time, CPU time,
peak RSS and peak OS threads (median, min-max, patched/unpatched ratio).

  -n RUNS             runs of each kind (default 3)
  --normalize REGEX   replace matches (Python re, bytes, MULTILINE) with {PLACEHOLDER.decode()}
                      in stdout and stderr before comparing; repeatable
  --sort              compare stdout and stderr with their lines sorted (after
                      --normalize): for output whose order legitimately varies
  --ignore-stderr     compare exit status and stdout only (stderr that reports
                      timings or counts); a difference shows the end of stderr
  --expect-status N   the unpatched run must also exit with status N
  --expect-stdout FILE
                      the unpatched run's stdout must also be FILE's contents
                      (both after --normalize and --sort)
  --json FILE         write every figure, the medians, ratios and verdict as JSON
  --junit FILE        write JUnit XML: one testcase each for exit status, stdout,
                      stderr (and the server's, and each --expect-*)
  --timeout SECONDS   kill a run (its process group) after this long; a
                      difference (default 600). With --server: each of the
                      server's start, CMD, and the server's exit has this long

client and server (CMD is the client of a server started for each run):
  --server CMDLINE    the server's command line, split as a shell would (quotes,
                      backslashes), not run by one: use sh -c '...' for that
  --ready REGEX       the server is ready when a complete line of its stdout or
                      stderr matches REGEX (Python re); group 1, if any, is the
                      port. Default: when it (or a child) listens on a TCP port
  {{port}}              in CMD's arguments: the server's port
  --server-exits      the server exits by itself after CMD: its exit status,
                      stdout and stderr after the ready line are compared too.
                      Otherwise it is stopped after CMD (SIGTERM, SIGKILL 2 s
                      later) and must have been running until then
  --patch WHICH       what a patched run patches: both (default), server or client

stdin is /dev/null. Exit status: 0 same behaviour (and as expected), 1
different (or not as expected), 2 usage error, or CMD cannot be started, or
the first unpatched server is never ready."""


class UsageError(Exception):
    pass


class Terminated(Exception):
    """SIGTERM or SIGHUP: kill the run under way, as for ^C."""


# ---------------------------------------------------------------- arguments

VALUE_OPTIONS = ("--normalize", "--json", "--junit", "--timeout", "--lib", "--server", "--ready",
                 "--patch", "--expect-status", "--expect-stdout")
FLAG_OPTIONS = ("--sort", "--ignore-stderr", "--server-exits")


def parse_args(argv):
    opts = {"lib": None, "runs": 3, "normalize": [], "json": None, "junit": None,
            "timeout": 600.0, "server": None, "ready": None, "patch": None,
            "expect-status": None, "expect-stdout": None, "sort": False, "ignore-stderr": False,
            "server-exits": False}
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
        elif name in VALUE_OPTIONS:
            v = inline if eq else value(name)
            key = name[2:]
            if key == "normalize":
                opts[key].append(v)
            else:
                opts[key] = v
        elif name in FLAG_OPTIONS:
            if eq:
                raise UsageError(f"{name} takes no value")
            opts[name[2:]] = True
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

    if opts["expect-status"] is not None:
        v = opts["expect-status"]
        if not re.fullmatch(r"[0-9]{1,3}", v) or int(v) > 255:
            raise UsageError(f"--expect-status {v}: expected an exit status, 0 to 255")
        opts["expect-status"] = int(v)
    opts["expected stdout"] = None
    if opts["expect-stdout"] is not None:
        f = opts["expect-stdout"]
        try:
            with open(f, "rb") as fh:
                opts["expected stdout"] = fh.read()
        except OSError as e:
            raise UsageError(f"--expect-stdout {f}: cannot read it: {e.strerror}")

    parse_server(opts, cmd)

    lib = opts["lib"]
    if not lib:
        raise UsageError("no library given (run this through scripts/greenrun --compare)")
    if not os.path.isfile(lib):
        raise UsageError(f"{lib}: no such library")
    opts["lib"] = os.path.abspath(lib)

    if not cmd:
        raise UsageError(f"no command given (usage: {PROG} [options] -- CMD [ARGS...])")
    check_program(cmd[0], "")
    opts["cmd"] = cmd
    return opts


def check_program(prog, what):
    found = prog if "/" in prog else shutil.which(prog)
    if not found or not os.path.isfile(found) or not os.access(found, os.X_OK):
        raise UsageError(f"{what}{prog}: command not found" if "/" not in prog
                         else f"{what}{prog}: no such executable")


def parse_server(opts, cmd):
    """--server, --ready, --server-exits, --patch: opts["server"] becomes an
    argv list (or stays None), opts["ready"] a compiled pattern (or None)."""
    server = opts["server"]
    if server is None:
        for key in ("ready", "patch"):
            if opts[key] is not None:
                raise UsageError(f"--{key} goes with --server")
        if opts["server-exits"]:
            raise UsageError("--server-exits goes with --server")
        opts["patch"] = "client"  # a patched run patches CMD
        return
    try:
        argv = shlex.split(server)
    except ValueError as e:
        raise UsageError(f"--server {server!r}: {e}")
    if not argv:
        raise UsageError("--server: empty command line")
    check_program(argv[0], "--server: ")
    opts["server"] = argv
    if opts["patch"] is None:
        opts["patch"] = "both"
    if opts["patch"] not in PATCH_WHAT:
        raise UsageError(f"--patch {opts['patch']}: expected server, client or both")
    if opts["ready"] is not None:
        try:
            opts["ready"] = re.compile(os.fsencode(opts["ready"]), re.M)
        except re.error as e:
            raise UsageError(f"--ready {opts['ready']!r}: bad regular expression: {e}")
        if opts["ready"].groups < 1 and any("{port}" in a for a in cmd):
            raise UsageError("{port} in the command, but --ready has no group to take it from")


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

def descendants(pid):
    """pid and its descendants (children listed by the main thread of each
    process: /proc/P/task/P/children)."""
    todo, seen = [pid], set()
    while todo:
        p = todo.pop()
        if p in seen:
            continue
        seen.add(p)
        yield p
        try:
            with open(f"/proc/{p}/task/{p}/children", "rb") as f:
                todo.extend(int(c) for c in f.read().split())
        except (OSError, ValueError):
            pass


def proc_threads(pid):
    """Threads of pid plus those of its descendants."""
    total = 0
    for p in descendants(pid):
        try:
            with open(f"/proc/{p}/status", "rb") as f:
                for line in f:
                    if line.startswith(b"Threads:"):
                        total += int(line.split()[1])
                        break
        except (OSError, ValueError):
            continue
    return total


def listening_ports(pid):
    """The TCP ports on which pid or a descendant has a listening socket."""
    inodes = set()
    for p in descendants(pid):
        try:
            fds = os.listdir(f"/proc/{p}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                link = os.readlink(f"/proc/{p}/fd/{fd}")
            except OSError:
                continue
            if link.startswith("socket:["):
                inodes.add(link[8:-1].encode())
    ports = set()
    if not inodes:
        return ports
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table, "rb") as f:
                next(f, None)
                for line in f:
                    fields = line.split()
                    if len(fields) > 9 and fields[3] == b"0A" and fields[9] in inodes:  # 0A: LISTEN
                        ports.add(int(fields[1].rsplit(b":", 1)[1], 16))
        except (OSError, ValueError):
            pass
    return ports


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
        self.server = None  # with --server: a Proc
        self.server_failed = None  # why the server never got ready
        self.server_state = None  # the server after the command: Proc.state()


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


class Proc:
    """A process started by the launcher in a session of its own, stdout and
    stderr in temporary files; its figures once reaped."""

    def __init__(self, launcher, argv, env_u, preload, current):
        self.out = tempfile.TemporaryFile()
        self.err = tempfile.TemporaryFile()
        self.start = time.monotonic()  # includes starting setsid (~1 ms), in both kinds of run
        self.pid = launcher.start(argv, env_u, preload, self.out, self.err)
        current.append(self.pid)
        self.current = current
        self.peak, self.samples = 0, 0
        self.timed_out = False
        self.pidfd = None
        try:
            self.pidfd = os.pidfd_open(self.pid)
        except (AttributeError, OSError):
            pass

    def done(self):
        return exited(self.pid)

    def sample(self):
        self.peak = max(self.peak, proc_threads(self.pid))
        self.samples += 1

    def output(self, which):
        """What the process wrote so far to stdout (1) or stderr (2)."""
        f = self.out if which == 1 else self.err
        return os.pread(f.fileno(), os.fstat(f.fileno()).st_size, 0)

    def reap(self):
        """Kills what is left of its process group, waits for it, reads its output."""
        kill_group(self.pid)
        _, status, ru = os.wait4(self.pid, 0)
        self.wall = time.monotonic() - self.start
        self.current.remove(self.pid)  # (left there on ^C: main kills its group)
        if self.pidfd is not None:
            os.close(self.pidfd)
        self.status = status
        self.code = os.WEXITSTATUS(status) if os.WIFEXITED(status) else None
        self.signal = os.WTERMSIG(status) if os.WIFSIGNALED(status) else None
        self.cpu_user, self.cpu_sys = ru.ru_utime, ru.ru_stime
        self.cpu = ru.ru_utime + ru.ru_stime
        self.rss_kib = ru.ru_maxrss
        self.stdout, self.stderr = self.output(1), self.output(2)
        self.out.close()
        self.err.close()


def wait_until(cond, watched, sampled, deadline):
    """Samples the threads of `sampled` every SAMPLE_INTERVAL until cond()
    (True) or the deadline (False); wakes early when `watched` exits."""
    poller = None
    if watched.pidfd is not None:
        poller = select.poll()
        poller.register(watched.pidfd, select.POLLIN)
    while True:
        if cond():
            return True
        for p in sampled:
            p.sample()
        now = time.monotonic()
        if now >= deadline:
            return False
        wait = min(SAMPLE_INTERVAL, deadline - now)
        if poller is not None:
            poller.poll(max(1, int(wait * 1000)))
        else:
            time.sleep(wait)


class Ready:
    """Whether the server is ready: a complete line of its stdout or stderr
    matches the --ready pattern, or (without one) it listens on a TCP port."""

    def __init__(self, server, pattern):
        self.server, self.pattern = server, pattern
        self.port = None
        self.skip = {1: 0, 2: 0}  # per stream: bytes up to the end of the ready line
        self.line = None

    def __call__(self):
        if self.pattern is None:
            ports = listening_ports(self.server.pid)
            if ports:
                self.port = min(ports)
            return bool(ports)
        for which in (1, 2):
            data = self.server.output(which)
            for m in self.pattern.finditer(data):
                end = data.find(b"\n", max(m.start(), m.end() - 1))
                if end < 0:
                    break  # the line is not complete yet
                self.skip[which] = end + 1
                self.line = data[data.rfind(b"\n", 0, m.start()) + 1:end]
                if self.pattern.groups:
                    self.port = m.group(1)
                return True
        return False


def start_server(run, opts, env_u, preload, current, launcher):
    """Starts the server and waits until it is ready. Returns the port (or
    None), or sets run.server_failed."""
    timeout = opts["timeout"]
    server = Proc(launcher, opts["server"], env_u, preload, current)
    run.server = server
    ready = Ready(server, opts["ready"])
    ok = wait_until(lambda: ready() or server.done(), server, [server], server.start + timeout)
    if ok and ready():
        run.server_skip = ready.skip
        port = ready.port
        if isinstance(port, bytes):
            text = port.decode(errors="replace")
            if not re.fullmatch(r"[0-9]{1,5}", text) or not 0 < int(text) < 65536:
                run.server_failed = (f"its ready line {ready.line.decode(errors='replace')!r}: "
                                     f"group 1 is {text!r}, not a port")
                return None
            port = int(text)
        return port
    if ok:
        server.reap()
        run.server_failed = f"ended ({status_text(server, timeout)}) before it was ready"
    else:
        server.timed_out = True
        run.server_failed = (f"not ready after {fmt_num(timeout)} s (killed): " +
                             ("no line matched --ready" if opts["ready"] else "no listening TCP socket"))
    return None


def stop_server(run, opts):
    """After the command: the server must exit by itself (--server-exits) or
    still be running (then it is stopped)."""
    server, timeout = run.server, opts["timeout"]
    if opts["server-exits"]:
        if not wait_until(server.done, server, [server], time.monotonic() + timeout):
            server.timed_out = True
    elif server.done():
        run.server_state = "ended"
    else:
        run.server_state = "running"
        try:
            os.killpg(server.pid, signal.SIGTERM)
        except (ProcessLookupError, PermissionError):
            pass
        wait_until(server.done, server, [server], time.monotonic() + min(SERVER_GRACE, timeout))
    server.reap()


def run_once(run, opts, env_u, preload, current, launcher):
    """One run: with --server, the server until it is ready; the command; the
    server's end. preload: the patched LD_PRELOAD value, given to the server
    and the command as --patch says in a patched run."""
    timeout, cmd = opts["timeout"], opts["cmd"]
    patched = run.kind == "patched"
    server_preload = preload if patched and opts["patch"] in ("server", "both") else None
    client_preload = preload if patched and opts["patch"] in ("client", "both") else None
    if opts["server"]:
        port = start_server(run, opts, env_u, server_preload, current, launcher)
        if run.server_failed:
            if not hasattr(run.server, "status"):
                run.server.reap()
            for key in ("wall", "cpu_user", "cpu_sys", "cpu", "rss_kib", "threads", "samples"):
                setattr(run, key, 0)
            run.timed_out, run.stdout, run.stderr, run.status = False, b"", b"", None
            run.code = run.signal = None
            launcher.reap_orphans()
            return run
        if port is not None:
            cmd = [a.replace("{port}", str(port)) for a in cmd]
        run.port = port
    client = Proc(launcher, cmd, env_u, client_preload, current)
    sampled = [client] + ([run.server] if run.server else [])
    client.timed_out = not wait_until(client.done, client, sampled, client.start + timeout)
    client.reap()  # a timed-out run, and whatever the command left behind
    if run.server:
        stop_server(run, opts)
    launcher.reap_orphans()
    for key in ("wall", "cpu_user", "cpu_sys", "cpu", "rss_kib", "samples", "timed_out",
                "status", "code", "signal", "stdout", "stderr"):
        setattr(run, key, getattr(client, key))
    run.threads = client.peak
    return run


def status_text(run, timeout):
    """run: a Run or a Proc."""
    if getattr(run, "server_failed", None):
        return f"not run: the server {run.server_failed}"
    if run.timed_out:
        return f"timed out after {fmt_num(timeout)} s (killed)"
    if run.signal is not None:
        try:
            name = signal.Signals(run.signal).name
        except ValueError:
            name = "?"
        return f"killed by signal {run.signal} ({name})"
    return f"exit {run.code}"


def server_status_text(run, opts):
    server, timeout = run.server, opts["timeout"]
    if run.server_failed:
        return run.server_failed
    if opts["server-exits"]:
        if server.timed_out:
            return f"did not exit within {fmt_num(timeout)} s after the command (killed)"
        return status_text(server, timeout)
    if run.server_state == "running":
        return "running until stopped after the command"
    return f"ended before the command did ({status_text(server, timeout)})"


# ---------------------------------------------------------------- comparison

def normalize(data, opts):
    """--normalize, then --sort."""
    for p in opts["patterns"]:
        data = p.sub(PLACEHOLDER, data)
    if opts["sort"] and data:
        lines = data.split(b"\n")
        if lines[-1] == b"":
            lines.pop()
        data = b"\n".join(sorted(lines)) + b"\n"
    return data


def is_binary(data):
    return b"\0" in data


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


def difference(a, b, a_name, b_name):
    """Diff lines of two outputs: a unified diff, or for binary output (a NUL
    byte) the sizes, hashes and the first differing byte."""
    if not (is_binary(a) or is_binary(b)):
        return unified(a, b, a_name, b_name)
    first = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
    return [f"--- {a_name}: {len(a)} bytes, sha256 {hashlib.sha256(a).hexdigest()}",
            f"+++ {b_name}: {len(b)} bytes, sha256 {hashlib.sha256(b).hexdigest()}",
            f"binary output: the first difference is at byte {first}"]


def server_stream(run, which, opts):
    """The server's stdout (1) or stderr (2) after its ready line, normalized."""
    data = run.server.stdout if which == 1 else run.server.stderr
    return normalize(data[run.server_skip[which]:], opts)


def compare(runs, opts):
    """Per aspect: {'same', 'detail', 'diff' (list of lines, untruncated up to
    DIFF_LINES_FILE)}, against the first unpatched run."""
    timeout = opts["timeout"]
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
    for stream in ("stdout",) if opts["ignore-stderr"] else ("stdout", "stderr"):
        aspects[stream] = diff_aspect(runs, stream, lambda r: normalize(getattr(r, stream), opts))
    if opts["server"]:
        aspects["server exit status"] = diff_aspect(
            runs, "server exit status", lambda r: server_status_text(r, opts).encode() + b"\n")
        if opts["server-exits"]:
            started = [r for r in runs if not r.server_failed]
            for which, stream in ((1, "server stdout"), (2, "server stderr")):
                aspects[stream] = (diff_aspect(started, stream, lambda r: server_stream(r, which, opts))
                                   if started and started[0] is ref else
                                   {"same": True, "detail": "no server got ready", "run": None, "diff": []})
    return aspects


def expectations(ref, opts):
    """--expect-status and --expect-stdout, checked on the first unpatched run
    (the others must be the same as it): {name: aspect} as compare()."""
    out = {}
    if opts["expect-status"] is not None:
        want = f"exit {opts['expect-status']}"
        got = status_text(ref, opts["timeout"])
        out["expected exit status"] = (
            {"same": True, "detail": want, "run": None, "diff": []} if got == want else
            {"same": False, "detail": f"{ref.label}: {got}, expected {want}", "run": ref,
             "diff": [f"--- exit status, expected", f"+++ exit status, {ref.label}", f"-{want}", f"+{got}"]})
    if opts["expected stdout"] is not None:
        name = opts["expect-stdout"]
        want, got = normalize(opts["expected stdout"], opts), normalize(ref.stdout, opts)
        out["expected stdout"] = (
            {"same": True, "detail": name, "run": None, "diff": []} if got == want else
            {"same": False, "detail": f"{ref.label}: stdout is not {name}", "run": ref,
             "diff": difference(want, got, name, f"stdout, {ref.label}")})
    return out


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
                   + (" too" if patched else "") + " (varying output: --normalize or --sort?)")
    diff = difference(want, get(r), f"{name}, {ref.label}", f"{name}, {r.label}")
    return {"same": False, "detail": detail, "run": r, "diff": diff}


# ---------------------------------------------------------------- figures

FIGURES = [  # key, label, value of a run
    ("wall_s", "wall time", lambda r: r.wall),
    ("cpu_s", "CPU time (user+sys)", lambda r: r.cpu),
    ("max_rss_kib", "peak RSS", lambda r: r.rss_kib),
    ("peak_threads", "peak OS threads (*)", lambda r: r.threads),
]
SERVER_FIGURES = [  # with --server: the server's, from start to stop
    ("server_cpu_s", "server CPU time", lambda r: r.server.cpu),
    ("server_max_rss_kib", "server peak RSS", lambda r: r.server.rss_kib),
    ("server_peak_threads", "server peak OS threads (*)", lambda r: r.server.peak),
]


def figure_list(opts):
    return FIGURES + (SERVER_FIGURES if opts["server"] else [])


def fmt_num(x):
    return f"{x:g}"


def summary(values):
    if not values:
        return None
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def unit_for(key, values):
    """(scale, suffix, decimals) giving one unit for the whole row."""
    top = max(values) if values else 0
    if key.endswith(("wall_s", "cpu_s")):
        if top < 0.1:
            return (1000, " ms", 1)
        if top < 1:
            return (1000, " ms", 0)
        return (1, " s", 3) if top < 10 else (1, " s", 2)
    if key.endswith("max_rss_kib"):
        return (1, " KiB", 0) if top < 10240 else (1 / 1024, " MiB", 1)
    return (1, "", 0)


def figures(runs, opts):
    """Medians, min, max and ratios of the runs that ran (not those whose
    server never got ready)."""
    out = {}
    runs = [r for r in runs if not r.server_failed]
    for key, _, get in figure_list(opts):
        u = [get(r) for r in runs if r.kind == "unpatched"]
        p = [get(r) for r in runs if r.kind == "patched"]
        su, sp = summary(u), summary(p)
        ratio = None
        if su and sp and su["median"]:
            ratio = sp["median"] / su["median"]
        out[key] = {"unpatched": su, "patched": sp, "ratio": ratio}
    return out


def table(figs, runs, opts, dash):
    """Rows of: figure, then median (min-max) unpatched and patched, ratio."""
    rows = []
    runs = [r for r in runs if not r.server_failed]
    for key, label, get in figure_list(opts):
        f = figs[key]
        scale, suffix, dec = unit_for(key, [get(r) for r in runs])
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

def write_json(path, opts, runs, figs, aspects, expected, verdict, skipped):
    def server_dict(r):
        p = r.server
        return {"exit": server_status_text(r, opts), "port": getattr(r, "port", None),
                "cpu_s": getattr(p, "cpu", None), "max_rss_kib": getattr(p, "rss_kib", None),
                "peak_threads": p.peak, "thread_samples": p.samples,
                "stdout_bytes": len(p.stdout), "stderr_bytes": len(p.stderr)}

    def run_dict(r):
        d = {
            "index": r.index, "kind": r.kind, "kind_index": r.kind_index,
            "exit": {"code": r.code, "signal": r.signal, "timed_out": r.timed_out,
                     "text": status_text(r, opts["timeout"])},
            "wall_s": r.wall, "cpu_user_s": r.cpu_user, "cpu_sys_s": r.cpu_sys, "cpu_s": r.cpu,
            "max_rss_kib": r.rss_kib, "peak_threads": r.threads, "thread_samples": r.samples,
            "stdout_bytes": len(r.stdout), "stderr_bytes": len(r.stderr),
            "stdout_sha256": hashlib.sha256(r.stdout).hexdigest(),
            "stderr_sha256": hashlib.sha256(r.stderr).hexdigest(),
        }
        if r.server:
            d["server"] = server_dict(r)
        return d

    def aspect_dicts(aspects):
        return {name.replace(" ", "_"): {"same": a["same"], "detail": a["detail"], "diff": "\n".join(a["diff"])}
                for name, a in aspects.items()}
    doc = {
        "command": opts["cmd"],
        "server": opts["server"],
        "patch": opts["patch"] if opts["server"] else None,
        "sort": opts["sort"],
        "ignore_stderr": opts["ignore-stderr"],
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
            "as_expected": verdict[1],
            "text": verdict[2],
            "aspects": aspect_dicts(aspects),
            "expectations": aspect_dicts(expected),
        },
    }
    with open(path, "w") as f:
        json.dump(doc, f, indent=2)
        f.write("\n")


def write_junit(path, opts, runs, checks, report_text):
    """checks: the aspects compared and the expectations, a testcase each."""
    total = sum(r.wall for r in runs)
    failures = sum(1 for a in checks.values() if not a["same"])
    suites = ET.Element("testsuites", name=PROG, tests=str(len(checks)), failures=str(failures),
                        errors="0", time=f"{total:.3f}")
    suite = ET.SubElement(suites, "testsuite", name=PROG, tests=str(len(checks)),
                          failures=str(failures), errors="0", skipped="0", time=f"{total:.3f}",
                          timestamp=time.strftime("%Y-%m-%dT%H:%M:%S"))
    props = ET.SubElement(suite, "properties")
    for k, v in (("command", shlex.join(opts["cmd"])), ("library", opts["lib"]),
                 ("runs_each", str(opts["runs"])), ("normalize", " ".join(opts["normalize"])),
                 ("server", shlex.join(opts["server"]) if opts["server"] else "")):
        ET.SubElement(props, "property", name=k, value=v)
    for name, a in checks.items():
        case = ET.SubElement(suite, "testcase", classname="greenrun.compare", name=name,
                             time=f"{total / max(1, len(checks)):.3f}")
        if not a["same"]:
            kind = "unexpected" if name.startswith("expected ") else "difference"
            fail = ET.SubElement(case, "failure", message=f"{name}: {a['detail']}", type=kind)
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

def kill_all(pids):
    """Kills the process groups of the processes under way and reaps them."""
    for pid in pids:
        kill_group(pid)
        try:
            os.waitpid(pid, 0)
        except ChildProcessError:
            pass


def stalled(run):
    """A run after which the remaining ones are skipped: a timeout, or a server
    that never got ready."""
    return run.timed_out or run.server_failed or (run.server is not None and run.server.timed_out)


def tail(data, lines=20):
    text = data.decode(errors="replace").rstrip("\n").split("\n")
    return "\n".join("  " + l for l in text[-lines:]) if data else "  (nothing)"


def report_lines(runs, opts, aspects, expected):
    """The per-aspect lines, the verdict and the diffs: (lines, verdict)."""
    timeout = opts["timeout"]
    ref = runs[0]
    texts = {"exit status": lambda r: status_text(r, timeout),
             "server exit status": lambda r: server_status_text(r, opts)}
    streams = {"stdout": lambda r: normalize(r.stdout, opts), "stderr": lambda r: normalize(r.stderr, opts),
               "server stdout": lambda r: server_stream(r, 1, opts),
               "server stderr": lambda r: server_stream(r, 2, opts)}
    width = max(len(n) for n in list(aspects) + list(expected)) + 1
    after = " and ".join(o for o, on in (("--normalize", opts["patterns"]), ("--sort", opts["sort"])) if on)
    out = []
    for name, a in aspects.items():
        if not a["same"]:
            out.append(f"  {name + ':':{width}} DIFFERENT ({a['detail']})")
        elif name in texts:
            out.append(f"  {name + ':':{width}} same in every run ({texts[name](ref)})")
        elif name.startswith("server") and ref.server_failed:
            out.append(f"  {name + ':':{width}} {a['detail']}")
        else:
            size = len(streams[name](ref))
            out.append(f"  {name + ':':{width}} same in every run ({size} byte{'' if size == 1 else 's'}"
                       + (f" after {after}" if after else "") + ")")
    if opts["ignore-stderr"]:
        out.append(f"  {'stderr:':{width}} not compared (--ignore-stderr)")
    for name, a in expected.items():
        out.append(f"  {name + ':':{width}} " + (f"yes ({a['detail']})" if a["same"] else f"NO ({a['detail']})"))
    out.append("")
    differing = [n for n, a in aspects.items() if not a["same"]]
    unexpected = [n[len("expected "):] for n, a in expected.items() if not a["same"]]
    parts = (["DIFFERENT: " + ", ".join(differing)] if differing else []) + \
        (["NOT AS EXPECTED: " + ", ".join(unexpected)] if unexpected else [])
    verdict = "; ".join(parts) or "same behaviour"
    out.append(verdict)
    reports = bool(opts["json"] or opts["junit"])

    def show(diff):
        for line in diff[:DIFF_LINES]:
            out.append(line if len(line) <= LINE_WIDTH else line[:LINE_WIDTH] + " ...")
        if len(diff) > DIFF_LINES:
            out.append(f"... {len(diff) - DIFF_LINES} more diff lines"
                       + (" (more of them in the --json/--junit file)" if reports else ""))
    if differing:
        # each differing status in one line, then a diff of the first differing stream
        diff_streams = [n for n in differing if n in streams]
        for name in differing:
            if name in texts and diff_streams:
                r = aspects[name]["run"]
                out.append(f"{name}: {ref.label}: {texts[name](ref)}; {r.label}: {texts[name](r)}"
                           if r is not ref else f"{name}: {aspects[name]['detail']}")
        show(aspects[(diff_streams or differing)[0]]["diff"])
        if len(diff_streams) > 1:
            out.append(f"({', '.join(diff_streams[1:])} differ{'s' if len(diff_streams) == 2 else ''} too"
                       + ("; see the --json/--junit file)" if reports else ")"))
    for name, a in expected.items():
        if not a["same"]:
            out.append(f"{name}: {a['detail']}")
            if name != "expected exit status":  # (that line says it all)
                show(a["diff"])
    if opts["ignore-stderr"] and (differing or unexpected):
        # what the runs said on stderr may explain it
        shown = [ref] + [a["run"] for a in list(aspects.values()) + list(expected.values())
                         if not a["same"] and a["run"] is not None]
        for r in dict.fromkeys(shown):
            out.append(f"stderr of {r.label} (the end):\n{tail(r.stderr, 10)}")
    return out, verdict


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
    current = []  # pids of the processes under way (each leads its process group)
    progress = Progress()
    runs = []
    total = 2 * n
    try:
        for i in range(total):
            kind = "unpatched" if i % 2 == 0 else "patched"
            run = Run(i + 1, kind, i // 2 + 1)
            progress.show(f"{PROG}: run {i + 1}/{total} ({kind} {run.kind_index}/{n})...")
            runs.append(run_once(run, opts, env_u, preload, current, launcher))
            if runs[0].server_failed:
                break
            # after a timeout (or a server never ready), stop once both kinds have run
            if any(stalled(r) for r in runs) and len(runs) >= 2:
                break
    except (OSError, RuntimeError) as e:
        kill_all(current)  # e.g. the server of a command that could not start
        progress.done()
        what = f"{opts['server'][0]} or {cmd[0]}" if opts["server"] else cmd[0]
        print(f"{PROG}: cannot start {what}: {e}", file=sys.stderr)
        return 2
    except (KeyboardInterrupt, Terminated):
        kill_all(current)
        progress.done()
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    progress.done()
    ref = runs[0]
    if ref.server_failed:
        print(f"{PROG}: the server, unpatched, {ref.server_failed}; nothing to compare with\n"
              f"its stdout:\n{tail(ref.server.stdout)}\nits stderr:\n{tail(ref.server.stderr)}",
              file=sys.stderr)
        return 2
    skipped = total - len(runs)

    dash = "\u2013" if (sys.stdout.encoding or "").lower().replace("-", "") == "utf8" else "-"
    figs = figures(runs, opts)
    aspects = compare(runs, opts)
    expected = expectations(ref, opts)

    out = []
    out.append(f"{PROG}: {shlex.join(cmd)}")
    if opts["server"]:
        out.append(f"server: {shlex.join(opts['server'])}; patched runs patch {PATCH_WHAT[opts['patch']]}")
    out.append(f"{n} run{'s' if n > 1 else ''} of each, alternating; patched: LD_PRELOAD+={opts['lib']}"
               + (f"; {len(opts['patterns'])} --normalize pattern(s)" if opts["patterns"] else "")
               + ("; --sort" if opts["sort"] else "") + ("; --ignore-stderr" if opts["ignore-stderr"] else ""))
    if skipped:
        why = (f"timed out after {fmt_num(timeout)} s" if any(r.timed_out or (r.server and r.server.timed_out)
                                                             for r in runs)
               else "had a server that was never ready")
        out.append(f"a run {why}: the {skipped} remaining run{'s were' if skipped > 1 else ' was'} skipped")
    out.append("")
    out.extend(table(figs, runs, opts, dash))
    out.append(f"  (*) sampled every {SAMPLE_INTERVAL * 1000:g} ms from /proc/PID/status, summed over the "
               + ("process and its children" if opts["server"] else "command and its children"))
    out.append("  CPU time, peak RSS: wait4 rusage of the command and the children it waited for"
               + (f"; peak RSS floor: {launcher.floor_kib} KiB (no setsid --fork)" if launcher.floor_kib else ""))
    out.append("")
    lines, verdict = report_lines(runs, opts, aspects, expected)
    out.extend(lines)
    same = all(a["same"] for a in aspects.values())
    as_expected = all(a["same"] for a in expected.values())
    text = "\n".join(out) + "\n"
    sys.stdout.write(text)
    sys.stdout.flush()

    try:
        if opts["json"]:
            write_json(opts["json"], opts, runs, figs, aspects, expected, (same, as_expected, verdict), skipped)
        if opts["junit"]:
            write_junit(opts["junit"], opts, runs, {**aspects, **expected}, text)
    except OSError as e:
        print(f"{PROG}: cannot write report: {e}", file=sys.stderr)
        return 2
    return 0 if same and as_expected else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
