#!/usr/bin/env python3
"""mailswitch beside direct access, Perdition and Dovecot's proxy: the same load, on the same
machine, in the same run. Not a test: it measures, checks correctness, and writes results.

    scripts/bench [--quick] [--systems direct,mailswitch,perdition,dovecot]
                  [--scenarios WORD,...] [--idle-sessions N] [--out DIR]
    scripts/bench --quick --scenarios verify \
                  --systems direct,mailswitch,mailswitch-verify,dovecot,dovecot-verify

What one run does (everything on loopback, every wait bounded):
  1. A lab of its own (scripts/lab.py, port offset 300 so it never meets the tests' or the
     demo's): slapd with 2,000 users, stores "legacy" on 127.0.0.2 and "new" on 127.0.0.3
     (bench mode: each user's mailHost is its store's address, so every system routes from
     the same LDAP data).
  2. The systems under test (Benchmarks/peers.py): mailswitch (release build), Perdition 2.2
     with its LDAP map, Dovecot 2.3 as an LDAP proxy; and "direct", the stores themselves.
     Opt-in: mailswitch-verify and dovecot-verify, the same two proxies checking every
     password with an LDAP bind as the user (verify_credentials: ldap_bind; auth_bind = yes).
  3. The load generator (Benchmarks/loadgen, C, epoll + OpenSSL), built here with gcc. It
     checks that every login landed on its user's store.
  4. Each scenario against each system in turn, with the proxy's CPU time (all its processes,
     exited children included) read before and after, and slapd's in the login scenarios:
     logins (IMAP plain and TLS at concurrency 1 and 32, POP3 at 1 and 32), NOOP round trips,
     FETCH of a 20 MB message. `--scenarios verify` is the plain IMAP and POP3 logins: what
     checking passwords at the proxy changes (TLS adds the same to every system).
  5. Idle sessions (default 5,000, capped by the descriptor limit), plain and TLS towards the
     client, against a synthetic store (Tests/Fixtures/synthetic_store.py) put in the stores'
     place, so the stores' own per-session processes do not dominate; each proxy is started
     afresh for it and its proportional set size read before and with the sessions.
  6. DIR/bench.json and DIR/bench.md (default DIR: results/): a summary with the ratios
     mailswitch / direct and mailswitch / best peer (a peer checking passwords is no peer of
     plain mailswitch), and each of PAIRS whose two systems ran, then one table per scenario.
Everything started is stopped at the end, also on SIGTERM/SIGINT and after an hour.
A run with errors in any scenario is marked failed (exit status 1).
"""
import argparse
import datetime
import json
import os
import shutil
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib  # noqa: E402  (Benchmarks/benchlib.py: the lab, the load generator, the run)
import peers  # noqa: E402  (Benchmarks/peers.py: the systems under test)
from benchlib import (REPO, SYNTHETIC_STORE, USERS, BenchError, build_loadgen, errors_of, lab,  # noqa: E402
                      run_loadgen, users_file)

say = benchlib.sayer("bench", clock=False)


# ---------------------------------------------------------------------------------------------
# memory of a whole process tree (CPU time: peers.cpu_seconds, over the same tree)

def pss_kib(roots):
    """Proportional set size of the trees: a page shared by k processes counts 1/k each, so a
    forking proxy is not charged k times for its shared libraries."""
    total = 0
    for pid in peers.tree_pids(roots):
        try:
            with open("/proc/%d/smaps_rollup" % pid) as f:
                for line in f:
                    if line.startswith("Pss:"):
                        total += int(line.split()[1])
                        break
        except OSError:
            pass
    return total


# ---------------------------------------------------------------------------------------------
# the load generator

# ---------------------------------------------------------------------------------------------
# scenarios

# Words of --scenarios that stand for several scenarios (each word matches names containing it).
SCENARIO_WORDS = {"verify": ["login imap c", "login pop3"]}


def scenarios(quick):
    """(name, loadgen arguments without --users, kind, endpoint, tls); kind decides the figures
    reported. Every scenario runs for a fixed time after a warm-up second."""
    seconds = "5" if quick else "15"
    timing = ["--duration", seconds, "--warmup", "1"]
    return [
        ("login imap c1", ["login", "--protocol", "imap", "--concurrency", "1"] + timing, "login", "imap", False),
        ("login imap c32", ["login", "--protocol", "imap", "--concurrency", "32"] + timing, "login", "imap", False),
        ("login imaps c1", ["login", "--protocol", "imap", "--tls", "--concurrency", "1"] + timing, "login", "imaps", True),
        ("login imaps c32", ["login", "--protocol", "imap", "--tls", "--concurrency", "32"] + timing, "login", "imaps", True),
        ("login pop3 c1", ["login", "--protocol", "pop3", "--concurrency", "1"] + timing, "login", "pop3", False),
        ("login pop3 c32", ["login", "--protocol", "pop3", "--concurrency", "32"] + timing, "login", "pop3", False),
        ("noop imap", ["noop", "--protocol", "imap", "--concurrency", "1"] + timing, "noop", "imap", False),
        # One 20 MB message appended once per system, then fetched over and over.
        ("fetch imap 20MB", ["fetch", "--protocol", "imap", "--append-size", "20000000"] + timing, "fetch", "imap", False),
    ]


def measure(system, roots, binary, arguments, users_path, tls_args, timeout, slapd=None):
    """One generator run against the system, its CPU read around it; with `slapd` (a pid) the
    directory's CPU too (the route lookups and, for a system checking passwords, the binds)."""
    before = peers.cpu_seconds(roots) if roots else 0.0
    slapd_before = benchlib.cpu(slapd) if slapd else None
    result = run_loadgen(binary, arguments + ["--users", users_path] + tls_args, timeout)
    after = peers.cpu_seconds(roots) if roots else 0.0
    slapd_after = benchlib.cpu(slapd) if slapd else None
    result["proxy_cpu_s"] = round(after - before, 4) if roots else None
    # The CPU reading spans the whole generator run, warm-up included, so it is divided by
    # every operation of the run, not only the measured ones.
    operations = result.get("ok", 0) + (result.get("uncounted") or {}).get("ok", 0)
    if roots and operations:
        result["proxy_cpu_ms_per_op"] = round(1000.0 * (after - before) / operations, 4)
    if slapd and operations:
        result["slapd_cpu_ms_per_op"] = round(1000.0 * (slapd_after - slapd_before) / operations, 4)
    return result


def hold_idle(system, roots, binary, arguments, users_path, tls_args, sessions, timeout=600):
    """Opens `sessions` logged-in sessions through the system and holds them; the proxy's PSS
    is read before, and 3 s after the generator says all are open."""
    import select
    before = pss_kib(roots)
    cpu_before = peers.cpu_seconds(roots)
    process = subprocess.Popen([binary] + arguments + ["--users", users_path, "--count", str(sessions)] + tls_args,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + timeout
    ready = None
    buffered = ""
    try:
        while ready is None and time.monotonic() < deadline and process.poll() is None:
            readable, _, _ = select.select([process.stderr], [], [], 1.0)
            if readable:
                line = process.stderr.readline()
                buffered += line
                if line.startswith("READY"):
                    ready = line.split()
        if ready is None:
            raise BenchError("%s: idle sessions never all open: %s" % (system, buffered[-2000:]))
        # Opening the sessions is `sessions` logins at concurrency 100 against a store that
        # costs almost nothing: the proxy's own CPU per login with the least interference.
        cpu_opening = peers.cpu_seconds(roots) - cpu_before
        time.sleep(3)
        samples = []
        for _ in range(3):
            samples.append(pss_kib(roots))
            time.sleep(0.5)
        with_sessions = max(samples)
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        try:
            out, _ = process.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            process.kill()
            out, _ = process.communicate()
    try:
        result = json.loads(out)
    except ValueError:
        result = {"ok": 0, "errors": {"harness": 1}}
    opened = int(ready[1]) if ready and len(ready) > 1 else result.get("ok", 0)
    if ready is not None and opened:
        result["proxy_cpu_ms_per_op"] = round(1000.0 * cpu_opening / opened, 4)
    result.update({"sessions": opened, "pss_before_mib": round(before / 1024, 1), "pss_with_mib": round(with_sessions / 1024, 1),
                   "kib_per_session": round((with_sessions - before) / opened, 2) if opened else None})
    return result


def idle_scenarios(state, lab_dir, peer_dir, work, binary, systems, sessions):
    """(d): N idle logged-in sessions per proxy, plain and TLS towards the client, against
    synthetic stores standing where the real ones listen (same addresses, same ports). Each
    proxy is started afresh for each measurement, so its memory before the sessions is that of
    an idle process, not what earlier scenarios left in its heap."""
    results = []
    proxies = [s for s in systems if s != "direct"]
    if not proxies:
        return results
    peers.down(peer_dir)
    stores = []
    for name in ("legacy", "new"):
        lab(["stop-store", name], lab_dir)
    try:
        for name in ("legacy", "new"):
            host, port = state["stores"][name]["imap"].rsplit(":", 1)
            stores.append(subprocess.Popen([sys.executable, SYNTHETIC_STORE, port, "--host", host, "--name", name],
                                           stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True))
        for store in stores:
            if not store.stdout.readline().startswith("ready"):
                raise BenchError("synthetic store did not start")
        users = peers.bench_users(state)
        for label, endpoint, tls in (("idle imap", "imap", False), ("idle imaps", "imaps", True)):
            scenario = {"name": "%s (%d sessions, synthetic store)" % (label, sessions), "kind": "idle", "rows": []}
            for system in proxies:
                say("%s: %s" % (scenario["name"], system))
                try:
                    running = peers.up(lab_dir, peer_dir, [system])
                    path = users_file(work, "%s-%s-idle" % (system, endpoint), users,
                                      peers.endpoint_for(running, state, system, endpoint))
                    tls_args = ["--tls", "--cafile", state["tls"]["ca"], "--servername", peers.server_name(state, system)] if tls else []
                    time.sleep(1)   # let the fresh process settle before its memory is read
                    result = hold_idle(system, peers.roots(running, system), binary,
                                       ["idle", "--protocol", "imap", "--concurrency", "100", "--duration", "600"],
                                       path, tls_args, sessions)
                except (BenchError, peers.PeerError, subprocess.TimeoutExpired) as error:
                    result = {"ok": 0, "errors": {"harness": 1}, "error": str(error)}
                finally:
                    peers.down(peer_dir)
                scenario["rows"].append({"system": system, "result": result, "figure": figure(result, "idle")})
            scenario["ratios"] = summarize(scenario)
            results.append(scenario)
    finally:
        for store in stores:
            store.terminate()
            try:
                store.wait(timeout=30)
            except subprocess.TimeoutExpired:
                store.kill()
        for name in ("legacy", "new"):
            lab(["start-store", name], lab_dir)
    return results


def idle_session_limit(requested):
    """As many sessions as the descriptor limit allows: a proxy holds two descriptors per
    session (client and store), and keeps a margin for its own files and listeners."""
    import resource
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        return requested
    return max(1, min(requested, (hard - 200) // 2))


# ---------------------------------------------------------------------------------------------
# report

def figure(result, kind):
    if kind == "login":
        latency = result.get("latency_us") or {}
        return {"per_s": result.get("rate_per_s"), "p50_us": latency.get("p50"), "p99_us": latency.get("p99")}
    if kind == "noop":
        rtt = result.get("rtt_us") or {}
        return {"p50_us": rtt.get("p50"), "p99_us": rtt.get("p99")}
    if kind == "fetch":
        return {"mb_per_s": result.get("mb_per_s")}
    if kind == "idle":
        return {"kib_per_session": result.get("kib_per_session")}
    return {}


def ratio(a, b):
    return round(a / b, 3) if a and b else None


def markdown(report):
    lines = ["# mailswitch benchmarks", "",
             "`%s` — %s" % (report["command"], report["date"]), "",
             "Machine: %s." % report["machine"], ""]
    if report["failed"]:
        lines += ["**This run had errors: see the errors column.**", ""]
    lines += summary(report)
    for scenario in report["scenarios"]:
        kind = scenario["kind"]
        lines.append("## %s" % scenario["name"])
        lines.append("")
        header = {"login": "| system | logins/s | p50 µs | p99 µs | proxy CPU ms/login | slapd CPU ms/login | loadgen CPU | errors |",
                  "noop": "| system | NOOP p50 µs | p99 µs | proxy CPU ms/NOOP | loadgen CPU | errors |",
                  "fetch": "| system | MB/s | proxy CPU s | loadgen CPU | errors |",
                  "idle": "| system | sessions | PSS before → with MiB | KiB per session | proxy CPU ms/login | errors |"}[kind]
        lines += [header, "|" + "---|" * (header.count("|") - 1)]
        for row in scenario["rows"]:
            r, f = row["result"], row["figure"]
            cpu = r.get("proxy_cpu_ms_per_op")
            cpu_text = "—" if cpu is None else "%.3f" % cpu
            # The generator's own share of a core while measuring: far below 1.0 means it was
            # not what limited the figure.
            util = r.get("window_cpu_util")
            gen = "—" if util is None else "%.2f" % util
            if kind == "login":
                slapd = r.get("slapd_cpu_ms_per_op")
                lines.append("| %s | %s | %s | %s | %s | %s | %s | %d |" % (
                    row["system"], f.get("per_s"), f.get("p50_us"), f.get("p99_us"), cpu_text,
                    "—" if slapd is None else "%.3f" % slapd, gen, errors_of(r)))
            elif kind == "noop":
                lines.append("| %s | %s | %s | %s | %s | %d |" % (row["system"], f.get("p50_us"), f.get("p99_us"), cpu_text, gen,
                                                               errors_of(r)))
            elif kind == "fetch":
                lines.append("| %s | %s | %s | %s | %d |" % (row["system"], f.get("mb_per_s"), r.get("proxy_cpu_s") or "—", gen,
                                                           errors_of(r)))
            else:
                lines.append("| %s | %s | %s → %s | %s | %s | %d |" % (row["system"], r.get("sessions"), r.get("pss_before_mib"),
                                                                    r.get("pss_with_mib"), f.get("kib_per_session"), cpu_text,
                                                                    errors_of(r)))
        ratios = scenario.get("ratios") or {}
        parts = []
        if ratios.get("direct") is not None:
            parts.append("mailswitch / direct: %.3f" % ratios["direct"])
        if ratios.get("overhead_us") is not None:
            parts.append("overhead over direct: %+.1f µs" % ratios["overhead_us"])
        if ratios.get("best_peer") is not None:
            parts.append("mailswitch / best peer (%s): %.3f" % (ratios["best_peer_name"], ratios["best_peer"]))
        parts += ["%s: %.3f" % (name, value) for name, value in (ratios.get("pairs") or {}).items() if value is not None]
        if parts:
            lines += ["", "%s (on %s)." % ("; ".join(parts), ratios["figure"].replace("_", " "))]
        lines.append("")
    lines += ["Proxy CPU = CPU seconds of all the system's processes during the scenario (exited children included) ÷ "
              "operations; the stores and the load generator are not counted. slapd CPU: the directory's, the same way "
              "(it serves one system at a time). Idle memory is the proportional set "
              "size (PSS) of all the system's processes, so forked children are not charged for shared pages twice.", ""]
    return "\n".join(lines)


SUMMARY_FIGURES = {   # kind -> [(label, figure or result key, higher is better, format)]
    "login": [("logins/s", "per_s", True, "%.0f"), ("proxy CPU ms/login", "proxy_cpu_ms_per_op", False, "%.3f"),
              ("slapd CPU ms/login", "slapd_cpu_ms_per_op", False, "%.3f")],
    "noop": [("p50 µs", "p50_us", False, "%.1f")],
    "fetch": [("MB/s", "mb_per_s", True, "%.0f")],
    "idle": [("KiB/session", "kib_per_session", False, "%.1f"), ("proxy CPU ms/login", "proxy_cpu_ms_per_op", False, "%.3f")],
}


# Ratios of a system to another, each a column of the summary (and a line under each scenario's
# table) when both ran: mailswitch checking passwords against Dovecot's proxy doing the same,
# and what checking them costs each.
PAIRS = [("mailswitch-verify", "dovecot-verify"), ("mailswitch-verify", "mailswitch"), ("dovecot-verify", "dovecot")]


def pairs_in(systems):
    return [(a, b) for a, b in PAIRS if a in systems and b in systems]


def peer_values(values):
    """The figures of the peers mailswitch is set against: neither mailswitch, nor direct, nor
    a system checking passwords itself (peers.VERIFYING: it does more per login)."""
    return {n: v for n, v in values.items() if n not in ("mailswitch", "direct") and n not in peers.VERIFYING and v}


def summary(report):
    """One line per scenario and figure: every system side by side, then mailswitch / direct
    and mailswitch / the best peer on that figure (proxy CPU has no direct column), then the
    PAIRS whose systems ran."""
    systems = report["systems"]
    pairs = pairs_in(systems)
    header = ("| scenario | figure | " + " | ".join(systems) + " | mailswitch / direct | mailswitch / best peer |"
              + "".join(" %s / %s |" % pair for pair in pairs))
    lines = ["## Summary", "", header, "|" + "---|" * (header.count("|") - 1)]
    for scenario in report["scenarios"]:
        for label, key, higher, form in SUMMARY_FIGURES[scenario["kind"]]:
            values = {}
            for row in scenario["rows"]:
                value = row["figure"].get(key, row["result"].get(key))
                if value is not None and not errors_of(row["result"]):
                    values[row["system"]] = value
            cells = [(form % values[name]) if name in values else "—" for name in systems]
            ours = values.get("mailswitch")
            direct = values.get("direct")
            peers_ = peer_values(values)
            to_direct = "%.2f" % (ours / direct) if ours and direct else "—"
            if ours and peers_:
                best = (max if higher else min)(peers_, key=peers_.get)
                to_peer = "%.2f (%s)" % (ours / peers_[best], best)
            else:
                to_peer = "—"
            to_pairs = "".join(" %s |" % ("%.2f" % (values[a] / values[b]) if values.get(a) and values.get(b) else "—")
                               for a, b in pairs)
            lines.append("| %s | %s | %s | %s | %s |%s" % (scenario["name"], label, " | ".join(cells), to_direct, to_peer,
                                                          to_pairs))
    lines += ["", "Errors: %s. Higher is better for logins/s and MB/s; lower for the rest." % (
        "some (see below)" if report["failed"] else "none in any scenario"), ""]
    return lines


def summarize(scenario):
    """mailswitch against direct and against the best peer, on the scenario's main figure."""
    kind = scenario["kind"]
    key, higher_is_better = {"login": ("per_s", True), "noop": ("p50_us", False), "fetch": ("mb_per_s", True),
                             "idle": ("kib_per_session", False)}[kind]
    by_system = {row["system"]: row["figure"].get(key) for row in scenario["rows"] if not errors_of(row["result"])}
    ours = by_system.get("mailswitch")
    peers_ = peer_values(by_system)
    ratios = {"figure": key}
    pairs = pairs_in(by_system)
    if pairs:
        ratios["pairs"] = {"%s / %s" % (a, b): ratio(by_system[a], by_system[b]) for a, b in pairs}
    if ours:
        if by_system.get("direct"):
            ratios["direct"] = ratio(ours, by_system["direct"])
            if kind == "noop":
                ratios["overhead_us"] = round(ours - by_system["direct"], 2)
        if peers_:
            best = (max if higher_is_better else min)(peers_, key=peers_.get)
            ratios["best_peer_name"] = best
            ratios["best_peer"] = ratio(ours, peers_[best])
    return ratios


# ---------------------------------------------------------------------------------------------

def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--systems", default="direct,mailswitch,perdition,dovecot")
    parser.add_argument("--out", default=os.path.join(REPO, "results"))
    parser.add_argument("--quick", action="store_true", help="short scenarios (a smoke run)")
    parser.add_argument("--idle-sessions", type=int, default=5000,
                        help="idle scenario: sessions per system (capped by the descriptor limit)")
    parser.add_argument("--scenarios", default="",
                        help="comma-separated words; run only the scenarios whose name contains one (e.g. login,idle); "
                             "verify: the plain IMAP and POP3 logins")
    options = parser.parse_args()
    systems = [s for s in options.systems.split(",") if s]
    work = benchlib.work_dir("bench")   # 0755: the stores' unprivileged auth processes read the lab's passwd files
    lab_dir = os.path.join(work, "lab")
    peer_dir = os.path.join(work, "peers")
    report = {"command": "scripts/bench " + " ".join(sys.argv[1:]), "date": datetime.datetime.utcnow().strftime("%Y-%m-%d %H:%M UTC"),
              "machine": benchlib.machine_line(), "systems": systems, "scenarios": [], "failed": False}
    # A backstop: a run never outlives an hour. SIGALRM, SIGTERM and SIGINT raise, so the
    # `finally` below still stops everything the run started.
    benchlib.catch_signals(3600, "stopped by signal %d")
    try:
        say("lab with %d users in %s" % (USERS, lab_dir))
        lab(["up"], lab_dir)
        with open(os.path.join(lab_dir, "lab.json")) as f:
            state = json.load(f)
        binary = build_loadgen(work)
        say("systems under test: %s" % ", ".join(systems))
        running = peers.up(lab_dir, peer_dir, [s for s in systems if s != "direct"])
        users = peers.bench_users(state)
        ca = state["tls"]["ca"]
        wanted = [part for w in options.scenarios.split(",") if w for part in SCENARIO_WORDS.get(w, [w])]
        chosen = lambda name: not wanted or any(w in name for w in wanted)
        for name, arguments, kind, endpoint, tls in scenarios(options.quick):
            if not chosen(name):
                continue
            scenario = {"name": name, "kind": kind, "rows": []}
            for system in systems:
                path = users_file(work, "%s-%s" % (system, endpoint), users, peers.endpoint_for(running, state, system, endpoint))
                roots = peers.roots(running, system)
                tls_args = ["--cafile", ca, "--servername", peers.server_name(state, system)] if tls else []
                say("%s: %s" % (name, system))
                try:
                    result = measure(system, roots, binary, arguments, path, tls_args, timeout=600,
                                     slapd=state["pids"]["slapd"] if kind == "login" else None)
                except (BenchError, subprocess.TimeoutExpired) as error:
                    result = {"ok": 0, "errors": {"harness": 1}, "error": str(error)}
                scenario["rows"].append({"system": system, "result": result, "figure": figure(result, kind)})
                report["failed"] |= bool(errors_of(result))
            scenario["ratios"] = summarize(scenario)
            report["scenarios"].append(scenario)
        sessions = idle_session_limit(options.idle_sessions)
        if sessions < options.idle_sessions:
            say("idle sessions: %d, not %d: the descriptor limit allows no more" % (sessions, options.idle_sessions))
        for scenario in (idle_scenarios(state, lab_dir, peer_dir, work, binary, systems, sessions)
                         if chosen("idle imap") or chosen("idle imaps") else []):
            report["failed"] |= any(errors_of(row["result"]) for row in scenario["rows"])
            report["scenarios"].append(scenario)
    finally:
        try:
            peers.down(peer_dir)
        except (Exception, benchlib.Interrupted) as error:  # keep tearing down
            say("peers down: %s" % error)
        try:
            lab(["down"], lab_dir)
        except BenchError as error:
            say(str(error))
    benchlib.write_results(options.out, "bench", report, markdown(report))
    say("results in %s/bench.md%s" % (options.out, " (FAILED: errors)" if report["failed"] else ""))
    shutil.rmtree(work, ignore_errors=True)
    return 1 if report["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
