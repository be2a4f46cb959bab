#!/usr/bin/env python3
"""An OAuth 2.0 token introspection endpoint (RFC 7662) for the lab: the "modern" store's
Dovecot oauth2 passdb asks it (introspection_mode = post), and mailswitch can use it as its
oauth_introspection_url. Started and stopped by scripts/lab.py (up/down); listens on loopback.

  token_stub.py --port PORT [--host 127.0.0.1] [--domain example.org] [--users FILE]
                [--path /introspect] [--basic ID:SECRET] [--bearer TOKEN] [--log FILE]

POST PATH with the form `token=...` (application/x-www-form-urlencoded; token_type_hint and
other parameters are ignored). A token `token-<name>` (or `token-<name>@<domain>`) is active
for <name>@<domain>; with --users (one name per line), only for those names. Answer (200,
application/json):

  {"active": true, "username": "user0005@example.org", "email": ..., "sub": ..., "scope": "mail",
   "client_id": "mailswitch-lab", "token_type": "Bearer", "iat": NOW, "exp": NOW + 3600}

or {"active": false} for any other token. No token: 400 {"error": "invalid_request"}.

Client authentication (RFC 7662 section 2.1): none is required. With --basic and/or --bearer,
a request carrying an Authorization header must match one of them (else 401
{"error": "invalid_client"}); one carrying none is still answered. Every request is logged as
one JSON line (--log, else stderr) with the path, the token's verdict and the client
authentication used (scheme and Basic client id, never a secret or a token).
"""
import argparse
import base64
import binascii
import http.server
import json
import re
import signal
import sys
import threading
import time
import urllib.parse

TOKEN_PREFIX = "token-"
NAME = re.compile(r"[A-Za-z0-9._+-]+(@[A-Za-z0-9.-]+)?")


class Stub(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, options):
        self.options = options
        self.users = None
        if options.users:
            with open(options.users, encoding="utf-8") as f:
                self.users = {line.strip() for line in f if line.strip()}
        self.log_lock = threading.Lock()
        self.log_file = open(options.log, "a", encoding="utf-8") if options.log else sys.stderr
        super().__init__((options.host, options.port), Handler)

    def username(self, token):
        """The address a token stands for, or None."""
        if not token.startswith(TOKEN_PREFIX):
            return None
        name = token[len(TOKEN_PREFIX):]
        if not NAME.fullmatch(name):
            return None
        local, at, domain = name.partition("@")
        if at and domain.lower() != self.options.domain.lower():
            return None
        if self.users is not None and local not in self.users:
            return None
        return "%s@%s" % (local, self.options.domain)

    def record(self, entry):
        with self.log_lock:
            self.log_file.write(json.dumps(entry, ensure_ascii=False) + "\n")
            self.log_file.flush()


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"   # keep-alive: Dovecot's HTTP client reuses its connections
    server_version = "mailswitch-lab-token-stub"

    def log_message(self, *_):
        pass   # one JSON line per request instead (Stub.record)

    def answer(self, status, body):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Cache-Control", "no-store")
        self.send_header("Content-Length", str(len(data)))
        if status == 401:
            self.send_header("WWW-Authenticate", 'Basic realm="token-stub"')
        self.end_headers()
        self.wfile.write(data)

    def client_auth(self):
        """(scheme, client id or None, accepted)."""
        header = self.headers.get("Authorization")
        if not header:
            return None, None, True
        scheme, _, value = header.partition(" ")
        scheme, value = scheme.lower(), value.strip()
        o = self.server.options
        if scheme == "basic":
            try:
                decoded = base64.b64decode(value, validate=True).decode("utf-8")
            except (binascii.Error, UnicodeDecodeError):
                return scheme, None, False
            client_id, _, secret = decoded.partition(":")
            # RFC 6749 2.3.1: client id and secret are form-urlencoded inside Basic.
            client_id, secret = urllib.parse.unquote_plus(client_id), urllib.parse.unquote_plus(secret)
            configured = o.basic is not None or o.bearer is not None
            return scheme, client_id, not configured or o.basic == "%s:%s" % (client_id, secret)
        if scheme == "bearer":
            configured = o.basic is not None or o.bearer is not None
            return scheme, None, not configured or o.bearer == value
        return scheme, None, o.basic is None and o.bearer is None

    def do_POST(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length).decode("utf-8", "replace") if length > 0 else ""
        path = urllib.parse.urlsplit(self.path).path
        scheme, client_id, accepted = self.client_auth()
        entry = {"time": round(time.time(), 3), "method": "POST", "path": path, "client_auth": scheme,
                 "client_id": client_id}
        if path != self.server.options.path:
            entry["status"] = 404
            self.server.record(entry)
            return self.answer(404, {"error": "not_found"})
        if not accepted:
            entry["status"] = 401
            self.server.record(entry)
            return self.answer(401, {"error": "invalid_client"})
        tokens = urllib.parse.parse_qs(body, keep_blank_values=True).get("token")
        if not tokens or not tokens[0]:
            entry["status"] = 400
            self.server.record(entry)
            return self.answer(400, {"error": "invalid_request"})
        username = self.server.username(tokens[0])
        entry.update({"status": 200, "active": username is not None, "username": username})
        self.server.record(entry)
        if username is None:
            return self.answer(200, {"active": False})
        now = int(time.time())
        return self.answer(200, {"active": True, "username": username, "email": username, "sub": username,
                                 "scope": "mail", "client_id": "mailswitch-lab", "token_type": "Bearer",
                                 "iat": now, "exp": now + 3600})

    def do_GET(self):
        self.server.record({"time": round(time.time(), 3), "method": "GET", "path": self.path, "status": 405})
        self.send_response(405)
        self.send_header("Allow", "POST")
        self.send_header("Content-Length", "0")
        self.end_headers()


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--path", default="/introspect", help="the introspection endpoint's path")
    parser.add_argument("--domain", default="example.org", help="token-<name> stands for <name>@DOMAIN")
    parser.add_argument("--users", default=None, help="file of names (one a line) whose tokens are active")
    parser.add_argument("--basic", default=None, metavar="ID:SECRET", help="client credentials accepted (HTTP Basic)")
    parser.add_argument("--bearer", default=None, metavar="TOKEN", help="client bearer token accepted")
    parser.add_argument("--log", default=None, help="append one JSON line per request here (default stderr)")
    o = parser.parse_args()
    server = Stub(o)
    # SIGTERM (lab.py down): stop serving and exit 0.
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown, daemon=True).start())
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
