#!/usr/bin/env python3
"""Benchmark: what following the directory costs and how fast it acts. Not a test: it
measures, checks, and writes results; it asserts nothing about the figures.

    scripts/bench moves [--quick] [--rounds N] [--seconds S] [--sessions N] [--moved-users M]
                        [--parts a,b] [--out DIR] [--timeout SECONDS]
    MAILSWITCH_BINARY=.build-bench/release/mailswitch python3 Benchmarks/moves.py [...]
                                                          (as root, from the repo root)

A. Login cost of the route cache and the change feed. A bench lab (scripts/lab.py, port
   offset 300: slapd with 2,000 users on 127.0.0.1:3689, real Dovecot stores on 127.0.0.2 and
   127.0.0.3, each user's mailHost its store's address). The C load generator
   (Benchmarks/loadgen, built as bench.py builds it) logs in over plain IMAP at concurrency 32
   for a fixed window (10 s, 5 s with --quick, after 1 s of warm-up), against:
     warm            directory.cache_ttl 60s, change_feed sync; a pass of one login per user
                     first (after the feed has synchronized, which empties the cache), so
                     every route is cached when the window starts
     cold            cache_ttl and negative_cache_ttl "1ms": every login asks LDAP, as before
                     the cache existed; change_feed sync
     cold, feed off  the same with change_feed off: what the feed itself costs
     warm, metrics off
                     warm without the metrics block: what recording metrics costs (every
                     swift-metrics handle is then the no-op one)
     direct          the stores themselves (each user to its own store), for the ratio
   each mailswitch a fresh process (Benchmarks/peers.py's bench configuration, listeners on
   127.0.0.1:1443/1410/2293/2295). They run in turn (--configs picks some), in --rounds rounds (default 3),
   and the report gives the median and min-max over the rounds: latencies on these VMs are
   bimodal. Per run: logins/s, p50/p99 login latency, CPU ms per login of mailswitch and of
   slapd (utime+stime from /proc, before/after, divided by every login of the run, warm-up
   second included, as bench.py does).

B. Time from an ldapmodify to the last session ended. The stores are replaced by
   Tests/Fixtures/synthetic_store.py on their addresses and port (any login, then holds;
   X-STORE-LEGACY / X-STORE-NEW), so the idle sessions cost the stores nothing. A fresh
   mailswitch with the default pacing (routing.disconnect_burst 100, max_disconnect_delay
   10s; change_feed sync). This script (asyncio, one process) opens --sessions (default 9,000)
   idle IMAP sessions through it, user0001..user2000 in turn (4-5 each), and checks each
   landed on its user's store. Then:
     1. one user (user0003) moved to the other store by one ldapmodify: time from just before
        ldapmodify starts, and from its return, to the last of that user's sessions closed
        by the server. Then a pause until that pacing episode is over (max_disconnect_delay
        + 2 s), so the next batch starts an episode of its own.
     2. --moved-users (default 1,000) users moved by ONE ldapmodify (half of them from
        legacy to new, half the other way): time from its return to the last of their
        sessions closed, how many closed within 1 s, the spread (first to last close), whether
        each got "* BYE [UNAVAILABLE]" first, and that no session of an unmoved user ended
        (and 100 of them still answer NOOP afterwards). mailswitch's RSS and CPU are sampled
        every 100 ms meanwhile, and its "route changes: ended N sessions over X s" line is
        read from its log.
   Goal (reported, not asserted): every moved session ends within max_disconnect_delay + 1 s
   of the ldapmodify's return.

Writes DIR/moves.md and DIR/moves.json (default DIR: results/) and prints the Markdown.
Binary: $MAILSWITCH_BINARY, else .build-bench/release/mailswitch (`scripts/bench moves`
builds .build/release and passes that one). Everything runs on 127.0.0.x; every wait is
bounded; everything started is stopped at the end, on SIGINT/SIGTERM and after --timeout
(default 900 s). Exit status 1 when any part failed or had errors.
"""
import argparse
import asyncio
import os
import random
import re
import resource
import select
import shutil
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib  # noqa: E402  (Benchmarks/benchlib.py: the lab, the load generator, mailswitch, the run)
import peers  # noqa: E402  (Benchmarks/peers.py: the bench configuration, processes, CPU)
from benchlib import (LISTEN, REPO, STARTED, SYNTHETIC_STORE, BenchError, Mailswitch,  # noqa: E402
                      cpu, errors_of, fmt, log_summary, loadavg, proc_status, say, spread, stop)

CONCURRENCY = 32
# Part A's configurations: directory/routing keys set in the bench configuration.
CONFIGS = [
    ("warm", benchlib.WARM),
    ("cold", {"cache_ttl": '"1ms"', "negative_cache_ttl": '"1ms"', "change_feed": "sync"}),
    ("cold, feed off", {"cache_ttl": '"1ms"', "negative_cache_ttl": '"1ms"', "change_feed": "off"}),
    # What recording metrics costs (issue 11: within 3 %): "warm" without the metrics block, so
    # that every swift-metrics handle is the no-op one.
    ("warm, metrics off", dict(benchlib.WARM, metrics=None)),
]
BASELINE = "before"
CONFIG_NOTES = {
    "warm": "cache_ttl 60s, change_feed sync, routes cached by a pass first",
    "cold": "cache_ttl/negative_cache_ttl 1ms (every login asks LDAP), change_feed sync",
    "cold, feed off": "as cold, change_feed off",
    "warm, metrics off": "as warm, without the metrics block (nothing recorded)",
    "direct": "the stores themselves (Dovecot)",
}
# Part B: the defaults of config/mailswitch.example.yaml, written out.
MOVE_SETTINGS = dict(benchlib.WARM, disconnect_burst="100", max_disconnect_delay='"10s"')
SINGLE_USER_INDEX = 2          # user0003: never in the big batch (see moved_indices)
STEP_TIMEOUT = 15.0            # connect, greeting, login reply, NOOP reply
EPISODE_RE = re.compile(r"route changes: ended (\d+) sessions over ([0-9.]+)s \((\d+) at once, (\d+) spread\)")
NOOP_SAMPLE = 100


def slug(name):
    """A configuration's name on the command line: "warm, metrics off" is warm-metrics-off."""
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


# ---------------------------------------------------------------------------------------------
# A. login cost

def loadgen_run(loadgen, arguments, users_path, seconds):
    return benchlib.run_loadgen(loadgen, arguments + ["--users", users_path], timeout=seconds + 180)


def measure_logins(loadgen, users_path, seconds, proxy_pid, slapd_pid, store_pids):
    """One window of plain IMAP logins at concurrency 32, CPU read before and after. Also the
    CPU of everything else on the machine meanwhile (all user+system time minus that of
    mailswitch, slapd, the stores and the load generator), which says whether something
    outside the benchmark (a build, the tests) took CPU from it."""
    ours = [p for p in [proxy_pid, slapd_pid] + store_pids if p]
    before = (cpu(proxy_pid) if proxy_pid else None, cpu(slapd_pid), peers.cpu_seconds(ours), benchlib.busy_seconds(),
              time.monotonic())
    result = loadgen_run(loadgen, ["login", "--protocol", "imap", "--concurrency", str(CONCURRENCY),
                                   "--duration", str(seconds), "--warmup", "1"], users_path, seconds)
    after = (cpu(proxy_pid) if proxy_pid else None, cpu(slapd_pid), peers.cpu_seconds(ours), benchlib.busy_seconds(),
             time.monotonic())
    other = (after[3] - before[3]) - (after[2] - before[2]) - (result.get("self_cpu_s") or 0)
    operations = result.get("ok", 0) + (result.get("uncounted") or {}).get("ok", 0)
    latency = result.get("latency_us") or {}
    row = {"logins_per_s": result.get("rate_per_s"), "p50_us": latency.get("p50"), "p99_us": latency.get("p99"),
           "logins": operations, "errors": errors_of(result), "loadgen_cpu_util": result.get("window_cpu_util"),
           "slapd_cpu_s": round(after[1] - before[1], 4),
           "other_cpu_cores": round(max(0.0, other) / (after[4] - before[4]), 3),
           "slapd_cpu_ms_per_login": round(1000.0 * (after[1] - before[1]) / operations, 4) if operations else None}
    if proxy_pid:
        row["proxy_cpu_s"] = round(after[0] - before[0], 4)
        row["proxy_cpu_ms_per_login"] = round(1000.0 * (after[0] - before[0]) / operations, 4) if operations else None
    row["loadgen"] = result
    return row


def part_a(options, binary, state, work, loadgen, slapd_pid, report):
    users = peers.bench_users(state)
    via_proxy = benchlib.users_file(work, "mailswitch", users, lambda user, store: LISTEN["imap"])
    direct = benchlib.users_file(work, "direct", users, peers.endpoint_for(None, state, "direct", "imap"))
    runs = []
    report["a"] = {"seconds": options.seconds, "concurrency": CONCURRENCY, "rounds": options.rounds,
                   "users": len(users), "runs": runs}
    systems = [name for name, _ in CONFIGS if name in options.configs] + ["direct"]
    settings = dict(CONFIGS)
    if options.baseline_binary:
        # The release before the route cache, the feed and the registry, with its own example
        # configuration (it knows none of the new keys): "today's figures", measured in this run.
        example = os.path.join(work, "baseline-example.yaml")
        with open(example, "w") as f:
            f.write(subprocess.run(["git", "-C", REPO, "show", "%s:config/mailswitch.example.yaml" % options.baseline_rev],
                                   stdout=subprocess.PIPE, check=True, text=True).stdout)
        systems.insert(0, BASELINE)
        settings[BASELINE] = {}
        CONFIG_NOTES[BASELINE] = "the release before this change (%s), one LDAP search per login" % options.baseline_rev
    store_pids = [state["pids"][name] for name in ("legacy", "new") if state["pids"].get(name)]
    for round_ in range(1, options.rounds + 1):
        for system in systems:
            say("A round %d/%d: %s" % (round_, options.rounds, system))
            run = {"round": round_, "system": system, "loadavg_before": loadavg()}
            runs.append(run)
            if system == "direct":
                run.update(measure_logins(loadgen, direct, options.seconds, None, slapd_pid, store_pids))
                say("  %s logins/s, p50 %s µs, p99 %s µs, %d errors" % (
                    run["logins_per_s"], run["p50_us"], run["p99_us"], run["errors"]))
                continue
            if system == BASELINE:
                proxy = Mailswitch(options.baseline_binary, state, work, "%s r%d" % (system, round_), {}, example)
            else:
                proxy = Mailswitch(binary, state, work, "%s r%d" % (system, round_), settings[system])
            try:
                if settings[system].get("change_feed") == "sync":
                    run["feed_sync_s"] = proxy.wait_feed()
                time.sleep(0.5)
                if system.startswith("warm"):
                    # One login per user, so that every route is in the cache.
                    warm = loadgen_run(loadgen, ["login", "--protocol", "imap", "--concurrency", str(CONCURRENCY),
                                                 "--count", str(len(users))], via_proxy, 60)
                    run["warm_pass"] = {"ok": warm.get("ok"), "errors": errors_of(warm),
                                        "seconds": warm.get("elapsed_s")}
                    if warm.get("ok") != len(users) or errors_of(warm):
                        run["errors_warm_pass"] = errors_of(warm) or len(users) - (warm.get("ok") or 0)
                run.update(measure_logins(loadgen, via_proxy, options.seconds, proxy.pid, slapd_pid, store_pids))
                run["proxy_rss_kib"] = proc_status(proxy.pid).get("VmRSS_kib")
            finally:
                run["exited_early"], run["exit_status"] = proxy.stop()
                run["log"] = log_summary(proxy.log_path)
            if run["exited_early"]:
                run["errors"] = run.get("errors", 0) + 1
            say("  %s logins/s, p50 %s µs, p99 %s µs, proxy %s ms/login, slapd %s ms/login, %d errors" % (
                run.get("logins_per_s"), run.get("p50_us"), run.get("p99_us"), run.get("proxy_cpu_ms_per_login"),
                run.get("slapd_cpu_ms_per_login"), run.get("errors", 0)))
    report["a"]["summary"] = summarize_a(runs, systems)
    report["a"]["ratios"] = ratios_a(runs, report["a"]["summary"])


FIGURES_A = ["logins_per_s", "p50_us", "p99_us", "proxy_cpu_ms_per_login", "slapd_cpu_ms_per_login", "loadgen_cpu_util",
             "other_cpu_cores"]


def summarize_a(runs, systems):
    out = {}
    for system in systems:
        mine = [r for r in runs if r["system"] == system]
        out[system] = {figure: spread([r.get(figure) for r in mine]) for figure in FIGURES_A}
        out[system]["errors"] = sum(r.get("errors", 0) + r.get("errors_warm_pass", 0) for r in mine)
    return out


def ratios_a(runs, summary):
    """Ratios of the medians, and the same ratio per round (min-max)."""
    def med(system, figure):
        s = (summary.get(system) or {}).get(figure)
        return s["median"] if s else None

    def per_round(a, b, figure):
        values = []
        for round_ in sorted({r["round"] for r in runs}):
            x = next((r.get(figure) for r in runs if r["round"] == round_ and r["system"] == a), None)
            y = next((r.get(figure) for r in runs if r["round"] == round_ and r["system"] == b), None)
            if x is not None and y:
                values.append(round(x / y, 3))
        return values

    def entry(a, b, figure):
        x, y = med(a, figure), med(b, figure)
        return {"of_medians": round(x / y, 3) if x is not None and y else None, "per_round": per_round(a, b, figure)}

    return {
        "warm_over_cold_proxy_cpu": entry("warm", "cold", "proxy_cpu_ms_per_login"),
        "cold_over_cold_off_proxy_cpu": entry("cold", "cold, feed off", "proxy_cpu_ms_per_login"),
        "warm_over_cold_slapd_cpu": entry("warm", "cold", "slapd_cpu_ms_per_login"),
        "warm_over_direct_logins": entry("warm", "direct", "logins_per_s"),
        "cold_over_direct_logins": entry("cold", "direct", "logins_per_s"),
        "warm_over_cold_logins": entry("warm", "cold", "logins_per_s"),
        "cold_over_cold_off_logins": entry("cold", "cold, feed off", "logins_per_s"),
        "warm_over_metrics_off_proxy_cpu": entry("warm", "warm, metrics off", "proxy_cpu_ms_per_login"),
        "warm_over_metrics_off_logins": entry("warm", "warm, metrics off", "logins_per_s"),
        "warm_over_metrics_off_p50": entry("warm", "warm, metrics off", "p50_us"),
        "warm_over_before_proxy_cpu": entry("warm", BASELINE, "proxy_cpu_ms_per_login"),
        "warm_over_before_logins": entry("warm", BASELINE, "logins_per_s"),
        "cold_over_before_proxy_cpu": entry("cold", BASELINE, "proxy_cpu_ms_per_login"),
    }


# ---------------------------------------------------------------------------------------------
# B. the idle-session client (asyncio protocols: a close is timed when the kernel reports it)

class Session(asyncio.Protocol):
    def __init__(self, index, user, password, store):
        self.index, self.user, self.password, self.store = index, user, password, store
        self.transport = None
        self.buffer = b""
        self.state = "greeting"
        self.loop = asyncio.get_running_loop()
        self.logged_in = self.loop.create_future()
        self.noop_future = None
        self.closed_at = None           # time.monotonic() of the server's EOF / reset
        self.closed_by_us = False
        self.bye_line = None
        self.bye_at = None
        self.last_lines = []

    # asyncio callbacks
    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        self.buffer += data
        while b"\n" in self.buffer:
            line, self.buffer = self.buffer.split(b"\n", 1)
            self.line(line.rstrip(b"\r"))
        if len(self.buffer) > 65536:
            self.fail("line too long")

    def eof_received(self):
        self.closed(time.monotonic())
        return False    # close our side too

    def connection_lost(self, error):
        self.closed(time.monotonic())

    # the protocol
    def closed(self, now):
        if self.closed_at is None and not self.closed_by_us:
            if self.buffer:
                self.line(self.buffer.rstrip(b"\r"))
                self.buffer = b""
            self.closed_at = now
        if not self.logged_in.done():
            self.logged_in.set_result("closed by the server during login (last line: %r)"
                                      % (self.last_lines[-1] if self.last_lines else None))
        if self.noop_future is not None and not self.noop_future.done():
            self.noop_future.set_result("closed")

    def fail(self, why):
        if not self.logged_in.done():
            self.logged_in.set_result(why)
        self.abort()

    def abort(self):
        self.closed_by_us = True
        if self.transport is not None:
            self.transport.abort()

    def line(self, line):
        text = line.decode("utf-8", "replace")
        if self.state == "greeting":
            if not line.startswith(b"* OK"):
                return self.fail("greeting: %r" % text[:160])
            self.state = "login"
            self.transport.write(b'a1 LOGIN "%s" "%s"\r\n' % (self.user.encode(), self.password.encode()))
        elif self.state == "login":
            if not line.startswith(b"a1 "):
                return
            if not line.startswith(b"a1 OK"):
                return self.fail("login: %r" % text[:160])
            if ("X-STORE-%s" % self.store.upper()).encode() not in line.split(b"]")[0]:
                return self.fail("wrong store (wanted %s): %r" % (self.store, text[:160]))
            self.state = "open"
            self.logged_in.set_result(None)
        else:
            self.last_lines = (self.last_lines + [text[:200]])[-5:]
            if self.bye_line is None and line.upper().startswith(b"* BYE"):
                self.bye_line = text[:300]
                self.bye_at = time.monotonic()
            if self.noop_future is not None and line.startswith(b"n%d " % self.index) and not self.noop_future.done():
                self.noop_future.set_result(None if line.startswith(b"n%d OK" % self.index) else text[:160])

    async def noop(self):
        if self.closed_at is not None or self.transport is None or self.transport.is_closing():
            return "closed before the NOOP"
        self.noop_future = self.loop.create_future()
        self.transport.write(b"n%d NOOP\r\n" % self.index)
        try:
            return await asyncio.wait_for(self.noop_future, STEP_TIMEOUT)
        except asyncio.TimeoutError:
            return "no NOOP reply within %.0f s" % STEP_TIMEOUT


async def open_sessions(plan, concurrency, deadline):
    """plan: [(user, password, store)]; returns (sessions that logged in, {error: count})."""
    loop = asyncio.get_running_loop()
    host, port = LISTEN["imap"].rsplit(":", 1)
    gate = asyncio.Semaphore(concurrency)
    errors = {}

    async def one(index, user, password, store):
        async with gate:
            if time.monotonic() > deadline:
                return None, "not opened before the deadline"
            session = None
            try:
                _, session = await asyncio.wait_for(loop.create_connection(
                    lambda: Session(index, user, password, store), host, int(port)), STEP_TIMEOUT)
                why = await asyncio.wait_for(asyncio.shield(session.logged_in), STEP_TIMEOUT)
            except asyncio.TimeoutError:
                why = "timed out (connect, greeting or login)"
            except OSError as error:
                why = "%s: %s" % (type(error).__name__, error)
            if why is not None:
                if session is not None:
                    session.abort()
                return None, why
            return session, None

    results = await asyncio.gather(*[one(i, *p) for i, p in enumerate(plan)])
    sessions = []
    for session, why in results:
        if session is None:
            key = re.sub(r"user\d{4}", "userNNNN", why)
            errors[key] = errors.get(key, 0) + 1
        else:
            sessions.append(session)
    return sessions, errors


def moved_indices(n_users, count):
    """User indices (0-based) of the big batch: 0, 1, 4, 5, 8, 9, ... (as many legacy users as
    new ones), never SINGLE_USER_INDEX; more only if count exceeds half the users."""
    first = [i for i in range(n_users) if i % 4 in (0, 1)]
    rest = [i for i in range(n_users) if i % 4 == 3]
    chosen = (first + rest)[:count]
    if count > len(chosen):
        raise BenchError("--moved-users %d: at most %d of %d users (one is kept for the single move, "
                         "some must stay unmoved)" % (count, len(chosen), n_users))
    return chosen


def ldif_moves(state, moves):
    """moves: [(user, new mailHost)] -> LDIF for one ldapmodify."""
    return "\n".join("dn: uid=%s,%s\nchangetype: modify\nreplace: mailHost\nmailHost: %s\n"
                     % (user, state["base"], host) for user, host in moves).encode()


def ldapmodify(state, ldif):
    """Runs ONE ldapmodify (the lab's admin credentials); returns (started, returned) in
    time.monotonic()."""
    command = ["ldapmodify", "-x", "-H", state["ldap_uri"], "-D", state["admin_dn"], "-y",
               state["admin_password_file"]]
    started = time.monotonic()
    result = subprocess.run(command, input=ldif, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=60)
    returned = time.monotonic()
    if result.returncode != 0:
        raise BenchError("ldapmodify failed (exit %d): %s" % (result.returncode,
                                                             result.stderr.decode("utf-8", "replace")[-1000:]))
    return started, returned


class Sampler:
    """mailswitch's VmRSS and CPU every `period` seconds while running."""

    def __init__(self, pid, period=0.1):
        self.pid, self.period, self.samples, self.task = pid, period, [], None

    def start(self):
        self.task = asyncio.ensure_future(self.run())

    async def run(self):
        while True:
            status = proc_status(self.pid)
            self.samples.append((time.monotonic(), status.get("VmRSS_kib"), cpu(self.pid)))
            await asyncio.sleep(self.period)

    async def stop(self):
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)

    def cpu_between(self, start, end):
        inside = [s for s in self.samples if start - self.period <= s[0] <= end + self.period]
        if len(inside) < 2:
            return None
        return round(inside[-1][2] - inside[0][2], 3)

    def rss_max_between(self, start, end):
        inside = [s[1] for s in self.samples if start <= s[0] <= end and s[1] is not None]
        return max(inside) if inside else None


async def wait_closed(sessions, timeout):
    """Until every session in `sessions` was closed by the server, or `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while any(s.closed_at is None for s in sessions) and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    return all(s.closed_at is not None for s in sessions)


def per_second(closes, origin):
    """{"-1": n, "0": n, ...}: closes per whole second after origin (floor)."""
    buckets = {}
    for c in closes:
        key = int((c - origin) // 1)
        buckets[key] = buckets.get(key, 0) + 1
    return {str(k): buckets[k] for k in sorted(buckets)}


def close_figures(sessions, started, returned):
    closes = sorted(s.closed_at for s in sessions if s.closed_at is not None)
    out = {"sessions": len(sessions), "ended": len(closes), "not_ended": len(sessions) - len(closes),
           "ldapmodify_s": round(returned - started, 4)}
    if closes:
        out.update({
            "first_close_after_return_s": round(closes[0] - returned, 4),
            "last_close_after_return_s": round(closes[-1] - returned, 4),
            "last_close_after_start_s": round(closes[-1] - started, 4),
            "spread_s": round(closes[-1] - closes[0], 4),
            "ended_within_1s_of_return": sum(1 for c in closes if c - returned <= 1.0),
            "ended_before_return": sum(1 for c in closes if c < returned),
            "closes_per_second_after_return": per_second(closes, returned),
            "median_close_after_return_s": round(statistics.median(closes) - returned, 4),
        })
    byes = [s for s in sessions if s.closed_at is not None and s.bye_line]
    out["with_bye_unavailable"] = sum(1 for s in byes if s.bye_line.upper().startswith("* BYE [UNAVAILABLE]"))
    out["bye_lines"] = sorted({s.bye_line for s in byes})[:5]
    out["without_bye"] = [{"user": s.user, "last_lines": s.last_lines}
                          for s in sessions if s.closed_at is not None and not s.bye_line][:10]
    return out


async def part_b_sessions(options, proxy, state, report_b):
    users = peers.bench_users(state)          # [(user, store, password)], user0001.. in order
    hosts = peers.store_hosts(state)         # {"127.0.0.2": "legacy", ...}
    host_of = {name: host for host, name in hosts.items()}
    other = {"legacy": "new", "new": "legacy"}
    plan = [(users[i % len(users)][0], users[i % len(users)][2], users[i % len(users)][1])
            for i in range(options.sessions)]
    deadline = time.monotonic() + max(60.0, options.sessions / 50.0)
    say("B: opening %d sessions for %d users through mailswitch" % (options.sessions, len(users)))
    cpu_before = cpu(proxy.pid)
    rss_before = proc_status(proxy.pid)
    t = time.monotonic()
    sessions, errors = await open_sessions(plan, options.open_concurrency, deadline)
    opened_s = time.monotonic() - t
    report_b["open"] = {"requested": options.sessions, "opened": len(sessions), "errors": errors,
                        "seconds": round(opened_s, 2), "per_s": round(len(sessions) / opened_s, 1) if opened_s else None,
                        "proxy_cpu_ms_per_login": round(1000 * (cpu(proxy.pid) - cpu_before) / len(sessions), 4)
                        if sessions else None,
                        "rss_before_kib": rss_before.get("VmRSS_kib")}
    say("B: %d open in %.1f s, %d errors" % (len(sessions), opened_s, sum(errors.values())))
    if not sessions:
        raise BenchError("no session opened: %s" % errors)
    try:
        await asyncio.sleep(2.0)
        report_b["open"]["loaded"] = proc_status(proxy.pid)
        early = [s for s in sessions if s.closed_at is not None]
        report_b["ended_before_any_move"] = len(early)
        by_user = {}
        for s in sessions:
            by_user.setdefault(s.user, []).append(s)
        delay = 10.0   # MOVE_SETTINGS["max_disconnect_delay"]

        # 1. one user
        single_user, single_store, _ = users[SINGLE_USER_INDEX]
        single = by_user.get(single_user, [])
        ldif = ldif_moves(state, [(single_user, host_of[other[single_store]])])
        say("B1: moving %s (%d sessions) %s -> %s" % (single_user, len(single), single_store, other[single_store]))
        sampler = Sampler(proxy.pid)
        sampler.start()
        loop = asyncio.get_running_loop()
        started, returned = await loop.run_in_executor(None, ldapmodify, state, ldif)
        await wait_closed(single, delay + 5.0)
        one = close_figures(single, started, returned)
        one.update({"user": single_user, "from": single_store, "to": other[single_store]})
        # The pacing episode this move started lasts max_disconnect_delay: the batch below
        # must start an episode of its own.
        await asyncio.sleep(max(0.0, started + delay + 2.0 - time.monotonic()))
        others_ended = [s for s in sessions if s.user != single_user and s.closed_at is not None]
        one["other_sessions_ended"] = len(others_ended)
        report_b["single"] = one
        say("B1: last of %d sessions closed %.3f s after ldapmodify returned (%.3f s after it started); "
            "%d other sessions ended" % (one["ended"], one.get("last_close_after_return_s", float("nan")),
                                         one.get("last_close_after_start_s", float("nan")), len(others_ended)))

        # 2. the batch
        indices = moved_indices(len(users), options.moved_users)
        moved_users = {users[i][0] for i in indices}
        moves = [(users[i][0], host_of[other[users[i][1]]]) for i in indices]
        moved = [s for s in sessions if s.user in moved_users]
        unmoved = [s for s in sessions if s.user not in moved_users and s.user != single_user]
        directions = {}
        for i in indices:
            key = "%s -> %s" % (users[i][1], other[users[i][1]])
            directions[key] = directions.get(key, 0) + 1
        say("B2: moving %d users (%d sessions; %s) in one ldapmodify" % (
            len(moved_users), len(moved), ", ".join("%s: %d" % kv for kv in sorted(directions.items()))))
        proxy.log.read()
        log_mark = len(proxy.log.text)
        rss_at_start = proc_status(proxy.pid).get("VmRSS_kib")
        started, returned = await loop.run_in_executor(None, ldapmodify, state, ldif_moves(state, moves))
        all_ended = await wait_closed(moved, delay + 20.0)
        last = max((s.closed_at for s in moved if s.closed_at is not None), default=returned)
        # The episode's log line comes when its window is over; then a little more time for
        # any wrongly ended unmoved session to show.
        line_deadline = time.monotonic() + max(3.0, started + delay + 5.0 - time.monotonic())
        episode = None
        while time.monotonic() < line_deadline:
            proxy.log.read()
            match = EPISODE_RE.search(proxy.log.text, log_mark)
            if match:
                episode = match
                break
            await asyncio.sleep(0.1)
        await asyncio.sleep(2.0)
        proxy.log.read()
        await sampler.stop()
        batch = close_figures(moved, started, returned)
        batch.update({"users": len(moved_users), "directions": directions, "all_ended": all_ended})
        batch["unmoved_sessions"] = len(unmoved)
        batch["unmoved_ended"] = sum(1 for s in unmoved if s.closed_at is not None)
        batch["unmoved_ended_detail"] = [{"user": s.user, "after_return_s": round(s.closed_at - returned, 3),
                                          "last_lines": s.last_lines} for s in unmoved if s.closed_at is not None][:10]
        batch["proxy_cpu_s_ldapmodify_to_last_close"] = sampler.cpu_between(started, last)
        batch["proxy_rss_kib"] = {"at_start": rss_at_start, "max_during": sampler.rss_max_between(started, last),
                                  "after": proc_status(proxy.pid).get("VmRSS_kib")}
        batch["rss_samples"] = len(sampler.samples)
        batch["log_line"] = episode.group(0) if episode else None
        if episode:
            batch["log_figures"] = {"ended": int(episode.group(1)), "seconds": float(episode.group(2)),
                                    "at_once": int(episode.group(3)), "spread": int(episode.group(4))}
        batch["log_lines_notice"] = [line for line in proxy.log.text[log_mark:].splitlines()
                                     if re.search(r"\b(notice|warning|error|critical)\b", line)][:20]
        offsets = sorted(round(s.closed_at - returned, 4) for s in moved if s.closed_at is not None)
        batch["close_offsets_after_return_s"] = offsets
        report_b["batch"] = batch
        say("B2: %d/%d sessions ended; last %.3f s after ldapmodify returned, %d within 1 s, spread %.3f s; "
            "BYE [UNAVAILABLE] %d; unmoved ended %d; log: %s" % (
                batch["ended"], batch["sessions"], batch.get("last_close_after_return_s", float("nan")),
                batch.get("ended_within_1s_of_return", 0), batch.get("spread_s", float("nan")),
                batch["with_bye_unavailable"], batch["unmoved_ended"], batch["log_line"]))

        # Are the unmoved sessions still relayed?
        alive = [s for s in unmoved if s.closed_at is None]
        sample = random.Random(1).sample(alive, min(NOOP_SAMPLE, len(alive)))
        answers = await asyncio.gather(*[s.noop() for s in sample])
        report_b["noop_after"] = {"checked": len(sample), "failed": sum(1 for a in answers if a),
                                  "failures": sorted({a for a in answers if a})[:5]}
        report_b["all_sessions_ended_by_server"] = sum(1 for s in sessions if s.closed_at is not None)
    finally:
        for s in sessions:
            if s.closed_at is None:
                s.abort()
        await asyncio.sleep(0.2)


def start_synthetic_stores(state, lab_dir):
    """The lab's Dovecot stores stopped, synthetic ones on their addresses and IMAP port."""
    for name in ("legacy", "new"):
        benchlib.lab(["stop-store", name], lab_dir)
    for name in ("legacy", "new"):
        host, port = state["stores"][name]["imap"].rsplit(":", 1)
        process = subprocess.Popen([sys.executable, SYNTHETIC_STORE, port, "--host", host, "--name", name],
                                   stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                   text=True, start_new_session=True)
        STARTED.append(("synthetic store %s" % name, process))
        readable, _, _ = select.select([process.stdout], [], [], 15)
        line = process.stdout.readline() if readable else ""
        if not line.startswith("ready"):
            raise BenchError("synthetic store %s on %s:%s did not start: %r" % (name, host, port, line))


def part_b(options, binary, state, work, lab_dir, report):
    report["b"] = b = {"sessions_requested": options.sessions, "moved_users": options.moved_users,
                       "settings": MOVE_SETTINGS}
    start_synthetic_stores(state, lab_dir)
    proxy = Mailswitch(binary, state, work, "moves", MOVE_SETTINGS)
    try:
        b["feed_sync_s"] = proxy.wait_feed()
        b["pid"] = proxy.pid
        asyncio.run(part_b_sessions(options, proxy, state, b))
    finally:
        b["exited_early"], b["exit_status"] = proxy.stop()
        b["log"] = log_summary(proxy.log_path)
        if options.keep_logs:
            shutil.copy(proxy.log_path, os.path.join(options.out, "moves-mailswitch.log"))
    for name, process in list(STARTED):
        if name.startswith("synthetic store"):
            stop(name, process)


# ---------------------------------------------------------------------------------------------
# report

def cell(summary, figure, form):
    return benchlib.median_range(summary.get(figure) if summary else None, form, collapse=True)


def goals(report):
    rows = []
    a = report.get("a")
    if a and a.get("summary"):
        warm = (a["summary"].get("warm") or {}).get("slapd_cpu_ms_per_login")
        cold = (a["summary"].get("cold") or {}).get("slapd_cpu_ms_per_login")
        if warm and cold:
            met = warm["max"] <= 0.05 * cold["median"]
            rows.append(("a warm cache takes slapd out of the login path (slapd CPU/login warm ≤ 5 % of cold)",
                         "%.4f vs %.4f ms/login (%.1f %%)" % (warm["median"], cold["median"],
                                                              100 * warm["median"] / cold["median"] if cold["median"] else 0),
                         "met" if met else "not met"))
    b = report.get("b") or {}
    one, batch = b.get("single"), b.get("batch")
    if one:
        last = one.get("last_close_after_return_s")
        rows.append(("1 user moved: its sessions end within 1 s (\"within a second\", "
                     "config/mailswitch.example.yaml)",
                     "%s s after ldapmodify returned (%d/%d sessions)" % (fmt(last, "%.3f"), one["ended"], one["sessions"]),
                     "met" if last is not None and one["not_ended"] == 0 and last <= 1.0 else "not met"))
    if batch:
        last = batch.get("last_close_after_return_s")
        limit = 10.0 + 1.0
        rows.append(("%d users moved: every session ends within max_disconnect_delay + 1 s (11 s)" % batch["users"],
                     "last %s s after ldapmodify returned; %d/%d ended" % (fmt(last, "%.3f"), batch["ended"], batch["sessions"]),
                     "met" if last is not None and batch["not_ended"] == 0 and last <= limit else "not met"))
        rows.append(("every moved IMAP session gets * BYE [UNAVAILABLE] before the close",
                     "%d/%d" % (batch["with_bye_unavailable"], batch["sessions"]),
                     "met" if batch["with_bye_unavailable"] == batch["sessions"] else "not met"))
        rows.append(("no session of an unmoved user ends",
                     "%d of %d ended; NOOP afterwards %d/%d ok" % (
                         batch["unmoved_ended"], batch["unmoved_sessions"],
                         b["noop_after"]["checked"] - b["noop_after"]["failed"], b["noop_after"]["checked"])
                     if b.get("noop_after") else "%d of %d ended" % (batch["unmoved_ended"], batch["unmoved_sessions"]),
                     "met" if batch["unmoved_ended"] == 0 and not (b.get("noop_after") or {}).get("failed") else "not met"))
    return rows


RATIO_ROWS = [   # part A's ratios in the report: (label, key of ratios_a)
    ("warm / cold, proxy CPU per login", "warm_over_cold_proxy_cpu"),
    ("cold / cold feed off, proxy CPU per login (the feed's cost)", "cold_over_cold_off_proxy_cpu"),
    ("warm / cold, slapd CPU per login", "warm_over_cold_slapd_cpu"),
    ("warm / direct, logins/s", "warm_over_direct_logins"),
    ("cold / direct, logins/s", "cold_over_direct_logins"),
    ("warm / cold, logins/s", "warm_over_cold_logins"),
    ("cold / cold feed off, logins/s", "cold_over_cold_off_logins"),
    ("warm / warm metrics off, proxy CPU per login (what metrics cost)", "warm_over_metrics_off_proxy_cpu"),
    ("warm / warm metrics off, logins/s", "warm_over_metrics_off_logins"),
    ("warm / warm metrics off, p50 login latency", "warm_over_metrics_off_p50"),
    ("warm / before, proxy CPU per login", "warm_over_before_proxy_cpu"),
    ("cold / before, proxy CPU per login", "cold_over_before_proxy_cpu"),
    ("warm / before, logins/s", "warm_over_before_logins"),
]


def markdown(report):
    m = report["machine"]
    out = ["# mailswitch: login cost of the route cache and the change feed; time from ldapmodify to sessions ended",
           "",
           "`%s` — %s. %s." % (report["command"], m["date"], benchlib.machine_text(m)),
           ""]
    o = report["options"]
    ran = ["a bench lab (slapd with 2,000 users on 127.0.0.1:3689, port offset 300)"]
    if "a" in o["parts"]:
        ran.append("A: plain IMAP logins at concurrency %d for %g s windows (after 1 s of warm-up) against %d "
                   "fresh mailswitch configurations and against the Dovecot stores directly, interleaved over "
                   "%d round%s" % (CONCURRENCY, o["seconds"], len(o.get("configs") or CONFIGS), o["rounds"],
                                          "" if o["rounds"] == 1 else "s"))
    if "b" in o["parts"]:
        ran.append("B: %d idle IMAP sessions through a fresh mailswitch (synthetic stores), then 1 user and %d "
                   "users moved, each by one ldapmodify" % (o["sessions"], o["moved_users"]))
    out += ["What ran: " + "; ".join(ran) + ". Load average before the run: %s." % (
                "/".join("%.2f" % x for x in m.get("loadavg_at_start") or []) or "?"), ""]
    if report.get("failures"):
        out += ["**This run had errors:** " + "; ".join(report["failures"]), ""]
    a = report.get("a")
    if a and a.get("summary"):
        s = a["summary"]
        out += ["## A. Login cost (plain IMAP, c%d, %s s × %d rounds: median (min–max))" % (
            CONCURRENCY, a["seconds"], a["rounds"]), "",
            "| configuration | logins/s | p50 µs | p99 µs | proxy CPU ms/login | slapd CPU ms/login | loadgen CPU | other CPU | errors |",
            "|---|---|---|---|---|---|---|---|---|"]
        for system in [BASELINE] + [name for name, _ in CONFIGS] + ["direct"]:
            if system not in s:
                continue
            r = s[system]
            out.append("| %s — %s | %s | %s | %s | %s | %s | %s | %s | %d |" % (
                system, CONFIG_NOTES[system], cell(r, "logins_per_s", "%.0f"), cell(r, "p50_us", "%.0f"),
                cell(r, "p99_us", "%.0f"), cell(r, "proxy_cpu_ms_per_login", "%.3f"),
                cell(r, "slapd_cpu_ms_per_login", "%.4f"), cell(r, "loadgen_cpu_util", "%.2f"),
                cell(r, "other_cpu_cores", "%.2f"), r["errors"]))
        rt = a["ratios"]
        out += ["", "| ratio (of the medians) | value |", "|---|---|"]
        out += ["| %s | %s |" % (label, benchlib.ratio_text(rt[key])) for label, key in RATIO_ROWS]
        out += ["",
                "Per run, CPU = utime+stime of the process (/proc) before and after the load generator, ÷ every "
                "login it made (the 1 s warm-up included). Loadgen CPU: the generator's share of one core in "
                "the window. Other CPU: cores used meanwhile by everything but mailswitch, slapd, the stores and "
                "the generator (machine user+system time from /proc/stat minus theirs; kernel work on their "
                "behalf that is charged to no process lands here too) — well above 0 means something outside "
                "the benchmark competed for the two cores. Each mailswitch run is a fresh process; \"warm\" "
                "first makes one login per user (after the change feed synchronized, which empties the "
                "cache). The Dovecot stores' CPU is in no column.", ""]
    b = report.get("b") or {}
    if b.get("open"):
        o = b["open"]
        one, batch = b.get("single") or {}, b.get("batch") or {}
        rss = batch.get("proxy_rss_kib") or {}
        out += ["## B. From ldapmodify to the last session ended (%d idle IMAP sessions, synthetic stores, "
                "burst 100, max_disconnect_delay 10s, change_feed sync)" % o["opened"], "",
                "| figure | value |", "|---|---|",
                "| sessions opened (errors) | %d of %d (%d) in %.1f s, %s logins/s, proxy %s ms CPU/login |" % (
                    o["opened"], o["requested"], sum(o["errors"].values()), o["seconds"], fmt(o["per_s"]),
                    fmt(o.get("proxy_cpu_ms_per_login"), "%.3f")),
                "| mailswitch with the sessions open | VmRSS %s MiB, %s fds, %s threads |" % (
                    fmt((o.get("loaded") or {}).get("VmRSS_kib", 0) / 1024, "%.1f"),
                    (o.get("loaded") or {}).get("fds"), (o.get("loaded") or {}).get("threads"))]
        if one:
            out += ["| **1 user** (%s, %s → %s): sessions ended | %d of %d, %d with * BYE [UNAVAILABLE] |" % (
                        one["user"], one["from"], one["to"], one["ended"], one["sessions"], one["with_bye_unavailable"]),
                    "| ldapmodify took | %s s |" % fmt(one["ldapmodify_s"], "%.3f"),
                    "| last close after ldapmodify started / returned | %s s / %s s |" % (
                        fmt(one.get("last_close_after_start_s"), "%.3f"), fmt(one.get("last_close_after_return_s"), "%.3f")),
                    "| other sessions ended meanwhile | %d |" % one["other_sessions_ended"]]
        if batch:
            out += ["| **%d users** (%s) in one ldapmodify: sessions | %d |" % (
                        batch["users"], ", ".join("%s %d" % kv for kv in sorted(batch["directions"].items())), batch["sessions"]),
                    "| ldapmodify took | %s s |" % fmt(batch["ldapmodify_s"], "%.3f"),
                    "| last close after ldapmodify returned (after it started) | **%s s** (%s s) |" % (
                        fmt(batch.get("last_close_after_return_s"), "%.3f"), fmt(batch.get("last_close_after_start_s"), "%.3f")),
                    "| first close after return; median close | %s s; %s s |" % (
                        fmt(batch.get("first_close_after_return_s"), "%.3f"), fmt(batch.get("median_close_after_return_s"), "%.3f")),
                    "| ended within 1 s of the return (of which before it) | %s of %d (%s) |" % (
                        batch.get("ended_within_1s_of_return", 0), batch["sessions"], batch.get("ended_before_return", 0)),
                    "| closes per second after the return | %s |" % ", ".join(
                        "%s s: %d" % (k, v) for k, v in (batch.get("closes_per_second_after_return") or {}).items()),
                    "| spread (first to last close) | %s s |" % fmt(batch.get("spread_s"), "%.3f"),
                    "| ended / not ended | %d / %d |" % (batch["ended"], batch["not_ended"]),
                    "| got * BYE [UNAVAILABLE] first | %d of %d |" % (batch["with_bye_unavailable"], batch["sessions"]),
                    "| sessions of unmoved users ended | %d of %d (NOOP afterwards: %s) |" % (
                        batch["unmoved_ended"], batch["unmoved_sessions"],
                        "%d/%d ok" % (b["noop_after"]["checked"] - b["noop_after"]["failed"], b["noop_after"]["checked"])
                        if b.get("noop_after") else "—"),
                    "| mailswitch VmRSS: at the ldapmodify / max until the last close / after | %s / %s / %s MiB |" % (
                        fmt((rss.get("at_start") or 0) / 1024, "%.1f"), fmt((rss.get("max_during") or 0) / 1024, "%.1f"),
                        fmt((rss.get("after") or 0) / 1024, "%.1f")),
                    "| mailswitch CPU from the ldapmodify to the last close | %s s (%s ms per ended session) |" % (
                        fmt(batch.get("proxy_cpu_s_ldapmodify_to_last_close"), "%.3f"),
                        fmt(1000.0 * batch["proxy_cpu_s_ldapmodify_to_last_close"] / batch["ended"], "%.3f")
                        if batch.get("proxy_cpu_s_ldapmodify_to_last_close") is not None and batch["ended"] else None),
                    "| mailswitch's log | %s |" % ("`%s`" % batch["log_line"] if batch.get("log_line") else
                                                  "no \"route changes\" line (it is written only when sessions were spread)")]
        out += ["", "Times are this client's (asyncio, time.monotonic()): \"returned\" is when ldapmodify exited, a "
                "close is when the kernel reported the server's FIN/reset. Users moved in the batch: every user "
                "whose index mod 4 is 0 or 1 (as many legacy as new users, each to the other store); the single "
                "move (user0003) comes first and the batch starts only after that pacing episode's window "
                "(max_disconnect_delay + 2 s).", ""]
    rows = goals(report)
    if rows:
        out += ["## Goals (reported, not asserted)", "", "| goal | measured | |", "|---|---|---|"]
        out += ["| %s | %s | %s |" % row for row in rows]
        out.append("")
    return "\n".join(out)


def failures_of(report):
    failures = []
    a = report.get("a") or {}
    for run in a.get("runs", []):
        if run.get("errors") or run.get("errors_warm_pass") or run.get("exited_early"):
            failures.append("A round %d %s: %d errors%s%s" % (run["round"], run["system"], run.get("errors", 0),
                                                              ", warm pass incomplete" if run.get("errors_warm_pass") else "",
                                                              ", mailswitch exited early" if run.get("exited_early") else ""))
    b = report.get("b") or {}
    if b.get("open") and b["open"]["errors"]:
        failures.append("B: %d sessions did not open (%s)" % (sum(b["open"]["errors"].values()),
                                                              "; ".join("%s × %d" % kv for kv in b["open"]["errors"].items())))
    if b.get("exited_early"):
        failures.append("B: mailswitch exited before it was stopped (status %s)" % b.get("exit_status"))
    if b.get("ended_before_any_move"):
        failures.append("B: %d sessions ended before any move" % b["ended_before_any_move"])
    return failures + report.get("errors", [])


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="5 s windows instead of 10 s")
    parser.add_argument("--seconds", type=float, help="A: measurement window per run (default 10, 5 with --quick)")
    parser.add_argument("--rounds", type=int, default=3, help="A: rounds of every configuration (default 3)")
    parser.add_argument("--sessions", type=int, default=9000, help="B: idle sessions (default 9000)")
    parser.add_argument("--moved-users", type=int, default=1000, help="B: users in the big move (default 1000)")
    parser.add_argument("--open-concurrency", type=int, default=100, help="B: logins in flight (default 100)")
    parser.add_argument("--parts", default="a,b", help="a, b or a,b (default)")
    parser.add_argument("--configs", default=",".join(slug(name) for name, _ in CONFIGS),
                        help="A: the mailswitch configurations to run, comma-separated (default all: %s); "
                             "direct always runs" % ",".join(slug(name) for name, _ in CONFIGS))
    parser.add_argument("--out", default=os.path.join(REPO, "results"), help="output directory (default results/)")
    parser.add_argument("--keep-logs", action="store_true", help="also copy part B's mailswitch log to DIR")
    parser.add_argument("--baseline-binary", help="A: also run this mailswitch (the previous release) as \"before\"")
    parser.add_argument("--baseline-rev", default="HEAD~1",
                        help="A: the git revision whose config/mailswitch.example.yaml the baseline reads")
    parser.add_argument("--timeout", type=float, default=900, help="overall limit in seconds (default 900)")
    options = parser.parse_args()
    options.seconds = options.seconds or (5.0 if options.quick else 10.0)
    parts = {p.strip().lower() for p in options.parts.split(",") if p.strip()}
    if not parts or parts - {"a", "b"}:
        parser.error("--parts: a, b or a,b")
    if options.rounds < 1 or options.sessions < 1 or options.moved_users < 1:
        parser.error("--rounds, --sessions and --moved-users must be at least 1")
    known = {slug(name): name for name, _ in CONFIGS}
    chosen = [c.strip() for c in options.configs.split(",") if c.strip()]
    if not chosen or set(chosen) - set(known):
        parser.error("--configs: some of %s" % ",".join(known))
    options.configs = [known[c] for c in chosen]
    benchlib.require_root("moves.py")
    binary = benchlib.mailswitch_binary()
    benchlib.require_binary("moves.py", binary)
    benchlib.sbin_on_path()
    _, hard = benchlib.raise_nofile()
    if "b" in parts and hard != resource.RLIM_INFINITY and 2 * options.sessions + 400 > hard:
        sys.exit("moves.py: %d sessions need about %d descriptors in mailswitch; RLIMIT_NOFILE is %d"
                 % (options.sessions, 2 * options.sessions + 400, hard))
    benchlib.catch_signals(options.timeout, on_alarm=" (overall timeout of %.0f s)" % options.timeout)

    start = time.monotonic()
    work = benchlib.work_dir("moves")
    lab_dir = os.path.join(work, "lab")
    report = {"command": " ".join(["scripts/bench", "moves"] + sys.argv[1:]),
              "options": {"seconds": options.seconds, "rounds": options.rounds, "sessions": options.sessions,
                          "moved_users": options.moved_users, "parts": sorted(parts), "quick": options.quick,
                          "configs": options.configs},
              "listeners": LISTEN, "errors": []}
    with benchlib.running(report, work, lab_dir, tell=say) as run:
        report["machine"] = benchlib.machine_facts(binary)
        benchlib.check_free(LISTEN)
        say("lab with %d users in %s (port offset %d)" % (benchlib.USERS, lab_dir, benchlib.PORT_OFFSET))
        state = benchlib.lab_up(run, lab_dir)
        slapd_pid = state["pids"]["slapd"]
        if "a" in parts:
            loadgen = benchlib.build_loadgen(work)
            part_a(options, binary, state, work, loadgen, slapd_pid, report)
        if "b" in parts:
            os.makedirs(options.out, exist_ok=True)
            part_b(options, binary, state, work, lab_dir, report)
    return benchlib.finish(options.out, "moves", report, start, failures_of, markdown, say)


if __name__ == "__main__":
    sys.exit(main())
