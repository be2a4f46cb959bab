#!/usr/bin/env python3
"""Benchmark: where a login's CPU goes in mailswitch. Not a test: it measures and reports.

    scripts/bench profile [--rounds 3] [--seconds 10] [--baseline-binary PATH ...] [--loops N,...]
                          [--accept MODE,...] [--out DIR]

A bench lab (scripts/lab.py, port offset 300: slapd with 2,000 users, Dovecot stores on
127.0.0.2/127.0.0.3). Per round and per binary (this build, and each --baseline-binary given,
interleaved; more than one is named by its file name), a fresh mailswitch with a warm route cache (Benchmarks/moves.py's "warm"
configuration: one login per user first), then plain logins by the C load generator:
  c1        IMAP, one login at a time for --seconds
  c32       IMAP, 32 at a time for --seconds
  pop3 c32  POP3 (USER/PASS; the stores offer XCLIENT), 32 at a time for --seconds
  noop one logged-in session sending NOOPs for --seconds: the round trip's p50, beside the
       same window straight to the stores (once per round), so its overhead over direct
  fetch one session fetching a 20 MB message over and over for --seconds, plain and implicit
       TLS towards the client (plain towards the store): MB/s and mailswitch CPU s per GB,
       beside the plain window straight to the stores (once per round)
--loops 1,2,4 runs each binary once per event-loop count (`serve --loops N`; the default is
one loop per core), to set the loop count against the core count. --accept handover,per-loop
runs each binary once per accept mode (`serve --accept MODE`: one listening socket whose loop
hands connections to the others, or an SO_REUSEPORT socket per loop); without it no --accept
is passed, so builds older than the option run too. With both, every pair; rows are labelled
"loops=N" and "accept=MODE".
For each window, per login: mailswitch CPU (user and system ms, /proc/PID/stat), context
switches of all its threads (/proc/PID/task/*/status: voluntary + involuntary; a thread
wake-up is one), system calls (perf stat -e raw_syscalls:sys_enter -p PID, when perf works),
and the event loops' counters (`mailswitch status`, EventLoopStatistics): for a build with an
epoll set per loop ("event loops:"), the epoll waits, the events per wait, the interest
changes (one epoll_ctl each) and the descriptors registered; for an older build with a
Dispatch source per socket ("event sources:"), the sources made and the suspends/resumes of
read and write sources. A figure a build does not report is "—" (baselines are often older
builds). Medians over the rounds, with min-max; the VM's latencies are bimodal, so every
figure carries its range.

Writes DIR/profile.md and DIR/profile.json (default DIR: results/). Loopback only; bounded.
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib  # noqa: E402  (Benchmarks/benchlib.py: the lab, the load generator, mailswitch, the run)
import peers  # noqa: E402
from benchlib import LISTEN, REPO, WARM, BenchError, cpu, say, spread, task_switches  # noqa: E402

FIGURES = ["cpu_user_ms", "cpu_sys_ms", "cpu_ms", "context_switches", "syscalls", "read_sources", "write_sources",
           "timer_sources", "suspends", "resumes", "epoll_waits", "events", "events_per_wait", "interest_changes",
           "registrations", "stale_events", "logins_per_s", "p50_us"]
# The event loops' columns, each shown when some build reports its figures (a Dispatch source
# per socket: the first two; an epoll set per loop: the rest, and the sources' read/timer):
# (header, figures, format).
LOOP_COLUMNS = [("read/write/timer sources", ("read_sources", "write_sources", "timer_sources"), "%.2f"),
                ("suspends/resumes", ("suspends", "resumes"), "%.2f"),
                ("epoll waits", ("epoll_waits",), "%.2f"),
                ("events/wait", ("events_per_wait",), "%.2f"),
                ("interest changes (epoll_ctl)", ("interest_changes",), "%.2f"),
                ("registrations", ("registrations",), "%.2f")]
FETCH_FIGURES = ["mb_per_s", "cpu_s_per_gb", "context_switches_per_mb"]
# The login windows: (scenario, protocol, concurrency).
LOGIN_WINDOWS = [("c1", "imap", 1), ("c32", "imap", 32), ("pop3 c32", "pop3", 32)]


def noop_p50(options, users_path):
    """The NOOP round trip's p50 (µs) of one session for --seconds."""
    result = benchlib.run_loadgen(options.loadgen, ["noop", "--protocol", "imap", "--concurrency", "1", "--duration",
                                                 str(options.seconds), "--warmup", "1", "--users", users_path],
                               timeout=options.seconds + 120)
    if benchlib.errors_of(result):
        raise BenchError("NOOP window with errors: %s" % {k: result.get(k) for k in ("errors", "diagnostics")})
    return (result.get("rtt_us") or {}).get("p50")


def fetch_window(options, users_path, pid=None, tls_args=()):
    """FETCH of a 20 MB message by one session for --seconds: MB/s, and with `pid` the
    process's CPU seconds and thread wake-ups per GB and per MB moved."""
    before = (cpu(pid), task_switches(pid)) if pid else None
    result = benchlib.run_loadgen(options.loadgen, ["fetch", "--protocol", "imap", "--append-size", "20000000",
                                                 "--duration", str(options.seconds), "--warmup", "1",
                                                 "--users", users_path] + list(tls_args),
                               timeout=options.seconds + 180)
    if benchlib.errors_of(result):
        raise BenchError("FETCH window with errors: %s" % {k: result.get(k) for k in ("errors", "diagnostics")})
    row = {"mb_per_s": result.get("mb_per_s")}
    moved = result.get("bytes") or 0
    if pid and moved:
        row["cpu_s_per_gb"] = (cpu(pid) - before[0]) / (moved / 1e9)
        row["context_switches_per_mb"] = (task_switches(pid) - before[1]) / (moved / 1e6)
    return row


def markdown(report):
    out = ["# mailswitch: where a login's CPU goes", "",
           "`%s` — %s; %s; %d rounds of %s s windows, plain IMAP (and POP3 at c32), warm route cache." % (
               report["command"], report["date"], report["machine"], report["rounds"], report["seconds"]), ""]
    if report.get("errors"):
        out += ["**Errors:** " + "; ".join(report["errors"]), ""]
    # Only the loop columns some build reports (all builds' rows show "—" for what theirs lacks).
    loop_columns = [c for c in LOOP_COLUMNS
                    if any(s.get(k) for s in report["summary"].values() for k in c[1])]
    header = (["binary", "c", "CPU ms/login (user+sys)", "ctx switches", "syscalls"] + [c[0] for c in loop_columns]
              + ["logins/s", "p50 µs"])
    out += ["Per login, median (min–max) over the rounds (events/wait: per epoll wait, not per login):", "",
            "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]

    def cell(s, key, form):
        return benchlib.median_range(s.get(key), form)

    def median(s, key, form):
        return form % s[key]["median"] if s.get(key) else "—"
    for (label, scenario), s in sorted(report["summary"].items()):
        loops = []
        for _, keys, form in loop_columns:
            loops.append(cell(s, keys[0], form) if len(keys) == 1 else "/".join(median(s, k, form) for k in keys))
        out.append("| " + " | ".join([
            label, scenario,
            "%s (%s+%s)" % (cell(s, "cpu_ms", "%.3f"), median(s, "cpu_user_ms", "%.3f"), median(s, "cpu_sys_ms", "%.3f")),
            cell(s, "context_switches", "%.1f"), cell(s, "syscalls", "%.1f")] + loops
            + [cell(s, "logins_per_s", "%.0f"), cell(s, "p50_us", "%.0f")]) + " |")
    out.append("")
    noop = report.get("noop_summary") or {}
    if noop.get("direct"):
        out += ["NOOP round trip of one session, p50 µs, median (min–max) over the rounds:", "",
                "| binary | p50 µs | over direct (medians) |", "|---|---|---|"]
        for label, v in noop.items():
            if v:
                over = "—" if label == "direct" else "%+.0f" % (v["median"] - noop["direct"]["median"])
                out.append("| %s | %.0f (%.0f–%.0f) | %s |" % (label, v["median"], v["min"], v["max"], over))
        out.append("")
    fetch = report.get("fetch_summary") or {}
    if fetch:
        out += ["FETCH of a 20 MB message by one session (plain towards the store), median (min–max) over the rounds:",
                "", "| binary | client leg | MB/s | × direct | CPU s/GB | wake-ups per MB |", "|---|---|---|---|---|---|"]
        direct = (fetch.get("direct|plain") or {}).get("mb_per_s")
        for key, s in fetch.items():
            label, leg = key.split("|")
            ratio = "%.2f" % (s["mb_per_s"]["median"] / direct["median"]) if direct and s.get("mb_per_s") else "—"
            out.append("| %s | %s | %s | %s | %s | %s |" % (label, leg, cell(s, "mb_per_s", "%.0f"), ratio,
                                                          cell(s, "cpu_s_per_gb", "%.2f"),
                                                          cell(s, "context_switches_per_mb", "%.1f")))
        out.append("")
    return "\n".join(out)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--baseline-binary", action="append", default=[])
    parser.add_argument("--loops", default="", help="event-loop counts to run each binary with, e.g. 1,2,4")
    parser.add_argument("--accept", default="",
                        help="accept modes to run each binary with (serve --accept), e.g. handover,per-loop")
    parser.add_argument("--out", default=os.path.join(REPO, "results"))
    parser.add_argument("--timeout", type=float, default=1800)
    options = parser.parse_args()
    benchlib.require_root("profile.py")
    binary = benchlib.mailswitch_binary()
    baselines = [os.path.abspath(path) for path in options.baseline_binary]
    binaries = [("this", binary)] + [("baseline" if len(baselines) == 1 else os.path.basename(path), path)
                                     for path in baselines]
    # (label, binary, extra `serve` arguments); --loops and --accept only when asked for, so
    # that builds which know neither still run.
    loop_counts = [int(n) for n in options.loops.split(",") if n.strip()]
    accept_modes = [m.strip() for m in options.accept.split(",") if m.strip()]
    for mode in accept_modes:
        if mode not in ("handover", "per-loop"):
            parser.error("--accept: %r is neither handover nor per-loop" % mode)
    systems = []
    for label, path in binaries:
        for n in loop_counts or [None]:
            for mode in accept_modes or [None]:
                name, arguments = label, []
                if n is not None:
                    name, arguments = name + " loops=%d" % n, arguments + ["--loops", str(n)]
                if mode is not None:
                    name, arguments = name + " accept=%s" % mode, arguments + ["--accept", mode]
                systems.append((name, path, arguments))
    work, report = benchlib.begin_run("profile", options.timeout)
    lab_dir = os.path.join(work, "lab")
    report.update({"rounds": options.rounds, "seconds": options.seconds, "runs": [], "noop": [], "fetch": [],
                   "summary": {}})
    with benchlib.running(report, work, lab_dir) as run:
        state, options.loadgen, users, via_proxy = benchlib.login_lab(run, lab_dir, work)
        direct = benchlib.users_file(work, "direct", users, lambda user, store: state["stores"][store]["imap"])
        via_proxy_tls = benchlib.users_file(work, "mailswitch-imaps", users, lambda user, store: LISTEN["imaps"])
        via_proxy_pop3 = benchlib.users_file(work, "mailswitch-pop3", users, lambda user, store: LISTEN["pop3"])
        tls_args = ["--tls", "--cafile", state["tls"]["ca"], "--servername", peers.server_name(state, "mailswitch")]
        for round_ in range(1, options.rounds + 1):
            report["noop"].append({"round": round_, "binary": "direct", "p50_us": noop_p50(options, direct)})
            report["fetch"].append(dict(fetch_window(options, direct), round=round_, binary="direct", leg="plain"))
            for label, path, arguments in systems:
                say("round %d/%d: %s" % (round_, options.rounds, label))
                proxy = benchlib.Mailswitch(path, state, work, "%s r%d" % (label, round_), WARM, arguments=arguments)
                try:
                    proxy.wait_feed()
                    benchlib.run_loadgen(options.loadgen, ["login", "--protocol", "imap", "--concurrency", "32",
                                                        "--count", str(len(users)), "--users", via_proxy], timeout=120)
                    for scenario, protocol, concurrency in LOGIN_WINDOWS:
                        row = benchlib.login_window(options, path, proxy, via_proxy_pop3 if protocol == "pop3" else via_proxy,
                                      concurrency, protocol)
                        row.update({"round": round_, "binary": label, "scenario": scenario})
                        report["runs"].append(row)
                        say("  %s: %.3f ms CPU, %.1f switches, %s syscalls per login; %s" % (
                            scenario, row["cpu_ms"], row["context_switches"], row["syscalls"],
                            ", ".join("%s %.2f" % (k, row[k]) for k in ("epoll_waits", "events_per_wait",
                                                                        "interest_changes", "registrations",
                                                                        "read_sources", "write_sources",
                                                                        "timer_sources", "suspends", "resumes")
                                      if row.get(k) is not None)))
                    report["noop"].append({"round": round_, "binary": label, "p50_us": noop_p50(options, via_proxy)})
                    for leg, users_path, extra in (("plain", via_proxy, []), ("tls", via_proxy_tls, tls_args)):
                        row = fetch_window(options, users_path, proxy.pid, extra)
                        report["fetch"].append(dict(row, round=round_, binary=label, leg=leg))
                        say("  fetch %s: %.0f MB/s, %.2f s CPU/GB" % (leg, row["mb_per_s"], row["cpu_s_per_gb"]))
                finally:
                    proxy.stop()
        summary = {}
        for label, _, _ in systems:
            for scenario, _, _ in LOGIN_WINDOWS:
                rows = [r for r in report["runs"] if r["binary"] == label and r["scenario"] == scenario]
                summary["%s|%s" % (label, scenario)] = {k: spread([r.get(k) for r in rows]) for k in FIGURES}
        report["summary"] = {tuple(k.split("|")): v for k, v in summary.items()}
        report["noop_summary"] = {label: spread([r["p50_us"] for r in report["noop"] if r["binary"] == label])
                                  for label in ["direct"] + [label for label, _, _ in systems]}
        report["fetch_summary"] = {}
        for label, leg in [("direct", "plain")] + [(label, leg) for label, _, _ in systems for leg in ("plain", "tls")]:
            rows = [r for r in report["fetch"] if r["binary"] == label and r["leg"] == leg]
            report["fetch_summary"]["%s|%s" % (label, leg)] = {k: spread([r.get(k) for r in rows])
                                                              for k in FETCH_FIGURES}
    text = markdown(report)
    report["summary"] = {"%s %s" % k: v for k, v in report["summary"].items()}
    return benchlib.write_report(options.out, "profile", report, text)


if __name__ == "__main__":
    sys.exit(main())
