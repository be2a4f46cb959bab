#!/usr/bin/env python3
"""Benchmark: resident memory of the mailswitch process per idle, logged-in IMAP session,
plaintext vs implicit TLS. Not a test: it measures and writes results, it asserts little.

    python3 Benchmarks/idle_memory.py [--sessions N] [--out DIR]      (as root, from the repo root)

MAILSWITCH_BINARY=PATH measures another build (default .build/release/mailswitch).

What it does:
  1. `scripts/lab.py up --dir D` (D a fresh temp dir): slapd, because routing does an LDAP
     lookup per login, and the lab CA and certificates in D/tls. The lab's Dovecot stores are
     started too but not used.
  2. Tests/Fixtures/synthetic_store.py on 127.0.0.1:31143: an IMAP store that accepts any login
     and holds the connection, so the store side costs nothing worth mentioning.
  3. A mailswitch config made from config/mailswitch.example.yaml: lab paths, the `legacy`
     backend pointed at the synthetic store, log level warning. Logins are "benchNNNNN",
     which have no LDAP entry and so go to routing.default_backend (legacy).
  4. Per mode (plain: 127.0.0.1:1143; tls: implicit TLS on 127.0.0.1:1993, verified against
     D/tls/ca.pem as mail.example.test): a fresh `.build/release/mailswitch serve`; 50 warm-up
     logins, closed; baseline VmRSS; N sessions opened (at most --concurrency at a time), each
     `a LOGIN benchNNNNN secret` and idle; VmRSS after 3 s (and the max of 5 samples over 2 s),
     descriptors and threads; NOOP on 100 of them; all closed; mailswitch stopped.
  5. DIR/idle-memory.json and DIR/idle-memory.md (default DIR: results/ at the repo root).

Per-session figure = (VmRSS with N sessions - baseline VmRSS) / N, in KiB. The client (this
script) and the synthetic store are separate processes and are not counted.

Descriptors: mailswitch holds 2 per session (client socket, store socket). With this machine's
RLIMIT_NOFILE hard limit of 20,000 the default N is 9,800. This script raises its own soft
limit to the hard one; mailswitch and the store inherit / raise theirs the same way.
Everything runs on 127.0.0.1; every wait is bounded (overall --timeout, default 600 s).
"""
import argparse
import asyncio
import collections
import os
import random
import resource
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib  # noqa: E402  (Benchmarks/benchlib.py: the checks, /proc, the report)
from benchlib import REPO, BenchError  # noqa: E402
from lab import wait_until  # noqa: E402  (scripts/lab.py)

BINARY = os.path.abspath(os.environ.get("MAILSWITCH_BINARY") or os.path.join(REPO, ".build", "release", "mailswitch"))
LAB = os.path.join(REPO, "scripts", "lab.py")
EXAMPLE_CONFIG = os.path.join(REPO, "config", "mailswitch.example.yaml")
STORE_SCRIPT = os.path.join(REPO, "Tests", "Fixtures", "synthetic_store.py")
HOST = "127.0.0.1"
STORE_PORT = 31143
PORTS = {"plain": 1143, "tls": 1993}
TLS_NAME = "mail.example.test"
DEFAULT_SESSIONS = 9800
WARMUP = 50
NOOP_SAMPLE = 100
STEP_TIMEOUT = 30.0        # per connection step: connect+handshake, greeting, login reply, NOOP
SETTLE_SECONDS = 3.0
SAMPLES = 5
SAMPLE_SPAN = 2.0


class OverallTimeout(BaseException):
    pass


say = benchlib.sayer("idle-memory")


# ---------------------------------------------------------------------------------------------
# processes, ports, /proc

def listening_ports():
    """Ports with a TCP socket in LISTEN state (IPv4 and IPv6), from /proc/net/tcp{,6}."""
    ports = set()
    for name in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(name) as f:
                next(f)
                for line in f:
                    fields = line.split()
                    if fields[3] == "0A":
                        ports.add(int(fields[1].rsplit(":", 1)[1], 16))
        except OSError:
            pass
    return ports


def proc_status(pid):
    return benchlib.proc_status(pid, ("VmRSS", "VmHWM", "RssAnon", "RssFile", "RssShmem", "VmSize"), fds=False,
                                missing_ok=False)


def fd_kinds(pid):
    kinds = collections.Counter()
    base = "/proc/%d/fd" % pid
    for fd in os.listdir(base):
        try:
            target = os.readlink(os.path.join(base, fd))
        except OSError:
            continue
        if target.startswith("socket:"):
            kinds["socket"] += 1
        elif target.startswith("pipe:"):
            kinds["pipe"] += 1
        elif target.startswith("anon_inode:"):
            kinds[target[len("anon_inode:"):].strip("[]")] += 1
        else:
            kinds["file"] += 1
    return dict(kinds)


def snapshot(pid):
    s = proc_status(pid)
    kinds = fd_kinds(pid)
    s["fds"] = sum(kinds.values())
    s["fd_kinds"] = kinds
    return s


def tail(path, lines=40):
    try:
        with open(path, errors="replace") as f:
            return f.readlines()[-lines:]
    except OSError:
        return []


# ---------------------------------------------------------------------------------------------
# configuration

def replace_once(text, old, new):
    if text.count(old) != 1:
        raise BenchError("config/mailswitch.example.yaml: expected exactly one %r (found %d)"
                         % (old, text.count(old)))
    return text.replace(old, new)


def write_config(lab_dir, path):
    with open(EXAMPLE_CONFIG) as f:
        text = f.read()
    text = text.replace("/etc/mailswitch/ldap.secret", os.path.join(lab_dir, "ldap.secret"))
    text = text.replace("/etc/mailswitch/tls/", os.path.join(lab_dir, "tls") + "/")
    text = text.replace("/run/mailswitch/admin.sock", os.path.join(lab_dir, "idle-memory.sock"))
    text = text.replace("/var/lib/mailswitch/holds.json", os.path.join(lab_dir, "idle-memory-holds.json"))
    text = replace_once(text, 'hosts: ["127.0.0.1:10143"]', 'hosts: ["127.0.0.1:%d"]' % STORE_PORT)
    text = replace_once(text, "level: info", "level: warning")
    # Every session comes from 127.0.0.1 (an example from before limits has no such key).
    if "max_connections_per_ip: 200" in text:
        text = replace_once(text, "max_connections_per_ip: 200", "max_connections_per_ip: 1000000")
    # Commented-out examples (a master password file, an OAuth client secret) may keep theirs.
    if any("\"/etc/mailswitch" in line and not line.lstrip().startswith("#") for line in text.splitlines()):
        raise BenchError("config still names /etc/mailswitch after the path edits")
    try:
        import yaml
        parsed = yaml.safe_load(text)
        assert parsed["backends"]["legacy"]["hosts"] == ["127.0.0.1:%d" % STORE_PORT]
        assert parsed["routing"]["default_backend"] == "legacy"
        assert parsed["log"]["level"] == "warning"
        listeners = [l["address"] for l in parsed["listeners"]]
        listeners += [parsed["metrics"]["address"]] if parsed.get("metrics") else []   # must be free too
    except ImportError:
        listeners = None
    with open(path, "w") as f:
        f.write(text)
    result = subprocess.run([BINARY, "check-config", "--config", path], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, timeout=60)
    if result.returncode != 0:
        raise BenchError("mailswitch check-config failed:\n" + result.stdout.decode("utf-8", "replace"))
    if listeners is None:
        import re
        listeners = re.findall(r'address:\s*"([^"]+)"', text)
    return [int(a.rsplit(":", 1)[1]) for a in listeners]


# ---------------------------------------------------------------------------------------------
# the IMAP client

class Client:
    def __init__(self, mode, ca_file, step_timeout):
        self.mode = mode
        self.port = PORTS[mode]
        self.timeout = step_timeout
        self.ctx = None
        if mode == "tls":
            self.ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca_file)
            self.ctx.check_hostname = True
            self.ctx.verify_mode = ssl.CERT_REQUIRED
        self.errors = collections.Counter()
        self.tls_info = None

    async def _line(self, reader):
        return await asyncio.wait_for(reader.readline(), self.timeout)

    async def open(self, user):
        """A logged-in session (reader, writer), or None (the error is counted)."""
        writer = None
        try:
            try:
                if self.ctx is not None:
                    reader, writer = await asyncio.wait_for(asyncio.open_connection(
                        HOST, self.port, ssl=self.ctx, server_hostname=TLS_NAME,
                        ssl_handshake_timeout=self.timeout), self.timeout)
                    if self.tls_info is None:
                        obj = writer.get_extra_info("ssl_object")
                        cert = obj.getpeercert()
                        self.tls_info = {"version": obj.version(), "cipher": obj.cipher()[0],
                                         "peer_cn": dict(x[0] for x in cert.get("subject", ())).get("commonName")}
                else:
                    reader, writer = await asyncio.wait_for(asyncio.open_connection(HOST, self.port), self.timeout)
            except asyncio.TimeoutError:
                raise BenchError("connect/handshake timed out")
            greeting = await self._line(reader)
            if not greeting.startswith(b"* OK"):
                raise BenchError("bad greeting: %r" % greeting[:120])
            writer.write(b"a LOGIN %s secret\r\n" % user.encode())
            await writer.drain()
            while True:
                line = await self._line(reader)
                if not line:
                    raise BenchError("connection closed before the login reply")
                if line.startswith(b"a "):
                    break
            if not line.startswith(b"a OK"):
                raise BenchError("login refused: %r" % line.rstrip()[:160])
            if b"X-STORE-SYNTHETIC" not in line:
                raise BenchError("login reply lacks X-STORE-SYNTHETIC: %r" % line.rstrip()[:160])
            return reader, writer
        except asyncio.TimeoutError:
            self.errors["timeout waiting for greeting/login reply"] += 1
        except BenchError as error:
            self.errors[str(error)] += 1
        except (OSError, ssl.SSLError, asyncio.IncompleteReadError) as error:
            self.errors["%s: %s" % (type(error).__name__, error)] += 1
        if writer is not None:
            writer.transport.abort()
        return None

    async def open_many(self, users, concurrency, deadline):
        gate = asyncio.Semaphore(concurrency)

        async def one(user):
            async with gate:
                return await self.open(user)

        tasks = [asyncio.ensure_future(one(u)) for u in users]
        done, pending = await asyncio.wait(tasks, timeout=max(1.0, deadline - time.monotonic()))
        for t in pending:
            t.cancel()
        if pending:
            self.errors["not opened before the overall deadline"] += len(pending)
            await asyncio.gather(*pending, return_exceptions=True)
        sessions = []
        for t in tasks:
            if t.cancelled() or not t.done():
                continue
            if t.exception() is not None:
                self.errors["%s: %s" % (type(t.exception()).__name__, t.exception())] += 1
            elif t.result() is not None:
                sessions.append(t.result())
        return sessions

    async def noop(self, session, tag):
        reader, writer = session
        try:
            writer.write(b"%s NOOP\r\n" % tag)
            await writer.drain()
            while True:
                line = await self._line(reader)
                if not line:
                    return "closed"
                if line.startswith(tag + b" "):
                    return None if line.startswith(tag + b" OK") else line.rstrip()[:120].decode("utf-8", "replace")
        except (asyncio.TimeoutError, OSError, ssl.SSLError) as error:
            return "%s %s" % (type(error).__name__, error)

    async def close_all(self, sessions, timeout=60.0):
        """Closes every session (TLS: close_notify first), bounded; stragglers are aborted."""
        for _, writer in sessions:
            writer.close()
        waits = [asyncio.ensure_future(w.wait_closed()) for _, w in sessions]
        if waits:
            await asyncio.wait(waits, timeout=timeout)
            for task, (_, writer) in zip(waits, sessions):
                if not task.done():
                    task.cancel()
                    writer.transport.abort()
            await asyncio.gather(*waits, return_exceptions=True)


# ---------------------------------------------------------------------------------------------
# one mode

def run_mode(mode, n, concurrency, config, lab_dir, log_path, deadline, started):
    result = {"mode": mode, "port": PORTS[mode], "sessions_requested": n}
    log = open(log_path, "wb")
    proc = subprocess.Popen([BINARY, "serve", "--config", config], stdin=subprocess.DEVNULL,
                            stdout=log, stderr=log, cwd=lab_dir)
    log.close()
    started.append(("mailswitch[%s]" % mode, proc))
    pid = proc.pid
    result["pid"] = pid
    try:
        if not wait_until(lambda: proc.poll() is not None or PORTS[mode] in listening_ports(), 20):
            raise BenchError("mailswitch did not listen on %d within 20 s" % PORTS[mode])
        if proc.poll() is not None:
            raise BenchError("mailswitch exited at start (status %s):\n%s" % (proc.returncode, "".join(tail(log_path))))
        time.sleep(0.5)
        result["fresh"] = snapshot(pid)
        with open("/proc/%d/limits" % pid) as f:
            result["mailswitch_nofile"] = next((l.split()[3:5] for l in f if l.startswith("Max open files")), None)
        client = Client(mode, os.path.join(lab_dir, "tls", "ca.pem"), STEP_TIMEOUT)
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        try:
            # warm-up: lazily allocated things (LDAP connection, TLS contexts, pipes, arenas)
            say("%s: mailswitch pid %d, %d warm-up logins" % (mode, pid, WARMUP))
            warm = loop.run_until_complete(client.open_many(["warm%05d" % i for i in range(1, WARMUP + 1)],
                                                            WARMUP, deadline))
            result["warmup_ok"] = len(warm)
            loop.run_until_complete(client.close_all(warm))
            fds_before = result["fresh"]["fds"]
            wait_until(lambda: snapshot(pid)["fds"] <= fds_before + 260, 15, 0.2)   # pipe pools may keep pipes
            time.sleep(2.0)
            result["baseline"] = snapshot(pid)
            result["warmup_errors"] = dict(client.errors)
            client.errors.clear()

            say("%s: opening %d sessions (%d at a time); baseline VmRSS %.1f MiB, %d fds"
                % (mode, n, concurrency, result["baseline"]["VmRSS_kib"] / 1024, result["baseline"]["fds"]))
            t0 = time.monotonic()
            sessions = loop.run_until_complete(client.open_many(["bench%05d" % i for i in range(1, n + 1)],
                                                                concurrency, deadline))
            result["open_seconds"] = round(time.monotonic() - t0, 2)
            result["sessions_open"] = len(sessions)
            result["errors"] = sum(client.errors.values())
            result["error_kinds"] = dict(client.errors)
            if mode == "tls":
                result["tls"] = client.tls_info
            say("%s: %d open in %.1f s, %d errors; settling %.0f s"
                % (mode, len(sessions), result["open_seconds"], result["errors"], SETTLE_SECONDS))
            if proc.poll() is not None:
                raise BenchError("mailswitch exited while sessions were opened (status %s)" % proc.returncode)

            time.sleep(SETTLE_SECONDS)
            result["loaded"] = snapshot(pid)
            samples = []
            for _ in range(SAMPLES):
                time.sleep(SAMPLE_SPAN / SAMPLES)
                samples.append(proc_status(pid)["VmRSS_kib"])
            result["rss_samples_kib"] = samples
            result["rss_loaded_max_kib"] = max(samples + [result["loaded"]["VmRSS_kib"]])

            base = result["baseline"]["VmRSS_kib"]
            if sessions:
                result["kib_per_session"] = round((result["loaded"]["VmRSS_kib"] - base) / len(sessions), 2)
                result["kib_per_session_max"] = round((result["rss_loaded_max_kib"] - base) / len(sessions), 2)
                result["anon_kib_per_session"] = round(
                    (result["loaded"]["RssAnon_kib"] - result["baseline"]["RssAnon_kib"]) / len(sessions), 2)
                result["fds_per_session"] = round((result["loaded"]["fds"] - result["baseline"]["fds"]) / len(sessions), 3)

            # still alive?
            sample = random.Random(1).sample(sessions, min(NOOP_SAMPLE, len(sessions)))
            answers = loop.run_until_complete(asyncio.gather(
                *[client.noop(s, b"n%d" % i) for i, s in enumerate(sample)]))
            failures = collections.Counter(a for a in answers if a)
            result["noop_checked"] = len(sample)
            result["noop_failures"] = sum(failures.values())
            result["noop_failure_kinds"] = dict(failures)
            say("%s: VmRSS %.1f MiB (max %.1f), %d fds, %d threads; NOOP %d/%d ok"
                % (mode, result["loaded"]["VmRSS_kib"] / 1024, result["rss_loaded_max_kib"] / 1024,
                   result["loaded"]["fds"], result["loaded"]["threads"],
                   len(sample) - result["noop_failures"], len(sample)))

            loop.run_until_complete(client.close_all(sessions))
            del sessions, sample
            drained = wait_until(lambda: snapshot(pid)["fds"] <= result["baseline"]["fds"] + 260, 30, 0.2)
            time.sleep(1.0)
            result["after_close"] = snapshot(pid)
            result["after_close"]["drained"] = drained
        finally:
            asyncio.set_event_loop(None)
            loop.close()
    finally:
        crashed = proc.poll() is not None
        status = benchlib.stop_process(proc, "mailswitch[%s]" % mode, 15.0, say)
        result["exited_before_stop"] = crashed
        result["exit_status"] = status
        lines = [l.rstrip("\n") for l in tail(log_path, 200)]
        result["log_lines"] = len(lines)
        result["log_tail"] = lines[-20:]
    return result


# ---------------------------------------------------------------------------------------------
# report

def machine():
    mem_total = None
    try:
        out = subprocess.run(["free", "-g"], stdout=subprocess.PIPE, text=True, timeout=10).stdout
        mem_total = int(next(l for l in out.splitlines() if l.startswith("Mem:")).split()[1])
    except Exception:
        pass
    commit, modified = benchlib.git_state()
    return {"nproc": os.cpu_count(), "mem_total_gib": mem_total, "kernel": os.uname().release,
            "date": benchlib.utc(time.time(), "%Y-%m-%d %H:%M:%S UTC"),
            "nofile": list(resource.getrlimit(resource.RLIMIT_NOFILE)),
            "python": sys.version.split()[0], "client_openssl": ssl.OPENSSL_VERSION,
            "git_commit": commit, "sources_modified": modified,
            "binary": BINARY, "binary_mtime": benchlib.utc(os.stat(BINARY).st_mtime, "%Y-%m-%d %H:%M:%S UTC")}


def markdown(report):
    m = report["machine"]
    rows = ["| mode | sessions | errors | baseline RSS MiB | RSS with sessions MiB (max) | KiB per session "
            "| fds | threads |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in report["runs"]:
        if "loaded" not in r:
            rows.append("| %s | - | failed | | | | | |" % r["mode"])
            continue
        rows.append("| %s | %d | %d | %.1f | %.1f (%.1f) | %.1f | %d | %d |" % (
            r["mode"], r["sessions_open"], r["errors"] + r.get("noop_failures", 0),
            r["baseline"]["VmRSS_kib"] / 1024, r["loaded"]["VmRSS_kib"] / 1024, r["rss_loaded_max_kib"] / 1024,
            r["kib_per_session"], r["loaded"]["fds"], r["loaded"]["threads"]))
    out = ["# mailswitch: resident memory per idle IMAP session", "",
           "`python3 Benchmarks/idle_memory.py --sessions %d` — %s" % (report["sessions"], m["date"]), ""]
    out += rows + [""]
    if report.get("tls_over_plain") is not None:
        out.append("TLS / plain (KiB per session): **%.2f×**" % report["tls_over_plain"])
        out.append("")
    out.append("Details per mode:")
    out.append("")
    for r in report["runs"]:
        if "loaded" not in r:
            out.append("- %s: failed: %s" % (r["mode"], r.get("failure", "?")))
            continue
        b, l, a = r["baseline"], r["loaded"], r.get("after_close", {})
        out.append("- %s: fresh %.1f MiB → baseline after %d warm-up logins %.1f MiB → %.1f MiB with %d sessions "
                   "(RssAnon %+.1f KiB/session, fds %+.3f/session; loaded fds: %s); opened in %.1f s; NOOP %d/%d ok; "
                   "after closing all: %.1f MiB, %d fds; exit status %s%s" % (
                       r["mode"], r["fresh"]["VmRSS_kib"] / 1024, WARMUP, b["VmRSS_kib"] / 1024,
                       l["VmRSS_kib"] / 1024, r["sessions_open"], r["anon_kib_per_session"], r["fds_per_session"],
                       ", ".join("%s %d" % kv for kv in sorted(l["fd_kinds"].items())), r["open_seconds"],
                       r["noop_checked"] - r["noop_failures"], r["noop_checked"],
                       a.get("VmRSS_kib", 0) / 1024, a.get("fds", 0), r["exit_status"],
                       "" if not r.get("tls") else "; %s %s, certificate CN %s" % (
                           r["tls"]["version"], r["tls"]["cipher"], r["tls"]["peer_cn"])))
        if r.get("error_kinds"):
            out.append("  - errors: " + "; ".join("%s × %d" % kv for kv in r["error_kinds"].items()))
        if r.get("noop_failure_kinds"):
            out.append("  - NOOP failures: " + "; ".join("%s × %d" % kv for kv in r["noop_failure_kinds"].items()))
    out += ["",
            "Per-session figure = (VmRSS with N idle sessions − VmRSS baseline) / N; VmRSS read 3 s after the "
            "last login (max of 5 further samples over 2 s in parentheses). Each mode runs a fresh mailswitch "
            "(`.build/release/mailswitch serve`, log level warning); the baseline is taken after %d warm-up "
            "logins were made and closed. Sessions are `a LOGIN benchNNNNN secret` (no LDAP entry → "
            "default backend) to a synthetic store (Tests/Fixtures/synthetic_store.py) that accepts any login and "
            "holds the connection. The client (this script, asyncio, ≤%d connects at a time) and the synthetic "
            "store are separate processes and are not counted; everything is on 127.0.0.1." % (WARMUP, report["concurrency"]),
            "",
            "N = %d here. The default is 9,800, not 10,000: this machine's RLIMIT_NOFILE hard limit is %d and "
            "cannot be raised, and mailswitch holds 2 descriptors per session (client socket + store socket), "
            "plus its listeners, LDAP connection and idle pipe pools (up to 64 pipes per event loop)."
            % (report["sessions"], m["nofile"][1]),
            "",
            "Machine: nproc %s, %s GiB RAM (`free -g` total), kernel %s, Python %s (%s) as the client; mailswitch "
            "binary built %s, git %s%s." % (m["nproc"], m["mem_total_gib"], m["kernel"], m["python"],
                                             m["client_openssl"], m["binary_mtime"], m["git_commit"],
                                             " (Sources/ has uncommitted changes)" if m["sources_modified"] else "")]
    return "\n".join(out) + "\n"


# ---------------------------------------------------------------------------------------------

def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sessions", type=int, default=DEFAULT_SESSIONS, help="idle sessions per mode (default 9800)")
    parser.add_argument("--out", default=os.path.join(REPO, "results"), help="output directory (default results/)")
    parser.add_argument("--concurrency", type=int, default=200, help="logins in progress at once (default 200)")
    parser.add_argument("--modes", default="plain,tls", help="comma-separated: plain,tls")
    parser.add_argument("--timeout", type=float, default=600, help="overall limit in seconds (default 600)")
    options = parser.parse_args()
    modes = [m for m in options.modes.split(",") if m]
    if any(m not in PORTS for m in modes) or not modes:
        parser.error("--modes: plain and/or tls")
    benchlib.require_root("idle_memory.py")
    benchlib.require_binary("idle_memory.py", BINARY, "%s not found (build it first; this script never builds)")
    soft, hard = benchlib.raise_nofile()
    need = 2 * options.sessions + 300
    if hard != resource.RLIM_INFINITY and need > hard:
        sys.exit("idle_memory.py: %d sessions need about %d descriptors in mailswitch, RLIMIT_NOFILE is %d"
                 % (options.sessions, need, hard))

    start = time.monotonic()
    deadline = start + options.timeout

    def on_alarm(signum, frame):
        raise OverallTimeout("overall timeout of %.0f s" % options.timeout)
    signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(int(options.timeout) + 60)   # backstop; the phases themselves use `deadline`
    def on_term(signum, frame):
        raise KeyboardInterrupt()
    signal.signal(signal.SIGTERM, on_term)

    lab_dir = tempfile.mkdtemp(prefix="mailswitch-bench-")
    started = []
    lab_up = False
    report = {"sessions": options.sessions, "concurrency": options.concurrency, "runs": []}
    exit_code = 0
    try:
        busy = sorted(p for p in list(PORTS.values()) + [1110, 1995, STORE_PORT, 3389] if p in listening_ports())
        if busy:
            raise BenchError("ports already listening: %s (another lab/demo/test run? see `ss -ltnp`)" % busy)
        say("lab up in %s" % lab_dir)
        lab_up = True
        result = subprocess.run([sys.executable, LAB, "up", "--dir", lab_dir], stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=120)
        if result.returncode != 0:
            raise BenchError("lab.py up failed:\n" + result.stdout.decode("utf-8", "replace"))
        config = os.path.join(lab_dir, "mailswitch-bench.yaml")
        listener_ports = write_config(lab_dir, config)
        busy = sorted(p for p in listener_ports + [STORE_PORT] if p in listening_ports())
        if busy:
            raise BenchError("mailswitch/store ports already listening: %s" % busy)

        store_log = open(os.path.join(lab_dir, "synthetic_store.log"), "wb")
        store = subprocess.Popen([sys.executable, STORE_SCRIPT, str(STORE_PORT)], stdin=subprocess.DEVNULL,
                                 stdout=store_log, stderr=store_log)
        store_log.close()
        started.append(("synthetic_store", store))
        if not wait_until(lambda: store.poll() is not None or STORE_PORT in listening_ports(), 15):
            raise BenchError("synthetic store did not listen on %d" % STORE_PORT)
        if store.poll() is not None:
            raise BenchError("synthetic store exited:\n" + "".join(tail(os.path.join(lab_dir, "synthetic_store.log"))))

        os.makedirs(options.out, exist_ok=True)
        for mode in modes:
            log_path = os.path.join(lab_dir, "mailswitch-%s.log" % mode)
            try:
                run = run_mode(mode, options.sessions, options.concurrency, config, lab_dir, log_path,
                               deadline, started)
            except BenchError as error:
                run = {"mode": mode, "failure": str(error)}
                exit_code = 1
                say("%s failed: %s" % (mode, error))
            shutil.copy(log_path, os.path.join(options.out, "idle-memory-%s.log" % mode))
            report["runs"].append(run)
            if store.poll() is not None:
                raise BenchError("synthetic store died (status %s)" % store.returncode)
        ok = {r["mode"]: r for r in report["runs"] if r.get("kib_per_session")}
        if "plain" in ok and "tls" in ok:
            report["tls_over_plain"] = round(ok["tls"]["kib_per_session"] / ok["plain"]["kib_per_session"], 3)
        report["machine"] = machine()
        report["elapsed_seconds"] = round(time.monotonic() - start, 1)
        md, js = benchlib.write_results(options.out, "idle-memory", report, markdown(report), newline=True)
        say("wrote %s and %s" % (js, md))
        print(markdown(report))
        if any(r.get("errors") or r.get("noop_failures") or r.get("exited_before_stop") for r in report["runs"]):
            exit_code = 1
    except (BenchError, OverallTimeout, KeyboardInterrupt, subprocess.TimeoutExpired) as error:
        say("failed: %s" % (error or type(error).__name__))
        exit_code = 1
    finally:
        signal.alarm(0)
        for name, proc in reversed(started):
            benchlib.stop_process(proc, name, 15.0, say)
        if lab_up:
            subprocess.run([sys.executable, LAB, "down", "--dir", lab_dir], stdin=subprocess.DEVNULL,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=120)
        shutil.rmtree(lab_dir, ignore_errors=True)
    return exit_code


if __name__ == "__main__":
    sys.exit(main())
