#!/usr/bin/env python3
"""Writes /etc/mailswitch/mailswitch.yaml as the package installs it, from the documented
example: the same file with what needs files the package cannot ship (certificates, the LDAP
bind password, a private CA) commented out, so that `mailswitch check-config` passes right after
install. Each edit must match exactly where expected, so a change to the example fails the
package build here instead of shipping a configuration that does not load.

  installed-config.py EXAMPLE OUTPUT
"""
import re
import sys

HEADER = """\
# /etc/mailswitch/mailswitch.yaml as the mailswitch package installs it: the documented example
# (mailswitch.yaml(5); /usr/share/doc/mailswitch/mailswitch.example.yaml) with what needs files
# the package cannot ship turned off, so that `mailswitch check-config` passes as installed:
#   - tls: is commented out, the two STARTTLS listeners are plain (tls: none) and the two
#     implicit-TLS listeners are commented out. Put a certificate and its key under
#     /etc/mailswitch/tls/, uncomment tls:, and give the listeners their TLS back.
#   - directory.bind_dn and bind_password_file are commented out (the directory is searched
#     anonymously). Write the bind password to /etc/mailswitch/ldap.secret
#     (chgrp mailswitch, chmod 640) and uncomment both.
#   - the "new" backend's ca_file is commented out (the system's CA store verifies it).
# Every listener is on 127.0.0.1 until you change its address; nothing starts until you run
#   mailswitch check-config && systemctl enable --now mailswitch
#
"""


def comment_out(block):
    return "".join("# " + line if line.strip() else line for line in block.splitlines(keepends=True))


def replace(text, pattern, replacement, count):
    """Applies a regex edit that must match exactly `count` times."""
    new, found = re.subn(pattern, replacement, text, flags=re.MULTILINE)
    if found != count:
        sys.exit("installed-config: %r matched %d times in the example, expected %d: "
                 "update debian/installed-config.py with the example" % (pattern, found, count))
    return new


def main():
    example, output = sys.argv[1], sys.argv[2]
    text = open(example, encoding="utf-8").read()
    text = replace(text, r"^tls:\n(?:  .*\n)+", lambda m: comment_out(m.group(0)), 1)
    text = replace(text, r"^  - protocol: (imap|pop3)\n    address: \"127\.0\.0\.1:\d+\"\n    tls: implicit\n",
                   lambda m: comment_out(m.group(0)), 2)
    text = replace(text, r"^    tls: starttls$", "    tls: none                 # starttls once tls: above is set", 2)
    text = replace(text, r"^  (bind_dn|bind_password_file): (.*)$", r"  # \1: \2", 2)
    text = replace(text, r"^    ca_file: (\"/etc/mailswitch/.*)$", r"    # ca_file: \1", 1)
    for number, line in enumerate(text.splitlines(), 1):
        if "/etc/mailswitch/" in line and not line.lstrip().startswith("#"):
            sys.exit("installed-config: line %d still needs a file the package does not ship: %s" % (number, line))
    with open(output, "w", encoding="utf-8") as out:
        out.write(HEADER + text)


if __name__ == "__main__":
    main()
