#!/usr/bin/env python3
"""A private mail lab on loopback: one slapd and two Dovecot stores ("legacy", "new").

Used by the integration tests and by scripts/demo. Everything lives under --dir; nothing
touches /etc. Needs root (Dovecot's master drops to the `vmail` user for mail processes).

  lab.py up --dir DIR            start slapd (ldap://127.0.0.1:3389) and both stores
  lab.py down --dir DIR          stop everything started from DIR
  lab.py flip USER VALUE --dir DIR   set USER's mailHost with ldapmodify ("-" deletes it)
  lab.py stop-store NAME --dir DIR / start-store NAME --dir DIR
"""
import argparse
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import time

SUFFIX = "dc=example,dc=org"
PEOPLE = "ou=people," + SUFFIX
ADMIN_DN = "cn=admin," + SUFFIX
SERVICE_DN = "cn=mailswitch," + SUFFIX
LDAP_PORT = 3389
STORES = {
    "legacy": {"imap": 10143, "pop3": 10110},
    "new": {"imap": 20143, "pop3": 20110},
}

USERS = {
    "alice": ("alice-secret", "legacy"),
    "bob": ("bob-secret", "new"),
    "carol": ('pässwörd "quoted" back\\slash and spaces', "legacy"),
    "dave": ("dave-secret", None),
    "erin": ("ünïcödé ✓ {5}", "new"),
    "frank": ("frank-secret", "nowhere"),
}
for n in range(1, 21):
    USERS["user%04d" % n] = ("pw-user%04d" % n, "legacy" if n % 2 else "new")
STORE_ONLY_USERS = {"ghost": "ghost-secret"}   # in the stores, not in LDAP


def fail(message):
    print("lab: " + message, file=sys.stderr)
    sys.exit(1)


def port_open(port, host="127.0.0.1"):
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def wait_for(predicate, what, timeout=15.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    fail("timed out waiting for " + what)


def read_pid(path):
    try:
        with open(path) as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def stop_pid(pid, timeout=10.0):
    if not pid:
        return
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def ensure_vmail():
    try:
        return pwd.getpwnam("vmail")
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", "vmail"], check=True)
        return pwd.getpwnam("vmail")


def ldif_escape(value):
    return value


def user_ldif():
    out = ["dn: %s\nobjectClass: dcObject\nobjectClass: organization\ndc: example\no: Example\n" % SUFFIX,
           "dn: %s\nobjectClass: organizationalUnit\nou: people\n" % PEOPLE,
           "dn: %s\nobjectClass: organizationalRole\nobjectClass: simpleSecurityObject\ncn: mailswitch\nuserPassword: %s\n"
           % (SERVICE_DN, "{SERVICE_PASSWORD}")]
    for name, (_, host) in USERS.items():
        entry = ("dn: uid=%s,%s\nobjectClass: inetOrgPerson\nobjectClass: inetLocalMailRecipient\n"
                 "uid: %s\ncn: %s\nsn: %s\nmail: %s@example.org\n" % (name, PEOPLE, name, name, name, name))
        if host:
            entry += "mailHost: %s\n" % host
        out.append(entry)
    return "\n".join(out)


def slapd_conf(d):
    return """include /etc/ldap/schema/core.schema
include /etc/ldap/schema/cosine.schema
include /etc/ldap/schema/inetorgperson.schema
include /etc/ldap/schema/misc.schema
pidfile {d}/slapd/slapd.pid
argsfile {d}/slapd/slapd.args
modulepath /usr/lib/ldap
moduleload back_mdb
moduleload syncprov
database mdb
maxsize 104857600
suffix "{suffix}"
rootdn "{admin}"
rootpw {rootpw}
directory {d}/slapd/data
index objectClass eq
index uid eq
index entryCSN,entryUUID eq
overlay syncprov
access to attrs=userPassword by anonymous auth by * none
access to * by dn.exact="{service}" read by * none
""".format(d=d, suffix=SUFFIX, admin=ADMIN_DN, service=SERVICE_DN, rootpw=open(os.path.join(d, "admin.secret")).read())


def dovecot_conf(d, name, ports, vmail):
    base = os.path.join(d, name)
    return """instance_name = mailswitch-lab-{name}
base_dir = {base}/run
state_dir = {base}/state
log_path = {base}/dovecot.log
protocols = imap pop3
listen = 127.0.0.1
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
login_trusted_networks = 127.0.0.0/8
login_greeting = {name} store ready.
imap_capability = +X-STORE-{upper}
mail_location = maildir:{base}/mail/%u
first_valid_uid = {uid}
mail_uid = {uid}
mail_gid = {gid}
default_login_user = dovenull
default_internal_user = dovecot
pop3_uidl_format = %08Xu%08Xv
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {base}/passwd
}}
userdb {{
  driver = static
  args = uid={uid} gid={gid} home={base}/home/%u
}}
service imap-login {{
  inet_listener imap {{
    port = {imap}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
service pop3-login {{
  inet_listener pop3 {{
    port = {pop3}
  }}
  inet_listener pop3s {{
    port = 0
  }}
}}
service submission-login {{
  inet_listener submission {{
    port = 0
  }}
}}
service imap-urlauth-login {{
  inet_listener imap-urlauth {{
    port = 0
  }}
}}
service lmtp {{
  unix_listener lmtp {{
    mode = 0600
  }}
}}
""".format(name=name, upper=name.upper(), base=base, uid=vmail.pw_uid, gid=vmail.pw_gid,
           imap=ports["imap"], pop3=ports["pop3"])


def seed_mailbox(base, user, store, vmail):
    maildir = os.path.join(base, "mail", user)
    for sub in ("cur", "new", "tmp"):
        os.makedirs(os.path.join(maildir, sub), exist_ok=True)
    message = ("From: lab@example.org\r\nTo: %s@example.org\r\nSubject: welcome to %s\r\nX-Store: %s\r\n"
               "Date: Mon, 23 Nov 2026 00:00:00 +0000\r\nMessage-ID: <welcome-%s-%s@example.org>\r\n\r\n"
               "This mailbox lives on the %s store.\r\n" % (user, store, store, store, user, store))
    with open(os.path.join(maildir, "new", "1700000000.welcome.lab"), "w") as f:
        f.write(message)
    for root, dirs, files in os.walk(os.path.join(base, "mail", user)):
        for entry in dirs + files:
            os.chown(os.path.join(root, entry), vmail.pw_uid, vmail.pw_gid)
    os.chown(maildir, vmail.pw_uid, vmail.pw_gid)


def start_store(d, name):
    base = os.path.join(d, name)
    log = open(os.path.join(base, "dovecot.stdout"), "a")
    subprocess.Popen(["dovecot", "-F", "-c", os.path.join(base, "dovecot.conf")], stdout=log, stderr=log,
                     stdin=subprocess.DEVNULL, start_new_session=True)
    ports = STORES[name]
    wait_for(lambda: port_open(ports["imap"]) and port_open(ports["pop3"]), "Dovecot store %s" % name)


def stop_store(d, name):
    base = os.path.join(d, name)
    pid = read_pid(os.path.join(base, "run", "master.pid"))
    stop_pid(pid)
    ports = STORES[name]
    wait_for(lambda: not port_open(ports["imap"]) and not port_open(ports["pop3"]), "store %s to stop" % name)


def down(d):
    for name in STORES:
        stop_pid(read_pid(os.path.join(d, name, "run", "master.pid")))
    stop_pid(read_pid(os.path.join(d, "slapd", "slapd.pid")))


def up(d):
    d = os.path.abspath(d)
    if os.path.isdir(d):
        down(d)
        shutil.rmtree(d)
    for port in [LDAP_PORT] + [p for s in STORES.values() for p in s.values()]:
        if port_open(port):
            fail("port %d is already in use (another lab or demo running? try: lab.py down --dir DIR)" % port)
    vmail = ensure_vmail()
    os.makedirs(os.path.join(d, "slapd", "data"))
    os.chmod(d, 0o755)
    with open(os.path.join(d, "admin.secret"), "w") as f:
        f.write("lab-admin-secret")
    with open(os.path.join(d, "ldap.secret"), "w") as f:
        f.write("lab-service-secret")
    with open(os.path.join(d, "slapd", "slapd.conf"), "w") as f:
        f.write(slapd_conf(d))
    with open(os.path.join(d, "slapd", "users.ldif"), "w") as f:
        f.write(user_ldif().replace("{SERVICE_PASSWORD}", "lab-service-secret"))
    conf = os.path.join(d, "slapd", "slapd.conf")
    subprocess.run(["slapadd", "-q", "-f", conf, "-l", os.path.join(d, "slapd", "users.ldif")], check=True,
                   stdout=subprocess.DEVNULL)
    subprocess.run(["slapd", "-f", conf, "-h", "ldap://127.0.0.1:%d/" % LDAP_PORT], check=True)
    wait_for(lambda: subprocess.run(["ldapsearch", "-x", "-H", "ldap://127.0.0.1:%d" % LDAP_PORT, "-D", SERVICE_DN,
                                     "-y", os.path.join(d, "ldap.secret"), "-b", PEOPLE, "-s", "base"],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode == 0, "slapd")

    all_users = {name: pw for name, (pw, _) in USERS.items()}
    all_users.update(STORE_ONLY_USERS)
    for name, ports in STORES.items():
        base = os.path.join(d, name)
        for sub in ("run", "state", "mail", "home"):
            os.makedirs(os.path.join(base, sub))
        os.chown(os.path.join(base, "mail"), vmail.pw_uid, vmail.pw_gid)
        os.chown(os.path.join(base, "home"), vmail.pw_uid, vmail.pw_gid)
        with open(os.path.join(base, "passwd"), "w", encoding="utf-8") as f:
            for user, pw in all_users.items():
                f.write("%s:{PLAIN}%s::::::\n" % (user, pw))
        with open(os.path.join(base, "dovecot.conf"), "w") as f:
            f.write(dovecot_conf(d, name, ports, vmail))
        for user in all_users:
            seed_mailbox(base, user, name, vmail)
        start_store(d, name)

    state = {
        "ldap_uri": "ldap://127.0.0.1:%d" % LDAP_PORT, "base": PEOPLE, "bind_dn": SERVICE_DN,
        "bind_password_file": os.path.join(d, "ldap.secret"), "admin_dn": ADMIN_DN,
        "admin_password_file": os.path.join(d, "admin.secret"),
        "stores": {name: {"imap": "127.0.0.1:%d" % p["imap"], "pop3": "127.0.0.1:%d" % p["pop3"],
                          "log": os.path.join(d, name, "dovecot.log")} for name, p in STORES.items()},
        "users": {name: {"password": pw, "mailHost": host} for name, (pw, host) in USERS.items()},
    }
    with open(os.path.join(d, "lab.json"), "w") as f:
        json.dump(state, f, indent=2, ensure_ascii=False)
    print("lab up in %s: slapd ldap://127.0.0.1:%d, stores legacy (imap 10143, pop3 10110) and new (imap 20143, pop3 20110)"
          % (d, LDAP_PORT))


def flip(d, user, value):
    if value == "-":
        change = "dn: uid=%s,%s\nchangetype: modify\ndelete: mailHost\n" % (user, PEOPLE)
    else:
        change = "dn: uid=%s,%s\nchangetype: modify\nreplace: mailHost\nmailHost: %s\n" % (user, PEOPLE, value)
    subprocess.run(["ldapmodify", "-x", "-H", "ldap://127.0.0.1:%d" % LDAP_PORT, "-D", ADMIN_DN,
                    "-y", os.path.join(d, "admin.secret")], input=change.encode(), check=True, stdout=subprocess.DEVNULL)
    print("%s: mailHost %s" % (user, "deleted" if value == "-" else "= " + value))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["up", "down", "flip", "stop-store", "start-store"])
    parser.add_argument("args", nargs="*")
    parser.add_argument("--dir", required=True)
    options = parser.parse_args()
    d = os.path.abspath(options.dir)
    if options.command == "up":
        up(d)
    elif options.command == "down":
        down(d)
    elif options.command == "flip":
        if len(options.args) != 2:
            fail("usage: lab.py flip USER VALUE --dir DIR")
        flip(d, *options.args)
    elif options.command in ("stop-store", "start-store"):
        if len(options.args) != 1 or options.args[0] not in STORES:
            fail("usage: lab.py %s legacy|new --dir DIR" % options.command)
        (stop_store if options.command == "stop-store" else start_store)(d, options.args[0])


if __name__ == "__main__":
    main()
