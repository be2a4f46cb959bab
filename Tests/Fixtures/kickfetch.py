#!/usr/bin/env python3
"""A 20 MB FETCH that gets cut off: proves that ending a session in the middle of a store's
literal never puts anything (a `* BYE`) inside the literal.

  kickfetch.py --port 1143 --user U --password P --ready-file F [--size 20000000]

Logs in, APPENDs a message of --size bytes to a fresh mailbox, SELECTs it, sends
`f1 FETCH 1 BODY.PEEK[]`, reads the first MiB of the answer, writes the ready file (the test
then kicks the user), and reads on, slowly, until the server closes the connection (at most
60 s). Then it logs in again to delete the mailbox and prints one JSON object:
  literal_size, literal_received, literal_intact (every byte received inside the literal is
  the message's own), completed (the tagged OK arrived), bye_anywhere, closed_by_server.
"""
import argparse
import imaplib
import json
import os
import re
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from mailclient import make_message  # noqa: E402  (same directory)


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--user", required=True)
    parser.add_argument("--password", required=True)
    parser.add_argument("--size", type=int, default=20_000_000)
    parser.add_argument("--ready-file", required=True)
    o = parser.parse_args()
    mailbox = "kick-%d" % int(time.time() * 1000)
    message = make_message(o.size)
    conn = imaplib.IMAP4(o.host, o.port, timeout=30)
    conn.login(o.user, o.password)
    conn.create(mailbox)
    conn.append(mailbox, None, None, message)
    conn.select(mailbox)
    conn.send(b"f1 FETCH 1 BODY.PEEK[]\r\n")
    received = b""
    deadline = time.monotonic() + 60
    ready = False
    closed = False
    while time.monotonic() < deadline:
        try:
            chunk = conn.sock.recv(65536) if not conn.file.peek(1) else conn.file.read1(65536)
        except OSError:
            closed = True
            break
        if not chunk:
            closed = True
            break
        received += chunk
        if not ready and len(received) >= 1 << 20:
            with open(o.ready_file + ".tmp", "w") as f:
                f.write("ready\n")
            os.rename(o.ready_file + ".tmp", o.ready_file)
            ready = True
        if ready:
            # Pacing, not waiting: a slow reader is the behaviour under test (the proxy's side
            # stays in the middle of the literal when the kick comes).
            time.sleep(0.05)
    header = re.search(rb"BODY\[\] \{(\d+)\}\r\n", received)
    result = {"literal_size": None, "literal_received": 0, "literal_intact": False, "completed": False,
              "bye_anywhere": b"* BYE" in received, "closed_by_server": closed, "bytes": len(received)}
    if header:
        size = int(header.group(1))
        body = received[header.end():header.end() + size]
        result.update(literal_size=size, literal_received=len(body), literal_intact=body == message[:len(body)],
                      completed=b"\r\nf1 OK" in received[header.end() + size:])
    try:
        conn.sock.close()
    except OSError:
        pass
    cleanup = imaplib.IMAP4(o.host, o.port, timeout=30)
    cleanup.login(o.user, o.password)
    cleanup.delete(mailbox)
    cleanup.logout()
    print(json.dumps(result))


if __name__ == "__main__":
    main()
