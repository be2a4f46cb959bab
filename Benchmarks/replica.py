#!/usr/bin/env python3
"""Benchmark: what the directory replica (directory.replica: true) costs in memory and start-up
time, and that it routes everyone with LDAP down. Not a test: it measures and reports.

    scripts/bench replica [--users 100000] [--rounds 3] [--out DIR] [--timeout SECONDS]

A bench lab (scripts/lab.py, port offset 300) with --users LDAP entries (default 100,000;
slapadd), the Dovecot stores on 127.0.0.2/127.0.0.3. Per round, two fresh mailswitch processes
(Benchmarks/peers.py's bench configuration, change_feed sync), one after the other:
  plain     replica false: RSS once the change feed has synchronized
  replica   replica true: seconds from spawn to the log's "directory replica: N entries" line
            (the full refresh read and indexed), and RSS then
Memory per entry = (replica RSS - plain RSS) / entries, median over the rounds. Then, once,
with a replica instance up: slapd is stopped and 20 users never looked up before log in
(they must all land on their store), and slapd is started again.

Writes DIR/replica.md and DIR/replica.json (default DIR: results/). Binary: $MAILSWITCH_BINARY,
else .build-bench/release/mailswitch (`scripts/bench replica` builds .build/release). Loopback
only; every wait is bounded; everything started is stopped at the end and after --timeout.
"""
import argparse
import os
import re
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib  # noqa: E402  (the lab, a fresh mailswitch with settings, its log, teardown)
import peers  # noqa: E402
from benchlib import LISTEN, REPO, WARM, BenchError, cpu, say, spread  # noqa: E402
from lab import wait_until  # noqa: E402  (scripts/lab.py)

REPLICA_RE = re.compile(r"directory replica: (\d+) entries")
SETTINGS = dict(WARM, filter='"(uid=%u)"')   # as in the earlier runs, for comparison; both runs use it
DOWN_LOGINS = 20


def rss_kib(pid):
    return benchlib.proc_status(pid).get("VmRSS_kib")


def settle(pid, seconds=1.0):
    """RSS after it stopped moving (the allocator returns pages lazily)."""
    time.sleep(seconds)
    return rss_kib(pid)


def one_round(options, binary, state, work, round_):
    row = {"round": round_}
    plain = benchlib.Mailswitch(binary, state, work, "plain r%d" % round_, dict(SETTINGS, replica="false"))
    try:
        row["plain_feed_sync_s"] = plain.wait_feed(timeout=options.sync_timeout)
        row["plain_rss_kib"] = settle(plain.pid)
    finally:
        plain.stop()
    started = time.monotonic()
    replica = benchlib.Mailswitch(binary, state, work, "replica r%d" % round_, dict(SETTINGS, replica="true"))
    try:
        def built():
            replica.log.read()
            return replica.process.poll() is not None or REPLICA_RE.search(replica.log.text)
        if not wait_until(built, options.sync_timeout, 0.05) or replica.process.poll() is not None:
            raise BenchError("no 'directory replica' line within %.0f s:\n%s"
                                   % (options.sync_timeout, peers.tail(replica.log_path)))
        row["replica_ready_s"] = round(time.monotonic() - started, 2)
        row["entries"] = int(REPLICA_RE.search(replica.log.text).group(1))
        row["replica_rss_kib"] = settle(replica.pid)
        row["replica_cpu_s"] = round(cpu(replica.pid), 2)
        if round_ == 1:
            row["ldap_down"] = logins_with_ldap_down(options, state, work)
    finally:
        replica.stop()
    row["bytes_per_entry"] = round(1024.0 * (row["replica_rss_kib"] - row["plain_rss_kib"]) / row["entries"], 1)
    return row


def logins_with_ldap_down(options, state, work):
    """slapd stopped: users never looked up before still log in (from the replica)."""
    benchlib.lab(["stop-slapd"], options.lab_dir)
    try:
        users = peers.bench_users(state)[-DOWN_LOGINS:]
        path = benchlib.users_file(work, "ldap-down", users, lambda user, store: LISTEN["imap"])
        result = benchlib.run_loadgen(options.loadgen, ["login", "--protocol", "imap", "--concurrency", "4",
                                                     "--count", str(len(users)), "--users", path], timeout=60)
        return {"users": len(users), "ok": result.get("ok"), "errors": benchlib.errors_of(result)}
    finally:
        benchlib.lab(["start-slapd"], options.lab_dir)


def markdown(report):
    s = report.get("summary") or {}
    out = ["# mailswitch: the directory replica", "",
           "`%s` — %s; %s; %d LDAP entries, %d rounds." % (report["command"], report["date"], report["machine"],
                                                            report["users"], report["rounds"]), ""]
    if report.get("errors"):
        out += ["**Errors:** " + "; ".join(report["errors"]), ""]
    if s:
        def cell(name, form):
            v = s.get(name)
            return (form % v["median"]) + " (" + (form % v["min"]) + "–" + (form % v["max"]) + ")" if v else "—"
        out += ["| figure | median (min–max) |", "|---|---|",
                "| start to replica ready (full refresh read and indexed), s | %s |" % cell("replica_ready_s", "%.2f"),
                "| mailswitch CPU until then, s | %s |" % cell("replica_cpu_s", "%.2f"),
                "| RSS without the replica, MiB | %s |" % cell("plain_rss_mib", "%.1f"),
                "| RSS with the replica, MiB | %s |" % cell("replica_rss_mib", "%.1f"),
                "| memory per entry, bytes | %s |" % cell("bytes_per_entry", "%.0f"), ""]
    down = next((r.get("ldap_down") for r in report.get("rounds_data", []) if r.get("ldap_down")), None)
    if down:
        out += ["With slapd stopped, %s of %d users never looked up before logged in (%s errors)."
                % (down["ok"], down["users"], down["errors"]), ""]
    return "\n".join(out)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", default=os.path.join(REPO, "results"))
    parser.add_argument("--sync-timeout", type=float, default=300)
    parser.add_argument("--timeout", type=float, default=1800)
    options = parser.parse_args()
    benchlib.require_root("replica.py")
    binary = benchlib.mailswitch_binary()
    benchlib.USERS = options.users
    work, report = benchlib.begin_run("replica", options.timeout)
    options.lab_dir = os.path.join(work, "lab")
    report.update({"users": options.users, "rounds": options.rounds, "rounds_data": []})
    with benchlib.running(report, work, options.lab_dir, (KeyError,)) as run:
        say("lab with %d users (slapadd)" % options.users)
        started = time.monotonic()
        state = benchlib.lab_up(run, options.lab_dir)
        report["lab_up_s"] = round(time.monotonic() - started, 1)
        options.loadgen = benchlib.build_loadgen(work)
        for round_ in range(1, options.rounds + 1):
            say("round %d/%d" % (round_, options.rounds))
            row = one_round(options, binary, state, work, round_)
            say("  %s" % row)
            report["rounds_data"].append(row)
        rows = report["rounds_data"]
        report["summary"] = {
            "replica_ready_s": spread([r["replica_ready_s"] for r in rows]),
            "replica_cpu_s": spread([r["replica_cpu_s"] for r in rows]),
            "plain_rss_mib": spread([r["plain_rss_kib"] / 1024 for r in rows]),
            "replica_rss_mib": spread([r["replica_rss_kib"] / 1024 for r in rows]),
            "bytes_per_entry": spread([r["bytes_per_entry"] for r in rows]),
        }
    return benchlib.write_report(options.out, "replica", report, markdown(report))


if __name__ == "__main__":
    sys.exit(main())
