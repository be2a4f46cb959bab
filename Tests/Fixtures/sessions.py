#!/usr/bin/env python3
"""Holds many logged-in IMAP or POP3 sessions open through the proxy and reports how each ended.

The integration tests use it to check that a mailbox move (an LDAP change) ends exactly the moved
user's sessions, with "* BYE [UNAVAILABLE] ..." for IMAP sessions at a response boundary (IDLE),
spread over time when there are many.

  sessions.py hold --host H --port P --proto imap|pop3 --user NAME:PASSWORD [--user ...]
                   [--per-user K] [--select] [--idle] [--tls [--cafile F] [--servername N]]
                   --ready-file PATH [--stop-file PATH] [--max-seconds 60] [--connect-concurrency 50]

      Opens K sessions (default 1) per --user, at most --connect-concurrency logins in flight.
      IMAP: greeting, a1 LOGIN (quoted strings; a synchronizing literal for 8-bit or CR/LF),
      the store from the tagged OK's [CAPABILITY ... X-STORE-NAME ...]; --select: a2 SELECT
      INBOX; --idle (implies --select): a3 IDLE up to the "+" continuation.
      POP3: greeting, USER, PASS, the store from "X-Store: NAME" in TOP 1 0 (None if TOP fails).
      When every session is open or failed, writes --ready-file atomically:
        {"opened": N, "failed": M, "sessions": [{"id", "user", "store", "ok", "error"}]}
      Then watches the open sessions until the server has closed all of them, --stop-file
      exists (checked every 0.1 s) or --max-seconds (counted from the ready moment) have passed;
      closes what remains and prints one JSON object:
        {"opened", "failed", "ready_at", "stopped_at",
         "stop_reason": "all-ended" | "stop-file" | "max-seconds",
         "sessions": [{"id", "user", "store", "ok", "error",
                       "closed_at": time.time() of the server's EOF/reset or null,
                       "bye_line": first line received starting "* BYE" or null, "bye_at",
                       "last_lines": the last 5 lines received after the setup,
                       "ended_by_server": closed by the server before the fixture stopped}]}

  sessions.py once --host H --port P --proto imap|pop3 --user NAME:PASSWORD [--select] [--idle]
                   [--tls ...]
      Logs in once with the same code, logs out, prints {"ok", "store", "error"}.

--password may contain ':' (NAME:PASSWORD is split at the first one). --tls is implicit TLS,
verified against --cafile when given (name: --servername, default "localhost"), unverified
otherwise. Every login step (connect, TLS handshake, each command and its reply) must finish
within 15 s or the session is a failure (ok=false, error says which step). Exits 0; 2 on bad
arguments.
"""
import argparse
import collections
import concurrent.futures
import json
import os
import re
import resource
import selectors
import socket
import ssl
import sys
import time

STEP_SECONDS = 15.0          # the bound on every single login step
MAX_LINE = 1 << 20           # a server line longer than this is an error, not a memory sink
LAST_LINES = 5               # lines kept per session for diagnosis
STOP_FILE_PERIOD = 0.1       # seconds between --stop-file checks


class StepFailed(Exception):
    """A login step got an answer other than the one wanted (the message is the answer)."""


def text(line):
    return line.decode("utf-8", "replace")


def arg_bytes(value):
    """The bytes given on the command line (python decoded argv with surrogateescape)."""
    return value.encode("utf-8", "surrogateescape")


def store_from_caps(caps):
    for cap in caps:
        if cap.upper().startswith("X-STORE-"):
            return cap[len("X-STORE-"):].lower()
    return None


# ---------------------------------------------------------------------------------------------
# A socket with a receive buffer; every blocking call is bounded by the step's deadline

class Conn:
    def __init__(self, sock):
        self.sock = sock
        self.buf = b""          # received, not yet consumed: carried over into the watch phase
        self.last_line = None   # for error messages (e.g. a "* BYE" before an EOF)

    def _remaining(self, deadline):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("timed out after %g s" % STEP_SECONDS)
        return remaining

    def send(self, data, deadline):
        # sendall's timeout bounds the whole call, not each chunk.
        self.sock.settimeout(self._remaining(deadline))
        self.sock.sendall(data)

    def _fill(self, deadline):
        self.sock.settimeout(self._remaining(deadline))
        data = self.sock.recv(65536)
        if not data:
            raise EOFError("connection closed by the server (last line: %r)"
                           % (text(self.last_line) if self.last_line is not None else None))
        self.buf += data

    def readline(self, deadline):
        """One line without its CRLF."""
        while b"\n" not in self.buf:
            if len(self.buf) > MAX_LINE:
                raise StepFailed("line longer than %d bytes" % MAX_LINE)
            self._fill(deadline)
        line, self.buf = self.buf.split(b"\n", 1)
        self.last_line = line.rstrip(b"\r")
        return self.last_line

    def read_exact(self, count, deadline):
        while len(self.buf) < count:
            self._fill(deadline)
        data, self.buf = self.buf[:count], self.buf[count:]
        return data

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


def step_deadline():
    return time.monotonic() + STEP_SECONDS


def connect(o, ctx, session):
    session.step = "connect"
    sock = socket.create_connection((o.host, o.port), timeout=STEP_SECONDS)
    if ctx is not None:
        session.step = "TLS handshake"
        try:
            # The handshake runs under the socket's timeout, which CPython applies to the
            # whole handshake as one deadline.
            sock = ctx.wrap_socket(sock, server_hostname=o.servername)
        except BaseException:
            sock.close()
            raise
    return Conn(sock)


def tls_context(o):
    if not o.tls:
        return None
    if o.cafile:
        return ssl.create_default_context(cafile=o.cafile)   # CERT_REQUIRED, check_hostname
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


# ---------------------------------------------------------------------------------------------
# IMAP

class Literal(bytes):
    """A command argument sent as a synchronizing literal {n}."""


def imap_string(value):
    """A quoted string, or a Literal when a quoted string cannot carry it (8-bit, CR, LF)."""
    data = arg_bytes(value)
    if any(byte > 0x7F for byte in data) or b"\r" in data or b"\n" in data:
        return Literal(data)
    return b'"' + data.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'


def imap_read_response(conn, deadline):
    """One server response line, with any literals it announces ({n} at the end) inlined, so
    that a literal's content is never mistaken for a tagged reply."""
    line = conn.readline(deadline)
    while True:
        match = re.search(rb"\{(\d+)\+?\}$", line)
        if not match:
            return line
        line += b"\r\n" + conn.read_exact(int(match.group(1)), deadline) + conn.readline(deadline)


def imap_await_continuation(conn, tag, deadline):
    """Waits for "+" (skipping untagged lines); a tagged reply instead means refused."""
    while True:
        line = imap_read_response(conn, deadline)
        if line.startswith(b"+"):
            return
        if line.startswith(tag + b" "):
            raise StepFailed(text(line))


def imap_command(conn, tag, args):
    """Sends "tag args..." (pausing for "+" before each literal's bytes) and returns the tagged
    OK line; any other tagged reply raises StepFailed. One deadline for the whole exchange."""
    deadline = step_deadline()
    pending = tag
    for arg in args:
        if isinstance(arg, Literal):
            conn.send(pending + b" {%d}\r\n" % len(arg), deadline)
            imap_await_continuation(conn, tag, deadline)
            pending = bytes(arg)
        else:
            pending += b" " + arg
    conn.send(pending + b"\r\n", deadline)
    while True:
        line = imap_read_response(conn, deadline)
        if line.startswith(tag + b" "):
            if line[len(tag) + 1:].upper().startswith(b"OK"):
                return line
            raise StepFailed(text(line))


def imap_caps_in(line):
    match = re.search(rb"\[CAPABILITY ([^\]]*)\]", line, re.I)
    return text(match.group(1)).split() if match else []


def imap_setup(conn, session, o):
    session.step = "greeting"
    greeting = conn.readline(step_deadline())
    if not greeting.upper().startswith(b"* OK"):
        raise StepFailed(text(greeting))
    session.step = "LOGIN"
    ok_line = imap_command(conn, b"a1", [b"LOGIN", imap_string(session.user), imap_string(session.password)])
    session.store = store_from_caps(imap_caps_in(ok_line))
    if o.select or o.idle:
        session.step = "SELECT"
        imap_command(conn, b"a2", [b"SELECT", b"INBOX"])
    if o.idle:
        session.step = "IDLE"
        deadline = step_deadline()
        conn.send(b"a3 IDLE\r\n", deadline)
        imap_await_continuation(conn, b"a3", deadline)
        session.idling = True


def imap_logout(conn, session):
    """For `once`: ends IDLE if needed, then LOGOUT; waits for the tagged reply or the EOF."""
    try:
        if session.idling:
            deadline = step_deadline()
            conn.send(b"DONE\r\n", deadline)
            while not imap_read_response(conn, deadline).startswith(b"a3 "):
                pass
        deadline = step_deadline()
        conn.send(b"a9 LOGOUT\r\n", deadline)
        while not imap_read_response(conn, deadline).startswith(b"a9 "):
            pass
    except (OSError, EOFError, StepFailed):
        pass


# ---------------------------------------------------------------------------------------------
# POP3

def pop3_command(conn, line):
    """Sends one command; returns the +OK line, raises StepFailed on anything else."""
    deadline = step_deadline()
    conn.send(line + b"\r\n", deadline)
    reply = conn.readline(deadline)
    if not reply.startswith(b"+OK"):
        raise StepFailed(text(reply))
    return reply


def pop3_read_multiline(conn, deadline):
    """The lines of a multi-line answer up to the terminating ".", dot-unstuffed."""
    lines = []
    while True:
        line = conn.readline(deadline)
        if line == b".":
            return lines
        lines.append(line[1:] if line.startswith(b"..") else line)


def pop3_store(conn):
    """The X-Store header of message 1 (TOP 1 0), or None if TOP fails or there is none."""
    deadline = step_deadline()
    conn.send(b"TOP 1 0\r\n", deadline)
    if not conn.readline(deadline).startswith(b"+OK"):
        return None
    store = None
    for line in pop3_read_multiline(conn, deadline):   # read all of it: the session stays in sync
        match = re.match(rb"X-Store:\s*(\S+)", line, re.I)
        if match and store is None:
            store = text(match.group(1))
    return store


def pop3_setup(conn, session, o):
    session.step = "greeting"
    greeting = conn.readline(step_deadline())
    if not greeting.startswith(b"+OK"):
        raise StepFailed(text(greeting))
    session.step = "USER"
    pop3_command(conn, b"USER " + arg_bytes(session.user))
    session.step = "PASS"
    pop3_command(conn, b"PASS " + arg_bytes(session.password))
    session.step = "TOP"
    session.store = pop3_store(conn)


def pop3_logout(conn, session):
    try:
        pop3_command(conn, b"QUIT")
    except (OSError, EOFError, StepFailed):
        pass


PROTOCOLS = {"imap": (imap_setup, imap_logout), "pop3": (pop3_setup, pop3_logout)}


# ---------------------------------------------------------------------------------------------
# One session: its login, then what the watch phase saw

class Session:
    def __init__(self, ident, user, password):
        self.id = ident
        self.user = user
        self.password = password
        self.store = None
        self.ok = False
        self.error = None
        self.step = "connect"          # the login step in progress, for the error message
        self.idling = False
        self.conn = None               # while open
        self.closed_at = None
        self.bye_line = None
        self.bye_at = None
        self.last_lines = collections.deque(maxlen=LAST_LINES)

    def summary(self):
        return {"id": self.id, "user": self.user, "store": self.store, "ok": self.ok, "error": self.error}

    def report(self):
        result = self.summary()
        result.update({"closed_at": self.closed_at, "bye_line": self.bye_line, "bye_at": self.bye_at,
                       "last_lines": list(self.last_lines), "ended_by_server": self.closed_at is not None})
        return result


def open_session(session, o, ctx):
    """Logs in; on success session.conn is the open connection, on failure session.error says
    which step failed and how. Never raises: one broken session must not end the run."""
    setup, _ = PROTOCOLS[o.proto]
    conn = None
    try:
        conn = connect(o, ctx, session)
        setup(conn, session, o)
        session.ok = True
        session.conn = conn
    except Exception as error:   # OSError, EOFError, TimeoutError, ssl errors, StepFailed, bugs
        detail = str(error) if isinstance(error, StepFailed) else "%s: %s" % (type(error).__name__, error)
        session.error = "%s: %s" % (session.step, detail)
        if conn is not None:
            conn.close()
    return session


def open_all(sessions, o, ctx):
    # Blocking sockets in a bounded thread pool: at most --connect-concurrency logins in flight,
    # each step bounded by its own deadline. The sockets outlive their threads.
    workers = max(1, min(o.connect_concurrency, len(sessions)))
    with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
        list(pool.map(lambda s: open_session(s, o, ctx), sessions))


# ---------------------------------------------------------------------------------------------
# The watch phase: one selectors loop over every open session

def record_lines(session, now):
    """Records the complete lines in the session's buffer."""
    conn = session.conn
    while b"\n" in conn.buf:
        line, conn.buf = conn.buf.split(b"\n", 1)
        record_line(session, line.rstrip(b"\r"), now)
    if len(conn.buf) > MAX_LINE:   # no newline in sight: keep the start for diagnosis, move on
        record_line(session, conn.buf[:200], now)
        conn.buf = b""


def record_line(session, line, now):
    line = text(line)
    session.last_lines.append(line)
    if session.bye_line is None and line.upper().startswith("* BYE"):
        session.bye_line = line
        session.bye_at = now


def mark_closed(session, selector, now):
    if session.conn.buf:   # a last line without its CRLF still tells what happened
        record_line(session, session.conn.buf.rstrip(b"\r\n"), now)
    session.closed_at = now
    selector.unregister(session.conn.sock)
    session.conn.close()
    session.conn = None


def drain(session, selector):
    """Reads everything available now. Reading until it would block matters for TLS: a record
    already decrypted inside the SSL object does not make the socket readable again."""
    while session.conn is not None:
        try:
            data = session.conn.sock.recv(65536)
        except (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
            return
        except OSError:   # reset, or a TLS error: the connection is gone either way
            data = b""
        now = time.time()
        if not data:
            mark_closed(session, selector, now)
            return
        session.conn.buf += data
        record_lines(session, now)


def watch(sessions, o):
    """Returns the reason the watch stopped."""
    selector = selectors.DefaultSelector()   # epoll on Linux: no FD_SETSIZE limit
    live = [s for s in sessions if s.conn is not None]
    for session in live:
        session.conn.sock.setblocking(False)
        selector.register(session.conn.sock, selectors.EVENT_READ, session)
    # Whatever arrived during the setup (buffered lines, an EOF) counts as seen now.
    for session in live:
        record_lines(session, time.time())
        drain(session, selector)
    deadline = time.monotonic() + o.max_seconds
    next_stop_check = 0.0
    reason = "all-ended"
    while any(s.conn is not None for s in live):
        now = time.monotonic()
        if now >= deadline:
            reason = "max-seconds"
            break
        if o.stop_file and now >= next_stop_check:
            if os.path.exists(o.stop_file):
                reason = "stop-file"
                break
            next_stop_check = now + STOP_FILE_PERIOD
        for key, _ in selector.select(timeout=min(STOP_FILE_PERIOD, deadline - now)):
            drain(key.data, selector)
    # What is still open was not ended by the server: just close it (also in IDLE).
    for session in live:
        if session.conn is not None:
            selector.unregister(session.conn.sock)
            session.conn.close()
            session.conn = None
    selector.close()
    return reason


# ---------------------------------------------------------------------------------------------
# Commands

def write_atomically(path, data):
    temporary = "%s.tmp.%d" % (path, os.getpid())
    with open(temporary, "w") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.rename(temporary, path)


def raise_file_limit():
    # 1,000+ sessions need more descriptors than the usual soft limit of 1024.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError):   # e.g. an unlimited hard limit above the kernel's nr_open
            pass


def make_sessions(o):
    sessions = []
    for user, password in o.user:
        for _ in range(o.per_user):
            sessions.append(Session(len(sessions), user, password))
    return sessions


def hold(o):
    ctx = tls_context(o)
    sessions = make_sessions(o)
    open_all(sessions, o, ctx)
    opened = sum(1 for s in sessions if s.ok)
    counts = {"opened": opened, "failed": len(sessions) - opened}
    write_atomically(o.ready_file, json.dumps(dict(counts, sessions=[s.summary() for s in sessions]),
                                              ensure_ascii=False))
    ready_at = time.time()
    reason = watch(sessions, o)
    result = dict(counts, ready_at=ready_at, stopped_at=time.time(), stop_reason=reason,
                  sessions=[s.report() for s in sessions])
    print(json.dumps(result, ensure_ascii=False))


def once(o):
    _, logout = PROTOCOLS[o.proto]
    user, password = o.user[0]
    session = open_session(Session(0, user, password), o, tls_context(o))
    if session.conn is not None:
        logout(session.conn, session)
        session.conn.close()
    print(json.dumps({"ok": session.ok, "store": session.store, "error": session.error}, ensure_ascii=False))


def user_password(value):
    name, sep, password = value.partition(":")   # split once: the password may hold ':'
    if not sep or not name:
        raise argparse.ArgumentTypeError("expected NAME:PASSWORD, got %r" % value)
    return name, password


def positive_int(value):
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return number


def parse_args():
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--host", default="127.0.0.1")
    common.add_argument("--port", type=int, required=True)
    common.add_argument("--proto", choices=["imap", "pop3"], required=True)
    common.add_argument("--user", type=user_password, action="append", required=True,
                        metavar="NAME:PASSWORD", help="repeatable for hold")
    common.add_argument("--select", action="store_true", help="imap: SELECT INBOX after LOGIN")
    common.add_argument("--idle", action="store_true", help="imap: SELECT INBOX, then IDLE")
    common.add_argument("--tls", action="store_true", help="implicit TLS")
    common.add_argument("--cafile", default=None, help="verify the server against this CA (with --tls)")
    common.add_argument("--servername", default="localhost", help="SNI and name verified (default localhost)")

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    hold_parser = commands.add_parser("hold", parents=[common], help="hold many sessions, report how they ended")
    hold_parser.add_argument("--per-user", type=positive_int, default=1, help="sessions per --user (default 1)")
    hold_parser.add_argument("--ready-file", required=True, help="written (atomically) once all are open")
    hold_parser.add_argument("--stop-file", default=None, help="stop watching as soon as this exists")
    hold_parser.add_argument("--max-seconds", type=float, default=60.0,
                             help="stop watching after this long from the ready moment (default 60)")
    hold_parser.add_argument("--connect-concurrency", type=positive_int, default=50,
                             help="logins in flight at once (default 50)")
    commands.add_parser("once", parents=[common], help="log in once, print ok and store, log out")

    o = parser.parse_args()
    if o.proto == "pop3" and (o.select or o.idle):
        parser.error("--select and --idle are for --proto imap")
    if o.cafile and not o.tls:
        parser.error("--cafile needs --tls")
    if o.command == "once" and len(o.user) != 1:
        parser.error("once takes exactly one --user")
    if o.command == "hold" and o.max_seconds < 0:
        parser.error("--max-seconds must not be negative")
    return o


def main():
    o = parse_args()
    raise_file_limit()
    if o.command == "hold":
        hold(o)
    else:
        once(o)
    return 0


if __name__ == "__main__":
    sys.exit(main())
