#!/usr/bin/env python3
"""Benchmark: what a read-only hold costs a session. Not a test: it measures, checks, and
writes results; it asserts nothing about the figures.

    scripts/bench readonly [--quick] [--rounds N] [--seconds S] [--noop-seconds S] [--no-tls]
                           [--retries N] [--quiet-wait S] [--quiet-budget S] [--out DIR]
                           [--keep-logs] [--timeout SECONDS]
    MAILSWITCH_BINARY=.build-bench/release/mailswitch python3 Benchmarks/readonly.py [...]
                                                          (as root, from the repo root)

A user whose mailHost is "moving-ro:<store>" (routing.read_only_values) is logged in to that
store and the session runs through IMAPReadOnlyFilter (SELECT sent as EXAMINE, writes refused
with NO [CANNOT]); such a session is always relayed by copying through user space, while a
normal session between two plain legs is spliced (splice(2)). This measures, in one run, the
same user on the same store, normal and read-only:

  - FETCH of a 20 MB message (Benchmarks/loadgen `fetch`, concurrency 1, a fixed window: 10 s,
    5 s with --quick, after 0.5 s of warm-up), MB/s of literal payload, over plain IMAP and
    (unless --no-tls) with implicit TLS towards the client (the store leg stays plain);
  - NOOP round trips (loadgen `noop`, concurrency 1, plain IMAP; 5 s windows, 3 s with
    --quick), p50 and p99;
  - mailswitch's CPU (utime+stime from /proc, before and after each window) per GB it sent to
    the client (its own "out" byte count from the "session ended" log line) and per NOOP;
and the store itself ("direct", its own port) as the reference row.

How: a bench lab (scripts/lab.py, port offset 300: slapd with 2,000 users on 127.0.0.1:3689,
Dovecot stores on 127.0.0.2 and 127.0.0.3). One mailswitch (Benchmarks/peers.py's bench
configuration from config/mailswitch.example.yaml, log level info, change_feed auto = sync,
listeners on 127.0.0.1:1543/1510/2393/2395) serves the whole run. user0001 (store legacy,
127.0.0.2) appends one 20,000,000-byte message once while not held (through mailswitch); its
number is remembered and every window fetches it with --message (no append). Then in each of
--rounds rounds (default 3): direct, normal (mailHost = the store's address), read-only
(mailHost = "moving-ro:<store address>", set by one ldapmodify: scripts/lab.py flip), each
window a fresh login. After every flip, imaplib logs in through mailswitch until the session
behaves as wanted (read-only: SELECT answered [READ-ONLY] and a STORE refused with
NO [CANNOT]; normal: SELECT read-write), bounded. For every window mailswitch's log must show
exactly one "login ok" for the user, with read_only=true in read-only windows only, and one
"session ended" with relay=splice (normal, plain) or relay=copy (read-only; TLS).

This machine has two cores, and neighbours' tests, builds and fuzzers take one at times, which
moves these figures by far more than the difference measured. So the CPU everything outside
the benchmark used during each window is read from /proc/stat ("other CPU"); each window first
waits (--quiet-wait, at most 20 s) for half a second in which the machine used less than 0.2
cores, and a window during which outside work still reached 0.2 cores is "contended" and
measured again (--retries, default once), the least contended attempt kept and the others kept
in the JSON; the waiting and the windows measured again take at most --quiet-budget seconds
in the whole run (default 30, 20 with --quick), so a run on a busy machine still ends in time
(its contended windows then counted as they are, and marked). The report
gives the median and min-max over the rounds, the ratios read-only / normal (of the medians
and per round), and the goal (reported, not asserted): the read-only session's FETCH rate is
at least 0.8 × the normal session's.

Writes DIR/readonly.md and DIR/readonly.json (default DIR: results/) and prints the Markdown.
Binary: $MAILSWITCH_BINARY, else .build-bench/release/mailswitch (`scripts/bench readonly`
builds .build/release and passes that one). Everything runs on 127.0.0.x; every wait is
bounded; everything started is stopped at the end, on SIGINT/SIGTERM and after --timeout
(default 900 s). Exit status 1 when the run had errors or a check failed.
"""
import argparse
import imaplib
import json
import os
import re
import shutil
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib  # noqa: E402  (Benchmarks/benchlib.py: the lab, the load generator, mailswitch, the run)
import peers  # noqa: E402  (Benchmarks/peers.py: the bench configuration, processes, CPU)
from benchlib import REPO, BenchError, busy_seconds, loadavg, log_summary, ratio_text  # noqa: E402
from lab import wait_until  # noqa: E402  (scripts/lab.py)

# mailswitch's listeners: clear of the tests (1143.., 3389, 3393, 10143.., 20143.., 9243..9643),
# the demo (1143, 1110, 1993, 1995), the bench lab (offset 300: 3689, 10443.., 4443.., 5443..,
# 6443.., 30443..) and moves.py (1443, 1410, 2293, 2295).
LISTEN = {"imap": "127.0.0.1:1543", "pop3": "127.0.0.1:1510",
          "imaps": "127.0.0.1:2393", "pop3s": "127.0.0.1:2395"}
USER = "user0001"
MESSAGE_SIZE = 20000000
READ_ONLY_WORD = "moving-ro"            # routing.read_only_values of the example configuration
WARMUP = 0.5
FLIP_TIMEOUT = 15.0                     # from a flip's return until the session behaves as wanted
CHECK_TIMEOUT = 10.0                    # imaplib, per step
LOG_TIMEOUT = 5.0                       # for a window's "session ended" line
GOAL = 0.8
# A window during which everything outside the benchmark used this much CPU (cores) or more
# is "contended" and measured again (--retries): the machine has few cores, and the tests, a
# build or a fuzzer of a neighbour take one at times.
CONTENDED = 0.2
QUIET_SAMPLE = 0.5                      # seconds per sample of the machine's CPU before a window
MODES = ["direct", "normal", "read-only"]


# ---------------------------------------------------------------------------------------------
# mailswitch

say = benchlib.sayer("readonly")


def check_read_only_values(text):
    if not re.search(r'^  read_only_values: \[.*"%s".*\]' % READ_ONLY_WORD, text, re.M):
        raise BenchError("the bench configuration has no routing.read_only_values with %r" % READ_ONLY_WORD)


class Mailswitch(benchlib.Mailswitch):
    """One `mailswitch serve` with the bench configuration, log level info, for the whole run."""

    def __init__(self, binary, state, work):
        super().__init__(binary, state, work, None, {"level": "info", "change_feed": "auto"}, listen=LISTEN,
                         check=check_read_only_values)

    def wait_feed(self):
        start = time.monotonic()
        if not self.synchronized(benchlib.FEED_TIMEOUT) or self.process.poll() is not None:
            raise BenchError("mailswitch: no %r in its log within %.0f s (or it exited):\n%s"
                             % (benchlib.SYNC_LINE, benchlib.FEED_TIMEOUT, peers.tail(self.log_path)))
        return round(time.monotonic() - start, 3)


def metadata(line):
    return dict(re.findall(r"\b([a-z_]+)=(\S+)", line))


def session_lines(lines, user):
    """The "login ok" and "session ended" lines of `user` among `lines` (each with its
    key=value metadata). The ends are matched by the session id of the user's logins when the
    log carries one, otherwise all ends are taken (this script is the only client)."""
    logins = [(line, metadata(line)) for line in lines if "login ok" in line and re.search(r"\b%s\b" % user, line)]
    ids = {m.get("session") for _, m in logins if m.get("session")}
    ends = [(line, metadata(line)) for line in lines if "session ended" in line
            and (not ids or metadata(line).get("session") in ids)]
    return logins, ends


# ---------------------------------------------------------------------------------------------
# the user's mode: one ldapmodify, then imaplib until the session behaves as wanted

def imap_check(user, password, message):
    """Logs in through mailswitch (plain IMAP), SELECTs INBOX and, when that came back
    read-only, tries a STORE on `message`. Returns {"read_only": bool, "store": reply or None}."""
    host, port = LISTEN["imap"].rsplit(":", 1)
    client = imaplib.IMAP4(host, int(port), timeout=CHECK_TIMEOUT)
    try:
        client.login(user, password)
        out = {"read_only": False, "store": None}
        try:
            typ, data = client.select("INBOX")
            if typ != "OK":
                raise BenchError("SELECT INBOX: %s %r" % (typ, data))
        except client.readonly:
            # imaplib raises this when a SELECT was answered [READ-ONLY]; the mailbox is selected
            # (and without is_readonly imaplib would refuse the next command itself).
            out["read_only"] = True
            client.is_readonly = True
        if out["read_only"]:
            typ, data = client.store(str(message), "+FLAGS", "(\\Flagged)")
            out["store"] = "%s %s" % (typ, b" ".join(d for d in data if isinstance(d, bytes)).decode("utf-8", "replace"))
        try:
            client.logout()
        except (imaplib.IMAP4.error, OSError):
            pass
        return out
    finally:
        try:
            client.shutdown()
        except OSError:
            pass


class Modes:
    def __init__(self, lab_dir, user, password, store_host, message):
        self.lab_dir, self.user, self.password, self.message = lab_dir, user, password, message
        self.values = {"normal": store_host, "read-only": "%s:%s" % (READ_ONLY_WORD, store_host)}
        self.current = "normal"          # the lab's mailHost for the user: its store's address
        self.flips = []

    def wanted(self, mode, result):
        if mode == "read-only":
            return result["read_only"] and (result["store"] or "").startswith("NO [CANNOT]")
        return not result["read_only"]

    def set(self, mode, force_check=False):
        """Flips the user's mailHost (one ldapmodify, scripts/lab.py flip) unless it is already
        `mode`'s, then checks through mailswitch until the session behaves as `mode` wants."""
        record = {"mode": mode, "value": self.values[mode]}
        if mode != self.current:
            started = time.monotonic()
            benchlib.lab(["flip", self.user, self.values[mode]], self.lab_dir)
            returned = time.monotonic()
            record["ldapmodify_s"] = round(returned - started, 3)
            self.current = mode
        elif not force_check:
            return None
        returned = time.monotonic()
        attempts, last = 0, None
        deadline = returned + FLIP_TIMEOUT
        while True:
            attempts += 1
            try:
                last = imap_check(self.user, self.password, self.message)
            except (imaplib.IMAP4.error, OSError, BenchError) as error:
                last = {"error": "%s: %s" % (type(error).__name__, error)}
            if "error" not in last and self.wanted(mode, last):
                break
            if time.monotonic() > deadline:
                record.update({"attempts": attempts, "last": last, "ok": False})
                self.flips.append(record)
                raise BenchError("%s did not become %s within %.0f s of the flip: last check %r"
                                 % (self.user, mode, FLIP_TIMEOUT, last))
            time.sleep(0.1)
        record.update({"attempts": attempts, "behaves_after_s": round(time.monotonic() - returned, 3),
                       "check": last, "ok": True})
        self.flips.append(record)
        say("  %s is %s (mailHost %s): %d check%s, %.2f s%s" % (
            self.user, mode, self.values[mode], attempts, "" if attempts == 1 else "s", record["behaves_after_s"],
            "; STORE → %s" % last["store"] if last.get("store") else ""))
        return record


# ---------------------------------------------------------------------------------------------
# one window

def wait_quiet(limit):
    """Before a window: until the machine used less than CONTENDED cores over QUIET_SAMPLE
    seconds (nothing of the benchmark runs then but idle daemons), at most `limit` seconds.
    Returns the seconds waited, or None when it never became quiet."""
    start = time.monotonic()
    while True:
        before = busy_seconds()
        time.sleep(QUIET_SAMPLE)
        if (busy_seconds() - before) / QUIET_SAMPLE < CONTENDED:
            return round(time.monotonic() - start - QUIET_SAMPLE, 1)
        if time.monotonic() - start >= limit:
            return None


def loadgen_arguments(kind, leg, seconds, message):
    if kind == "fetch":
        args = ["fetch", "--protocol", "imap", "--concurrency", "1", "--message", str(message)]
    else:
        args = ["noop", "--protocol", "imap", "--concurrency", "1"]
    if leg == "imaps":
        args.append("--tls")
    return args + ["--duration", str(seconds), "--warmup", str(WARMUP)]


def measure(ctx, system, kind, leg, seconds):
    """One window; returns the row. system: direct | normal | read-only."""
    state, proxy = ctx["state"], ctx["proxy"]
    users_path = ctx["users"][("direct" if system == "direct" else "proxy", leg)]
    args = loadgen_arguments(kind, leg, seconds, ctx["message"]) + ["--users", users_path]
    if leg == "imaps":
        args += ["--cafile", state["tls"]["ca"], "--servername",
                 peers.server_name(state, "direct" if system == "direct" else "mailswitch")]
    store_pid = ctx["store_pid"]
    ours = [p for p in [proxy.pid, ctx["slapd_pid"]] + ctx["store_pids"] if p]
    mark = proxy.mark()
    before = (peers.cpu_seconds([proxy.pid]), peers.cpu_seconds([store_pid]), peers.cpu_seconds(ours), busy_seconds(),
              time.monotonic())
    result = benchlib.run_loadgen(ctx["loadgen"], args, timeout=seconds + 180)
    after = (peers.cpu_seconds([proxy.pid]), peers.cpu_seconds([store_pid]), peers.cpu_seconds(ours), busy_seconds(),
             time.monotonic())
    row = {"system": system, "kind": kind, "leg": leg, "errors": benchlib.errors_of(result),
           "loadgen_cpu_util": result.get("window_cpu_util"), "loadavg_before": ctx.get("loadavg")}
    other = (after[3] - before[3]) - (after[2] - before[2]) - (result.get("self_cpu_s") or 0)
    row["other_cpu_cores"] = round(max(0.0, other) / (after[4] - before[4]), 3)
    proxy_cpu, store_cpu = after[0] - before[0], after[1] - before[1]
    row["store_cpu_s"] = round(store_cpu, 4)
    if system != "direct":
        row["proxy_cpu_s"] = round(proxy_cpu, 4)
    if kind == "fetch":
        row["mb_per_s"] = result.get("mb_per_s")
        row["fetches"] = result.get("fetches")
        row["message"] = result.get("message")
        row["message_size"] = result.get("message_size")
        if result.get("message_size") != MESSAGE_SIZE or result.get("mixed_sizes"):
            row["errors"] += 1
            row["size_error"] = "fetched message %s of %s bytes (mixed sizes: %s), expected %d bytes" % (
                result.get("message"), result.get("message_size"), result.get("mixed_sizes"), MESSAGE_SIZE)
        fetch_us = result.get("fetch_us") or {}
        row["fetch_p50_ms"] = round(fetch_us["p50"] / 1000.0, 2) if fetch_us.get("p50") is not None else None
        # Bytes sent to the client over the whole loadgen run (warm-up and the fetch in flight at
        # the window's end included, as the CPU reading is): counted fetches + uncounted + 1.
        estimated = ((result.get("ok") or 0) + (result.get("uncounted") or {}).get("ok", 0) + 1) * MESSAGE_SIZE
        row["bytes_estimated"] = estimated
        row["store_cpu_s_per_gb"] = round(store_cpu / (estimated / 1e9), 4) if estimated else None
    else:
        rtt = result.get("rtt_us") or {}
        row.update({"noop_p50_us": rtt.get("p50"), "noop_p99_us": rtt.get("p99"), "rtt_per_s": result.get("rtt_per_s"),
                    "round_trips": result.get("round_trips")})
    row["loadgen"] = result
    if system == "direct":
        return row

    # mailswitch's log: exactly one login of the user in this window, filtered or not as the
    # mode wants; its session ended with the relay the legs call for.
    def ended():
        logins, ends = session_lines(proxy.lines_since(mark), USER)
        return len(ends) >= max(1, len(logins))
    wait_until(ended, LOG_TIMEOUT, 0.05)
    logins, ends = session_lines(proxy.lines_since(mark), USER)
    want_read_only = system == "read-only"
    want_relay = "splice" if leg == "imap" and not want_read_only else "copy"
    check = {"logins": len(logins), "read_only_logins": sum(1 for _, m in logins if m.get("read_only") == "true"),
             "ends": len(ends), "relays": sorted(m.get("relay", "?") for _, m in ends),
             "want_read_only": want_read_only, "want_relay": want_relay,
             "login_lines": [line[:400] for line, _ in logins][:3], "end_lines": [line[:400] for line, _ in ends][:3]}
    problems = []
    if len(logins) != 1:
        problems.append("%d \"login ok\" lines for %s (wanted 1)" % (len(logins), USER))
    if check["read_only_logins"] != (len(logins) if want_read_only else 0):
        problems.append("%d of %d logins with read_only=true (wanted %s)" % (
            check["read_only_logins"], len(logins), "all" if want_read_only else "none"))
    if len(ends) != len(logins) or any(r != want_relay for r in check["relays"]):
        problems.append("session ended lines: relays %s (wanted %d × %s)" % (check["relays"], len(logins), want_relay))
    check["problems"] = problems
    row["log_check"] = check
    out_bytes = sum(int(m["out"]) for _, m in ends if m.get("out", "").isdigit())
    row["bytes_out_logged"] = out_bytes
    if kind == "fetch":
        sent = out_bytes or row["bytes_estimated"]
        row["proxy_cpu_s_per_gb"] = round(proxy_cpu / (sent / 1e9), 4) if sent else None
    else:
        trips = (result.get("round_trips") or 0) + (result.get("uncounted") or {}).get("ok", 0)
        row["proxy_cpu_us_per_noop"] = round(1e6 * proxy_cpu / trips, 2) if trips else None
    if not proxy.alive():
        problems.append("mailswitch exited (status %s)" % proxy.process.returncode)
    return row


def describe(row):
    if row["kind"] == "fetch":
        text = "%s MB/s, fetch p50 %s ms" % (row.get("mb_per_s"), row.get("fetch_p50_ms"))
        if row.get("proxy_cpu_s_per_gb") is not None:
            text += ", mailswitch %.3f CPU s/GB" % row["proxy_cpu_s_per_gb"]
    else:
        text = "NOOP p50 %s µs, p99 %s µs" % (row.get("noop_p50_us"), row.get("noop_p99_us"))
        if row.get("proxy_cpu_us_per_noop") is not None:
            text += ", mailswitch %.1f µs CPU/NOOP" % row["proxy_cpu_us_per_noop"]
    text += ", store %s s CPU, other CPU %.2f cores" % (row.get("store_cpu_s"), row.get("other_cpu_cores") or 0)
    if row.get("log_check"):
        c = row["log_check"]
        text += "; log: %d login%s (read_only=true: %d), relay %s" % (
            c["logins"], "" if c["logins"] == 1 else "s", c["read_only_logins"], ",".join(c["relays"]) or "?")
    if row["errors"]:
        text += "; %d ERRORS" % row["errors"]
    if (row.get("log_check") or {}).get("problems"):
        text += "; CHECK FAILED: " + "; ".join(row["log_check"]["problems"])
    return text


# ---------------------------------------------------------------------------------------------
# the run

def windows(options):
    """(kind, leg, seconds) measured per system and round."""
    out = [("fetch", "imap", options.seconds), ("noop", "imap", options.noop_seconds)]
    if options.tls:
        out.append(("fetch", "imaps", options.seconds))
    return out


def run(options, binary, work, lab_dir, report):
    say("lab with %d users in %s (port offset %d)" % (benchlib.USERS, lab_dir, benchlib.PORT_OFFSET))
    benchlib.lab(["up"], lab_dir)     # the teardown takes it down once its lab.json is there
    state = peers.load_lab(lab_dir)
    loadgen = benchlib.build_loadgen(work)
    users = {u: (store, password) for u, store, password in peers.bench_users(state)}
    if USER not in users:
        raise BenchError("%s is not among the lab's bench users" % USER)
    store, password = users[USER]
    store_host = state["stores"][store]["imap"].rsplit(":", 1)[0]
    entry = [(USER, store, password)]
    ctx = {"state": state, "loadgen": loadgen, "slapd_pid": state["pids"]["slapd"], "store_pid": state["pids"][store],
           "store_pids": [state["pids"][n] for n in ("legacy", "new") if state["pids"].get(n)],
           "users": {("proxy", "imap"): benchlib.users_file(work, "proxy-imap", entry, lambda u, s: LISTEN["imap"]),
                     ("proxy", "imaps"): benchlib.users_file(work, "proxy-imaps", entry, lambda u, s: LISTEN["imaps"]),
                     ("direct", "imap"): benchlib.users_file(work, "direct-imap", entry,
                                                          peers.endpoint_for(None, state, "direct", "imap")),
                     ("direct", "imaps"): benchlib.users_file(work, "direct-imaps", entry,
                                                           peers.endpoint_for(None, state, "direct", "imaps"))}}
    report["user"] = {"name": USER, "store": store, "store_address": store_host,
                      "read_only_value": "%s:%s" % (READ_ONLY_WORD, store_host)}

    proxy = Mailswitch(binary, state, work)
    ctx["proxy"] = proxy
    report["mailswitch"] = {"pid": proxy.pid, "config": "Benchmarks/peers.py bench configuration, listeners %s"
                            % ", ".join("%s %s" % kv for kv in LISTEN.items())}
    try:
        report["mailswitch"]["feed_sync_s"] = proxy.wait_feed()
        # The message, appended once while the user is not held (APPEND is refused read-only).
        say("appending one %d-byte message for %s through mailswitch (not held)" % (MESSAGE_SIZE, USER))
        appended = benchlib.run_loadgen(loadgen, ["fetch", "--protocol", "imap", "--concurrency", "1", "--append-size",
                                               str(MESSAGE_SIZE), "--count", "1", "--users",
                                               ctx["users"][("proxy", "imap")]], timeout=180)
        report["append"] = {"appended": appended.get("appended"), "message": appended.get("message"),
                            "message_size": appended.get("message_size"), "errors": benchlib.errors_of(appended)}
        if not appended.get("appended") or appended.get("message_size") != MESSAGE_SIZE or benchlib.errors_of(appended) \
                or not appended.get("message"):
            raise BenchError("the APPEND of the 20 MB message failed: %s" % json.dumps(appended)[:2000])
        ctx["message"] = appended["message"]
        say("  message %d in %s's INBOX" % (ctx["message"], USER))

        modes = Modes(lab_dir, USER, password, store_host, ctx["message"])
        report["flips"] = modes.flips
        modes.set("normal", force_check=True)
        rows = []
        report["rows"] = rows
        report["discarded"] = []
        plan = windows(options)
        budget = {"left": options.quiet_budget}    # seconds of waiting for quiet, and retries while > 0
        for round_ in range(1, options.rounds + 1):
            for system in MODES:
                if system != "direct":
                    modes.set(system)
                for kind, leg, seconds in plan:
                    say("round %d/%d: %s %s %s (%g s)" % (round_, options.rounds, system, kind, leg, seconds))
                    attempts = []
                    while True:
                        limit = min(options.quiet_wait, max(0.0, budget["left"]))
                        started = time.monotonic()
                        waited = wait_quiet(limit)
                        spent = max(0.0, time.monotonic() - started - QUIET_SAMPLE)   # beyond the one sample
                        budget["left"] -= spent
                        if (waited is None and limit >= 1) or (waited or 0) >= 1:
                            say("  %s" % ("the machine stayed busy for %.0f s: measuring anyway" % limit
                                          if waited is None else "waited %.0f s for the machine to be quiet" % waited))
                        ctx["loadavg"] = loadavg()
                        row = measure(ctx, system, kind, leg, seconds)
                        row["round"] = round_
                        row["quiet_wait_s"] = round(spent, 1)
                        row["quiet_before"] = waited is not None
                        attempts.append(row)
                        say("  " + describe(row))
                        if not proxy.alive():
                            raise BenchError("mailswitch exited (status %s):\n%s" % (
                                proxy.process.returncode, peers.tail(proxy.log_path)))
                        if row["other_cpu_cores"] < CONTENDED or len(attempts) > options.retries:
                            break
                        if budget["left"] < seconds + WARMUP:
                            say("  contended (%.2f cores used outside the benchmark); the waiting budget is spent: "
                                "kept as it is" % row["other_cpu_cores"])
                            break
                        say("  contended (%.2f cores used outside the benchmark): measuring again" % row["other_cpu_cores"])
                        budget["left"] -= seconds + WARMUP     # a retry's window counts against the budget too
                    # The least contended attempt counts; the others are kept in the JSON. A
                    # failed attempt is never dropped.
                    kept = min(attempts, key=lambda r: (not (r["errors"] or (r.get("log_check") or {}).get("problems")),
                                                        r["other_cpu_cores"]))
                    kept["attempts"] = len(attempts)
                    kept["contended"] = kept["other_cpu_cores"] >= CONTENDED
                    rows.append(kept)
                    for other in attempts:
                        if other is not kept:
                            other["discarded"] = True
                            other.pop("loadgen", None)
                            report["discarded"].append(other)
        modes.set("normal")
    finally:
        report["mailswitch"]["exited_early"], report["mailswitch"]["exit_status"] = proxy.stop()
        report["mailswitch"]["log"] = log_summary(proxy.log_path)
        if options.keep_logs:
            os.makedirs(options.out, exist_ok=True)
            shutil.copy(proxy.log_path, os.path.join(options.out, "readonly-mailswitch.log"))


# ---------------------------------------------------------------------------------------------
# summary

FIGURES = {"fetch": ["mb_per_s", "fetch_p50_ms", "proxy_cpu_s_per_gb", "store_cpu_s_per_gb", "loadgen_cpu_util",
                     "other_cpu_cores"],
           "noop": ["noop_p50_us", "noop_p99_us", "proxy_cpu_us_per_noop", "rtt_per_s", "loadgen_cpu_util",
                    "other_cpu_cores"]}


def spread(values):
    return benchlib.spread(values, range_pct=True)


def summarize(rows, plan):
    out = {}
    for kind, leg, _ in plan:
        for system in MODES:
            mine = [r for r in rows if r["system"] == system and r["kind"] == kind and r["leg"] == leg]
            if not mine:
                continue
            key = "%s %s %s" % (kind, leg, system)
            out[key] = {f: spread([r.get(f) for r in mine]) for f in FIGURES[kind]}
            out[key]["errors"] = sum(r["errors"] for r in mine)
            out[key]["check_failures"] = sum(1 for r in mine if (r.get("log_check") or {}).get("problems"))
            out[key]["contended"] = sum(1 for r in mine if r.get("contended"))
    return out


def ratio(rows, summary, kind, leg, figure, a="read-only", b="normal"):
    """a / b of the medians, and per round."""
    def med(system):
        s = (summary.get("%s %s %s" % (kind, leg, system)) or {}).get(figure)
        return s["median"] if s else None
    per_round, uncontended = [], []
    for round_ in sorted({r["round"] for r in rows}):
        x = next((r for r in rows if (r["round"], r["system"], r["kind"], r["leg"]) == (round_, a, kind, leg)), None)
        y = next((r for r in rows if (r["round"], r["system"], r["kind"], r["leg"]) == (round_, b, kind, leg)), None)
        if x is not None and y is not None and x.get(figure) is not None and y.get(figure):
            value = round(x[figure] / y[figure], 3)
            per_round.append(value)
            if not x.get("contended") and not y.get("contended"):
                uncontended.append(value)
    x, y = med(a), med(b)
    return {"of_medians": round(x / y, 3) if x is not None and y else None, "per_round": per_round,
            "per_uncontended_round": uncontended}


def ratios(rows, summary, plan):
    out = {}
    legs = sorted({leg for kind, leg, _ in plan if kind == "fetch"}, key=lambda l: l != "imap")
    for leg in legs:
        out["fetch %s MB/s, read-only / normal" % leg] = ratio(rows, summary, "fetch", leg, "mb_per_s")
        out["fetch %s mailswitch CPU/GB, read-only / normal" % leg] = ratio(rows, summary, "fetch", leg, "proxy_cpu_s_per_gb")
        out["fetch %s MB/s, normal / direct" % leg] = ratio(rows, summary, "fetch", leg, "mb_per_s", "normal", "direct")
        out["fetch %s MB/s, read-only / direct" % leg] = ratio(rows, summary, "fetch", leg, "mb_per_s", "read-only", "direct")
    if any(kind == "noop" for kind, _, _ in plan):
        out["noop imap p50, read-only / normal"] = ratio(rows, summary, "noop", "imap", "noop_p50_us")
        out["noop imap p99, read-only / normal"] = ratio(rows, summary, "noop", "imap", "noop_p99_us")
        out["noop imap mailswitch CPU/NOOP, read-only / normal"] = ratio(rows, summary, "noop", "imap", "proxy_cpu_us_per_noop")
    return out


def goals(report):
    out = []
    for key, label in (("fetch imap MB/s, read-only / normal", "plain legs"),
                       ("fetch imaps MB/s, read-only / normal", "implicit TLS towards the client")):
        r = (report.get("ratios") or {}).get(key)
        if not r or r["of_medians"] is None:
            continue
        met = r["of_medians"] >= GOAL
        every = r["per_round"] and all(v >= GOAL for v in r["per_round"])
        clean = r.get("per_uncontended_round") or []
        out.append({"goal": "read-only FETCH ≥ %.1f × normal (%s)" % (GOAL, label), "ratio": r["of_medians"],
                    "per_round": r["per_round"], "met": met, "met_every_round": bool(every),
                    "per_uncontended_round": clean,
                    "median_uncontended": round(statistics.median(clean), 3) if clean else None})
    return out


# ---------------------------------------------------------------------------------------------
# report

def cell(summary, key, figure, form):
    return benchlib.median_range((summary.get(key) or {}).get(figure), form, collapse=True)


def markdown(report):
    m = report["machine"]
    o = report["options"]
    out = ["# mailswitch: what a read-only hold costs a session (FETCH, NOOP, CPU; normal vs read-only)", "",
           "`%s` — %s. %s. Load average before the run: %s." % (
               report["command"], m["date"], benchlib.machine_text(m),
               "/".join("%.2f" % x for x in m.get("loadavg_at_start") or []) or "?"), ""]
    u = report.get("user") or {}
    out += ["What ran: a bench lab (slapd with 2,000 users on 127.0.0.1:3689, Dovecot stores on 127.0.0.2/.3, "
            "port offset 300); one mailswitch for the whole run (listeners %s, log level info, change_feed auto: the RFC 4533 feed); "
            "%s on store %s (%s), one %d-byte message appended once while not held (message %s) and fetched "
            "with BODY.PEEK[] by Benchmarks/loadgen at concurrency 1, %g s windows (NOOP: %g s) after %g s of "
            "warm-up, each window a fresh login; %d round%s of direct → normal (mailHost %s) → read-only "
            "(mailHost %s, one ldapmodify each way). Cells: median (min–max) over the rounds." % (
                LISTEN["imap"] + ("/" + LISTEN["imaps"] if o["tls"] else ""), u.get("name"), u.get("store"),
                u.get("store_address"), MESSAGE_SIZE, (report.get("append") or {}).get("message"), o["seconds"],
                o["noop_seconds"], WARMUP, o["rounds"], "" if o["rounds"] == 1 else "s", u.get("store_address"),
                u.get("read_only_value")), ""]
    if report.get("failures"):
        out += ["**This run had errors:** " + "; ".join(report["failures"]), ""]
    s = report.get("summary") or {}
    rt = report.get("ratios") or {}
    if s:
        out += ["| figure | direct (the store) | normal | read-only | read-only / normal |", "|---|---|---|---|---|"]
        table = [("fetch", "imap", "FETCH 20 MB, plain, MB/s", "mb_per_s", "%.0f", "fetch imap MB/s, read-only / normal"),
                 ("fetch", "imap", "FETCH 20 MB, plain, mailswitch CPU s/GB", "proxy_cpu_s_per_gb", "%.3f",
                  "fetch imap mailswitch CPU/GB, read-only / normal"),
                 ("fetch", "imap", "FETCH 20 MB, plain, store CPU s/GB", "store_cpu_s_per_gb", "%.3f", None),
                 ("fetch", "imap", "FETCH 20 MB, plain, other CPU (cores)", "other_cpu_cores", "%.2f", None),
                 ("noop", "imap", "NOOP, plain, p50 µs", "noop_p50_us", "%.1f", "noop imap p50, read-only / normal"),
                 ("noop", "imap", "NOOP, plain, p99 µs", "noop_p99_us", "%.1f", "noop imap p99, read-only / normal"),
                 ("noop", "imap", "NOOP, plain, mailswitch CPU µs/NOOP", "proxy_cpu_us_per_noop", "%.1f",
                  "noop imap mailswitch CPU/NOOP, read-only / normal"),
                 ("noop", "imap", "NOOP, plain, other CPU (cores)", "other_cpu_cores", "%.2f", None),
                 ("fetch", "imaps", "FETCH 20 MB, TLS to client, MB/s", "mb_per_s", "%.0f", "fetch imaps MB/s, read-only / normal"),
                 ("fetch", "imaps", "FETCH 20 MB, TLS to client, mailswitch CPU s/GB", "proxy_cpu_s_per_gb", "%.3f",
                  "fetch imaps mailswitch CPU/GB, read-only / normal"),
                 ("fetch", "imaps", "FETCH 20 MB, TLS to client, store CPU s/GB", "store_cpu_s_per_gb", "%.3f", None),
                 ("fetch", "imaps", "FETCH 20 MB, TLS to client, other CPU (cores)", "other_cpu_cores", "%.2f", None)]
        for kind, leg, label, figure, form, ratio_key in table:
            keys = ["%s %s %s" % (kind, leg, system) for system in MODES]
            if not any(k in s for k in keys):
                continue
            cells = [cell(s, k, figure, form) for k in keys]
            if figure == "other_cpu_cores":
                cells = [c + (" — %d contended" % s[k]["contended"] if (s.get(k) or {}).get("contended") else "")
                         for c, k in zip(cells, keys)]
            out.append("| %s | %s | %s | %s | %s |" % (label, cells[0], cells[1], cells[2],
                                                      ratio_text(rt.get(ratio_key)) if ratio_key else ""))
        out.append("")
        extra = [(k, v) for k, v in rt.items() if "/ direct" in k]
        if extra:
            out += ["| ratio (of the medians) | value |", "|---|---|"]
            out += ["| %s | %s |" % (k, ratio_text(v)) for k, v in extra]
            out.append("")
    g = report.get("goals") or []
    if g:
        out += ["## Goal (reported, not asserted)", "", "| goal | measured | |", "|---|---|---|"]
        for row in g:
            clean = row.get("per_uncontended_round") or []
            out.append("| %s | %.3f × (per round %s); rounds where neither window was contended: %s | %s |" % (
                row["goal"], row["ratio"], ", ".join("%.3f" % v for v in row["per_round"]),
                "%.3f × median (%s)" % (row["median_uncontended"], ", ".join("%.3f" % v for v in clean)) if clean else "none",
                ("met" + ("" if row["met_every_round"] else ", not in every round")) if row["met"] else "not met"))
        out.append("")
    noise = []
    for key in ("fetch imap normal", "fetch imap read-only", "fetch imaps normal", "fetch imaps read-only",
                "noop imap normal", "noop imap read-only"):
        figure = "mb_per_s" if key.startswith("fetch") else "noop_p50_us"
        sp = (s.get(key) or {}).get(figure)
        if sp and sp.get("range_pct") is not None:
            noise.append("%s %s ±%.1f %%" % (key, "MB/s" if figure == "mb_per_s" else "p50", sp["range_pct"] / 2))
    if noise:
        retried = len(report.get("discarded") or [])
        out += ["Noise: half the min–max range over the rounds, as a share of the median: " + "; ".join(noise) + ". "
                "Other CPU: cores used meanwhile by everything but mailswitch, slapd, the stores and the load "
                "generator (/proc/stat minus theirs); a window with %.1f or more is \"contended\" (something outside "
                "the benchmark competed for the cores) and was measured again up to %d time%s, the least contended "
                "attempt kept (%d attempt%s set aside, in the JSON); before each window the run waited (at most %g s) "
                "for half a second with the machine below %.1f cores (%.0f s waited in all beyond that half "
                "second; waiting and measuring again limited to %g s in the run). NOOP round trips on this VM are bimodal: "
                "with the cores otherwise idle every wake-up pays the way out of idle, and with another process "
                "keeping a core busy round trips get faster, so compare NOOP figures of uncontended windows." % (
                    CONTENDED, o["retries"], "" if o["retries"] == 1 else "s", retried, "" if retried == 1 else "s",
                    o["quiet_wait_s"], CONTENDED, sum(r.get("quiet_wait_s") or 0 for r in (report.get("rows") or [])
                                                      + (report.get("discarded") or [])), o["quiet_budget_s"]), ""]
    checks = report.get("checks") or {}
    if checks:
        out += ["## Checks", "",
                "| check | result |", "|---|---|"]
        for label, value in checks.items():
            out.append("| %s | %s |" % (label, value))
        out.append("")
    out += ["Per window: loadgen's MB/s of literal payload in the window (10^6 B/s); mailswitch CPU = utime+stime "
            "of the process (/proc) before and after the load generator ran, ÷ the bytes mailswitch logged as sent "
            "to the client for that session (\"out\" of its \"session ended\" line: warm-up, login and the fetch in "
            "flight at the window's end included, as the CPU reading is), or ÷ every NOOP of the run. Store CPU = "
            "the Dovecot store's process tree (exited children included) ÷ the bytes fetched (loadgen's count "
            "of fetches, warm-up included, + 1). Direct: the store's own port (%s)." % (
                "plain and IMAPS" if o["tls"] else "plain"), ""]
    return "\n".join(out)


def checks_of(report):
    rows = report.get("rows") or []
    out = {}
    for system in ("normal", "read-only"):
        mine = [r for r in rows if r["system"] == system and r.get("log_check")]
        if not mine:
            continue
        logins = sum(r["log_check"]["logins"] for r in mine)
        ro = sum(r["log_check"]["read_only_logins"] for r in mine)
        relays = {}
        for r in mine:
            for leg_relay in r["log_check"]["relays"]:
                key = "%s %s" % (r["leg"], leg_relay)
                relays[key] = relays.get(key, 0) + 1
        bad = sum(1 for r in mine if r["log_check"]["problems"])
        out["%s windows: \"login ok\" lines (with read_only=true); \"session ended\" relay by leg" % system] = \
            "%d (%d); %s%s" % (logins, ro, ", ".join("%s × %d" % kv for kv in sorted(relays.items())),
                               "; **%d window%s failed the check**" % (bad, "" if bad == 1 else "s") if bad else "; as wanted")
    flips = report.get("flips") or []
    ro_flips = [f for f in flips if f["mode"] == "read-only" and f.get("ok")]
    if ro_flips:
        stores = sorted({(f.get("check") or {}).get("store") for f in ro_flips})
        out["after each flip to read-only, imaplib through mailswitch: SELECT INBOX; STORE %s +FLAGS (\\Flagged)"
            % (report.get("append") or {}).get("message")] = "[READ-ONLY]; %s (%d flips)" % (
                " / ".join("`%s`" % x for x in stores), len(ro_flips))
    timed = [f["behaves_after_s"] for f in flips if f.get("ok") and "ldapmodify_s" in f]
    if timed:
        out["from ldapmodify's return to the first login that behaves as the new value says"] = \
            "median %.2f s (%.2f–%.2f s, %d flips)" % (statistics.median(timed), min(timed), max(timed), len(timed))
    return out


def failures_of(report):
    failures = []
    for row in report.get("rows") or []:
        if row["errors"]:
            failures.append("round %d %s %s %s: %d errors%s" % (row["round"], row["system"], row["kind"], row["leg"],
                                                               row["errors"], " (%s)" % row["size_error"] if row.get("size_error") else ""))
        for problem in (row.get("log_check") or {}).get("problems") or []:
            failures.append("round %d %s %s %s: %s" % (row["round"], row["system"], row["kind"], row["leg"], problem))
    ms = report.get("mailswitch") or {}
    if ms.get("exited_early"):
        failures.append("mailswitch exited before it was stopped (status %s)" % ms.get("exit_status"))
    return failures + report.get("errors", [])


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="5 s FETCH and 3 s NOOP windows instead of 10 s and 5 s")
    parser.add_argument("--seconds", type=float, help="FETCH window (default 10, 5 with --quick)")
    parser.add_argument("--noop-seconds", type=float, help="NOOP window (default 5, 3 with --quick)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of direct, normal, read-only (default 3)")
    parser.add_argument("--retries", type=int, default=1,
                        help="measure a contended window (other CPU ≥ %.1f cores) again up to this often (default 1)"
                        % CONTENDED)
    parser.add_argument("--quiet-wait", type=float, default=20,
                        help="before each window, wait up to this long for a half second in which the machine "
                        "used less than %.1f cores (default 20)" % CONTENDED)
    parser.add_argument("--quiet-budget", type=float,
                        help="at most this many seconds of such waiting and of measuring again in the whole run; "
                        "once spent, no window waits or is measured again (default 30, 20 with --quick)")
    parser.add_argument("--no-tls", dest="tls", action="store_false",
                        help="skip the FETCH windows with implicit TLS towards the client")
    parser.add_argument("--out", default=os.path.join(REPO, "results"), help="output directory (default results/)")
    parser.add_argument("--keep-logs", action="store_true", help="also copy mailswitch's log to DIR")
    parser.add_argument("--timeout", type=float, default=900, help="overall limit in seconds (default 900)")
    options = parser.parse_args()
    options.seconds = options.seconds or (5.0 if options.quick else 10.0)
    options.noop_seconds = options.noop_seconds or (3.0 if options.quick else 5.0)
    if options.quiet_budget is None:
        options.quiet_budget = 20.0 if options.quick else 30.0
    if options.rounds < 1 or options.seconds <= 0 or options.noop_seconds <= 0 or options.retries < 0:
        parser.error("--rounds, --seconds and --noop-seconds must be positive, --retries at least 0")
    benchlib.require_root("readonly.py")
    binary = benchlib.mailswitch_binary()
    benchlib.require_binary("readonly.py", binary)
    benchlib.sbin_on_path()
    benchlib.catch_signals(options.timeout, on_alarm=" (overall timeout of %.0f s)" % options.timeout)

    start = time.monotonic()
    work = benchlib.work_dir("readonly")
    lab_dir = os.path.join(work, "lab")
    report = {"command": " ".join(["scripts/bench", "readonly"] + sys.argv[1:]),
              "options": {"seconds": options.seconds, "noop_seconds": options.noop_seconds, "warmup_s": WARMUP,
                          "rounds": options.rounds, "tls": options.tls, "quick": options.quick,
                          "retries": options.retries, "contended_cores": CONTENDED, "quiet_wait_s": options.quiet_wait,
                          "quiet_budget_s": options.quiet_budget},
              "listeners": LISTEN, "errors": []}
    with benchlib.running(report, work, lab_dir, tell=say):
        report["machine"] = benchlib.machine_facts(binary)
        benchlib.check_free(LISTEN)
        run(options, binary, work, lab_dir, report)

    def summarize_run(report):
        plan = windows(options)
        rows = report.get("rows") or []
        report["summary"] = summarize(rows, plan)
        report["ratios"] = ratios(rows, report["summary"], plan)
        report["goals"] = goals(report)
        report["checks"] = checks_of(report)
    return benchlib.finish(options.out, "readonly", report, start, failures_of, markdown, say, summarize_run)


if __name__ == "__main__":
    sys.exit(main())
