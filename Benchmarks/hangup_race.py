#!/usr/bin/env python3
"""The libdispatch hang-up race, measured: how often a bare Dispatch program crashes when the far
ends of its socket pairs close (EPOLLHUP), with and without mailswitch's epoll_wait
(Sources/CSystemShims/epoll_hangup.c, which hands a hang-up to libdispatch as "readable and
writable"). Rounds interleave the two builds; each run is Benchmarks/hangup_race/race.swift
for --seconds. A crash of the build with the shim is an error (exit status 1).

Writes DIR/hangup-race.md and DIR/hangup-race.json (default DIR: results/). No network: Unix
socket pairs only; every run is bounded by its seconds plus a minute.
"""

import argparse
import datetime
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
import benchlib  # noqa: E402  (write_report)

SOURCE = os.path.join(HERE, "hangup_race", "race.swift")
SHIM = os.path.join(ROOT, "Sources", "CSystemShims", "epoll_hangup.c")


def build(work):
    plain = os.path.join(work, "race-plain")
    shimmed = os.path.join(work, "race-with-shim")
    shim_object = os.path.join(work, "epoll_hangup.o")
    subprocess.run(["swiftc", "-O", "-swift-version", "6", SOURCE, "-o", plain], check=True)
    subprocess.run(["clang", "-O2", "-c", SHIM, "-o", shim_object], check=True)
    subprocess.run(["swiftc", "-O", "-swift-version", "6", SOURCE, shim_object, "-o", shimmed], check=True)
    exported = subprocess.run(["nm", "-D", "--defined-only", shimmed], capture_output=True, text=True, check=True).stdout
    if " epoll_wait" not in exported:
        raise RuntimeError("the shim's epoll_wait is not exported by %s" % shimmed)
    return {"plain": plain, "with shim": shimmed}


def no_core_dumps():
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def run(binary, seconds):
    env = dict(os.environ, SWIFT_BACKTRACE="enable=yes,interactive=no,color=no")
    try:
        done = subprocess.run([binary, str(seconds)], capture_output=True, text=True, timeout=seconds + 60,
                              preexec_fn=no_core_dumps, env=env)
    except subprocess.TimeoutExpired:
        return {"outcome": "hung", "pairs": None, "where": ""}
    pairs = None
    for line in done.stdout.splitlines():
        if line.startswith("pairs "):
            pairs = int(line.split()[1])
    if done.returncode == 0 and pairs is not None:
        return {"outcome": "ok", "pairs": pairs, "where": ""}
    # The Swift runtime's backtrace: "Thread N ... crashed:", a blank line, then its frames.
    lines = done.stderr.splitlines()
    where = []
    for index, line in enumerate(lines):
        if line.startswith("Thread ") and line.endswith("crashed:"):
            for frame in lines[index + 2:index + 5]:
                found = re.search(r"(\S+) \+ \d+ in (\S+)", frame)
                if found:
                    where.append("%s (%s)" % found.groups())
            break
    return {"outcome": "crashed (status %d)" % done.returncode, "pairs": pairs, "where": " ← ".join(where)}


def markdown(report):
    lines = ["# The libdispatch hang-up race", "",
             "%s, %d rounds of %g s per build, interleaved." % (report["date"], report["rounds"], report["seconds"]), "",
             "| build | runs | crashed | hung | socket pairs hung up (sum) |", "| --- | --: | --: | --: | --: |"]
    for name, runs in report["runs"].items():
        crashed = sum(1 for r in runs if r["outcome"].startswith("crashed"))
        hung = sum(1 for r in runs if r["outcome"] == "hung")
        pairs = sum(r["pairs"] or 0 for r in runs)
        lines.append("| %s | %d | %d | %d | %d |" % (name, len(runs), crashed, hung, pairs))
    sites = sorted({r["where"] for runs in report["runs"].values() for r in runs if r["where"]})
    if sites:
        lines += ["", "Where the crashes were:", ""] + ["- `%s`" % s for s in sites]
    if report["errors"]:
        lines += ["", "Errors:", ""] + ["- %s" % e for e in report["errors"]]
    return "\n".join(lines) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--out", default=os.path.join(ROOT, "results"))
    options = parser.parse_args()
    report = {"date": datetime.datetime.now().isoformat(timespec="seconds"), "rounds": options.rounds,
              "seconds": options.seconds, "runs": {}, "errors": []}
    work = tempfile.mkdtemp(prefix="mailswitch-hangup-race-")
    try:
        binaries = build(work)
        report["runs"] = {name: [] for name in binaries}
        for round_number in range(options.rounds):
            for name, binary in binaries.items():
                result = run(binary, options.seconds)
                report["runs"][name].append(result)
                print("round %d, %s: %s" % (round_number + 1, name, result["outcome"]), flush=True)
        for result in report["runs"]["with shim"]:
            if result["outcome"] != "ok":
                report["errors"].append("the build with the shim %s" % result["outcome"])
    except (subprocess.CalledProcessError, RuntimeError, OSError) as error:
        report["errors"].append("%s: %s" % (type(error).__name__, error))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return benchlib.write_report(options.out, "hangup-race", report, markdown(report))


if __name__ == "__main__":
    sys.exit(main())
