#!/usr/bin/env python3
"""Hostile clients for the integration tests (loopback only; every wait is bounded).

  hostile.py halflines --port P --count N --bytes B --ready-file F --stop-file S [--max-seconds 120]
      Opens N connections, reads each greeting, then sends B bytes of one command line
      without its CRLF on each, and holds them. Writes {"opened", "greeted", "sent"} to the
      ready file, waits for the stop file (or --max-seconds), then prints
      {"opened", "greeted", "sent", "closed_by_server"} and closes them all.

  hostile.py slowloris --port P --count N --interval S --ready-file F --stop-file S [--max-seconds 120]
      Opens N connections, reads each greeting, then sends one byte of a command line on each
      every S seconds (spread over the interval). Ready file and result as above, plus
      "bytes_sent"; once every connection has sent its first byte, writes {"bytes_sent"} to
      the event file <ready-file>.round (atomically).

  hostile.py garbage --port P [--seed 1] [--commands 10000] [--timeout 30]
      Three clients, one after another: 10,000 pipelined invalid commands; lines with NUL
      bytes; random bytes. Each is read until the server closes it or answers stop. Prints
      {"clients": [{"kind", "sent_bytes", "received_lines", "closed_by_server", "last_line"}]}.
"""
import argparse
import json
import os
import random
import resource
import select
import socket
import sys
import time

QUIET = 2.0   # garbage: seconds of silence after the last byte sent that end a client


def raise_fd_limit(needed):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = needed + 100 if hard == resource.RLIM_INFINITY else min(hard, needed + 100)
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


def open_many(port, count, deadline):
    """count non-blocking connections, each with its greeting read. Returns (sockets, greeted)."""
    raise_fd_limit(count)
    poller = select.epoll()
    pending = {}
    sockets = []
    for _ in range(count):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setblocking(False)
        try:
            s.connect(("127.0.0.1", port))
        except BlockingIOError:
            pass
        sockets.append(s)
        pending[s.fileno()] = (s, b"")
        poller.register(s.fileno(), select.EPOLLIN)
        # Keep the accept queue short: drain greetings as we go.
        if len(pending) >= 200:
            drain(poller, pending, deadline, until=100)
    drain(poller, pending, deadline, until=0)
    poller.close()
    return sockets, count - len(pending)


def drain(poller, pending, deadline, until):
    while len(pending) > until and time.monotonic() < deadline:
        for fd, _ in poller.poll(0.5):
            s, data = pending[fd]
            try:
                chunk = s.recv(4096)
            except BlockingIOError:
                continue
            except OSError:
                chunk = b""
            data += chunk
            if not chunk or b"\n" in data:
                poller.unregister(fd)
                del pending[fd]
            else:
                pending[fd] = (s, data)


def wait_stop(stop_file, max_seconds):
    """Polls for the test's stop file (bounded; the result says which ended the hold)."""
    deadline = time.monotonic() + max_seconds
    while time.monotonic() < deadline:
        if stop_file and os.path.exists(stop_file):
            return "stop-file"
        time.sleep(0.1)
    return "max-seconds"


def closed_by_server(sockets):
    closed = 0
    for s in sockets:
        try:
            data = s.recv(65536, socket.MSG_PEEK)
            if data == b"":
                closed += 1
        except BlockingIOError:
            pass
        except OSError:
            closed += 1
    return closed


def write_ready(path, payload):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(payload, f)
    os.rename(tmp, path)


def send_all(s, data, deadline):
    view = memoryview(data)
    while view and time.monotonic() < deadline:
        try:
            n = s.send(view)
            view = view[n:]
        except BlockingIOError:
            select.select([], [s], [], 0.5)
        except OSError:
            return False
    return not view


def halflines(o):
    deadline = time.monotonic() + o.max_seconds
    sockets, greeted = open_many(o.port, o.count, deadline)
    line = (b"a LOGIN " + b"x" * o.bytes)[:o.bytes]
    sent = sum(1 for s in sockets if send_all(s, line, deadline))
    report = {"opened": len(sockets), "greeted": greeted, "sent": sent}
    write_ready(o.ready_file, report)
    report["stop_reason"] = wait_stop(o.stop_file, max(0.0, deadline - time.monotonic()))
    report["closed_by_server"] = closed_by_server(sockets)
    for s in sockets:
        s.close()
    print(json.dumps(report))


def slowloris(o):
    deadline = time.monotonic() + o.max_seconds
    sockets, greeted = open_many(o.port, o.count, deadline)
    line = b"a NOOP and then some more words that never end"
    report = {"opened": len(sockets), "greeted": greeted, "bytes_sent": 0}
    write_ready(o.ready_file, report)
    position = 0
    start = time.monotonic()
    stop_reason = "max-seconds"
    round_reported = False
    while time.monotonic() < deadline:
        if o.stop_file and os.path.exists(o.stop_file):
            stop_reason = "stop-file"
            break
        # Connection i sends its next byte at start + (round + i/N) * interval.
        elapsed = time.monotonic() - start
        due = int(elapsed / o.interval * len(sockets)) if sockets else 0
        while position < due:
            s = sockets[position % len(sockets)]
            index = (position // len(sockets)) % len(line)
            try:
                s.send(line[index:index + 1])
                report["bytes_sent"] += 1
            except OSError:
                pass
            position += 1
        if not round_reported and sockets and position >= len(sockets):
            write_ready(o.ready_file + ".round", {"bytes_sent": report["bytes_sent"]})
            round_reported = True
        # Pacing, not waiting: the dribble rate is the behaviour under test.
        time.sleep(0.01)
    report["stop_reason"] = stop_reason
    report["closed_by_server"] = closed_by_server(sockets)
    for s in sockets:
        s.close()
    print(json.dumps(report))


def garbage(o):
    rng = random.Random(o.seed)
    plans = [
        ("invalid-commands", b"".join(b"x%d FROBNICATE %d\r\n" % (i, i) for i in range(o.commands))),
        ("nul-bytes", b"".join(b"n%d LOGIN a\x00b c\x00\r\n\x00\x00\r\n" % i for i in range(o.commands // 10))),
        ("random", bytes(rng.getrandbits(8) for _ in range(200_000))),
    ]
    clients = []
    for kind, data in plans:
        deadline = time.monotonic() + o.timeout
        s = socket.create_connection(("127.0.0.1", o.port), timeout=5)
        s.setblocking(False)
        received = b""
        view = memoryview(data)
        closed = False
        last_heard = time.monotonic()
        while time.monotonic() < deadline:
            want_write = [s] if view else []
            readable, writable, _ = select.select([s], want_write, [], 0.5)
            if readable:
                try:
                    chunk = s.recv(65536)
                except OSError:
                    chunk = b""
                if not chunk:
                    closed = True
                    break
                received += chunk
                last_heard = time.monotonic()
            if writable and view:
                try:
                    n = s.send(view[:65536])
                    view = view[n:]
                except BlockingIOError:
                    pass
                except OSError:
                    closed = True
                    break
            if not view and time.monotonic() - last_heard > QUIET:
                break   # everything sent and the server has gone quiet
        s.close()
        lines = received.split(b"\r\n")
        clients.append({"kind": kind, "sent_bytes": len(data) - len(view), "received_lines": len(lines) - 1,
                        "closed_by_server": closed,
                        "last_line": lines[-2].decode("utf-8", "replace") if len(lines) > 1 else ""})
    print(json.dumps({"clients": clients}))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["halflines", "slowloris", "garbage"])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--count", type=int, default=100)
    parser.add_argument("--bytes", type=int, default=8191)
    parser.add_argument("--interval", type=float, default=3.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--commands", type=int, default=10000)
    parser.add_argument("--timeout", type=float, default=30.0)
    parser.add_argument("--max-seconds", type=float, default=120.0)
    parser.add_argument("--ready-file")
    parser.add_argument("--stop-file")
    o = parser.parse_args()
    if o.command in ("halflines", "slowloris") and not o.ready_file:
        parser.error("--ready-file is required")
    {"halflines": halflines, "slowloris": slowloris, "garbage": garbage}[o.command](o)


if __name__ == "__main__":
    sys.exit(main())
