#!/usr/bin/env python3
"""Benchmark: where a login's CPU goes in mailswitch. Not a test: it measures and reports.

    scripts/bench profile [--rounds 3] [--seconds 10] [--baseline-binary PATH ...] [--loops N,...]
                          [--out DIR]

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
one loop per core), to set the loop count against the core count.
For each window, per login: mailswitch CPU (user and system ms, /proc/PID/stat), context
switches of all its threads (/proc/PID/task/*/status: voluntary + involuntary; a thread
wake-up is one), system calls (perf stat -e raw_syscalls:sys_enter -p PID, when perf works),
and the Dispatch sources made and the suspends/resumes of read and write sources
(`mailswitch status`, "event sources": EventLoopStatistics). Medians over the rounds, with
min-max; the VM's latencies are bimodal, so every figure carries its range.

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
           "timer_sources", "suspends", "resumes", "logins_per_s", "p50_us"]
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
    header = ["binary", "c", "CPU ms/login (user+sys)", "ctx switches", "syscalls", "read/write/timer sources",
              "suspends/resumes", "logins/s", "p50 µs"]
    out += ["Per login, median (min–max) over the rounds:", "", "| " + " | ".join(header) + " |",
            "|" + "---|" * len(header)]

    def cell(s, key, form):
        return benchlib.median_range(s.get(key), form)
    for (label, scenario), s in sorted(report["summary"].items()):
        src = "/".join("%.2f" % s[k]["median"] if s.get(k) else "—" for k in ("read_sources", "write_sources", "timer_sources"))
        sr = "/".join("%.2f" % s[k]["median"] if s.get(k) else "—" for k in ("suspends", "resumes"))
        out.append("| %s | %s | %s (%s+%s) | %s | %s | %s | %s | %s | %s |" % (
            label, scenario, cell(s, "cpu_ms", "%.3f"),
            "%.3f" % s["cpu_user_ms"]["median"], "%.3f" % s["cpu_sys_ms"]["median"],
            cell(s, "context_switches", "%.1f"), cell(s, "syscalls", "%.1f"), src, sr,
            cell(s, "logins_per_s", "%.0f"), cell(s, "p50_us", "%.0f")))
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
    parser.add_argument("--out", default=os.path.join(REPO, "results"))
    parser.add_argument("--timeout", type=float, default=1800)
    options = parser.parse_args()
    benchlib.require_root("profile.py")
    binary = benchlib.mailswitch_binary()
    baselines = [os.path.abspath(path) for path in options.baseline_binary]
    binaries = [("this", binary)] + [("baseline" if len(baselines) == 1 else os.path.basename(path), path)
                                     for path in baselines]
    # (label, binary, extra `serve` arguments)
    loop_counts = [int(n) for n in options.loops.split(",") if n.strip()]
    systems = [(label + (" loops=%d" % n if loop_counts else ""), path, ["--loops", str(n)] if loop_counts else [])
               for label, path in binaries for n in (loop_counts or [None])]
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
                        say("  %s: %.3f ms CPU, %.1f switches, %s syscalls, sources r/w/t %.2f/%.2f/%.2f per login"
                                  % (scenario, row["cpu_ms"], row["context_switches"], row["syscalls"],
                                     row["read_sources"], row["write_sources"], row["timer_sources"]))
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
