#!/usr/bin/env python3
"""Real-client driver for the integration tests: python's own imaplib and poplib.

Each subcommand prints one JSON object and exits 0 (a protocol-level failure is reported in
the JSON as ok=false, not as a crash). Every socket has a timeout, so nothing hangs.
"""
import argparse
import base64
import hashlib
import imaplib
import json
import poplib
import random
import re
import socket
import sys
import time


def store_from_caps(caps):
    for cap in caps:
        if cap.upper().startswith("X-STORE-"):
            return cap[len("X-STORE-"):].lower()
    return None


def decode(value):
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, (list, tuple)):
        return " ".join(decode(v) for v in value)
    return str(value)


def imap_connect(o):
    conn = imaplib.IMAP4(o.host, o.port, timeout=o.timeout)
    # 8-bit passwords must travel as UTF-8 bytes (imaplib defaults to ASCII).
    conn._encoding = "utf-8"
    return conn


def imap_authenticate(conn, o):
    if o.mech == "login":
        # imaplib quotes the password (escaping " and \) but sends the user name as it is:
        # quote it too when it holds characters an atom cannot carry, as a real client would.
        user = o.user if re.fullmatch(r"[A-Za-z0-9@._+-]+", o.user) else conn._quote(o.user)
        return conn.login(user, o.password)
    if o.mech == "plain":
        message = b"\0" + o.user.encode() + b"\0" + o.password.encode()
        return conn.authenticate("PLAIN", lambda _challenge: message)
    if o.mech == "login-sasl":
        answers = iter([o.user.encode(), o.password.encode()])
        return conn.authenticate("LOGIN", lambda _challenge: next(answers, b""))
    raise ValueError("unknown mech " + o.mech)


def quietly(action):
    try:
        action()
    except (OSError, EOFError, imaplib.IMAP4.error, poplib.error_proto):
        pass


def imap_login(o):
    result = {"ok": False, "response": None, "capabilities": [], "store": None, "error": None, "greeting": None}
    try:
        conn = imap_connect(o)
    except (OSError, EOFError, imaplib.IMAP4.error) as error:   # includes a non-OK greeting (BYE)
        result["error"] = "%s: %s" % (type(error).__name__, error)
        return result
    result["greeting"] = decode(conn.welcome)
    try:
        typ, data = imap_authenticate(conn, o)
        result["response"] = decode(data)
        result["ok"] = typ == "OK"
    except (OSError, EOFError, imaplib.IMAP4.error) as error:
        # A NO or BAD reply: imaplib raises with the reply text (bytes from login()).
        text = decode(error.args[0]) if error.args else str(error)
        result["response"] = None if isinstance(error, (OSError, EOFError, imaplib.IMAP4.abort)) else text
        result["error"] = "%s: %s" % (type(error).__name__, text)
        quietly(conn.logout)
        return result
    try:
        typ, data = conn.capability()
        caps = decode(data[-1]).split()
        result["capabilities"] = caps
        result["store"] = store_from_caps(caps)
        conn.logout()
    except (OSError, EOFError, imaplib.IMAP4.error) as error:
        result["error"] = "after login: %s: %s" % (type(error).__name__, error)
        quietly(conn.shutdown)
    return result


def pop3_login(o):
    result = {"ok": False, "response": None, "store": None, "error": None, "greeting": None}
    try:
        conn = poplib.POP3(o.host, o.port, timeout=o.timeout)
    except (OSError, EOFError, poplib.error_proto) as error:
        result["error"] = "%s: %s" % (type(error).__name__, error)
        return result
    conn.encoding = "utf-8"   # USER/PASS arguments go out as UTF-8
    result["greeting"] = decode(conn.welcome)
    try:
        if o.mech == "user":
            conn.user(o.user)
            response = conn.pass_(o.password)
        elif o.mech == "plain":
            message = base64.b64encode(b"\0" + o.user.encode() + b"\0" + o.password.encode()).decode()
            response = conn._shortcmd("AUTH PLAIN " + message)
        else:
            raise ValueError("unknown mech " + o.mech)
        result["response"] = decode(response)
        result["ok"] = response.startswith(b"+OK")
    except (OSError, EOFError, poplib.error_proto) as error:
        text = decode(error.args[0]) if error.args else str(error)
        result["response"] = text if isinstance(error, poplib.error_proto) else None
        result["error"] = "%s: %s" % (type(error).__name__, text)
        quietly(conn.quit)
        return result
    try:
        _, lines, _ = conn.retr(1)
        for line in lines:
            match = re.match(rb"X-Store:\s*(\S+)", line, re.I)
            if match:
                result["store"] = match.group(1).decode()
                break
        conn.quit()
    except (OSError, EOFError, poplib.error_proto) as error:
        result["error"] = "after login: %s: %s" % (type(error).__name__, error)
        quietly(conn.close)
    return result


def make_message(size):
    rng = random.Random(20261123)
    header = ("From: test@example.org\r\nTo: alice@example.org\r\nSubject: roundtrip %d bytes\r\n"
              "Message-ID: <rt-%d@example.org>\r\nMIME-Version: 1.0\r\nContent-Type: application/octet-stream\r\n"
              "Content-Transfer-Encoding: base64\r\n\r\n" % (size, size)).encode()
    lines = []
    total = len(header)
    while total < size:
        line = base64.b64encode(rng.getrandbits(57 * 8).to_bytes(57, "big")) + b"\r\n"
        lines.append(line)
        total += len(line)
    return header + b"".join(lines)


def imap_roundtrip(o):
    result = {"ok": False, "bytes_sent": 0, "bytes_received": 0, "sha256_sent": None, "sha256_received": None,
              "identical": False, "seconds": 0.0, "error": None}
    mailbox = "rt-%d-%d" % (time.time(), random.randrange(1 << 30))
    conn = None
    created = False
    try:
        conn = imap_connect(o)
        typ, data = imap_authenticate(conn, o)
        if typ != "OK":
            raise RuntimeError("login: %s" % decode(data))
        message = make_message(o.size)
        result["bytes_sent"] = len(message)
        result["sha256_sent"] = hashlib.sha256(message).hexdigest()
        started = time.monotonic()
        typ, data = conn.create(mailbox)
        if typ != "OK":
            raise RuntimeError("CREATE: %s" % decode(data))
        created = True
        typ, data = conn.append(mailbox, None, None, message)
        if typ != "OK":
            raise RuntimeError("APPEND: %s" % decode(data))
        typ, data = conn.select(mailbox)
        if typ != "OK":
            raise RuntimeError("SELECT: %s" % decode(data))
        typ, data = conn.fetch("1", "(BODY.PEEK[])")
        if typ != "OK" or not data or not isinstance(data[0], tuple):
            raise RuntimeError("FETCH: %s %r" % (typ, data[:1]))
        received = data[0][1]
        result["seconds"] = time.monotonic() - started
        result["bytes_received"] = len(received)
        result["sha256_received"] = hashlib.sha256(received).hexdigest()
        result["identical"] = received == message
        conn.close()
        typ, data = conn.delete(mailbox)
        created = typ != "OK"
        conn.logout()
        conn = None
        result["ok"] = True
    except (OSError, EOFError, imaplib.IMAP4.error, RuntimeError) as error:
        result["error"] = "%s: %s" % (type(error).__name__, decode(error.args[0]) if error.args else error)
    finally:
        if conn is not None:
            if created:
                quietly(conn.close)
                quietly(lambda: conn.delete(mailbox))
            quietly(conn.logout)
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("command", choices=["imap-login", "pop3-login", "imap-roundtrip"])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--user", required=True)
    parser.add_argument("--password", required=True)
    parser.add_argument("--mech", default=None,
                        help="imap: login (default) | plain | login-sasl; pop3: user (default) | plain")
    parser.add_argument("--size", type=int, default=1_000_000, help="imap-roundtrip: message size in bytes")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds, per socket operation")
    o = parser.parse_args()
    if o.command == "imap-login":
        o.mech = o.mech or "login"
        result = imap_login(o)
    elif o.command == "pop3-login":
        o.mech = o.mech or "user"
        result = pop3_login(o)
    else:
        o.mech = o.mech or "login"
        result = imap_roundtrip(o)
    print(json.dumps(result, ensure_ascii=False))


if __name__ == "__main__":
    main()
