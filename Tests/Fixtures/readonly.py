#!/usr/bin/env python3
"""What a mail client like Thunderbird does to a mailbox, against a read-only hold.

  readonly.py imap --port 1143 --user U --password P
      SELECT INBOX, FETCH 1 BODY[] (no PEEK: it would set \\Seen), STORE +FLAGS, APPEND to
      Sent, EXPUNGE, MOVE to Trash, COPY, CREATE, SUBSCRIBE, then pipelined
      NOOP / STORE / NOOP on one raw write, then NOOP and LOGOUT: the session must stay usable.
  readonly.py pop3 --port 1110 --user U --password P
      STAT, RETR 1, DELE 1, QUIT.

Prints one JSON object: per step, the status ("OK", "NO", "BAD", or "error") and the reply
text; for IMAP also whether SELECT said READ-ONLY and the order of the pipelined replies.
"""
import argparse
import imaplib
import json
import poplib


def text(data):
    parts = []
    for item in data or []:
        if isinstance(item, tuple):
            item = item[0]
        if isinstance(item, bytes):
            item = item.decode("utf-8", "replace")
        parts.append(str(item))
    return " ".join(parts)


def imap(o):
    result = {"steps": {}}
    conn = imaplib.IMAP4(o.host, o.port, timeout=30)
    conn.login(o.user, o.password)

    def step(name, action):
        try:
            typ, data = action()
            result["steps"][name] = {"status": typ, "text": text(data)}
        except imaplib.IMAP4.error as error:
            result["steps"][name] = {"status": "error", "text": str(error)}

    # A real client sends SELECT and lives with [READ-ONLY]; imaplib's select() would raise
    # on it, and refuse every later command, so the command is sent as it is.
    step("select", lambda: conn._simple_command("SELECT", "INBOX"))
    result["read_only"] = "READ-ONLY" in conn.untagged_responses
    conn.state = "SELECTED"
    conn.is_readonly = True
    step("fetch", lambda: conn.fetch("1", "(BODY[])"))
    step("store", lambda: conn.store("1", "+FLAGS", "(\\Flagged \\Deleted)"))
    step("append", lambda: conn.append("Sent", None, None, b"Subject: sent\r\n\r\nhello\r\n"))
    step("expunge", lambda: conn.expunge())
    step("move", lambda: conn._simple_command("MOVE", "1", "Trash"))
    step("copy", lambda: conn.copy("1", "Trash"))
    step("create", lambda: conn.create("Archive"))
    step("subscribe", lambda: conn.subscribe("Archive"))
    # Pipelined on one write: the refusal must come between the two NOOPs' completions.
    conn.send(b"p1 NOOP\r\np2 STORE 1 +FLAGS (\\Seen)\r\np3 NOOP\r\n")
    tagged = []
    while len(tagged) < 3:
        line = conn.readline().decode("utf-8", "replace").rstrip("\r\n")
        if line.startswith("p"):
            tagged.append(line)
    result["pipelined"] = tagged
    step("noop", lambda: conn.noop())
    step("logout", lambda: conn.logout())
    return result


def pop3(o):
    result = {"steps": {}}
    conn = poplib.POP3(o.host, o.port, timeout=30)
    conn.user(o.user)
    conn.pass_(o.password)

    def step(name, action):
        try:
            reply = action()
            if isinstance(reply, tuple):
                reply = reply[0]
            result["steps"][name] = {"status": "OK", "text": reply.decode("utf-8", "replace") if isinstance(reply, bytes) else str(reply)}
        except poplib.error_proto as error:
            result["steps"][name] = {"status": "error", "text": str(error.args[0].decode("utf-8", "replace")
                                                                      if isinstance(error.args[0], bytes) else error)}

    step("stat", conn.stat)
    step("retr", lambda: conn.retr(1))
    step("dele", lambda: conn.dele(1))
    step("quit", conn.quit)
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("protocol", choices=["imap", "pop3"])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--user", required=True)
    parser.add_argument("--password", required=True)
    o = parser.parse_args()
    print(json.dumps(imap(o) if o.protocol == "imap" else pop3(o)))


if __name__ == "__main__":
    main()
