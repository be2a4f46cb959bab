#!/usr/bin/env python3
"""An RFC 7662 token introspection endpoint on 127.0.0.1 for IntrospectionTests.

Prints the port it listens on (the system picks a free one), then serves until killed.
HTTP/1.1 with keep-alive, so a client that reuses its connections opens few.

How a token is answered depends on its part before the first '.'; the rest is the test's, to
make each token its own (a test can then tell that no reason ever quotes it):
  good         200 {"active": true, "username": "alice@example.org"}
  bad          200 {"active": false}
  slow         answers nothing for 60 s (longer than any test's timeout)
  500          HTTP 500
  junk         200 with a body that is not JSON
  number       200 {"active": 1} (a number, not the boolean RFC 7662 asks for)
  redirect     302 to /elsewhere
  huge         200 with 1 MiB of JSON whitespace
  echo         200 {"active": true, "username": <the whole token as received>}
  connections  200 {"active": true, "username": "<TCP connections accepted so far>"}
  (other)      200 {"active": false}
With --client-id and --client-secret, a request without that client's HTTP Basic
authentication (id and secret form-encoded, RFC 6749 2.3.1) gets 401. A request that is not a
form POST of a token with token_type_hint=access_token gets 400.
"""
import argparse
import base64
import http.server
import json
import sys
import threading
import time
import urllib.parse

accepted = 0
accepted_lock = threading.Lock()


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    client_id = None
    client_secret = None

    def setup(self):
        global accepted
        with accepted_lock:
            accepted += 1
        super().setup()

    def log_message(self, format, *args):
        pass

    def answer(self, status, body=b"", headers=()):
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        for name, value in headers:
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def answer_json(self, value):
        self.answer(200, json.dumps(value).encode(), [("Content-Type", "application/json")])

    def authenticated(self):
        if self.client_id is None:
            return True
        scheme, _, encoded = self.headers.get("Authorization", "").partition(" ")
        if scheme != "Basic":
            return False
        try:
            user, _, password = base64.b64decode(encoded, validate=True).decode().partition(":")
        except ValueError:
            return False
        return (urllib.parse.unquote_plus(user) == self.client_id
                and urllib.parse.unquote_plus(password) == self.client_secret)

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        if not self.authenticated():
            self.answer(401, headers=[("WWW-Authenticate", 'Basic realm="introspection"')])
            return
        form = urllib.parse.parse_qs(body.decode(), keep_blank_values=True, strict_parsing=True)
        content_type = self.headers.get("Content-Type", "")
        if (not content_type.startswith("application/x-www-form-urlencoded")
                or form.get("token_type_hint") != ["access_token"] or len(form.get("token", [])) != 1):
            self.answer(400)
            return
        token = form["token"][0]
        kind = token.split(".", 1)[0]
        if kind == "good":
            self.answer_json({"active": True, "username": "alice@example.org"})
        elif kind == "slow":
            time.sleep(60)
            self.answer_json({"active": True})
        elif kind == "500":
            self.answer(500, b"internal error")
        elif kind == "junk":
            self.answer(200, b"<html>not json</html>", [("Content-Type", "text/html")])
        elif kind == "number":
            self.answer_json({"active": 1})
        elif kind == "redirect":
            self.answer(302, headers=[("Location", "/elsewhere")])
        elif kind == "huge":
            self.answer(200, b"{" + b" " * (1 << 20) + b'"active": true}', [("Content-Type", "application/json")])
        elif kind == "echo":
            self.answer_json({"active": True, "username": token})
        elif kind == "connections":
            with accepted_lock:
                count = accepted
            self.answer_json({"active": True, "username": str(count)})
        else:
            self.answer_json({"active": False})


class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        # A client that hangs up mid-answer (a timeout, an answer too long) is what some tests
        # are about: no traceback for that.
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--client-id")
    parser.add_argument("--client-secret", default="")
    options = parser.parse_args()
    Handler.client_id = options.client_id
    Handler.client_secret = options.client_secret
    server = Server(("127.0.0.1", 0), Handler)
    print(server.server_address[1], flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
