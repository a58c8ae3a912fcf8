"""scripts/gallery's driver: runs each program unpatched and patched, side by
side, and writes results.md, raw.txt and ratios.png. scripts/gallery installs
the packages and builds the library first; run that, not this file."""

import argparse
import ctypes
import datetime
import os
import pwd
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GREENRUN = os.path.join(ROOT, "scripts", "greenrun")
NCPU = os.cpu_count() or 1
SUBJECT_CPU, OTHER_CPU = ("0", "1") if NCPU >= 2 else ("0", "0")
SAMPLE_S = 0.005
HZ = os.sysconf("SC_CLK_TCK")


# ------------------------------------------------------------ processes ----

class Started:
    """A process the gallery started: a child of this one, in its own process
    group (whose id is its pid), with stdout and stderr in files."""

    def __init__(self, name, argv, tmp, env, cpu, user=None):
        self.name = name
        self.argv = argv
        self.out_path = os.path.join(tmp, f"{name}.out")
        self.err_path = os.path.join(tmp, f"{name}.err")
        out = open(self.out_path, "wb")
        err = open(self.err_path, "wb")
        full = (["taskset", "-c", cpu] if cpu is not None else []) + argv
        kw = {}
        if user:
            pw = pwd.getpwnam(user)
            kw = dict(user=pw.pw_uid, group=pw.pw_gid, extra_groups=[])
        self.start = time.monotonic()
        self.popen = subprocess.Popen(full, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                      env=env, start_new_session=True, cwd=tmp, **kw)
        out.close()
        err.close()
        self.pid = self.popen.pid
        self.status = None
        self.rusage = None
        self.wall = None
        LIVE.add(self)

    def poll(self):
        """True once it has exited (then reaped, with its rusage)."""
        if self.status is not None:
            return True
        pid, status, ru = os.wait4(self.pid, os.WNOHANG)
        if pid == 0:
            return False
        self._done(status, ru)
        return True

    def _done(self, status, ru):
        self.status, self.rusage = status, ru
        self.wall = time.monotonic() - self.start
        self.popen.returncode = 0  # reaped here, not by Popen
        LIVE.discard(self)

    def wait(self, timeout):
        """Waits up to timeout s; False if it is still running."""
        limit = time.monotonic() + timeout
        while not self.poll():
            if time.monotonic() >= limit:
                return False
            time.sleep(0.01)
        return True

    def stop(self, sig=signal.SIGTERM, grace=5.0):
        """Stops it (sig, then SIGKILL to its process group after grace s).
        Returns whether it was still running when asked to stop."""
        if self.poll():
            return False
        try:
            os.kill(self.pid, sig)
        except ProcessLookupError:
            pass
        if not self.wait(grace):
            self.kill()
        self.kill_group()
        return True

    def kill(self):
        if self.status is None:
            self.kill_group()
            _, status, ru = os.wait4(self.pid, 0)
            self._done(status, ru)

    def kill_group(self):
        # The group's id is our child's pid: while it is unreaped (or its
        # group still has members we started) the id cannot be reused.
        try:
            os.killpg(self.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass

    def code(self):
        if self.status is None:
            return None
        return os.waitstatus_to_exitcode(self.status)

    def output(self, limit=1 << 20):
        with open(self.out_path, "rb") as f:
            out = f.read(limit).decode("utf-8", "replace")
        with open(self.err_path, "rb") as f:
            err = f.read(limit).decode("utf-8", "replace")
        return out, err


LIVE = set()


def set_subreaper():
    """Orphans of the programs (daemons' children) come back to us, so that
    they can be reaped and, at the end, killed by pid."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
    except (OSError, AttributeError):
        pass


def my_children():
    me = os.getpid()
    kids = set()
    try:
        for t in os.listdir(f"/proc/{me}/task"):
            with open(f"/proc/{me}/task/{t}/children", "rb") as f:
                kids.update(int(c) for c in f.read().split())
    except OSError:
        pass
    return kids


def cleanup():
    for s in list(LIVE):
        s.kill()
    # orphans handed to us (subreaper): descendants of what we started
    for pid in my_children():
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    reap_orphans()


def reap_orphans():
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        for s in list(LIVE):
            if s.pid == pid:  # one of ours, reaped here: status unknown
                s._done(0, None)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_open(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


# ------------------------------------------------------------- sampling ----

def tree(pid):
    """pid and its descendants (children listed by each main thread)."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            with open(f"/proc/{p}/task/{p}/children", "rb") as f:
                todo.extend(int(c) for c in f.read().split())
        except OSError:
            pass
    return out


def status_fields(pid):
    threads = hwm = 0
    try:
        with open(f"/proc/{pid}/status", "rb") as f:
            for line in f:
                if line.startswith(b"Threads:"):
                    threads = int(line.split()[1])
                elif line.startswith(b"VmHWM:"):
                    hwm = int(line.split()[1])
    except (OSError, ValueError):
        pass
    return threads, hwm


class Sampler(threading.Thread):
    """Every SAMPLE_S: the OS threads of a process and its descendants, and
    the sum of their peak RSS (VmHWM); keeps the peak of each."""

    def __init__(self, pid):
        super().__init__(daemon=True)
        self.pid, self.threads, self.rss_kib, self.samples, self.procs = pid, 0, 0, 0, 0
        self.halt = threading.Event()

    def run(self):
        while not self.halt.is_set():
            t = r = 0
            procs = tree(self.pid)
            for p in procs:
                a, b = status_fields(p)
                t, r = t + a, r + b
            if t:
                self.threads = max(self.threads, t)
                self.rss_kib = max(self.rss_kib, r)
                self.procs = max(self.procs, len(procs))
                self.samples += 1
            self.halt.wait(SAMPLE_S)

    def finish(self):
        self.halt.set()
        self.join()


def busy_ticks():
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return v[0] + v[1] + v[2] + v[5] + v[6] + v[7], sum(v[:8])


def wait_quiet(budget):
    """Waits (up to budget s) until the machine is < 10% busy; returns the
    seconds waited."""
    waited = 0.0
    while True:
        b0, t0 = busy_ticks()
        time.sleep(0.5)
        b1, t1 = busy_ticks()
        if (b1 - b0) * 100 < 10 * max(1, t1 - t0) or waited >= budget:
            return waited
        waited += 1.0
        time.sleep(0.5)


# ------------------------------------------------------------- programs ----

class Setup:
    """What a program's runs share: the temporary directory, files made once."""

    def __init__(self, tmp, quick):
        self.tmp, self.quick = tmp, quick
        self.dur = 1 if quick else 4  # seconds of load in a run
        self.htdocs = os.path.join(tmp, "htdocs")
        os.makedirs(self.htdocs, exist_ok=True)
        with open(os.path.join(self.htdocs, "index.html"), "w") as f:
            f.write("<html><body>\n" + "greenshim gallery\n" * 256 + "</body></html>\n")  # 4.6 KB
        os.chmod(tmp, 0o755)
        os.chmod(self.htdocs, 0o755)
        self.pg = None
        # siege reads its settings from $SIEGERC (else it writes ~/.siege)
        self.siegerc = os.path.join(tmp, "siegerc")
        with open(self.siegerc, "w") as f:
            f.write("verbose = false\ncolor = off\nquiet = false\njson_output = false\n"
                    "show-logfile = false\nlogging = false\nlimit = 1000\nprotocol = HTTP/1.1\n"
                    "connection = close\nbenchmark = true\nparser = false\n")


class Program:
    """One row of the table.

    side: which process is measured and patched: 'server' (the load runs
    unpatched), 'client' (its server runs unpatched), or 'alone'."""

    def __init__(self, key, title, side, load, needs, server=None, client=None, parse=None,
                 server_user=None, server_logs=(), ready=None, prepare=None, quick=True,
                 stop_signal=signal.SIGTERM, notes=""):
        self.key, self.title, self.side, self.load, self.needs = key, title, side, load, needs
        self.server, self.client, self.parse = server, client, parse
        self.server_user, self.server_logs, self.ready = server_user, server_logs, ready
        self.prepare, self.quick, self.stop_signal, self.notes = prepare, quick, stop_signal, notes


def num(pattern, text, default=None):
    m = re.search(pattern, text, re.M)
    return float(m.group(1)) if m else default


# Each parser takes (stdout, stderr, wall s) and returns (throughput or None,
# [errors the tool reported]).

def parse_ab(out, err, wall):
    rps = num(r"^Requests per second:\s+([\d.]+)", out)
    errs = []
    failed = num(r"^Failed requests:\s+(\d+)", out, 0)
    non2xx = num(r"^Non-2xx responses:\s+(\d+)", out, 0)
    if failed:
        detail = re.search(r"^Failed requests:.*\n\s+\((.*)\)", out, re.M)
        errs.append(f"ab: {failed:.0f} failed requests" + (f" ({detail.group(1)})" if detail else ""))
    if non2xx:
        errs.append(f"ab: {non2xx:.0f} non-2xx responses")
    return rps, errs


def parse_memaslap(out, err, wall):
    tps = num(r"Run time: \S+ Ops: \d+ TPS: (\d+)", out + err)
    return tps, []


def parse_redis(out, err, wall):
    rows = re.findall(r'^"([A-Z_]+)[^"]*","([\d.]+)"', out, re.M)
    if not rows:
        return None, []
    return statistics.mean(float(r) for _, r in rows), []


def parse_siege(out, err, wall):
    text = out + err
    rate = num(r"^Transaction rate:\s+([\d.]+)", text)
    errs = []
    failed = num(r"^Failed transactions:\s+(\d+)", text, 0)
    if failed:
        errs.append(f"siege: {failed:.0f} failed transactions")
    avail = num(r"^Availability:\s+([\d.]+)", text)
    if avail is not None and avail < 100:
        errs.append(f"siege: availability {avail:g}%")
    return rate, errs


def parse_iperf(out, err, wall):
    m = re.findall(r"^\[SUM\].*?([\d.]+) Mbits/sec", out, re.M)
    if not m:  # a single stream has no SUM line
        m = re.findall(r"^\[\s*\d+\].*?([\d.]+) Mbits/sec", out, re.M)
    return (float(m[-1]) if m else None), []


def parse_pgbench(out, err, wall):
    tps = num(r"^tps = ([\d.]+) \(without initial connection time\)", out)
    errs = []
    failed = num(r"^number of failed transactions: (\d+)", out, 0)
    if failed:
        errs.append(f"pgbench: {failed:.0f} failed transactions")
    return tps, errs


def parse_sysbench_events(out, err, wall):
    eps = num(r"events per second:\s+([\d.]+)", out)
    if eps is None:
        t = num(r"total time:\s+([\d.]+)s", out)
        n = num(r"total number of events:\s+(\d+)", out)
        eps = n / t if t and n else None
    return eps, []


def sysbench_mutex_parser(threads, locks):
    def parse(out, err, wall):
        t = num(r"total time:\s+([\d.]+)s", out)
        return (threads * locks / t if t else None), []
    return parse


def curl_parser(n):
    def parse(out, err, wall):
        codes = out.split()
        ok = sum(c == "200" for c in codes)
        errs = []
        if ok < n:
            errs.append(f"curl: {n - ok} of {n} transfers not 200 (codes: "
                        + ", ".join(sorted(set(c for c in codes if c != "200")) or ["none"]) + ")")
        return (ok / wall if ok else None), errs
    return parse


# --- servers' configuration files ---

def apache_conf(st, mpm, port):
    d = os.path.join(st.tmp, f"apache-{mpm}-{port}")
    os.makedirs(os.path.join(d, "logs"), exist_ok=True)
    os.chmod(d, 0o755)
    conf = os.path.join(d, "httpd.conf")
    with open(conf, "w") as f:
        f.write(f"""ServerRoot {d}
ServerName 127.0.0.1
Listen 127.0.0.1:{port}
PidFile {d}/logs/httpd.pid
ErrorLog {d}/logs/error.log
LogLevel warn
Mutex file:{d}/logs default
DefaultRuntimeDir {d}/logs
LoadModule mpm_{mpm}_module /usr/lib/apache2/modules/mod_mpm_{mpm}.so
LoadModule authz_core_module /usr/lib/apache2/modules/mod_authz_core.so
User www-data
Group www-data
DocumentRoot {st.htdocs}
<Directory {st.htdocs}>
  Require all granted
</Directory>
# Debian's mpm_{mpm}.conf, with room for 500 connections (Debian's 150 workers
# would leave ab -c 500 queueing in the listen backlog)
StartServers 2
MinSpareThreads 25
MaxSpareThreads 75
ThreadLimit 64
ThreadsPerChild 64
ServerLimit 16
MaxRequestWorkers 1024
MaxConnectionsPerChild 0
""")
    return ["apache2", "-f", conf, "-D", "FOREGROUND"], [os.path.join(d, "logs", "error.log")]


def nginx_conf(st, port):
    d = os.path.join(st.tmp, f"nginx-{port}")
    os.makedirs(d, exist_ok=True)
    os.chmod(d, 0o755)
    conf = os.path.join(d, "nginx.conf")
    with open(conf, "w") as f:
        f.write(f"""daemon off;
master_process on;
worker_processes 1;
worker_rlimit_nofile 16384;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 8192; }}
http {{
  access_log off;
  client_body_temp_path {d}/body;
  proxy_temp_path {d}/proxy;
  fastcgi_temp_path {d}/fastcgi;
  uwsgi_temp_path {d}/uwsgi;
  scgi_temp_path {d}/scgi;
  server {{ listen 127.0.0.1:{port} backlog=4096; root {st.htdocs}; }}
}}
""")
    log = os.path.join(d, "error.log")
    return ["nginx", "-p", d + "/", "-e", log, "-c", conf], [log]


def pg_prepare(st):
    """initdb once (as postgres, in the temporary directory)."""
    if st.pg:
        return None
    d = os.path.join(st.tmp, "pg")
    os.makedirs(d + "/data", exist_ok=True)
    os.makedirs(d + "/sock", exist_ok=True)
    pw = pwd.getpwnam("postgres")
    for p in (d, d + "/data", d + "/sock"):
        os.chown(p, pw.pw_uid, pw.pw_gid)
    os.chmod(d + "/data", 0o700)
    r = subprocess.run([pg_bin("initdb"), "-D", d + "/data", "-A", "trust", "-U", "postgres",
                        "--no-sync", "-E", "UTF8", "--locale", "C"],
                       user=pw.pw_uid, group=pw.pw_gid, extra_groups=[], cwd=d,
                       stdin=subprocess.DEVNULL, capture_output=True, timeout=120)
    if r.returncode != 0:
        return "initdb failed: " + r.stderr.decode(errors="replace").strip()[-300:]
    st.pg = d
    st.pg_loaded = False
    return None


def pg_bin(name):
    for v in sorted(os.listdir("/usr/lib/postgresql"), reverse=True) if os.path.isdir("/usr/lib/postgresql") else []:
        p = f"/usr/lib/postgresql/{v}/bin/{name}"
        if os.access(p, os.X_OK):
            return p
    return shutil.which(name) or name


def pg_server(st, port):
    return [pg_bin("postgres"), "-D", st.pg + "/data", "-k", st.pg + "/sock", "-p", str(port),
            "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off", "-c", "synchronous_commit=off",
            "-c", "max_connections=120", "-c", "shared_buffers=64MB", "-c", "logging_collector=off"]


def pg_ready(st, port):
    r = subprocess.run([pg_bin("pg_isready"), "-q", "-t", "2", "-h", "127.0.0.1", "-p", str(port),
                        "-U", "postgres"],
                       stdin=subprocess.DEVNULL, capture_output=True)
    if r.returncode != 0:
        return False
    if not st.pg_loaded:  # pgbench's tables, once (the first server is unpatched)
        r = subprocess.run(["pgbench", "-i", "-q", "-s", "2", "-h", "127.0.0.1", "-p", str(port),
                            "-U", "postgres", "postgres"], stdin=subprocess.DEVNULL,
                           capture_output=True, timeout=120)
        if r.returncode != 0:
            raise RuntimeError("pgbench -i failed: " + r.stderr.decode(errors="replace")[-300:])
        st.pg_loaded = True
    return True


def programs(quick):
    D = "{dur}"
    siege_c = 1000
    curl_n = 2000 if quick else 10000
    mutex_locks = 20000 if quick else 50000
    redis_n = 50000 if quick else 300000
    P = []
    P.append(Program(
        "memcached", "memcached -t 4", "server", "memaslap (memcaslap -T 2 -c 128)", ["memcached", "memcaslap"],
        server=lambda st, port: (["memcached", "-u", "memcache", "-l", "127.0.0.1", "-p", str(port),
                                  "-U", "0", "-t", "4", "-m", "256", "-c", "4096"], []),
        client=lambda st, port: ["memcaslap", "-s", f"127.0.0.1:{port}", "-T", "2", "-c", "128",
                                 "-t", f"{st.dur}s"],
        parse=parse_memaslap))
    for mpm in ("worker", "event"):
        for c in (100, 500):
            P.append(Program(
                f"apache-{mpm}-c{c}", f"apache2 mpm_{mpm}", "server", f"ab -c {c}", ["apache2", "ab"],
                server=(lambda mpm: lambda st, port: apache_conf(st, mpm, port))(mpm),
                client=(lambda c: lambda st, port: ["ab", "-q", "-r", "-s", "10", "-c", str(c),
                                                    "-t", str(st.dur), "-n", "10000000",
                                                    f"http://127.0.0.1:{port}/index.html"])(c),
                parse=parse_ab, quick=(c == 100 or mpm == "event")))
    P.append(Program(
        "redis", "redis-server", "server", "redis-benchmark -c 50 -t set,get", ["redis-server", "redis-benchmark"],
        server=lambda st, port: (["redis-server", "--port", str(port), "--bind", "127.0.0.1",
                                  "--save", "", "--appendonly", "no", "--dir", st.tmp,
                                  "--daemonize", "no"], []),
        client=lambda st, port: ["redis-benchmark", "-h", "127.0.0.1", "-p", str(port), "-c", "50",
                                 "-n", str(redis_n), "-t", "set,get", "--csv"],
        parse=parse_redis, notes="throughput: mean of SET and GET requests/s"))
    siege_r = 2 if quick else 10
    P.append(Program(
        "siege-r", f"siege -c {siege_c} -r {siege_r}", "client", "against nginx (unpatched)", ["siege", "nginx"],
        server=nginx_conf,
        client=lambda st, port: ["siege", "-b", "-c", str(siege_c), "-r", str(siege_r),
                                 f"http://127.0.0.1:{port}/index.html"],
        parse=parse_siege, notes=f"{siege_r} repetitions per user"))
    P.append(Program(
        "siege-t", f"siege -c {siege_c} -t", "client", "against nginx (unpatched)", ["siege", "nginx"],
        server=nginx_conf,
        client=lambda st, port: ["siege", "-b", "-c", str(siege_c), "-t", f"{st.dur}S",
                                 f"http://127.0.0.1:{port}/index.html"],
        parse=parse_siege, notes="a timed run (siege ends its users with pthread_cancel)"))
    def iperf_client(st, port):
        return ["iperf", "-c", "127.0.0.1", "-p", str(port), "-P", "50", "-t", str(st.dur), "-f", "m"]
    for side, title, load in (("server", "iperf2 -s (server)", "iperf -c -P 50 (unpatched)"),
                              ("client", "iperf2 -c -P 50 (client)", "against iperf -s (unpatched)")):
        P.append(Program(
            f"iperf-{side}", title, side, load, ["iperf"],
            server=lambda st, port: (["iperf", "-s", "-B", "127.0.0.1", "-p", str(port)], []),
            client=iperf_client, parse=parse_iperf))
    # pgbench patched against an unpatched server, and the server patched
    for side, title, load, jobs in (("client", "pgbench -c 50 -j 50 -S", "against PostgreSQL (unpatched)", 50),
                                    ("server", "postgres (server)", "pgbench -c 50 -j 2 -S (unpatched)", 2)):
        P.append(Program(
            "pgbench" if side == "client" else "postgres", title, side, load, ["pgbench", pg_bin("postgres")],
            prepare=pg_prepare, server=lambda st, port: (pg_server(st, port), []), server_user="postgres",
            ready=pg_ready, stop_signal=signal.SIGINT,
            client=(lambda jobs: lambda st, port: [
                "pgbench", "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "-c", "50",
                "-j", str(jobs), "-S", "-T", str(st.dur), "postgres"])(jobs),
            parse=parse_pgbench))
    for test in ("threads", "mutex", "cpu"):
        if test == "mutex":
            argv = ["sysbench", "mutex", "--threads=8", f"--mutex-locks={mutex_locks}", "run"]
            parse, load = sysbench_mutex_parser(8, mutex_locks), f"--threads=8 --mutex-locks={mutex_locks}"
        elif test == "threads":
            argv = ["sysbench", "threads", "--threads=8", "--time=" + D, "run"]
            parse, load = parse_sysbench_events, "--threads=8"
        else:
            argv = ["sysbench", "cpu", "--threads=2", "--time=" + D, "run"]
            parse, load = parse_sysbench_events, "--threads=2"
        P.append(Program(
            f"sysbench-{test}", f"sysbench {test}", "alone", load, ["sysbench"],
            client=(lambda argv: lambda st, port: [a.replace(D, str(st.dur)) for a in argv])(argv),
            parse=parse,
            notes={"mutex": "throughput: locks/s (8 x mutex-locks / total time)",
                   "threads": "throughput: events/s", "cpu": "throughput: events/s; not pinned"}[test]))
    P.append(Program(
        "curl", "curl --parallel", "client", f"{curl_n} GETs, --parallel-max 100, against nginx (unpatched)",
        ["curl", "nginx"],
        server=nginx_conf,
        client=lambda st, port: ["curl", "-s", "--no-progress-meter", "--parallel", "--parallel-max", "100",
                                 "-o", "/dev/null", "-w", "%{http_code}\\n",
                                 f"http://127.0.0.1:{port}/index.html?n=[1-{curl_n}]"],
        parse=curl_parser(curl_n), notes="throughput: transfers/s over curl's wall time"))
    # Others users would plausibly wrap.
    P.append(Program(
        "python-http", "python3 -m http.server", "server", "ab -c 100", ["python3.11", "ab"],
        server=lambda st, port: (["python3.11", "-m", "http.server", "--bind", "127.0.0.1", str(port),
                                  "--directory", st.htdocs], []),
        client=lambda st, port: ["ab", "-q", "-r", "-s", "10", "-c", "100", "-t", str(st.dur),
                                 "-n", "10000000", f"http://127.0.0.1:{port}/index.html"],
        parse=parse_ab, notes="ThreadingHTTPServer: a thread per connection"))
    P.append(Program(
        "nginx", "nginx (master + 1 worker)", "server", "ab -c 100", ["nginx", "ab"],
        server=nginx_conf,
        client=lambda st, port: ["ab", "-q", "-r", "-s", "10", "-c", "100", "-t", str(st.dur),
                                 "-n", "10000000", f"http://127.0.0.1:{port}/index.html"],
        parse=parse_ab, quick=False))
    return P


# ---------------------------------------------------------- measurement ----

NOTEWORTHY = re.compile(r"greenshim:|greenshim\[|error|fail|refused|reset by peer|abort|fatal|panic|segmentation|"
                        r"core dumped|timed? ?out|deadlock|assert|cannot|can't|unable", re.I)
IGNORED = re.compile(r"^\s*$|Failed requests:\s+0$|Failed transactions:\s+0|"
                     r"number of failed transactions: 0|Non-2xx responses:\s+0$|"
                     r"WARNING Memory overcommit must be enabled|aborting any active transactions|"
                     r"terminating connection due to administrator command")  # the gallery stopping a server


def noteworthy(text, where):
    """Lines of a program's output or log that report a problem, with
    numbers folded (so that repeats count as one)."""
    out = []
    for line in text.splitlines():
        line = line.strip()
        if NOTEWORTHY.search(line) and not IGNORED.search(line):
            line = re.sub(r"^\[[^]]*\d{4}\] ", "", line)  # apache's timestamp
            line = re.sub(r"^\d{4}-\d\d-\d\d [\d:.]+ \w+ \[\d+\] ", "", line)  # postgres's
            out.append(f"{where}: {line[:160]}")
    return out


class Measurement:
    def __init__(self, prog, patched, rnd):
        self.prog, self.patched, self.round = prog, patched, rnd
        self.failure = None  # why there is no figure
        self.throughput = None
        self.threads = self.rss_kib = self.procs = 0
        self.errors = []  # what the tools and logs reported
        self.cpu = None
        self.wall = None
        self.other_pct = None
        self.argv = []


def tail(text, n=3):
    lines = [l for l in text.strip().splitlines() if l.strip()]
    return " / ".join(lines[-n:])[-300:]


def measure(prog, st, patched, rnd, env, raw):
    m = Measurement(prog, patched, rnd)
    port = free_port()
    kind = "patched" if patched else "unpatched"
    tag = f"{prog.key}-{kind}-{rnd}"
    side = prog.side
    server = client = sampler = None
    logs = []
    b0, t0 = busy_ticks()
    self0 = resource.getrusage(resource.RUSAGE_SELF)
    w0 = time.monotonic()
    try:
        if prog.server:
            argv, logs = prog.server(st, port)
            patch = patched and side == "server"
            argv = ([GREENRUN, "--"] if patch else []) + argv
            server = Started(tag + "-server", argv, st.tmp, env,
                             SUBJECT_CPU if side == "server" else OTHER_CPU, prog.server_user)
            m.argv.append(("server", argv))
            limit = time.monotonic() + 15
            while True:
                if server.poll():
                    out, err = server.output()
                    m.failure = (f"server exited ({server.code()}) before it was ready: "
                                 + tail(err or out))
                    return m
                if port_open(port) and (prog.ready is None or prog.ready(st, port)):
                    break
                if time.monotonic() > limit:
                    listening = port_open(port)
                    m.failure = "server not ready after 15 s: " + (
                        "it listens, but pg_isready gets no answer" if listening and prog.ready
                        else "it listens, but ..." if listening else "not listening")
                    return m
                time.sleep(0.05)
            time.sleep(0.3)  # let a pre-forking server start its workers
        if side == "server":
            sampler = Sampler(server.pid)
            sampler.start()
        argv = prog.client(st, port)
        argv = ([GREENRUN, "--"] if patched and side != "server" else []) + argv
        cpu = {"server": OTHER_CPU, "client": SUBJECT_CPU, "alone": None}[side]
        client = Started(tag + "-client", argv, st.tmp, env, cpu)
        m.argv.append(("client" if side != "alone" else "program", argv))
        if side != "server":
            sampler = Sampler(client.pid)
            sampler.start()
        budget = 4 * st.dur + 15
        if not client.wait(budget):
            client.kill()
            m.failure = f"{prog.client(st, port)[0]} timed out after {budget} s (killed)"
        sampler.finish()
        m.threads, m.rss_kib, m.procs = sampler.threads, sampler.rss_kib, sampler.procs
        if server:
            was_running = server.stop(prog.stop_signal)
            if not was_running and not m.failure:
                out, err = server.output()
                m.failure = f"server died during the run ({status_text(server)}): " + tail(err or out)
        subject = server if side == "server" else client
        if subject.rusage:
            m.cpu = subject.rusage.ru_utime + subject.rusage.ru_stime
        out, err = client.output()
        m.wall = client.wall
        thr, errs = prog.parse(out, err, client.wall)
        m.errors += errs
        name = os.path.basename(prog.client(st, port)[0])
        m.errors += noteworthy(err, name)
        if client.code() != 0 and not m.failure:
            m.failure = f"{name} {status_text(client)}: " + tail(err or out)
        if server:
            sout, serr = server.output()
            sname = os.path.basename(prog.server(st, port)[0][0])
            m.errors += noteworthy(serr + "\n" + sout, sname)
            for path in logs:
                try:
                    with open(path, errors="replace") as f:
                        m.errors += noteworthy(f.read(), sname + " log")
                except OSError:
                    pass
        if thr is None and not m.failure:
            m.failure = f"no throughput in {name}'s report: " + tail(out + err)
        m.throughput = thr
    finally:
        if sampler and sampler.is_alive():
            sampler.finish()
        for s in (client, server):
            if s:
                s.kill()
        reap_orphans()
        for path in logs:  # a log is one run's
            try:
                os.unlink(path)
            except OSError:
                pass
        b1, t1 = busy_ticks()
        self1 = resource.getrusage(resource.RUSAGE_SELF)
        ours = sum(s.rusage.ru_utime + s.rusage.ru_stime for s in (client, server) if s and s.rusage)
        ours += (self1.ru_utime + self1.ru_stime) - (self0.ru_utime + self0.ru_stime)
        wall = time.monotonic() - w0
        busy_s = (b1 - b0) / HZ
        m.other_pct = max(0.0, (busy_s - ours) / max(wall, 1e-3) * 100)  # % of one CPU
        record(raw, m, server, client)
    return m


def status_text(p):
    c = p.code()
    if c is None:
        return "still running"
    if c < 0:
        try:
            return f"killed by signal {-c} ({signal.Signals(-c).name})"
        except ValueError:
            return f"killed by signal {-c}"
    return f"exited with status {c}"


def record(raw, m, server, client):
    kind = "patched" if m.patched else "unpatched"
    raw.write(f"\n== {m.prog.key}, {kind}, round {m.round}\n")
    for what, argv in m.argv:
        raw.write(f"$ {what}: {' '.join(a.replace(ROOT + '/', '') for a in argv)}\n")
    raw.write(f"throughput={fmt(m.throughput)} peak_threads={m.threads} peak_rss_kib={m.rss_kib} "
              f"processes={m.procs} cpu_s={fmt(m.cpu)} wall_s={fmt(m.wall)} "
              f"others_pct_of_a_cpu={fmt(m.other_pct)}\n")
    if m.failure:
        raw.write(f"FAILURE: {m.failure}\n")
    for e in m.errors[:20]:
        raw.write(f"error: {e}\n")
    for s in (client, server):
        if not s:
            continue
        try:
            out, err = s.output(1 << 16)
        except OSError:
            continue
        for name, text in (("stdout", out), ("stderr", err)):
            lines = text.strip().splitlines()
            if lines:
                raw.write(f"-- {s.name} {name} ({len(lines)} lines; last 25):\n")
                raw.write("\n".join(lines[-25:]) + "\n")
    raw.flush()


# --------------------------------------------------------------- report ----

def fmt(x, digits=3):
    if x is None:
        return "-"
    if isinstance(x, int):
        return str(x)
    if abs(x) >= 1000:
        return f"{x:,.0f}"
    return f"{x:.{digits}g}"


def fmt_rate(x):
    if x is None:
        return "-"
    if x >= 1e6:
        return f"{x / 1e6:.2f}M"
    if x >= 1e4:
        return f"{x / 1e3:.1f}k"
    return f"{x:,.0f}" if x >= 100 else f"{x:.3g}"


def fmt_mib(kib):
    return f"{kib / 1024:.1f} MiB" if kib else "-"


def fold(errors):
    """Distinct messages (numbers folded) with how often each came."""
    counts = {}
    for e in errors:
        k = re.sub(r"\d+", "N", e)
        counts.setdefault(k, [e, 0])[1] += 1
    return [(e, n) for e, n in counts.values()]


class Row:
    def __init__(self, prog, ms):
        self.prog = prog
        self.u = [m for m in ms if not m.patched]
        self.p = [m for m in ms if m.patched]

    @staticmethod
    def median(ms, attr):
        v = [getattr(m, attr) for m in ms if getattr(m, attr) is not None and not m.failure]
        return statistics.median(v) if v else None

    def ratios(self):
        """patched/unpatched throughput of each round (each pair ran back to back)."""
        out = []
        for mu in self.u:
            for mp in self.p:
                if mu.round == mp.round and mu.throughput and mp.throughput and not (mu.failure or mp.failure):
                    out.append(mp.throughput / mu.throughput)
        return out

    def ratio(self):
        r = self.ratios()
        return statistics.median(r) if r else None

    def works(self):
        pf = [m.failure for m in self.p if m.failure]
        uf = [m.failure for m in self.u if m.failure]
        if pf and uf and len(pf) == len(self.p):
            return "both fail", pf[0]
        if pf:
            return f"**no** ({len(pf)} of {len(self.p)} runs)", pf[0]
        if uf:
            return "yes (unpatched failed)", uf[0]
        new = self.new_errors()
        if new:
            return "yes, with errors", None
        return "yes", None

    def new_errors(self):
        ue = {re.sub(r"\d+", "N", e) for m in self.u for e in m.errors}
        return [e for m in self.p for e in m.errors if re.sub(r"\d+", "N", e) not in ue]

    def errors_cell(self):
        parts = []
        for kind, ms in (("unpatched", self.u), ("patched", self.p)):
            errs = [e for m in ms for e in m.errors] + [f"FAILED: {m.failure}" for m in ms if m.failure]
            if errs:
                f = fold(errs)
                shown = "; ".join(f"{md(e[:140])}{f' (x{n})' if n > 1 else ''}" for e, n in f[:2])
                more = f" (+{len(f) - 2} more)" if len(f) > 2 else ""
                parts.append(f"{kind}: {shown}{more}")
        return "<br>".join(parts) if parts else "none"


def md(text):
    return text.replace("|", "\\|").replace("\n", " ").replace("*", "\\*").replace("_", "\\_")


def machine_line():
    cpu = "?"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((l.split(":", 1)[1].strip() for l in f if l.startswith("model name")), "?")
    except OSError:
        pass
    deb = "?"
    try:
        with open("/etc/debian_version") as f:
            deb = f.read().strip()
    except OSError:
        pass
    mem = "?"
    try:
        with open("/proc/meminfo") as f:
            mem = f"{int(f.readline().split()[1]) / 1048576:.1f} GiB RAM"
    except (OSError, ValueError):
        pass
    return f"nproc {NCPU}; CPU: {cpu}; {mem}; kernel {os.uname().release}; Debian {deb}"


def git_rev():
    try:
        rev = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True).stdout.strip() or "?"
        dirty = subprocess.run(["git", "-C", ROOT, "diff", "--quiet", "HEAD"]).returncode != 0
        return rev + (" + uncommitted changes" if dirty else "")
    except OSError:
        return "?"


def write_report(out, rows, args, started, elapsed, skipped, others, waited, plot):
    date = started.strftime("%Y-%m-%d %H:%M UTC")
    cmd = "scripts/gallery" + (" --quick" if args.quick else "") + (f" --only {args.only}" if args.only else "")
    L = []
    L.append("# greenshim gallery: real programs from Debian, unpatched and under greenrun")
    L.append("")
    L.append(f"- **Machine**: {machine_line()}")
    L.append(f"- **Date**: {date}; git {git_rev()}; `{cmd}`, {elapsed / 60:.1f} min, "
             f"{args.rounds} round(s) per program (each an unpatched and a patched run back to back, "
             f"the order alternating), {1 if args.quick else 4} s of load per run")
    L.append(f"- **Pinning**: the program measured runs on CPU {SUBJECT_CPU}, its load generator "
             f"(or its server) on CPU {OTHER_CPU}, both ways (`taskset`), as in scripts/bench; so a "
             "multi-threaded server has one core unpatched too. sysbench is not pinned: unpatched it "
             "may use every core, patched it has one OS thread")
    others_med = statistics.median(others) if others else 0
    L.append(f"- **Noise**: the machine ({NCPU} cores) is shared with other work; other programs took "
             f"{others_med:.0f}% of a CPU (median over the runs; max {max(others or [0]):.0f}%) while "
             f"these ran{f', after waiting {waited:.0f} s in all for quieter moments' if waited else ''}. "
             "Ratios are medians of per-round ratios; expect ±15% between runs")
    L.append("- **Figures**: throughput from each tool's own report (median of the rounds); peak OS "
             "threads and peak RSS sampled every 5 ms from `/proc/PID/status` (`Threads`, `VmHWM`) "
             "over the process and its descendants (RSS summed over processes, so pages shared "
             "between a server's processes count once per process); 'errors seen' are the lines of the "
             "tools' reports, stderr and the servers' logs that report a problem, numbers folded. "
             f"Raw output: [raw.txt](raw.txt){f'; plot: [{plot}]({plot})' if plot else ''}")
    if skipped:
        L.append(f"- **Not run**: " + "; ".join(skipped))
    L.append("")
    L.append("| program | load | works patched | throughput unpatched | patched | patched / unpatched "
             "| peak OS threads unpatched → patched | peak RSS unpatched → patched | errors seen |")
    L.append("| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | --- |")
    for r in rows:
        works, _ = r.works()
        ratios = r.ratios()
        rs = f"{r.ratio():.2f}" if ratios else "-"
        if len(ratios) > 1:
            rs += f" ({min(ratios):.2f}–{max(ratios):.2f})"
        tu = max((m.threads for m in r.u), default=0)
        tp = max((m.threads for m in r.p), default=0)
        L.append(f"| {md(r.prog.title)} | {md(r.prog.load)} | {works} | "
                 f"{fmt_rate(Row.median(r.u, 'throughput'))} | {fmt_rate(Row.median(r.p, 'throughput'))} | "
                 f"{rs} | {tu or '-'} → {tp or '-'} | "
                 f"{fmt_mib(Row.median(r.u, 'rss_kib'))} → {fmt_mib(Row.median(r.p, 'rss_kib'))} | "
                 f"{r.errors_cell()} |")
    L.append("")
    units = {"memcached": "ops/s (memaslap TPS)", "apache": "requests/s (ab)", "redis": "requests/s",
             "siege": "transactions/s", "iperf": "Mbit/s (the client's [SUM])", "pgbench": "tps",
             "postgres": "tps (pgbench)", "python": "requests/s (ab)", "nginx": "requests/s (ab)"}
    L.append("Units and notes:")
    L.append("")
    for r in rows:
        unit = next((u for k, u in units.items() if r.prog.key.startswith(k)), "")
        note = "; ".join(x for x in (unit and f"throughput: {unit}", r.prog.notes) if x)
        cmds = [" ".join(a.replace(ROOT + "/", "") for a in argv if a not in (GREENRUN, "--"))
                for what, argv in (r.u[0].argv if r.u else [])]
        L.append(f"- **{md(r.prog.title)}** ({r.prog.side} measured): {md(note)}"
                 + (f"; `{'` with `'.join(c for c in cmds)}`" if cmds else ""))
    fails = [(r, m) for r in rows for m in r.p + r.u if m.failure]
    if fails:
        L.append("")
        L.append("Failures, as reported:")
        L.append("")
        for r, m in fails:
            L.append(f"- {md(r.prog.title)} ({'patched' if m.patched else 'unpatched'}, round {m.round}): "
                     f"`{m.failure.replace('`', chr(39))}`")
    with open(os.path.join(out, "results.md"), "w") as f:
        f.write("\n".join(L) + "\n")


def write_plot(out, rows, raw):
    if not shutil.which("gnuplot"):
        return None
    dat = os.path.join(out, ".ratios.dat")
    with open(dat, "w") as f:
        for i, r in enumerate(rows):
            fails = any(m.failure for m in r.p)
            label = r.prog.key + (" (FAILS)" if fails else "")
            tu = max((m.threads for m in r.u), default=0) or "NaN"
            tp = max((m.threads for m in r.p if not m.failure), default=0) or "NaN"
            f.write(f'{i} "{label}" {r.ratio() or "NaN"} {tu} {tp}\n')
    png = os.path.join(out, "ratios.png")
    script = f"""
set terminal pngcairo size 1000,720 font 'sans,9'
set output '{png}'
set multiplot layout 2,1
set style data histograms
set style fill solid 0.8 border -1
set boxwidth 0.8
set grid ytics
set xtics rotate by -35 nomirror
set key top right
set title 'throughput patched / unpatched (1 = the same)'
set yrange [0:*]
plot '{dat}' using 3:xtic(2) title 'patched / unpatched' lc rgb '#3a7bd5', 1 with lines dt 2 lc rgb 'black' notitle
set title 'peak OS threads'
set logscale y
set yrange [0.8:*]
set style histogram clustered gap 1
plot '{dat}' using 4:xtic(2) title 'unpatched' lc rgb '#d5763a', '' using 5 title 'patched' lc rgb '#3a7bd5'
unset multiplot
"""
    r = subprocess.run(["gnuplot"], input=script, text=True, capture_output=True)
    os.unlink(dat)
    if r.returncode != 0:
        raw.write("gnuplot failed: " + r.stderr + "\n")
        return None
    return "ratios.png"


# ----------------------------------------------------------------- main ----

def main():
    ap = argparse.ArgumentParser(prog="scripts/gallery", add_help=False)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--only", default="")
    ap.add_argument("--out", default="")
    ap.add_argument("--rounds", type=int, default=0)
    ap.add_argument("--build-dir", default="")
    ap.add_argument("--list", action="store_true")
    try:
        args = ap.parse_args()
    except SystemExit:
        sys.exit(2)
    progs = programs(args.quick)
    if args.list:
        for p in progs:
            print(f"{p.key:18} {p.title}, {p.load} ({p.side} measured){'' if p.quick else '  [not in --quick]'}")
        return 0
    keys = [k for k in args.only.replace(",", " ").split() if k]
    for k in keys:
        if not any(p.key == k or p.key.startswith(k + "-") for p in progs):
            print(f"gallery: unknown program {k} (scripts/gallery --list)", file=sys.stderr)
            return 2
    if keys:
        progs = [p for p in progs if any(p.key == k or p.key.startswith(k + "-") for k in keys)]
    elif args.quick:
        progs = [p for p in progs if p.quick]
    args.rounds = args.rounds or (1 if args.quick else 3)
    build = os.path.abspath(args.build_dir or os.path.join(ROOT, "build"))
    lib = os.path.join(build, "shim", "libgreenshim.so")
    if not os.path.exists(lib):
        print(f"gallery: {lib} is missing (ninja -C {build})", file=sys.stderr)
        return 1
    out = os.path.abspath(args.out or (os.path.join(build, "gallery-quick") if args.quick
                                       else os.path.join(ROOT, "gallery")))
    os.makedirs(out, exist_ok=True)
    if os.geteuid() != 0:
        print("gallery: run as root (servers run as their own users: www-data, memcache, postgres)",
              file=sys.stderr)
        return 2

    env = dict(os.environ, GREENSHIM_LIB=lib)
    env.pop("LD_PRELOAD", None)
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # siege's 1,000 users, ab -c 500
    set_subreaper()
    signal.signal(signal.SIGTERM, lambda *a: sys.exit(130))
    try:
        os.sched_setaffinity(0, {int(OTHER_CPU)})  # the sampler stays off the measured CPU
    except OSError:
        pass

    started = datetime.datetime.now(datetime.timezone.utc)
    t0 = time.monotonic()
    tmp = tempfile.mkdtemp(prefix="greenshim-gallery.")
    raw = open(os.path.join(out, "raw.txt"), "w")
    raw.write(f"greenshim gallery, {started:%Y-%m-%d %H:%M UTC}\nmachine: {machine_line()}\n"
              f"git: {git_rev()}; library: {lib}\n")
    rows, skipped, others = [], [], []
    waited, quiet_budget = 0.0, (0 if args.quick else 90)
    incomplete = 0
    st = Setup(tmp, args.quick)
    env["SIEGERC"] = st.siegerc
    try:
        for prog in progs:
            missing = [n for n in prog.needs if not (shutil.which(n) or os.access(n, os.X_OK))]
            if missing:
                skipped.append(f"{prog.title}: {', '.join(missing)} not installed")
                continue
            if prog.prepare:
                why = prog.prepare(st)
                if why:
                    skipped.append(f"{prog.title}: {why}")
                    continue
            ms = []
            give_up = False  # a patched run that hangs is not tried again
            print(f"gallery: {prog.key} ...", file=sys.stderr, flush=True)
            for rnd in range(1, args.rounds + 1):
                if give_up:
                    break
                for patched in ((False, True) if rnd % 2 else (True, False)):
                    if quiet_budget > waited:
                        waited += wait_quiet(min(5, quiet_budget - waited))
                    try:
                        m = measure(prog, st, patched, rnd, env, raw)
                    except (RuntimeError, OSError, subprocess.SubprocessError) as e:
                        m = Measurement(prog, patched, rnd)
                        m.failure = f"the gallery could not run it: {e}"
                        incomplete += 1
                    ms.append(m)
                    if m.other_pct is not None:
                        others.append(m.other_pct)
                    if patched and m.failure and ("timed out" in m.failure or "not ready" in m.failure):
                        give_up = True
                    print(f"  {'patched  ' if patched else 'unpatched'} round {rnd}: "
                          f"{fmt(m.throughput)} threads={m.threads} rss={m.rss_kib} KiB"
                          + (f" FAILED: {m.failure[:200]}" if m.failure else "")
                          + (f" errors: {len(m.errors)}" if m.errors else ""), file=sys.stderr, flush=True)
            rows.append(Row(prog, ms))
    finally:
        cleanup()
        shutil.rmtree(tmp, ignore_errors=True)
    elapsed = time.monotonic() - t0
    plot = write_plot(out, rows, raw)
    write_report(out, rows, args, started, elapsed, skipped, others, waited, plot)
    raw.close()
    print(f"gallery: wrote {out}/results.md{' and ' + plot if plot else ''} in {elapsed:.0f} s",
          file=sys.stderr)
    with open(os.path.join(out, "results.md")) as f:
        print(f.read())
    return 1 if incomplete else 0


if __name__ == "__main__":
    sys.exit(main())
