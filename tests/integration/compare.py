#!/usr/bin/python3.11
"""Run a program unpatched and under scripts/greenrun; both must behave alike.

    compare.py [options] -- CMD [ARGS...]

Runs CMD once as it is (the reference) and once under greenrun (libgreenshim.so
preloaded), each with a timeout, and fails (exit 1, with a diff) unless both
runs exit with the same status and print the same stdout -- after the optional
normalisation (--sort, --sub), which is only for output whose order or details
legitimately vary from run to run.

With --server, a server program is started first (unpatched or under greenrun,
see --runs) and CMD is its client: the server must print a line matching
--ready (default "listening PORT") and "{port}" in CMD is replaced by that
port. --server-exits: the server must then exit by itself, and its later
stdout and its exit status are compared too; otherwise it is killed.

--tmpdir makes a scratch directory ("{tmp}" in any argument); --blob creates a
file of deterministic pseudo-random bytes in it (e.g. to serve over HTTP).

Every process this starts runs in its own session and is killed, with its
process group, by pid when it is no longer wanted. Stdlib only.
"""
import argparse
import difflib
import hashlib
import os
import random
import re
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_GREENRUN = os.path.normpath(os.path.join(HERE, "..", "..", "scripts", "greenrun"))


def log(msg):
    print(msg, flush=True)


class Failure(Exception):
    pass


def kill_group(proc):
    """Kills proc and its process group (it leads a session of its own)."""
    if proc.poll() is None:
        try:
            proc.kill()
        except ProcessLookupError:
            pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        pass


def unpatched_env():
    env = dict(os.environ)
    env.pop("LD_PRELOAD", None)
    return env


class Server:
    """A server process whose stdout is read line by line until it is ready."""

    def __init__(self, argv, ready_re, timeout, label):
        self.label = label
        # stderr goes to a file: a chatty server (http.server logs every
        # request there) must never block on a full pipe nobody reads.
        self.errfile = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=self.errfile, env=unpatched_env(),
                                     start_new_session=True)
        self.port = None
        self.before = b""  # stdout up to and including the ready line
        self.stderr = b""
        deadline = time.monotonic() + timeout
        buf = b""
        sel = selectors.DefaultSelector()
        sel.register(self.proc.stdout, selectors.EVENT_READ)
        try:
            while True:
                m = re.search(ready_re.encode(), buf, re.M)
                if m:
                    end = buf.index(b"\n", m.end()) + 1 if b"\n" in buf[m.end():] else len(buf)
                    self.before, self.rest = buf[:end], buf[end:]
                    self.port = int(m.group(1)) if m.groups() else None
                    break
                left = deadline - time.monotonic()
                if left <= 0:
                    raise Failure(f"{label}: server not ready after {timeout} s; stdout so far: {buf!r}")
                if not sel.select(left):
                    continue
                chunk = os.read(self.proc.stdout.fileno(), 65536)
                if not chunk:
                    self.proc.wait(timeout=5)
                    raise Failure(f"{label}: server exited with {self.proc.returncode} before it was "
                                  f"ready; stdout: {buf!r}; stderr: {self.read_stderr()!r}")
                buf += chunk
        except BaseException:
            self.stop()
            raise
        finally:
            sel.close()

    def shim_loaded(self):
        try:
            with open(f"/proc/{self.proc.pid}/maps") as f:
                return "libgreenshim" in f.read()
        except OSError:
            return None

    def finish(self, timeout):
        """Waits for the server to exit by itself: (status, rest of stdout)."""
        try:
            out, _ = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.stop()
            raise Failure(f"{self.label}: server did not exit within {timeout} s after its client")
        return self.proc.returncode, self.rest + out

    def read_stderr(self):
        try:
            self.errfile.seek(0)
            return self.errfile.read()
        except (OSError, ValueError):
            return b""

    def stop(self):
        kill_group(self.proc)
        if not self.errfile.closed:
            self.stderr = self.read_stderr()
            self.errfile.close()
        if self.proc.stdout:
            self.proc.stdout.close()


def run(argv, timeout, label):
    """Runs argv to completion: (status, stdout, stderr, seconds)."""
    t0 = time.monotonic()
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=unpatched_env(), start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_group(proc)
        out, err = proc.communicate()
        raise Failure(f"{label}: timed out after {timeout} s\n--- stdout:\n"
                      f"{out.decode(errors='replace')}\n--- stderr:\n{err.decode(errors='replace')}")
    finally:
        # Whatever it left behind in its process group goes too.
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    return proc.returncode, out, err, time.monotonic() - t0


def normalise(data, opts):
    if not (opts.sort or opts.sub):
        return data
    text = data.decode(errors="surrogateescape")
    for pattern, repl in opts.sub or []:
        text = re.sub(pattern, repl, text, flags=re.M)
    if opts.sort:
        lines = text.splitlines(keepends=True)
        if lines and not lines[-1].endswith("\n"):
            lines[-1] += "\n"
        text = "".join(sorted(lines))
    return text.encode(errors="surrogateescape")


def describe(data):
    return f"{len(data)} bytes, sha256 {hashlib.sha256(data).hexdigest()[:16]}"


def show(data, limit=4000):
    text = data.decode(errors="replace")
    return text if len(text) <= limit else text[:limit] + f"\n... ({len(text) - limit} more characters)"


def diff(a, b, la, lb, binary):
    if binary:
        return f"--- {la}: {describe(a)}\n+++ {lb}: {describe(b)}\n"
    d = difflib.unified_diff(a.decode(errors="replace").splitlines(keepends=True),
                             b.decode(errors="replace").splitlines(keepends=True), la, lb)
    return "".join(d)[:20000]


def make_blob(path, size):
    rng = random.Random(size)
    with open(path, "wb") as f:
        left = size
        while left:
            n = min(left, 1 << 16)
            f.write(rng.randbytes(n))
            left -= n


def subst(argv, mapping):
    out = []
    for a in argv:
        for k, v in mapping.items():
            a = a.replace("{" + k + "}", v)
        out.append(a)
    return out


def one_run(spec, opts, cmd, greenrun, mapping):
    """spec: 'C' (client only) or 'SC'; each letter u (unpatched) or p (greenrun)."""
    server_mode, client_mode = (spec[0], spec[1]) if opts.server else (None, spec[0])
    wrap = lambda mode, argv: ([greenrun, "--"] + argv) if mode == "p" else argv
    label = f"run '{spec}' (" + (f"server {'patched' if server_mode == 'p' else 'unpatched'}, "
                                 if server_mode else "") + \
        ("client " if server_mode else "") + f"{'patched' if client_mode == 'p' else 'unpatched'})"
    server = None
    result = {"label": label}
    try:
        m = dict(mapping)
        if opts.server:
            server = Server(wrap(server_mode, subst(opts.server, m)), opts.ready, opts.timeout, label)
            loaded = server.shim_loaded()
            if loaded is not None and loaded != (server_mode == "p"):
                raise Failure(f"{label}: libgreenshim.so is {'' if loaded else 'not '}mapped in the server")
            if server.port is not None:
                m["port"] = str(server.port)
        status, out, err, secs = run(wrap(client_mode, subst(cmd, m)), opts.timeout, label)
        result.update(status=status, out=out, err=err, secs=secs)
        if server:
            if opts.server_exits:
                sstatus, sout = server.finish(opts.timeout)
                result["out"] = out + b"--- server stdout after ready:\n" + sout + \
                    f"--- server status {sstatus}\n".encode()
    finally:
        if server:
            server.stop()
            result["server_err"] = server.stderr
    return result


def main():
    ap = argparse.ArgumentParser(usage="compare.py [options] -- CMD [ARGS...]",
                                 description=__doc__.split("\n\n")[0])
    ap.add_argument("--greenrun", default=DEFAULT_GREENRUN, help="the launcher (default: %(default)s)")
    ap.add_argument("--timeout", type=float, default=20.0, help="seconds allowed per process (default 20)")
    ap.add_argument("--sort", action="store_true", help="compare stdout with its lines sorted")
    ap.add_argument("--sub", nargs=2, action="append", metavar=("REGEX", "REPL"),
                    help="re.sub(REGEX, REPL) on stdout before comparing (multiline; repeatable)")
    ap.add_argument("--binary", action="store_true", help="stdout is binary: report sizes and hashes, not a diff")
    ap.add_argument("--server", action="append", metavar="ARG",
                    help="one argument of the server's command line (repeat: --server=PROG --server=ARG ...)")
    ap.add_argument("--ready", default=r"^listening (\d+)$",
                    help="regex on the server's stdout that says it is ready; group 1 is {port}")
    ap.add_argument("--server-exits", action="store_true",
                    help="the server exits by itself after the client; compare its stdout and status too")
    ap.add_argument("--runs", default=None,
                    help="comma-separated runs, u = unpatched, p = under greenrun; the first is the "
                         "reference (default 'u,p'; with --server 'uu,pu,up,pp': server then client)")
    ap.add_argument("--tmpdir", action="store_true", help="make a scratch directory, {tmp} in arguments")
    ap.add_argument("--blob", action="append", metavar="NAME:SIZE", default=[],
                    help="create {tmp}/NAME with SIZE pseudo-random bytes (implies --tmpdir)")
    ap.add_argument("--expect", metavar="FILE",
                    help="the reference stdout must also equal this file ({tmp} allowed)")
    ap.add_argument("--expect-status", type=int, default=None, help="the reference must exit with this status")
    ap.add_argument("--expect-regex", metavar="REGEX", help="the reference stdout must match this (re.search)")
    ap.add_argument("command", nargs=argparse.REMAINDER)
    opts = ap.parse_args()

    cmd = opts.command[1:] if opts.command[:1] == ["--"] else opts.command
    if not cmd:
        ap.error("no command given")
    runs = (opts.runs or ("uu,pu,up,pp" if opts.server else "u,p")).split(",")
    for r in runs:
        if len(r) != (2 if opts.server else 1) or set(r) - {"u", "p"}:
            ap.error(f"bad run {r!r} in --runs")

    greenrun = opts.greenrun
    if not os.access(greenrun, os.X_OK):
        ap.error(f"greenrun not found at {greenrun}")

    tmp = None
    mapping = {}
    try:
        if opts.tmpdir or opts.blob:
            tmp = tempfile.mkdtemp(prefix="greenshim-integration-")
            mapping["tmp"] = tmp
            for spec in opts.blob:
                name, _, size = spec.rpartition(":")
                make_blob(os.path.join(tmp, name), int(size))

        # Without the library actually loaded the comparison would prove nothing.
        status, maps, err, _ = run([greenrun, "--", "cat", "/proc/self/maps"], opts.timeout, "preflight")
        if status != 0 or b"libgreenshim" not in maps:
            raise Failure(f"greenrun does not preload libgreenshim.so (status {status}): {show(err)}")

        results = [one_run(spec, opts, cmd, greenrun, mapping) for spec in runs]
        ref = results[0]
        ok = True
        for r in results:
            log(f"{r['label']}: exit {r['status']}, stdout {describe(r['out'])}, {r['secs']:.2f} s")

        ref_out = normalise(ref["out"], opts)
        if opts.expect is not None:
            with open(subst([opts.expect], mapping)[0], "rb") as f:
                want = normalise(f.read(), opts)
            if ref_out != want:
                log(f"FAIL: the reference run's stdout is not {opts.expect}:\n" +
                    diff(want, ref_out, opts.expect, ref["label"], opts.binary))
                ok = False
        if opts.expect_status is not None and ref["status"] != opts.expect_status:
            log(f"FAIL: the reference run exited {ref['status']}, expected {opts.expect_status}")
            ok = False
        if opts.expect_regex and not re.search(opts.expect_regex.encode(), ref_out, re.M):
            log(f"FAIL: the reference run's stdout does not match {opts.expect_regex!r}")
            ok = False

        for r in results[1:]:
            out = normalise(r["out"], opts)
            if r["status"] != ref["status"]:
                log(f"FAIL: {r['label']} exited {r['status']}, the reference {ref['status']}")
                ok = False
            if out != ref_out:
                log(f"FAIL: {r['label']}: stdout differs from the reference:\n" +
                    diff(ref_out, out, ref["label"], r["label"], opts.binary))
                ok = False

        if not ok or os.environ.get("COMPARE_VERBOSE"):
            for r in results:
                log(f"=== {r['label']} stdout:\n{show(r['out']) if not opts.binary else describe(r['out'])}")
                log(f"=== {r['label']} stderr:\n{show(r['err'])}")
                if r.get("server_err"):
                    log(f"=== {r['label']} server stderr:\n{show(r['server_err'])}")
        else:
            log(f"stdout ({describe(ref_out)}):\n" + (show(ref_out, 1500) if not opts.binary else "(binary)"))
        if ok:
            log(f"OK: {len(results)} runs agree")
        return 0 if ok else 1
    except Failure as e:
        log(f"FAIL: {e}")
        return 1
    finally:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
