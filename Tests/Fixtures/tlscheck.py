#!/usr/bin/env python3
"""TLS scenarios the plain client fixture cannot express. Prints one JSON object; exits 0.

  tlscheck.py injection --protocol imap|pop3 --port N --cafile CA
      Sends STARTTLS/STLS and a command in the same plaintext write (the CVE-2011-0411 attack),
      completes the handshake, then sends one command over TLS. Reports every line received
      after the handshake: the injected command must never be answered.

  tlscheck.py hold-and-reload --port N --cafile CA --user U --password P --servername NAME --run CMD...
      Logs in over implicit TLS and keeps the session; runs CMD (a reload); then opens a new
      TLS connection and reports its certificate's names; finally checks the first session
      still answers NOOP.
"""
import argparse
import json
import socket
import ssl
import subprocess
import sys

TIMEOUT = 10


def lines_until(sock, prefix, limit=50):
    """Reads CRLF lines until one starts with prefix (or EOF / limit)."""
    data = b""
    lines = []
    while len(lines) < limit:
        while b"\r\n" not in data:
            chunk = sock.recv(4096)
            if not chunk:
                return lines
            data += chunk
        line, data = data.split(b"\r\n", 1)
        text = line.decode("utf-8", "replace")
        lines.append(text)
        if text.startswith(prefix):
            return lines
    return lines


def context(cafile, servername_check=True):
    ctx = ssl.create_default_context(cafile=cafile)
    ctx.check_hostname = servername_check
    return ctx


def injection(o):
    raw = socket.create_connection(("127.0.0.1", o.port), timeout=TIMEOUT)
    if o.protocol == "imap":
        lines_until(raw, "* OK")
        raw.sendall(b"a STARTTLS\r\nb LOGIN alice alice-secret\r\n")
        before = lines_until(raw, "a ")
        probe, probe_prefix = b"c NOOP\r\n", "c "
    else:
        lines_until(raw, "+OK")
        raw.sendall(b"STLS\r\nUSER alice\r\n")
        before = lines_until(raw, "+OK")
        probe, probe_prefix = b"NOOP\r\n", "-ERR"
    result = {"before_tls": before}
    try:
        tls = context(o.cafile).wrap_socket(raw, server_hostname="mail.example.test")
        tls.sendall(probe)
        result["after_tls"] = lines_until(tls, probe_prefix)
        result["handshake"] = True
        tls.close()
    except (ssl.SSLError, OSError) as error:
        # Refusing the handshake is a safe outcome too: nothing injected was executed.
        result["handshake"] = False
        result["error"] = str(error)
        result["after_tls"] = []
    return result


def login_tls(o, servername):
    raw = socket.create_connection(("127.0.0.1", o.port), timeout=TIMEOUT)
    # The chain is verified; the name is reported rather than checked (it changes on reload).
    tls = context(o.cafile, servername_check=False).wrap_socket(raw, server_hostname=servername)
    lines_until(tls, "* OK")
    return tls


def names(tls):
    return sorted(value for kind, value in tls.getpeercert().get("subjectAltName", ()) if kind == "DNS")


def hold_and_reload(o):
    first = login_tls(o, o.servername)
    first_names = names(first)
    first.sendall(b'l LOGIN "%s" "%s"\r\n' % (o.user.encode(), o.password.encode()))
    login = lines_until(first, "l ")
    command = subprocess.run(o.command, capture_output=True, text=True, timeout=60)
    second = login_tls(o, o.servername)
    second_names = names(second)
    second.sendall(b"z LOGOUT\r\n")
    lines_until(second, "z ")
    second.close()
    first.sendall(b"n NOOP\r\n")
    noop = lines_until(first, "n ")
    first.sendall(b"q LOGOUT\r\n")
    lines_until(first, "q ")
    first.close()
    return {"login": login[-1] if login else None, "first_names": first_names, "second_names": second_names,
            "command_status": command.returncode, "command_output": command.stdout + command.stderr,
            "noop_after_reload": noop[-1] if noop else None}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("scenario", choices=["injection", "hold-and-reload"])
    parser.add_argument("--protocol", default="imap", choices=["imap", "pop3"])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--cafile", required=True)
    parser.add_argument("--user")
    parser.add_argument("--password")
    parser.add_argument("--servername", default="mail.example.test")
    parser.add_argument("--run", dest="command", nargs=argparse.REMAINDER, default=[],
                        help="with hold-and-reload: the command to run between the two connections")
    o = parser.parse_args()
    try:
        result = injection(o) if o.scenario == "injection" else hold_and_reload(o)
        result["ok"] = True
    except Exception as error:  # reported, not raised: the test asserts on the JSON
        result = {"ok": False, "error": "%s: %s" % (type(error).__name__, error)}
    print(json.dumps(result))


if __name__ == "__main__":
    sys.exit(main())
