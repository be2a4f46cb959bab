#!/usr/bin/env python3
"""Real-client driver for the integration tests: python's own imaplib and poplib.

Each subcommand prints one JSON object and exits 0 (a protocol-level failure is reported in
the JSON as ok=false, not as a crash). Every socket has a timeout, so nothing hangs.

TLS (all subcommands): --tls none|starttls|implicit, --cafile PATH (verify the chain and the
name against it; without it nothing is verified), --servername NAME (SNI and the name
verified; default --host), --alpn a,b (offer ALPN protocols), --session-reuse (connect twice
with one SSLContext, offering the first connection's session on the second). The JSON then
carries tls_version, cipher, alpn, peer_cert_subject_alt_names (DNS names) and session_reused;
all null without TLS. A TLS failure (handshake, verification, STARTTLS refused) is ok=false
with an "error" string such as "SSLCertVerificationError: ...".

SASL (--mech): plain takes --authzid NAME (a master login: --user is the master user, the
session is NAME's); oauthbearer (RFC 7628) and xoauth2 carry --password as the bearer token
for --user. IMAP sends AUTHENTICATE as imaplib does (the response after the server's "+");
POP3 sends AUTH with the initial response on the command line (RFC 5034), or with --no-sasl-ir
after the server's "+". A token the server refuses is answered as RFC 7628 asks (a lone ^A for
OAUTHBEARER, an empty line for XOAUTH2), so the result carries the server's final reply.
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
import ssl
import sys
import tempfile
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


# ---------------------------------------------------------------------------------------------
# TLS

def tls_context(o):
    if o.cafile:
        ctx = ssl.create_default_context(cafile=o.cafile)   # CERT_REQUIRED, check_hostname
    else:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    if o.alpn:
        ctx.set_alpn_protocols([p for p in o.alpn.split(",") if p])
    return ctx


class TLSWrapper:
    """Stands in for an SSLContext in imaplib/poplib (IMAP4_SSL, starttls, POP3_SSL, stls): they
    call context.wrap_socket(sock, server_hostname=<the host connected to>). This one wraps with
    --servername instead (SNI and the name verified, while connecting to an address) and offers a
    saved session for resumption; it keeps the TLS socket for tls_fields()."""

    def __init__(self, context, server_name, session=None):
        self.context = context
        self.server_name = server_name
        self.session = session
        self.sock = None

    def wrap_socket(self, sock, server_hostname=None, **_):
        self.sock = self.context.wrap_socket(sock, server_hostname=self.server_name, session=self.session)
        return self.sock

    def fields(self):
        return tls_fields(self.sock) if self.sock is not None else dict(NO_TLS)

    def current_session(self):
        """The session to resume later, or None. (TLS 1.3 tickets arrive after the handshake:
        call this after at least one response has been read over TLS.)"""
        try:
            return self.sock.session if self.sock is not None else None
        except (OSError, ValueError):
            return None


def describe(error):
    """"Type: text" for a failed STARTTLS/STLS: the server's reply for a protocol error, the
    message for an OSError such as ssl.SSLCertVerificationError (whose args[0] is a number)."""
    if isinstance(error, (imaplib.IMAP4.error, poplib.error_proto)) and error.args:
        return "%s: %s" % (type(error).__name__, decode(error.args[0]))
    return "%s: %s" % (type(error).__name__, error)


NO_TLS = {"tls_version": None, "cipher": None, "alpn": None, "peer_cert_subject_alt_names": None,
          "session_reused": None}


def dns_names(cert_dict):
    return [value for kind, value in cert_dict.get("subjectAltName", ()) if kind == "DNS"]


def unverified_dns_names(sock):
    """The DNS names of a certificate that was not verified (getpeercert() is then empty):
    decoded by the ssl module's own test helper from a temporary PEM file; None if that fails."""
    try:
        der = sock.getpeercert(binary_form=True)
        if not der:
            return None
        with tempfile.NamedTemporaryFile("w", suffix=".pem") as f:
            f.write(ssl.DER_cert_to_PEM_cert(der))
            f.flush()
            return dns_names(ssl._ssl._test_decode_cert(f.name))
    except Exception:   # a private helper: never let it break a result
        return None


def tls_fields(sock):
    fields = dict(NO_TLS)
    try:
        fields["tls_version"] = sock.version()
        cipher = sock.cipher()
        fields["cipher"] = cipher[0] if cipher else None
        fields["alpn"] = sock.selected_alpn_protocol()
        cert = sock.getpeercert()
        fields["peer_cert_subject_alt_names"] = dns_names(cert) if cert else unverified_dns_names(sock)
        fields["session_reused"] = sock.session_reused
    except (OSError, ValueError):
        pass
    return fields


def with_session_reuse(flow, o):
    """--session-reuse: flow twice with one SSLContext, the second offering the first one's
    session. The result is the first connection's, with session_reused (and tls_version,
    cipher, ...) from the second; ok only if both succeeded."""
    ctx = tls_context(o)
    first, session = flow(o, ctx, None)
    if not first["ok"]:
        return first
    if session is None:
        first["ok"] = False
        first["error"] = "session reuse: the first connection left no TLS session to resume"
        return first
    second, _ = flow(o, ctx, session)
    result = dict(first)
    result.update({key: second.get(key) for key in NO_TLS})
    if not second["ok"]:
        result["ok"] = False
        result["error"] = "second connection: %s" % second.get("error")
    return result


# ---------------------------------------------------------------------------------------------
# IMAP

def imap_connect(o, ctx=None, session=None):
    """A connected IMAP4 (TLS already up with --tls implicit) and its TLSWrapper (None without TLS).
    With --tls starttls, call imap_starttls next."""
    wrapper = None
    if o.tls == "none":
        conn = imaplib.IMAP4(o.host, o.port, timeout=o.timeout)
    else:
        wrapper = TLSWrapper(ctx or tls_context(o), o.servername or o.host, session)
        if o.tls == "implicit":
            conn = imaplib.IMAP4_SSL(o.host, o.port, ssl_context=wrapper, timeout=o.timeout)
        else:
            conn = imaplib.IMAP4(o.host, o.port, timeout=o.timeout)
    # 8-bit passwords must travel as UTF-8 bytes (imaplib defaults to ASCII).
    conn._encoding = "utf-8"
    return conn, wrapper


def imap_starttls(conn, o, wrapper):
    if o.tls == "starttls":
        typ, data = conn.starttls(ssl_context=wrapper)   # raises unless OK
        if typ != "OK":
            raise imaplib.IMAP4.error("STARTTLS: %s" % decode(data))


def sasl_initial(o):
    """The first client response of --mech plain, oauthbearer or xoauth2."""
    if o.mech == "plain":
        return (o.authzid or "").encode() + b"\0" + o.user.encode() + b"\0" + o.password.encode()
    if o.mech == "oauthbearer":   # RFC 7628 section 3.1: GS2 header, then key=value pairs
        return ("n,a=%s,\x01host=%s\x01port=%d\x01auth=Bearer %s\x01\x01"
                % (o.user, o.host, o.port, o.password)).encode()
    if o.mech == "xoauth2":
        return ("user=%s\x01auth=Bearer %s\x01\x01" % (o.user, o.password)).encode()
    raise ValueError("no initial response for mech " + o.mech)


def sasl_later(o, _challenge):
    """The answer to a challenge after the initial response: for OAUTHBEARER and XOAUTH2 that is
    the server's error report (a JSON document), answered with ^A (RFC 7628 section 3.2.3)
    resp. an empty response, after which the server sends its failure reply."""
    return b"\x01" if o.mech == "oauthbearer" else b""


def imap_authenticate(conn, o):
    if o.mech == "plain":
        message = sasl_initial(o)
        return conn.authenticate("PLAIN", lambda _challenge: message)
    if o.mech in ("oauthbearer", "xoauth2"):
        sent = []
        def respond(challenge):
            if not sent:
                sent.append(True)
                return sasl_initial(o)
            return sasl_later(o, challenge)
        return conn.authenticate(o.mech.upper(), respond)
    if o.mech == "login":
        # imaplib quotes the password (escaping " and \) but sends the user name as it is:
        # quote it too when it holds characters an atom cannot carry, as a real client would.
        user = o.user if re.fullmatch(r"[A-Za-z0-9@._+-]+", o.user) else conn._quote(o.user)
        return conn.login(user, o.password)
    if o.mech == "login-sasl":
        answers = iter([o.user.encode(), o.password.encode()])
        return conn.authenticate("LOGIN", lambda _challenge: next(answers, b""))
    raise ValueError("unknown mech " + o.mech)


def quietly(action):
    try:
        action()
    except (OSError, EOFError, imaplib.IMAP4.error, poplib.error_proto):
        pass


def imap_login(o, ctx=None, session=None):
    """The result, and the TLS session to resume (None without TLS)."""
    result = {"ok": False, "response": None, "capabilities": [], "store": None, "error": None, "greeting": None}
    result.update(NO_TLS)
    try:
        conn, wrapper = imap_connect(o, ctx, session)
    except (OSError, EOFError, imaplib.IMAP4.error) as error:   # includes a non-OK greeting (BYE)
        result["error"] = "%s: %s" % (type(error).__name__, error)
        return result, None
    result["greeting"] = decode(conn.welcome)
    try:
        imap_starttls(conn, o, wrapper)
    except (OSError, EOFError, imaplib.IMAP4.error) as error:
        result["error"] = describe(error)
        quietly(conn.shutdown)
        return result, None
    if wrapper is not None:
        result.update(wrapper.fields())
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
        return result, None
    resumable = None
    try:
        typ, data = conn.capability()
        caps = decode(data[-1]).split()
        result["capabilities"] = caps
        result["store"] = store_from_caps(caps)
        if wrapper is not None:
            resumable = wrapper.current_session()   # responses were read: TLS 1.3 tickets are in
        conn.logout()
    except (OSError, EOFError, imaplib.IMAP4.error) as error:
        result["error"] = "after login: %s: %s" % (type(error).__name__, error)
        quietly(conn.shutdown)
    return result, resumable


# ---------------------------------------------------------------------------------------------
# POP3

def pop3_sasl(conn, o):
    """AUTH <mech> (RFC 5034): the final reply (+OK ..., or raises error_proto on -ERR)."""
    mechanism = o.mech.upper()
    initial = base64.b64encode(sasl_initial(o)).decode()
    if o.sasl_ir:
        response = conn._shortcmd("AUTH %s %s" % (mechanism, initial))
    else:
        response = conn._shortcmd("AUTH " + mechanism)
        if response[:1] == b"+" and not response.startswith(b"+OK"):
            response = conn._shortcmd(initial)
    # poplib takes any "+" line for success: a "+ <challenge>" continues the exchange.
    for _ in range(3):
        if response[:1] != b"+" or response.startswith(b"+OK"):
            break
        challenge = base64.b64decode(response[1:].strip() or b"")
        response = conn._shortcmd("*" if o.mech == "plain" else base64.b64encode(sasl_later(o, challenge)).decode())
    return response


def pop3_login(o, ctx=None, session=None):
    """The result, and the TLS session to resume (None without TLS)."""
    result = {"ok": False, "response": None, "store": None, "error": None, "greeting": None}
    result.update(NO_TLS)
    wrapper = None
    try:
        if o.tls == "none":
            conn = poplib.POP3(o.host, o.port, timeout=o.timeout)
        else:
            wrapper = TLSWrapper(ctx or tls_context(o), o.servername or o.host, session)
            if o.tls == "implicit":
                conn = poplib.POP3_SSL(o.host, o.port, context=wrapper, timeout=o.timeout)
            else:
                conn = poplib.POP3(o.host, o.port, timeout=o.timeout)
    except (OSError, EOFError, poplib.error_proto) as error:
        result["error"] = "%s: %s" % (type(error).__name__, error)
        return result, None
    conn.encoding = "utf-8"   # USER/PASS arguments go out as UTF-8
    result["greeting"] = decode(conn.welcome)
    if o.tls == "starttls":
        try:
            conn.stls(context=wrapper)   # CAPA must list STLS; raises error_proto otherwise
        except (OSError, EOFError, poplib.error_proto) as error:
            result["error"] = describe(error)
            quietly(conn.close)
            return result, None
    if wrapper is not None:
        result.update(wrapper.fields())
    try:
        if o.mech == "user":
            conn.user(o.user)
            response = conn.pass_(o.password)
        elif o.mech in ("plain", "oauthbearer", "xoauth2"):
            response = pop3_sasl(conn, o)
        else:
            raise ValueError("unknown mech " + o.mech)
        result["response"] = decode(response)
        result["ok"] = response.startswith(b"+OK")
    except (OSError, EOFError, poplib.error_proto) as error:
        text = decode(error.args[0]) if error.args else str(error)
        result["response"] = text if isinstance(error, poplib.error_proto) else None
        result["error"] = "%s: %s" % (type(error).__name__, text)
        quietly(conn.quit)
        return result, None
    resumable = None
    try:
        _, lines, _ = conn.retr(1)
        for line in lines:
            match = re.match(rb"X-Store:\s*(\S+)", line, re.I)
            if match:
                result["store"] = match.group(1).decode()
                break
        if wrapper is not None:
            resumable = wrapper.current_session()
        conn.quit()
    except (OSError, EOFError, poplib.error_proto) as error:
        result["error"] = "after login: %s: %s" % (type(error).__name__, error)
        quietly(conn.close)
    return result, resumable


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


def imap_roundtrip(o, ctx=None, session=None):
    """The result, and the TLS session to resume (None without TLS)."""
    result = {"ok": False, "bytes_sent": 0, "bytes_received": 0, "sha256_sent": None, "sha256_received": None,
              "identical": False, "seconds": 0.0, "error": None}
    result.update(NO_TLS)
    resumable = None
    mailbox = "rt-%d-%d" % (time.time(), random.randrange(1 << 30))
    conn = None
    created = False
    try:
        conn, wrapper = imap_connect(o, ctx, session)
        imap_starttls(conn, o, wrapper)
        if wrapper is not None:
            result.update(wrapper.fields())
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
        if wrapper is not None:
            resumable = wrapper.current_session()
        conn.logout()
        conn = None
        result["ok"] = True
    except ssl.SSLError as error:   # its args[0] is a number: the message is what says why
        result["error"] = describe(error)
    except (OSError, EOFError, imaplib.IMAP4.error, RuntimeError) as error:
        result["error"] = "%s: %s" % (type(error).__name__, decode(error.args[0]) if error.args else error)
    finally:
        if conn is not None:
            if created:
                quietly(conn.close)
                quietly(lambda: conn.delete(mailbox))
            quietly(conn.logout)
    return result, resumable


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("command", choices=["imap-login", "pop3-login", "imap-roundtrip"])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--user", required=True)
    parser.add_argument("--password", required=True)
    parser.add_argument("--mech", default=None,
                        help="imap: login (default) | plain | login-sasl | oauthbearer | xoauth2; "
                             "pop3: user (default) | plain | oauthbearer | xoauth2 "
                             "(oauthbearer, xoauth2: --password is the bearer token)")
    parser.add_argument("--authzid", default=None,
                        help="--mech plain: the authorization identity (a master login: --user is the master user)")
    parser.add_argument("--no-sasl-ir", dest="sasl_ir", action="store_false",
                        help="pop3 AUTH: send the initial response after the server's \"+\", not on the AUTH line")
    parser.add_argument("--size", type=int, default=1_000_000, help="imap-roundtrip: message size in bytes")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds, per socket operation")
    parser.add_argument("--tls", choices=["none", "starttls", "implicit"], default="none",
                        help="none (default) | starttls (IMAP STARTTLS, POP3 STLS) | implicit (IMAPS, POP3S)")
    parser.add_argument("--cafile", default=None,
                        help="verify the server's certificate chain and name against this CA file "
                             "(without it and with TLS, nothing is verified)")
    parser.add_argument("--servername", default=None,
                        help="the name sent as SNI and verified (default: --host)")
    parser.add_argument("--alpn", default=None, help="comma-separated ALPN protocols to offer, e.g. imap")
    parser.add_argument("--session-reuse", action="store_true",
                        help="connect twice with one SSLContext, the second time offering the first "
                             "connection's TLS session; reports session_reused")
    o = parser.parse_args()
    if o.tls == "none" and (o.cafile or o.servername or o.alpn or o.session_reuse):
        parser.error("--cafile, --servername, --alpn and --session-reuse need --tls starttls|implicit")
    if o.command == "imap-login":
        o.mech = o.mech or "login"
        flow = imap_login
    elif o.command == "pop3-login":
        o.mech = o.mech or "user"
        flow = pop3_login
    else:
        o.mech = o.mech or "login"
        flow = imap_roundtrip
    if o.authzid is not None and o.mech != "plain":
        parser.error("--authzid needs --mech plain")
    if o.session_reuse:
        result = with_session_reuse(flow, o)
    else:
        result, _ = flow(o)
    print(json.dumps(result, ensure_ascii=False))


if __name__ == "__main__":
    main()
