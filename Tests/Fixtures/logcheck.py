#!/usr/bin/env python3
"""After the full test run: no password of the lab's users appears in any mailswitch log the
run wrote (every instance logs at debug level in the tests), nor their SASL PLAIN payloads,
nor their bearer tokens (the lab's introspection stub takes `token-<user>`), nor the store's
master password.

  logcheck.py --since FILE      check the lab directories newer than FILE

Prints what it checked; exits 1 naming the file and the user when a secret is found, 2 when
there was nothing to check (a check that cannot fail is no check).
"""
import argparse
import base64
import glob
import json
import os
import sys
import tempfile


def secrets(users, master=None):
    """Each password as UTF-8, the PLAIN payloads (base64 of NUL user NUL password) the
    clients of the tests send, each bearer token, and the master password (`master`)."""
    found = [("mailswitch-master", "master password", master.encode("utf-8"))] if master else []
    for user, entry in users.items():
        password = entry["password"].encode("utf-8")
        if len(password) < 6:
            continue
        found.append((user, "password", password))
        found.append((user, "bearer token", ("token-" + user).encode("utf-8")))
        for authzid in (b"", user.encode("utf-8")):
            found.append((user, "PLAIN payload", base64.b64encode(authzid + b"\0" + user.encode("utf-8") + b"\0" + password)))
    return found


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--since", required=True)
    o = parser.parse_args()
    since = os.path.getmtime(o.since)
    labs = [d for d in glob.glob(os.path.join(tempfile.gettempdir(), "mailswitch-tests-*"))
            if os.path.getmtime(d) >= since and os.path.exists(os.path.join(d, "lab.json"))]
    logs, leaks = 0, []
    for lab in labs:
        with open(os.path.join(lab, "lab.json")) as f:
            state = json.load(f)
        master = None
        master_file = state.get("modern", {}).get("master_password_file")
        if master_file and os.path.exists(master_file):
            with open(master_file, encoding="utf-8") as f:
                master = f.read().strip()
        checks = secrets(state["users"], master)
        for path in glob.glob(os.path.join(lab, "*.log")):
            with open(path, "rb") as f:
                text = f.read()
            if b"[Proxy]" not in text and b"[mailswitch]" not in text:
                continue   # not a mailswitch log
            logs += 1
            leaks += ["%s: %s's %s" % (path, user, kind) for user, kind, secret in checks if secret in text]
    if logs == 0:
        print("logcheck: no mailswitch log from this run to check", file=sys.stderr)
        return 2
    if leaks:
        print("logcheck: secrets in the logs:\n  " + "\n  ".join(leaks), file=sys.stderr)
        return 1
    print("logcheck: %d mailswitch logs of %d lab(s) hold none of the lab users' passwords, PLAIN payloads or tokens, nor the master password" % (logs, len(labs)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
