#!/usr/bin/env python3
"""Point 3 of the performance issue: mailswitch against the floors of its design. The same
plain-IMAP/POP3 load, rounds interleaved, against:
  direct               the stores themselves;
  mailswitch           the release build (warm route cache, change feed on);
  dispatch-relay       a minimal relay on the old design's terms, its floor (Benchmarks/relays/
                       dispatch_relay.swift: a read source per socket, serial queues as loops;
                       linked with the old epoll_wait shim, Benchmarks/hangup_race/epoll_hangup.c);
  epoll-relay          a minimal single-threaded epoll relay in C, read/write;
  epoll-splice-relay   the same with splice(2) through a pipe per direction.
The relays know no protocol: one relay port per store, and each user connects to its store's.
Figures per scenario: logins/s and relay CPU per login (c1, c32), NOOP round trip p50, FETCH
MB/s of a 20 MB message and relay CPU per GB; each as the median (min-max) over rounds.

Writes DIR/relays.md and DIR/relays.json (default DIR: results/). Run as root (the lab);
loopback only; every run bounded (--timeout).
"""

import argparse
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import benchlib  # noqa: E402  (Benchmarks/benchlib.py: the lab, the load generator, mailswitch, the run)
import peers  # noqa: E402
from benchlib import LISTEN, REPO, STARTED, WARM, BenchError, say, spread  # noqa: E402

SYSTEMS = ["direct", "mailswitch", "dispatch-relay", "epoll-relay", "epoll-splice-relay"]
RELAY_BASE_PORT = {"dispatch-relay": 7100, "epoll-relay": 7200, "epoll-splice-relay": 7300}
RELAY_ENDPOINT_PORT = {"imap": 43, "pop3": 10}           # + 50 for the second store
# The old design's workaround for libdispatch's hang-up race, which the daemon no longer needs.
SHIM = os.path.join(HERE, "hangup_race", "epoll_hangup.c")


def scenarios(seconds):
    timing = ["--duration", str(seconds), "--warmup", "1"]
    return [
        ("login imap c1", ["login", "--protocol", "imap", "--concurrency", "1"] + timing, "login", "imap"),
        ("login imap c32", ["login", "--protocol", "imap", "--concurrency", "32"] + timing, "login", "imap"),
        ("login pop3 c32", ["login", "--protocol", "pop3", "--concurrency", "32"] + timing, "login", "pop3"),
        ("noop imap", ["noop", "--protocol", "imap", "--concurrency", "1"] + timing, "noop", "imap"),
        ("fetch imap 20MB", ["fetch", "--protocol", "imap", "--append-size", "20000000"] + timing, "fetch", "imap"),
    ]


def build_relays(work):
    built = {}
    c_relay = os.path.join(work, "epoll_relay")
    subprocess.run(["gcc", "-O2", "-Wall", "-o", c_relay, os.path.join(HERE, "relays", "epoll_relay.c")], check=True)
    built["epoll-relay"] = [c_relay]
    built["epoll-splice-relay"] = [c_relay, "--splice"]
    shim = os.path.join(work, "epoll_hangup.o")
    subprocess.run(["clang", "-O2", "-c", SHIM, "-o", shim], check=True)
    swift_relay = os.path.join(work, "dispatch_relay")
    subprocess.run(["swiftc", "-O", "-swift-version", "6", os.path.join(HERE, "relays", "dispatch_relay.swift"), shim,
                    "-o", swift_relay], check=True)
    built["dispatch-relay"] = [swift_relay]
    return built


def relay_address(system, store_index, endpoint):
    return "127.0.0.1:%d" % (RELAY_BASE_PORT[system] + RELAY_ENDPOINT_PORT[endpoint] + 50 * store_index)


def start_relay(system, argv, state, work):
    stores = sorted(state["stores"])
    mappings = ["%s=%s" % (relay_address(system, index, endpoint), state["stores"][store][endpoint])
                for index, store in enumerate(stores) for endpoint in RELAY_ENDPOINT_PORT]
    addresses = [m.split("=")[0] for m in mappings]
    for address in addresses:
        if peers.listening(address) or not peers.port_bindable(address):
            raise BenchError("%s (for %s) is in use" % (address, system))
    log_path = os.path.join(work, system + ".log")
    process = peers.spawn(argv + mappings, log_path)
    STARTED.append((system, process))
    peers.wait_listening(system, [process], addresses, log_path)
    return process, {store: index for index, store in enumerate(stores)}


def measure(loadgen, arguments, kind, users_path, pid, seconds):
    before = benchlib.cpu(pid) if pid else 0.0
    result = benchlib.run_loadgen(loadgen, arguments + ["--users", users_path], timeout=seconds + 180)
    cpu = benchlib.cpu(pid) - before if pid else None
    operations = result.get("ok", 0) + (result.get("uncounted") or {}).get("ok", 0)
    row = {"errors": benchlib.errors_of(result)}
    if kind == "login":
        row["per_s"] = result.get("rate_per_s")
        row["cpu_ms_per_login"] = 1000.0 * cpu / operations if cpu is not None and operations else None
    elif kind == "noop":
        row["p50_us"] = (result.get("rtt_us") or {}).get("p50")
    else:
        row["mb_per_s"] = result.get("mb_per_s")
        moved = result.get("bytes") or 0
        row["cpu_s_per_gb"] = cpu / (moved / 1e9) if cpu is not None and moved else None
    if row["errors"]:
        row["diagnostics"] = str(result.get("errors"))[:300] + " " + str(result.get("diagnostics", ""))[:500]
    return row


FIGURES = {"login": [("logins/s", "per_s", "%.0f"), ("CPU ms/login", "cpu_ms_per_login", "%.3f")],
           "noop": [("NOOP p50 µs", "p50_us", "%.0f")],
           "fetch": [("MB/s", "mb_per_s", "%.0f"), ("CPU s/GB", "cpu_s_per_gb", "%.2f")]}


def markdown(report):
    out = ["# mailswitch against minimal relays", "",
           "`%s` — %s; %s; %d rounds of %s s, interleaved; median (min–max) over rounds; "
           "ratios are of medians against direct." % (report["command"], report["date"], report["machine"],
                                                       report["rounds"], report["seconds"]), ""]
    for name, _, kind, _ in scenarios(report["seconds"]):
        figures = FIGURES[kind]
        out.append("## " + name)
        out.append("")
        out.append("| system | " + " | ".join(f[0] for f in figures) + " | × direct | errors |")
        out.append("|---|" + "---|" * (len(figures) + 2))
        direct = (report["summary"].get(name, {}).get("direct") or {}).get(figures[0][1])
        for system in report["systems"]:
            s = report["summary"].get(name, {}).get(system) or {}
            cells = [benchlib.median_range(s.get(key), form) for _, key, form in figures]
            first = s.get(figures[0][1])
            ratio = "%.2f" % (first["median"] / direct["median"]) if first and direct and direct["median"] else "—"
            out.append("| %s | %s | %s | %d |" % (system, " | ".join(cells), ratio, s.get("errors", 0)))
        out.append("")
    if report["errors"]:
        out += ["Errors:", ""] + ["- " + e for e in report["errors"]] + [""]
    return "\n".join(out)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--systems", default=",".join(SYSTEMS))
    parser.add_argument("--out", default=os.path.join(REPO, "results"))
    parser.add_argument("--timeout", type=float, default=3600)
    options = parser.parse_args()
    benchlib.require_root("relays.py")
    systems = options.systems.split(",")
    unknown = [s for s in systems if s not in SYSTEMS]
    if unknown:
        sys.exit("unknown systems %s (known: %s)" % (", ".join(unknown), ", ".join(SYSTEMS)))
    binary = benchlib.mailswitch_binary()
    work, report = benchlib.begin_run("relays", options.timeout)
    lab_dir = os.path.join(work, "lab")
    report.update({"rounds": options.rounds, "seconds": options.seconds, "systems": systems, "runs": [],
                   "summary": {}})
    with benchlib.running(report, work, lab_dir, (KeyError,)) as run:
        relays = build_relays(work)
        loadgen = benchlib.build_loadgen(work)
        state = benchlib.lab_up(run, lab_dir)
        users = peers.bench_users(state)
        pids, users_files = {}, {}
        for system in systems:
            for endpoint in RELAY_ENDPOINT_PORT:
                if system == "direct":
                    where = lambda user, store, e=endpoint: state["stores"][store][e]
                elif system == "mailswitch":
                    where = lambda user, store, e=endpoint: LISTEN[e]
                else:
                    where = None
                if where:
                    users_files[(system, endpoint)] = benchlib.users_file(work, "%s-%s" % (system, endpoint), users, where)
            if system == "mailswitch":
                proxy = benchlib.Mailswitch(binary, state, work, "relays", WARM)
                proxy.wait_feed()
                # Every user once, so the route cache is warm as in production.
                benchlib.run_loadgen(loadgen, ["login", "--protocol", "imap", "--concurrency", "32", "--count",
                                            str(len(users)), "--users", users_files[(system, "imap")]], timeout=120)
                pids[system] = proxy.pid
            elif system != "direct":
                process, index = start_relay(system, relays[system], state, work)
                pids[system] = process.pid
                for endpoint in RELAY_ENDPOINT_PORT:
                    users_files[(system, endpoint)] = benchlib.users_file(
                        work, "%s-%s" % (system, endpoint), users,
                        lambda user, store, e=endpoint, s=system: relay_address(s, index[store], e))
        for round_ in range(1, options.rounds + 1):
            for name, arguments, kind, endpoint in scenarios(options.seconds):
                for system in systems:
                    row = measure(loadgen, arguments, kind, users_files[(system, endpoint)], pids.get(system),
                                  options.seconds)
                    row.update({"round": round_, "scenario": name, "system": system})
                    report["runs"].append(row)
                    say("round %d %s %s: %s" % (round_, name, system,
                                                      {k: v for k, v in row.items() if k not in ("round", "scenario", "system")}))
        for name, _, kind, _ in scenarios(options.seconds):
            report["summary"][name] = {}
            for system in systems:
                rows = [r for r in report["runs"] if r["scenario"] == name and r["system"] == system]
                entry = {key: spread([r.get(key) for r in rows]) for _, key, _ in FIGURES[kind]}
                entry["errors"] = sum(r["errors"] for r in rows)
                report["summary"][name][system] = entry
                if entry["errors"]:
                    report["errors"].append("%s on %s: %d errors" % (name, system, entry["errors"]))
    return benchlib.write_report(options.out, "relays", report, markdown(report))


if __name__ == "__main__":
    sys.exit(main())
