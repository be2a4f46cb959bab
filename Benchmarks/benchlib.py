"""What the benchmark scripts share (Benchmarks/*.py import it; it is no benchmark itself).

  the run        root and binary checks, sbin on PATH, SIGINT/SIGTERM and the overall timeout
                 raised as Interrupted, the work directory, the body of a run whose failures
                 become report errors, the teardown of everything started
  the lab        scripts/lab.py in bench mode (port offset 300, 2,000 users), the load
                 generator (Benchmarks/loadgen) and its users files
  mailswitch     one fresh `mailswitch serve` with the bench configuration plus settings, its
                 log read as it grows; the configuration keys of the "warm" route cache
  /proc          CPU seconds, status, context switches, load average, the machine's busy time;
                 the descriptor limit
  the report     `say`, `spread`, cells and ratios of a Markdown table, machine facts, the
                 Markdown and JSON written to results/

The systems under test and their process helpers are Benchmarks/peers.py's (this module
imports it; it imports nothing from here), the lab's own process helpers scripts/lab.py's.
"""
import contextlib
import datetime
import json
import os
import platform
import re
import resource
import signal
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import types

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(REPO, "scripts"))
import peers  # noqa: E402  (Benchmarks/peers.py: the bench configuration, processes, CPU)
from lab import wait_until  # noqa: E402  (scripts/lab.py)

LAB = os.path.join(REPO, "scripts", "lab.py")
LOADGEN_SOURCE = os.path.join(REPO, "Benchmarks", "loadgen", "loadgen.c")
SYNTHETIC_STORE = os.path.join(REPO, "Tests", "Fixtures", "synthetic_store.py")
DEFAULT_BINARY = os.path.join(REPO, ".build-bench", "release", "mailswitch")
PORT_OFFSET = 300
USERS = 2000                   # the lab's users; Benchmarks/replica.py sets its --users here
# mailswitch's listeners: clear of the tests (1143.., 3389, 10143.., 20143.., 9243..9543), the
# demo (1143, 1110, 1993, 1995) and the bench lab (offset 300: 3689, 10443.., 4443.., 5443..,
# 6443.., 30443..).
LISTEN = {"imap": "127.0.0.1:1443", "pop3": "127.0.0.1:1410",
          "imaps": "127.0.0.1:2293", "pop3s": "127.0.0.1:2295"}
# The "warm" route cache (Benchmarks/moves.py's configuration of that name): directory keys
# set in the bench configuration.
WARM = {"cache_ttl": '"60s"', "negative_cache_ttl": '"10s"', "change_feed": "sync"}
FEED_TIMEOUT = 20.0            # for "change feed synchronized" after start
SYNC_LINE = "change feed synchronized"


class BenchError(Exception):
    pass


class Interrupted(KeyboardInterrupt):
    """SIGINT/SIGTERM/the overall timeout. A KeyboardInterrupt, so that asyncio passes it on
    (it swallows other exceptions raised in callbacks) and the teardown runs."""


def sayer(tag, clock=True):
    """A `say` for one script: progress on stderr as "[TAG HH:MM:SS] message", or
    "TAG: message" without the clock."""
    def say(message):
        if clock:
            print("[%s %s] %s" % (tag, time.strftime("%H:%M:%S"), message), file=sys.stderr, flush=True)
        else:
            print("%s: %s" % (tag, message), file=sys.stderr, flush=True)
    return say


# Progress lines carry the running script's name ("[profile 12:00:01] ..."), whichever
# script imports this.
say = sayer(os.path.splitext(os.path.basename(sys.argv[0]))[0].replace("_", "-") or "bench")


# ---------------------------------------------------------------------------------------------
# the run

def require_root(script):
    if os.geteuid() != 0:
        sys.exit("%s: run as root (scripts/lab.py needs it)" % script)


def mailswitch_binary(default=DEFAULT_BINARY):
    """$MAILSWITCH_BINARY, else `default` (`scripts/bench` passes the .build/release it built)."""
    return os.path.abspath(os.environ.get("MAILSWITCH_BINARY") or default)


def require_binary(script, binary, missing="no mailswitch binary at %s (swift build -c release --scratch-path "
                                            ".build-bench, or set MAILSWITCH_BINARY)"):
    if not os.access(binary, os.X_OK):
        sys.exit("%s: %s" % (script, missing % binary))


def sbin_on_path():
    os.environ["PATH"] = os.environ.get("PATH", "/usr/bin:/bin") + ":/usr/sbin:/sbin"


def raise_nofile():
    """The soft descriptor limit up to the hard one (a proxy holds two descriptors per session;
    what this process starts inherits it). Returns (soft, hard) then."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)


def catch_signals(timeout, what="signal %d", on_alarm=""):
    """SIGALRM, SIGTERM and SIGINT raise Interrupted(what % signum, plus `on_alarm` for the
    alarm), so the `finally` of a run still stops everything it started; the alarm goes off
    after `timeout` seconds."""
    def interrupted(signum, _frame):
        raise Interrupted(what % signum + (on_alarm if signum == signal.SIGALRM else ""))
    for signum in (signal.SIGALRM, signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, interrupted)
    signal.alarm(int(timeout))


def work_dir(name):
    work = tempfile.mkdtemp(prefix="mailswitch-%s-" % name)
    os.chmod(work, 0o755)    # the stores' unprivileged processes read the lab's files
    return work


def begin_run(name, timeout):
    """The start the profile, relays, soak and replica runs share: sbin on PATH, SIGINT, SIGTERM
    and the overall `timeout` raised as Interrupted, a fresh work directory. Returns it and the
    report's common fields."""
    sbin_on_path()
    catch_signals(timeout)
    work = work_dir(name)
    report = {"command": " ".join(["scripts/bench", name] + sys.argv[1:]),
              "date": datetime.datetime.utcnow().strftime("%Y-%m-%d %H:%M UTC"), "machine": machine_line(),
              "errors": []}
    return work, report


STARTED = []    # (name, Popen) of what this run started and must stop


def forget(process):
    STARTED[:] = [(n, p) for n, p in STARTED if p is not process]


def stop_process(process, name, timeout=10.0, say=say):
    """SIGTERM, bounded wait, SIGKILL; for children started without peers.spawn. Returns the
    exit status (None if there was no process)."""
    if process is None:
        return None
    if process.poll() is None:
        try:
            process.send_signal(signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            say("%s (pid %d) ignored SIGTERM for %.0f s: SIGKILL" % (name, process.pid, timeout))
            process.kill()
            process.wait(5)
    return process.returncode


def stop(name, process, timeout=10.0):
    """stop_process, and the process is no longer in STARTED."""
    stop_process(process, name, timeout)
    forget(process)


def tear_down(lab_dir, work, say=say):
    """The end of a run: stops everything in STARTED, takes the lab in `lab_dir` down (None: it
    was never brought up) and removes `work`. Nothing may interrupt it but a second signal's
    default (SIGINT: none)."""
    signal.alarm(0)
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, signal.SIG_IGN)
    for name, process in reversed(list(STARTED)):
        try:
            if name.startswith("mailswitch"):
                peers.terminate(process.pid)
                forget(process)
            else:
                stop(name, process)
        except Exception as error:   # noqa: BLE001 - keep tearing down
            say("stopping %s: %s" % (name, error))
    if lab_dir:
        try:
            lab(["down"], lab_dir)
        except Exception as error:   # noqa: BLE001
            say("lab down: %s" % error)
    shutil.rmtree(work, ignore_errors=True)


@contextlib.contextmanager
def running(report, work, lab_dir, also=(), tell=None):
    """The body of a run: its failures (the lab's, a process's, an interruption, and the `also`
    exception types) become lines of report["errors"] instead of tracebacks (said too, with
    `tell`: a script's say), and tear_down always follows, taking the lab down if the body set
    `lab_up` on what this yields or the lab wrote its lab.json."""
    frame = types.SimpleNamespace(lab_up=False)
    try:
        yield frame
    except (BenchError, peers.PeerError, subprocess.SubprocessError, OSError) + tuple(also) as error:
        if tell:
            tell("failed: %s" % error)
        report["errors"].append("%s: %s" % (type(error).__name__, error))
    except Interrupted as error:
        if tell:
            tell("interrupted: %s" % error)
        report["errors"].append("interrupted: %s" % error)
    finally:
        up = frame.lab_up or os.path.exists(os.path.join(lab_dir, "lab.json"))
        tear_down(lab_dir if up else None, work, tell or say)


def check_free(listen):
    busy = [a for a in listen.values() if peers.listening(a)]
    if busy:
        raise BenchError("already listening: %s (another run?)" % ", ".join(busy))


# ---------------------------------------------------------------------------------------------
# the lab and the load generator

def lab(command, directory, extra_env=None):
    env = dict(os.environ, MAILSWITCH_LAB_PORT_OFFSET=str(PORT_OFFSET), MAILSWITCH_LAB_USERS=str(USERS),
               MAILSWITCH_LAB_BENCH="1", **(extra_env or {}))
    result = subprocess.run([sys.executable, LAB] + command + ["--dir", directory], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=180)
    if result.returncode != 0:
        raise BenchError("lab.py %s: %s" % (" ".join(command), result.stdout[-3000:]))


def lab_up(run, lab_dir):
    """The bench lab up, marked on `run` first (so the teardown takes it down); its state."""
    run.lab_up = True
    lab(["up"], lab_dir)
    return peers.load_lab(lab_dir)


def login_lab(run, lab_dir, work):
    """The bench lab up (marked on `run`, so the teardown takes it down), the load generator
    built, and a users file pointing every user at mailswitch's IMAP listener. Returns
    (state, loadgen, users, users_path)."""
    state = lab_up(run, lab_dir)
    loadgen = build_loadgen(work)
    users = peers.bench_users(state)
    return state, loadgen, users, users_file(work, "mailswitch", users, lambda user, store: LISTEN["imap"])


def build_loadgen(work):
    binary = os.path.join(work, "loadgen")
    subprocess.run(["gcc", "-O2", "-Wall", "-o", binary, LOADGEN_SOURCE, "-lssl", "-lcrypto"], check=True, timeout=300)
    return binary


def users_file(work, name, users, endpoint_for):
    """One line per user: user, password, expected store, where to connect for this user."""
    path = os.path.join(work, "users-%s.tsv" % name)
    with open(path, "w", encoding="utf-8") as f:
        for user, store, password in users:
            f.write("%s\t%s\t%s\t%s\n" % (user, password, store, endpoint_for(user, store)))
    return path


def run_loadgen(binary, arguments, timeout):
    result = subprocess.run([binary] + arguments, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, timeout=timeout)
    try:
        report = json.loads(result.stdout)
        if report.get("error_total") or (report.get("uncounted") or {}).get("errors"):
            report["diagnostics"] = result.stderr[-2000:]
        return report
    except ValueError:
        raise BenchError("loadgen %s: no JSON (status %d): %s" % (" ".join(arguments), result.returncode,
                                                                  result.stderr[-2000:]))


def errors_of(result):
    """Every failed operation, the warm-up's included, plus idle sessions that never opened."""
    return (sum((result.get("errors") or {}).values()) + (result.get("uncounted") or {}).get("errors", 0)
            + result.get("sessions_err", 0))


# ---------------------------------------------------------------------------------------------
# /proc

def loadavg():
    try:
        with open("/proc/loadavg") as f:
            return [float(x) for x in f.read().split()[:3]]
    except OSError:
        return None


def busy_seconds():
    """CPU seconds the whole machine spent in user, nice and system mode (/proc/stat)."""
    with open("/proc/stat") as f:
        fields = f.readline().split()
    return sum(int(x) for x in fields[1:4]) / os.sysconf("SC_CLK_TCK")


def proc_status(pid, keys=("VmRSS", "VmHWM", "RssAnon"), fds=True, missing_ok=True):
    """The `keys` of /proc/PID/status in KiB (as KEY_kib), its threads and (with `fds`) its
    open descriptors; {} or what was read when the process is gone (unless not `missing_ok`)."""
    out = {}
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                key, _, value = line.partition(":")
                if key in keys:
                    out[key + "_kib"] = int(value.split()[0])
                elif key == "Threads":
                    out["threads"] = int(value)
        if fds:
            out["fds"] = len(os.listdir("/proc/%d/fd" % pid))
    except OSError:
        if not missing_ok:
            raise
    return out


def cpu(pid):
    """CPU seconds of one process (all its threads), children excluded: mailswitch and slapd
    fork nothing."""
    return peers.cpu_seconds([pid])


def cpu_split(pid):
    """(user, system) CPU seconds of the process."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / ticks, int(fields[12]) / ticks


def task_switches(pid):
    """Context switches of all the process's threads (voluntary + involuntary; a thread
    wake-up is one)."""
    total = 0
    for task in os.listdir("/proc/%d/task" % pid):
        try:
            with open("/proc/%d/task/%s/status" % (pid, task)) as f:
                for line in f:
                    if line.startswith(("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches")):
                        total += int(line.split()[1])
        except OSError:
            pass
    return total


# ---------------------------------------------------------------------------------------------
# mailswitch

class LogTail:
    """Reads a growing log file from where it last stopped."""

    def __init__(self, path):
        self.path = path
        self.offset = 0
        self.text = ""

    def read(self):
        try:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                data = f.read()
        except OSError:
            return ""
        self.offset += len(data)
        new = data.decode("utf-8", "replace")
        self.text += new
        return new


def log_summary(path, limit=40):
    """Lines per level and the notice-or-worse lines (the first `limit`)."""
    levels, notable = {}, []
    try:
        with open(path, errors="replace") as f:
            for line in f:
                match = re.search(r"\b(trace|debug|info|notice|warning|error|critical)\b", line)
                level = match.group(1) if match else "other"
                levels[level] = levels.get(level, 0) + 1
                if level in ("notice", "warning", "error", "critical", "other") and len(notable) < limit:
                    notable.append(line.rstrip("\n")[:400])
    except OSError:
        pass
    return {"lines_by_level": levels, "notable": notable}


def configure(text, settings):
    """Sets `  key: value` (directory and routing keys are indented two spaces) once each; a
    value None removes the top-level block `key:` instead."""
    for key, value in settings.items():
        if value is None:
            text, n = re.subn(r"^%s:\n(?:  .*\n)*" % re.escape(key), "", text, flags=re.M)
            if n != 1:
                raise BenchError("configuration: block %r found %d times" % (key, n))
            continue
        text, n = re.subn(r"^  %s: .*$" % re.escape(key), lambda m: "  %s: %s" % (key, value), text, flags=re.M)
        if n != 1:
            raise BenchError("configuration: %r found %d times" % (key, n))
    return text


class Mailswitch:
    """One fresh `mailswitch serve` with the bench configuration plus `settings`, listening on
    `listen`. Named "mailswitch (LABEL)", or "mailswitch" without a label; `check(text)` may
    refuse the configuration (raise BenchError) before it is written."""

    def __init__(self, binary, state, work, label, settings, example=peers.EXAMPLE_CONFIG, arguments=(),
                 listen=LISTEN, check=None):
        self.label = label
        self.name = "mailswitch (%s)" % label if label is not None else "mailswitch"
        self.listen = listen
        d = os.path.join(work, "mailswitch-" + re.sub(r"[^a-z0-9]+", "-", label.lower()).strip("-")
                         if label is not None else "mailswitch")
        os.makedirs(d, exist_ok=True)
        self.config = os.path.join(d, "mailswitch.yaml")
        text = configure(peers.mailswitch_config(state, listen, example), settings)
        if check:
            check(text)
        with open(self.config, "w") as f:
            f.write(text)
        checked = subprocess.run([binary, "check-config", "--config", self.config], stdout=subprocess.PIPE,
                                 stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True, timeout=60)
        if checked.returncode != 0:
            raise BenchError("mailswitch check-config %s failed:\n%s" % (self.config, checked.stdout[-3000:]))
        for address in listen.values():
            if peers.listening(address) or not peers.port_bindable(address):
                raise BenchError("%s is in use (another run?)" % address)
        self.log_path = os.path.join(d, "mailswitch.log")
        self.log = LogTail(self.log_path)
        # peers.spawn: own session, soft descriptor limit raised to the hard one.
        self.process = peers.spawn([binary, "serve", "--config", self.config] + list(arguments), self.log_path)
        STARTED.append((self.name, self.process))
        self.pid = self.process.pid
        try:
            peers.wait_listening(self.name, [self.process], list(listen.values()), self.log_path)
        except peers.PeerError as error:
            self.stop()
            raise BenchError(str(error))

    def synchronized(self, timeout):
        """Until the log says the change feed is synchronized (the cache is emptied then) or
        the process is gone, at most `timeout` seconds; False when neither came."""
        def synchronized_or_gone():
            self.log.read()
            return self.process.poll() is not None or SYNC_LINE in self.log.text
        return wait_until(synchronized_or_gone, timeout, 0.05)

    def wait_feed(self, timeout=FEED_TIMEOUT):
        """Seconds until the log says the change feed is synchronized, or raises."""
        start = time.monotonic()
        if not self.synchronized(timeout):
            raise BenchError("%s: no %r in its log within %.0f s:\n%s"
                             % (self.name, SYNC_LINE, timeout, peers.tail(self.log_path)))
        if self.process.poll() is not None:
            raise BenchError("%s exited (status %s):\n%s"
                             % (self.name, self.process.returncode, peers.tail(self.log_path)))
        return round(time.monotonic() - start, 3)

    def alive(self):
        return self.process.poll() is None

    def mark(self):
        """Where the log is now, for lines_since."""
        self.log.read()
        return len(self.log.text)

    def lines_since(self, mark):
        self.log.read()
        return self.log.text[mark:].splitlines()

    def stop(self):
        """Stops it; returns (exited before we stopped it, exit status)."""
        crashed = self.process.poll() is not None
        peers.terminate(self.pid)
        try:
            self.process.wait(5)
        except subprocess.TimeoutExpired:
            pass
        forget(self.process)
        return crashed, self.process.returncode


# What `mailswitch status` reports of its event loops (EventLoopStatistics), by build: the
# epoll set per loop ("event loops: epoll_waits=.. events=.. interest_changes=.. read_sources=..
# registrations=.. stale_events=.. timer_sources=..") or, older, a Dispatch source per socket
# ("event sources: read_sources=.. write_sources=.. timer_sources=.. suspends=.. resumes=..").
LOOP_STATISTICS = ("epoll_waits", "events", "interest_changes", "registrations", "stale_events",
                   "read_sources", "write_sources", "timer_sources", "suspends", "resumes")


def loop_statistics(binary, config):
    """The event loops' counters so far (`mailswitch status`, its "event loops:" line, or an
    older build's "event sources:" line): only the keys the build reports."""
    result = subprocess.run([binary, "status", "--config", config], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, timeout=30)
    line = next((l.strip() for l in result.stdout.splitlines()
                 if l.strip().startswith(("event loops:", "event sources:"))), "")
    return {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", line)}


def login_window(options, binary, proxy, users_path, concurrency, protocol="imap"):
    """One window of logins (options.seconds, no warm-up) by the load generator
    (options.loadgen) through `proxy`; per login: mailswitch's CPU (user, system), context
    switches, system calls (perf stat, when perf works) and the event loops' counters
    (LOOP_STATISTICS: None for a key the build does not report; `events_per_wait` when it
    reports both). Benchmarks/profile.py's measurement; Benchmarks/soak.py's windows too."""
    pid = proxy.pid
    perf = None
    if shutil.which("perf"):
        perf = subprocess.Popen(["perf", "stat", "-x", ",", "-e", "raw_syscalls:sys_enter", "-p", str(pid)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        time.sleep(0.3)
    before = (cpu_split(pid), task_switches(pid), loop_statistics(binary, proxy.config))
    result = run_loadgen(options.loadgen, ["login", "--protocol", protocol, "--concurrency", str(concurrency),
                                           "--duration", str(options.seconds), "--warmup", "0",
                                           "--users", users_path], timeout=options.seconds + 120)
    after = (cpu_split(pid), task_switches(pid), loop_statistics(binary, proxy.config))
    syscalls = None
    if perf:
        perf.send_signal(signal.SIGINT)
        _, err = perf.communicate(timeout=10)
        match = re.search(r"^(\d+),,raw_syscalls:sys_enter", err, re.M)
        syscalls = int(match.group(1)) if match else None
    if not proxy.alive():
        # A zombie's /proc still reads: without this check its figures would pass for a run.
        raise BenchError("mailswitch exited during the %s c%d window (status %s):\n%s"
                         % (protocol, concurrency, proxy.process.poll(), peers.tail(proxy.log_path)))
    logins = result.get("ok", 0) + (result.get("uncounted") or {}).get("ok", 0)
    if not logins:
        raise BenchError("no logins (mailswitch %s): %s\n%s" % (
            "running" if proxy.alive() else "exited with %s" % proxy.process.returncode,
            {k: result.get(k) for k in ("errors", "diagnostics")}, peers.tail(proxy.log_path)))
    row = {"logins": logins, "errors": errors_of(result), "logins_per_s": result.get("rate_per_s"),
           "p50_us": (result.get("latency_us") or {}).get("p50"),
           "cpu_user_ms": 1000.0 * (after[0][0] - before[0][0]) / logins,
           "cpu_sys_ms": 1000.0 * (after[0][1] - before[0][1]) / logins,
           "context_switches": (after[1] - before[1]) / logins,
           # perf counted from before the first login to after the last, status calls included
           "syscalls": syscalls / logins if syscalls is not None else None}
    row["cpu_ms"] = row["cpu_user_ms"] + row["cpu_sys_ms"]
    deltas = {key: after[2][key] - before[2][key] for key in LOOP_STATISTICS if key in before[2] and key in after[2]}
    for key in LOOP_STATISTICS:
        row[key] = deltas[key] / logins if key in deltas else None
    row["events_per_wait"] = (deltas["events"] / deltas["epoll_waits"]
                              if deltas.get("epoll_waits") and "events" in deltas else None)
    return row


# ---------------------------------------------------------------------------------------------
# the report

def spread(values, range_pct=False):
    """Median, min, max and count of the values that are not None (None if there are none);
    with `range_pct` also (max - min) as a share of the median, in %."""
    values = [v for v in values if v is not None]
    if not values:
        return None
    median = statistics.median(values)
    out = {"median": round(median, 4), "min": min(values), "max": max(values), "n": len(values)}
    if range_pct:
        out["range_pct"] = round(100.0 * (max(values) - min(values)) / median, 1) if median else None
    return out


def fmt(value, form="%.0f"):
    return "—" if value is None else form % value


def median_range(s, form, collapse=False):
    """A spread as "median (min–max)"; with `collapse`, the median alone when there is no range."""
    if not s:
        return "—"
    if collapse and (s["n"] == 1 or s["min"] == s["max"]):
        return form % s["median"]
    return "%s (%s–%s)" % (form % s["median"], form % s["min"], form % s["max"])


def ratio_text(entry):
    """A ratio of the medians, with the same ratio per round."""
    if not entry or entry["of_medians"] is None:
        return "—"
    per = entry["per_round"]
    return "%.3f (per round %s)" % (entry["of_medians"], ", ".join("%.3f" % v for v in per)) if per else "%.3f" % entry["of_medians"]


def machine_line():
    """The machine in one line (the report of a run begun by begin_run, and bench.py's)."""
    memory = ""
    try:
        with open("/proc/meminfo") as f:
            memory = "%.0f GiB" % (int(f.readline().split()[1]) / 1024 / 1024)
    except OSError:
        pass
    return "%d cores, %s, %s %s, Python %s" % (os.cpu_count() or 0, memory, platform.system(), platform.release(),
                                              platform.python_version())


def git_state():
    """(short commit, whether Sources/ or Package.swift are modified); informative only."""
    try:
        commit = subprocess.run(["git", "-C", REPO, "rev-parse", "--short", "HEAD"], stdout=subprocess.PIPE,
                                stderr=subprocess.DEVNULL, text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", REPO, "status", "--porcelain", "--", "Sources", "Package.swift"],
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, timeout=10).stdout.strip()
    except Exception:   # noqa: BLE001 - informative only
        commit, dirty = None, ""
    return commit, bool(dirty)


def utc(seconds, form="%Y-%m-%d %H:%M UTC"):
    return datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc).strftime(form)


def machine_facts(binary):
    """The machine, the binary and the source tree, for the JSON (moves.py, readonly.py)."""
    commit, modified = git_state()
    with open("/proc/meminfo") as f:
        mem = int(f.readline().split()[1]) / 1024 / 1024
    return {"nproc": os.cpu_count(), "mem_gib": round(mem), "kernel": "%s %s" % (platform.system(), platform.release()),
            "python": platform.python_version(), "date": utc(time.time()),
            "nofile": list(resource.getrlimit(resource.RLIMIT_NOFILE)), "binary": binary,
            "binary_mtime": utc(os.stat(binary).st_mtime),
            "git_commit": commit, "sources_modified": modified, "loadavg_at_start": loadavg()}


def machine_text(m):
    """machine_facts in the Markdown: "Machine: ...; binary ... (built ...; git ...)"."""
    return "Machine: %s cores, %s GiB, %s, Python %s; binary %s (built %s; git %s%s)" % (
        m["nproc"], m["mem_gib"], m["kernel"], m["python"],
        os.path.relpath(m["binary"], REPO) if m["binary"].startswith(REPO) else m["binary"],
        m["binary_mtime"], m["git_commit"], ", Sources/ modified" if m["sources_modified"] else "")


def write_results(out, name, report, text, unicode=False, newline=False):
    """DIR/NAME.json, then DIR/NAME.md; with `unicode` the JSON keeps non-ASCII as it is, with
    `newline` it ends in one. Returns (Markdown path, JSON path)."""
    os.makedirs(out, exist_ok=True)
    md, js = os.path.join(out, name + ".md"), os.path.join(out, name + ".json")
    with open(js, "w") as f:
        json.dump(report, f, indent=2, ensure_ascii=not unicode)
        if newline:
            f.write("\n")
    with open(md, "w") as f:
        f.write(text)
    return md, js


def finish(out, name, report, started, failures_of, markdown, tell, summarize=None):
    """The end of a run that lists its own failures (moves.py, readonly.py): the time since
    `started` (time.monotonic()), the load average, `summarize(report)`, the failures (every
    error of the run among them); the report written and printed once the machine was read.
    Returns the exit status (1 when there are failures)."""
    report["elapsed_s"] = round(time.monotonic() - started, 1)
    report["loadavg_at_end"] = loadavg()
    if summarize:
        summarize(report)
    report["failures"] = failures_of(report)
    if "machine" in report:
        text = markdown(report)
        md, js = write_results(out, name, report, text, unicode=True, newline=True)
        tell("wrote %s and %s (%.0f s)" % (md, js, report["elapsed_s"]))
        print(text)
    return 1 if report["failures"] else 0


def write_report(out, name, report, text):
    """DIR/NAME.json and DIR/NAME.md, the text printed too; the exit status of a run (1 when
    the report holds errors). The profile, relays, soak, replica and hang-up race runs'."""
    write_results(out, name, report, text)
    print(text)
    return 1 if report["errors"] else 0
