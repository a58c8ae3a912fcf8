"""A child process for the test drivers (tests/threads/echo_many.py,
tests/robustness/robustness.py): started in its own session, its stdout and
stderr read with deadlines, lines awaited instead of slept for.

Import with tests/lib on sys.path (each driver adds it)."""
import os
import re
import selectors
import signal
import subprocess
import time


class Failure(Exception):
    pass


class Proc:
    """A child in its own session whose stdout/stderr are read with deadlines."""

    def __init__(self, argv, label, env=None, stdin=False):
        self.label = label
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     start_new_session=True, env=env)
        self.pid = self.proc.pid
        self.out = b""
        self.err = b""
        self.sel = selectors.DefaultSelector()
        self.sel.register(self.proc.stdout, selectors.EVENT_READ, "out")
        self.sel.register(self.proc.stderr, selectors.EVENT_READ, "err")
        self.open_streams = 2

    def pump(self, timeout):
        """Reads what is available within timeout; False once both streams are at EOF."""
        if self.open_streams == 0:
            return False
        for key, _ in self.sel.select(timeout):
            chunk = os.read(key.fileobj.fileno(), 65536)
            if not chunk:
                self.sel.unregister(key.fileobj)
                self.open_streams -= 1
            elif key.data == "out":
                self.out += chunk
            else:
                self.err += chunk
        return True

    def describe(self):
        return f"stdout {self.out[-500:]!r}; stderr {self.err[-2000:]!r}"

    def wait_line(self, regex, timeout):
        """Waits for a whole stdout line matching regex; returns the match."""
        deadline = time.monotonic() + timeout
        pat = re.compile(regex.encode())
        while True:
            for line in self.out.split(b"\n")[:-1]:
                m = pat.fullmatch(line)
                if m:
                    return m
            left = deadline - time.monotonic()
            if left <= 0:
                raise Failure(f"{self.label}: no line matching {regex!r} in {timeout} s; {self.describe()}")
            if not self.pump(min(left, 0.5)) and self.proc.poll() is not None:
                raise Failure(f"{self.label}: exited {self.proc.returncode} before {regex!r}; {self.describe()}")

    def finish(self, timeout, on_tick=None):
        """Reads all output until EOF (on_tick() every 0.2 s at most), then waits for exit; the status."""
        deadline = time.monotonic() + timeout
        while self.open_streams:
            left = deadline - time.monotonic()
            if left <= 0:
                raise Failure(f"{self.label}: still running after {timeout} s; {self.describe()}")
            self.pump(min(0.2, left))
            if on_tick:
                on_tick()
        try:
            return self.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            raise Failure(f"{self.label}: closed its output but did not exit; {self.describe()}") from None

    def kill(self):
        if self.proc.poll() is None:
            try:
                os.kill(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
        self.sel.close()
        for f in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if f:
                try:
                    f.close()
                except OSError:
                    pass


def hubs():
    """The OS threads a patched process runs its greenlet threads on once it
    has made one (GREENSHIM_HUBS: the main thread's hub and the workers)."""
    v = os.environ.get("GREENSHIM_HUBS", "1")
    return len(os.sched_getaffinity(0)) if v == "auto" else int(v)


def spares():
    """The carrier OS threads a patched process may start besides its hubs
    (GREENSHIM_SPARES, stall.cpp): a greenlet thread that ran GREENSHIM_HANDOFF
    ms without waiting goes on on one (a server's accept loop draining a
    backlog of thousands does, on a loaded machine). auto: CPUs - 1, at least
    1; none when hand-off is off."""
    if os.environ.get("GREENSHIM_HANDOFF", "10") == "0":
        return 0
    v = os.environ.get("GREENSHIM_SPARES", "auto")
    if v != "auto":
        return int(v)
    return max(1, len(os.sched_getaffinity(0)) - 1)
