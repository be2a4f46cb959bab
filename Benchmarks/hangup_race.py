#!/usr/bin/env python3
"""The libdispatch hang-up race, measured: how often a bare Dispatch program crashes when the far
ends of its socket pairs close (EPOLLHUP; swift-corelibs-libdispatch #949), in three builds of
Benchmarks/hangup_race/race.swift, rounds interleaved, each run for --seconds:
  Dispatch source per socket                 race.swift as is: a read source per near end,
                                             mailswitch's old design. Expected to crash now and
                                             then: that is libdispatch's bug, the finding.
  Dispatch source per socket, with the old shim
                                             the same, linked with the epoll_wait/epoll_ctl shim
                                             the daemon used to carry (Benchmarks/hangup_race/
                                             epoll_hangup.c: a hang-up handed to libdispatch as
                                             "readable and writable").
  epoll set per loop                         race.swift with -D OWN_EPOLL, mailswitch's design
                                             now: each serial queue owns an epoll set watched by
                                             one Dispatch read source; the near ends are in it,
                                             level-triggered, and never get a source of their own
                                             (the daemon's own C calls, Sources/CSystemShims/system_calls.c).
A crash or hang of the shim build or of the epoll-set build is an error (exit status 1); the
first build's are reported, not errors. Per build: runs, crashes, hangs, and the socket pairs
hung up and finished, summed over the runs.

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
# The daemon's old workaround, kept for this benchmark (and Benchmarks/relays.py) only.
SHIM = os.path.join(HERE, "hangup_race", "epoll_hangup.c")
# The epoll-set build uses the daemon's own C calls for its epoll set.
EPOLL_HELPERS = os.path.join(ROOT, "Sources", "CSystemShims", "system_calls.c")
EPOLL_HELPERS_HEADER = os.path.join(ROOT, "Sources", "CSystemShims", "include", "CSystemShims.h")

PLAIN = "Dispatch source per socket"
SHIMMED = "Dispatch source per socket, with the old shim"
EPOLL_SET = "epoll set per loop"
# The builds whose every run must end well.
MUST_NOT_FAIL = (SHIMMED, EPOLL_SET)


def exported_symbols(binary):
    return subprocess.run(["nm", "-D", "--defined-only", binary], capture_output=True, text=True, check=True).stdout


def build(work):
    swiftc = ["swiftc", "-O", "-swift-version", "6"]
    plain = os.path.join(work, "race-plain")
    shimmed = os.path.join(work, "race-with-shim")
    epoll_set = os.path.join(work, "race-epoll-set")
    shim_object = os.path.join(work, "epoll_hangup.o")
    helpers_object = os.path.join(work, "system_calls.o")
    subprocess.run(swiftc + [SOURCE, "-o", plain], check=True)
    subprocess.run(["clang", "-O2", "-c", SHIM, "-o", shim_object], check=True)
    subprocess.run(swiftc + [SOURCE, shim_object, "-o", shimmed], check=True)
    if " epoll_wait" not in exported_symbols(shimmed):
        raise RuntimeError("the shim's epoll_wait is not exported by %s" % shimmed)
    subprocess.run(["clang", "-O2", "-Wall", "-I", os.path.dirname(EPOLL_HELPERS_HEADER), "-c", EPOLL_HELPERS,
                    "-o", helpers_object], check=True)
    subprocess.run(swiftc + ["-D", "OWN_EPOLL", "-import-objc-header", EPOLL_HELPERS_HEADER, SOURCE, helpers_object,
                             "-o", epoll_set], check=True)
    if " epoll_wait" in exported_symbols(epoll_set):
        raise RuntimeError("%s defines epoll_wait: the epoll-set build must run libc's" % epoll_set)
    return {PLAIN: plain, SHIMMED: shimmed, EPOLL_SET: epoll_set}


def no_core_dumps():
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def run(binary, seconds):
    env = dict(os.environ, SWIFT_BACKTRACE="enable=yes,interactive=no,color=no")
    try:
        done = subprocess.run([binary, str(seconds)], capture_output=True, text=True, timeout=seconds + 60,
                              preexec_fn=no_core_dumps, env=env)
    except subprocess.TimeoutExpired:
        return {"outcome": "hung", "pairs": None, "where": ""}
    pairs = stale = None
    for line in done.stdout.splitlines():
        if line.startswith("pairs "):
            pairs = int(line.split()[1])
        elif line.startswith("stale_events "):
            stale = int(line.split()[1])
    if done.returncode == 0 and pairs is not None:
        return {"outcome": "ok", "pairs": pairs, "stale_events": stale, "where": ""}
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
    return {"outcome": "crashed (status %d)" % done.returncode, "pairs": pairs, "stale_events": stale,
            "where": " ← ".join(where)}


def markdown(report):
    lines = ["# The libdispatch hang-up race", "",
             "%s, %d rounds of %g s per build, interleaved." % (report["date"], report["rounds"], report["seconds"]), "",
             "%s: a read source per socket (mailswitch's old design; its crashes are libdispatch's bug, "
             "swift-corelibs-libdispatch #949). %s: the same with the epoll_wait shim the daemon used to carry. "
             "%s: an epoll set per serial queue, watched by one read source (mailswitch's design now)."
             % (PLAIN, SHIMMED, EPOLL_SET), "",
             "| build | runs | crashed | hung | socket pairs hung up (sum) |", "| --- | --: | --: | --: | --: |"]
    for name, runs in report["runs"].items():
        crashed = sum(1 for r in runs if r["outcome"].startswith("crashed"))
        hung = sum(1 for r in runs if r["outcome"] == "hung")
        pairs = sum(r["pairs"] or 0 for r in runs)
        lines.append("| %s | %d | %d | %d | %d |" % (name, len(runs), crashed, hung, pairs))
    sites = sorted({(name, r["where"]) for name, runs in report["runs"].items() for r in runs if r["where"]})
    if sites:
        lines += ["", "Where the crashes were:", ""] + ["- %s: `%s`" % s for s in sites]
    stale = [r["stale_events"] for r in report["runs"].get(EPOLL_SET, []) if r.get("stale_events") is not None]
    if stale:
        lines += ["", "The %s build dropped %d stale events (a descriptor's generation changed) in all."
                  % (EPOLL_SET, sum(stale))]
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
        for name in MUST_NOT_FAIL:
            for result in report["runs"][name]:
                if result["outcome"] != "ok":
                    report["errors"].append("the %s build %s%s" % (
                        name, result["outcome"], " at %s" % result["where"] if result["where"] else ""))
    except (subprocess.CalledProcessError, RuntimeError, OSError) as error:
        report["errors"].append("%s: %s" % (type(error).__name__, error))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return benchlib.write_report(options.out, "hangup-race", report, markdown(report))


if __name__ == "__main__":
    sys.exit(main())
