#!/usr/bin/env python3
"""Stability under login load, for rare crashes no test window is long enough to meet (the
libdispatch hang-up race was one in about 250 five-second windows). Cycles, until --minutes
are used: a fresh mailswitch (warm route cache configuration), every bench user logged in
once at c32, then a c1 and a c32 login window of --seconds each (Benchmarks/profile.py's
measurement), then SIGTERM. A daemon that dies, or exits other than by the SIGTERM, is
recorded with its log's tail; any such run is an error (exit status 1). With
--baseline-binary the two builds alternate cycles.

Writes DIR/soak.md and DIR/soak.json (default DIR: results/). Run as root (the lab);
loopback only; bounded by --minutes plus one cycle.
"""

import argparse
import os
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib  # noqa: E402  (Benchmarks/benchlib.py: the lab, mailswitch, the login windows, the run)
import peers  # noqa: E402
from benchlib import REPO, WARM, BenchError, say  # noqa: E402


def cycle(options, label, binary, state, work, number, users, via, record):
    proxy = benchlib.Mailswitch(binary, state, work, "%s %d" % (label, number), WARM)
    phase = "start"
    try:
        proxy.wait_feed()
        phase = "warm pass"
        benchlib.run_loadgen(options.loadgen, ["login", "--protocol", "imap", "--concurrency", "32",
                                            "--count", str(len(users)), "--users", via], timeout=120)
        for concurrency in (1, 32):
            phase = "c%d window" % concurrency
            row = benchlib.login_window(options, binary, proxy, via, concurrency)
            record["windows"] += 1
            record["logins"] += row["logins"]
            record["errors"] += row["errors"]
    except (BenchError, subprocess.SubprocessError) as error:
        record["faults"].append({"cycle": number, "phase": phase, "what": str(error)[:1500]})
    finally:
        died, status = proxy.stop()
        record["cycles"] += 1
        if died or status not in (0, -signal.SIGTERM):
            record["deaths"].append({"cycle": number, "phase": phase, "status": status,
                                     "log": peers.tail(proxy.log_path)[-1500:]})
            say("%s cycle %d: mailswitch died in the %s (status %s)" % (label, number, phase, status))


def markdown(report):
    out = ["# mailswitch soak", "",
           "`%s` — %s; %s; %s s login windows." % (report["command"], report["date"], report["machine"], report["seconds"]), "",
           "| build | cycles | login windows | logins | failed logins | deaths | other faults |", "|---|---|---|---|---|---|---|"]
    for label, r in report["builds"].items():
        out.append("| %s | %d | %d | %d | %d | %d | %d |" % (label, r["cycles"], r["windows"], r["logins"], r["errors"],
                                                           len(r["deaths"]), len(r["faults"])))
    for label, r in report["builds"].items():
        for death in r["deaths"]:
            out += ["", "%s, cycle %d, %s: status %s" % (label, death["cycle"], death["phase"], death["status"]),
                    "", "```", death["log"], "```"]
    if report["errors"]:
        out += ["", "Errors:", ""] + ["- " + e for e in report["errors"]]
    return "\n".join(out) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=30)
    parser.add_argument("--seconds", type=float, default=5)
    parser.add_argument("--baseline-binary")
    parser.add_argument("--out", default=os.path.join(REPO, "results"))
    options = parser.parse_args()
    benchlib.require_root("soak.py")
    binary = benchlib.mailswitch_binary()
    builds = [("this", binary)] + ([("baseline", os.path.abspath(options.baseline_binary))]
                                   if options.baseline_binary else [])
    work, report = benchlib.begin_run("soak", options.minutes * 60 + 600)
    lab_dir = os.path.join(work, "lab")
    report.update({"seconds": options.seconds,
                   "builds": {label: {"cycles": 0, "windows": 0, "logins": 0, "errors": 0, "deaths": [], "faults": []}
                              for label, _ in builds}})
    with benchlib.running(report, work, lab_dir) as run:
        state, options.loadgen, users, via = benchlib.login_lab(run, lab_dir, work)
        end = time.monotonic() + options.minutes * 60
        number = 0
        while time.monotonic() < end:
            number += 1
            for label, path in builds:
                cycle(options, label, path, state, work, number, users, via, report["builds"][label])
            say("cycle %d: %s" % (number, ", ".join("%s %d deaths" % (label, len(r["deaths"]))
                                                          for label, r in report["builds"].items())))
        for label, r in report["builds"].items():
            if r["deaths"]:
                report["errors"].append("%s: mailswitch died %d times in %d cycles" % (label, len(r["deaths"]), r["cycles"]))
    return benchlib.write_report(options.out, "soak", report, markdown(report))


if __name__ == "__main__":
    sys.exit(main())
