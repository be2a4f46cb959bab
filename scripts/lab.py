#!/usr/bin/env python3
"""A private mail lab on loopback: one slapd and three Dovecot stores ("legacy", "new", "modern").

Used by the integration tests and by scripts/demo. Everything lives under --dir; nothing
touches /etc. Needs root (Dovecot's master drops to the `vmail` user for mail processes).

  lab.py up --dir DIR                 make a test PKI in DIR/tls, start slapd
                                      (ldap://127.0.0.1:3389), the three stores and the
                                      token stub
  lab.py down --dir DIR               stop everything started from DIR (never fails if down)
  lab.py flip USER VALUE --dir DIR    set USER's mailHost with ldapmodify ("-" deletes it);
                                      USER may be a comma-separated list (one ldapmodify run)
  lab.py stop-slapd --dir DIR         stop slapd (directory-outage tests)
  lab.py start-plain-slapd --dir DIR  a second slapd, same users, without syncprov (no
                                      RFC 4533 feed), on ldap://127.0.0.1:3393; down stops it
  lab.py start-slapd --dir DIR        start it again
  lab.py offline-flip USER VALUE --dir DIR
                                      like flip, with slapd stopped (slapmodify): a change
                                      no client of the running server could have seen
  lab.py stop-store NAME --dir DIR    stop one store (legacy|new|modern), for dead-backend tests
  lab.py start-store NAME --dir DIR   start it again
  lab.py stop-token-stub --dir DIR    stop the token introspection stub (an OAuth outage)
  lab.py start-token-stub --dir DIR   start it again
  lab.py start-rogue --dir DIR        start the "rogue" store: legacy's users, but a
                                      self-signed certificate the lab CA did not sign
  lab.py stop-rogue --dir DIR         stop it (down stops it too)

Ports (all 127.0.0.1; MAILSWITCH_LAB_PORT_OFFSET=N adds N to each): LDAP 3389;
  legacy  IMAP 10143 / POP3 10110 (both with STARTTLS/STLS), IMAPS 10993 / POP3S 10995
  new     IMAP 20143 / POP3 20110 (both with STARTTLS/STLS), IMAPS 20993 / POP3S 20995
  rogue   IMAP 30143 / POP3 30110 (both with STARTTLS/STLS), IMAPS 30993 / POP3S 30995
          (only between start-rogue and stop-rogue)
  modern  IMAP 40143 / POP3 40110 (both with STARTTLS/STLS), IMAPS 40993 / POP3S 40995
  token stub  HTTP 38080 (POST /introspect)
Each store also takes IMAP with a PROXY protocol header on its IMAP port + 1 (10144, ...).
Plaintext logins stay allowed on the plain ports.

Login names: legacy, new and rogue know every user by its bare name ("user0005"); modern
knows them only by address ("user0005@example.org", same passwords; a bare name fails there).
modern also has
  - a master user (Dovecot master passdb): SASL PLAIN with authzid = the user's address,
    authcid = "mailswitch-master" and the password in DIR/master.secret logs in as the user;
  - OAUTHBEARER and XOAUTH2 (Dovecot oauth2 passdb), checked against the token stub
    (Tests/Fixtures/token_stub.py, RFC 7662 introspection at http://127.0.0.1:38080/introspect,
    which mailswitch can use too): the token "token-<name>" is active for <name>@example.org
    for every lab user; any other token is not.

Bench mode (MAILSWITCH_LAB_BENCH=1; Benchmarks/peers.py and Benchmarks/bench.py): every routing
system must find a host in LDAP, so the stores move to their own loopback addresses with the
same port numbers: legacy on 127.0.0.2, new on 127.0.0.3, both on legacy's ports above
(IMAP 10143, POP3 10110, IMAPS 10993, POP3S 10995, plus the offset), and every user's mailHost
is its store's address ("127.0.0.2" / "127.0.0.3"; dave keeps none, frank keeps "nowhere").
Neither modern nor the token stub is made or started in bench mode.
The store certificates also name their address and DNS:store.bench.test (one name for both),
the stores run their login processes in Dovecot's high-performance mode and reuse mail
processes, and lab.json says "bench": true. The rogue store stays on 127.0.0.1.

TLS files (PEM, leaf certificate only; keys mode 0600), made afresh by every `up`:
  DIR/tls/ca.pem, ca.key          "mailswitch lab CA", signs everything below but rogue
  DIR/tls/mail.pem, mail.key      RSA 2048 proxy certificate: CN mail.example.test,
                                  SAN DNS:mail.example.test, DNS:localhost, IP:127.0.0.1
  DIR/tls/mail-ec.pem, .key       the same names, ECDSA P-256
  DIR/tls/other.pem, other.key    RSA, SAN DNS:imap.other.test only (SNI tests)
  DIR/tls/legacy.pem, new.pem,    the stores' certificates: SAN DNS:legacy.store.test (resp.
          modern.pem              new.store.test, modern.store.test), DNS:localhost, IP:127.0.0.1
  DIR/tls/rogue.pem, rogue.key    self-signed, SAN DNS:legacy.store.test, IP:127.0.0.1
  DIR/tls/client.pem, client.key  client certificate (CN mailswitch-proxy), signed by the CA
DIR/lab.json describes the running lab (URIs, DNs, secret files, stores, TLS files, users, pids,
the master user and its password file, the token stub).
"""
import argparse
import base64
import json
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time

SUFFIX = "dc=example,dc=org"
PEOPLE = "ou=people," + SUFFIX
ADMIN_DN = "cn=admin," + SUFFIX
SERVICE_DN = "cn=mailswitch," + SUFFIX
LDAP_HOST = "127.0.0.1"
# MAILSWITCH_LAB_PORT_OFFSET moves every port of the lab up by that much, so that a second lab
# (a benchmark, a helper's experiment) can run beside the tests' or the demo's.
PORT_OFFSET = int(os.environ.get("MAILSWITCH_LAB_PORT_OFFSET", "0"))
LDAP_PORT = 3389 + PORT_OFFSET
LDAP_URI = "ldap://%s:%d" % (LDAP_HOST, LDAP_PORT)
# start-plain-slapd: the same users in a slapd without syncprov (no RFC 4533 change feed).
PLAIN_LDAP_PORT = 3393 + PORT_OFFSET
ADMIN_PASSWORD = "lab-admin-secret"
SERVICE_PASSWORD = "lab-service-secret"
STORES = {
    "legacy": {"imap": 10143 + PORT_OFFSET, "pop3": 10110 + PORT_OFFSET, "imaps": 10993 + PORT_OFFSET, "pop3s": 10995 + PORT_OFFSET},
    "new": {"imap": 20143 + PORT_OFFSET, "pop3": 20110 + PORT_OFFSET, "imaps": 20993 + PORT_OFFSET, "pop3s": 20995 + PORT_OFFSET},
}
# MAILSWITCH_LAB_BENCH=1: the benchmarks' layout (see the module's docstring).
BENCH = os.environ.get("MAILSWITCH_LAB_BENCH", "") not in ("", "0")
BENCH_HOSTS = {"legacy": "127.0.0.2", "new": "127.0.0.3"}
BENCH_SERVER_NAME = "store.bench.test"
if BENCH:
    STORES["new"] = dict(STORES["legacy"])
# The store that knows users only by address, with a master user and OAuth (see the docstring);
# started by `up` like legacy and new, but not in bench mode.
MODERN = {"modern": {"imap": 40143 + PORT_OFFSET, "pop3": 40110 + PORT_OFFSET, "imaps": 40993 + PORT_OFFSET, "pop3s": 40995 + PORT_OFFSET}}
if not BENCH:
    STORES.update(MODERN)
# An optional fourth Dovecot (start-rogue / stop-rogue): legacy's users behind a certificate
# the lab CA did not sign, for "untrusted backend" tests. Not started by `up`.
ROGUE = {"rogue": {"imap": 30143 + PORT_OFFSET, "pop3": 30110 + PORT_OFFSET, "imaps": 30993 + PORT_OFFSET, "pop3s": 30995 + PORT_OFFSET}}
ALL_STORES = {**STORES, **ROGUE}
# The address each store listens on (bench mode: its own; otherwise all 127.0.0.1).
STORE_HOST = {name: (BENCH_HOSTS.get(name, "127.0.0.1") if BENCH else "127.0.0.1") for name in ALL_STORES}
# Each store serves DIR/tls/<cert>.pem; server_name is the DNS name in its certificate.
STORE_TLS = {"legacy": ("legacy", "legacy.store.test"), "new": ("new", "new.store.test"),
             "modern": ("modern", "modern.store.test"), "rogue": ("rogue", "legacy.store.test")}
USER_DOMAIN = "example.org"   # modern's login names: <user>@USER_DOMAIN
# modern's master user (passdb master = yes): its password goes to DIR/master.secret.
MASTER_USER = "mailswitch-master"
MASTER_PASSWORD = "lab-master-secret"
# The RFC 7662 token introspection stub modern's oauth2 passdb asks (and mailswitch may).
# (modern's ports and the stub's lie in Linux's ephemeral range, 32768-60999: an outgoing
# connection that happens to hold one when the lab starts makes `up` fail early, naming it.)
TOKEN_STUB = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "Tests", "Fixtures", "token_stub.py")
TOKEN_STUB_PORT = 38080 + PORT_OFFSET
TOKEN_STUB_URL = "http://127.0.0.1:%d/introspect" % TOKEN_STUB_PORT
START_TIMEOUT = 15.0   # seconds for a daemon to start answering
STOP_TIMEOUT = 10.0    # seconds for a daemon to exit after SIGTERM (then SIGKILL)

# name -> (password, mailHost or None)
USERS = {
    "alice": ("alice-secret", "legacy"),
    "bob": ("bob-secret", "new"),
    "carol": ('pässwörd "quoted" back\\slash and spaces', "legacy"),
    "dave": ("dave-secret", None),
    "erin": ("ünïcödé ✓ {5}", "new"),
    "frank": ("frank-secret", "nowhere"),
}
# MAILSWITCH_LAB_USERS=N makes user0001..userN (the benchmarks use 2,000); 20 by default.
for _n in range(1, int(os.environ.get("MAILSWITCH_LAB_USERS", "20")) + 1):
    USERS["user%04d" % _n] = ("pw-user%04d" % _n, "legacy" if _n % 2 else "new")
if BENCH:
    USERS = {name: (pw, BENCH_HOSTS.get(host, host)) for name, (pw, host) in USERS.items()}
STORE_ONLY_USERS = {"ghost": "ghost-secret"}   # in the stores' passwd files, not in LDAP
SEED_LIMIT = 5000   # mailboxes seeded with their welcome message (see `up`)

# What `up` creates inside DIR (and all `up` removes from a previous run: other files in DIR,
# such as the tests' proxy configs and logs, are left alone).
MANAGED = ["slapd", "slapd-plain", "legacy", "new", "modern", "rogue", "token-stub", "tls", "lab.json",
           "admin.secret", "ldap.secret", "master.secret"]


# RFC 7919 ffdhe2048 (`openssl genpkey -genparam -algorithm DH -pkeyopt group:ffdhe2048`).
FFDHE2048 = """-----BEGIN DH PARAMETERS-----
MIIBCAKCAQEA//////////+t+FRYortKmq/cViAnPTzx2LnFg84tNpWp4TZBFGQz
+8yTnc4kmz75fS/jY2MMddj2gbICrsRhetPfHtXV/WVhJDP1H18GbtCFY2VVPe0a
87VXE15/V8k1mE8McODmi3fipona8+/och3xWKE2rec1MKzKT0g6eXq8CrGCsyT7
YdEIqUuyyOP7uWrat2DX9GgdT0Kj3jlN9K5W7edjcrsZCwenyO4KbXCeAvzhzffi
7MA0BM0oNC9hkXL+nOmFg/+OTxIy7vKBg8P+OxtMb61zO7X8vC7CIAXFjvGDfRaD
ssbzSibBsu/6iGtCOGEoXJf//////////wIBAg==
-----END DH PARAMETERS-----
"""


class LabError(Exception):
    pass


def log(message):
    print("lab: " + message, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------
# processes and ports

def port_open(port, host="127.0.0.1"):
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def port_bindable(port, host="127.0.0.1"):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((host, port))
        return True
    except OSError:
        return False
    finally:
        s.close()


def wait_until(predicate, timeout, interval=0.05):
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


def read_pid(path):
    try:
        with open(path) as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def cmdline(pid):
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            return f.read().replace(b"\0", b" ").decode("utf-8", "replace")
    except OSError:
        return ""


def alive(pid):
    """True for a live (non-zombie) process."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
        return state not in ("Z", "X")
    except (OSError, IndexError):
        return False


def children(pid):
    """Direct and indirect children of pid (from /proc), so nothing of a store survives it."""
    parent_of = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open("/proc/%s/stat" % entry) as f:
                    parent_of[int(entry)] = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                pass
    found, frontier = set(), {pid}
    while frontier:
        frontier = {p for p, parent in parent_of.items() if parent in frontier and p not in found}
        found |= frontier
    return found


def our_pid(pidfile, marker):
    """The pid in pidfile, only if that process is alive and its command line names marker
    (our config file): a stale pidfile must never make us signal an unrelated process."""
    pid = read_pid(pidfile)
    if pid and alive(pid) and marker in cmdline(pid):
        return pid
    return None


def signal_all(pids, signum):
    for p in pids:
        if alive(p):
            try:
                os.kill(p, signum)
            except ProcessLookupError:
                pass


def terminate(pid, timeout=STOP_TIMEOUT):
    """Stops a daemon and everything it started: SIGTERM pid, wait (bounded) for it to exit, then
    SIGTERM the descendants it left behind (Dovecot's master exits within ~1 s, but an imap
    process of an open session lingers ~10 s more before it notices), then SIGKILL stragglers."""
    if not pid or not alive(pid):
        return
    everyone = {pid} | children(pid)
    signal_all([pid], signal.SIGTERM)
    wait_until(lambda: not alive(pid), timeout)
    everyone |= children(pid)
    signal_all(everyone, signal.SIGTERM)
    if not wait_until(lambda: not any(alive(p) for p in everyone), 3.0):
        signal_all(everyone, signal.SIGKILL)
        wait_until(lambda: not any(alive(p) for p in everyone), 3.0)


def tail(path, lines=15):
    try:
        with open(path, errors="replace") as f:
            return "".join(f.readlines()[-lines:])
    except OSError:
        return "(no %s)" % path


# ---------------------------------------------------------------------------------------------
# slapd

def slapd_conf(d, name="slapd", syncprov=True):
    """`name` is the subdirectory of DIR; without syncprov, the server offers no RFC 4533 sync
    (as Active Directory or a 389-DS without it)."""
    text = """# Private slapd for the mailswitch lab (generated by scripts/lab.py).
include /etc/ldap/schema/core.schema
include /etc/ldap/schema/cosine.schema
include /etc/ldap/schema/inetorgperson.schema
# misc.schema: inetLocalMailRecipient with mailHost
include /etc/ldap/schema/misc.schema
pidfile {d}/{name}/slapd.pid
argsfile {d}/{name}/slapd.args
modulepath /usr/lib/ldap
moduleload back_mdb
moduleload syncprov

database mdb
maxsize 104857600
suffix "{suffix}"
rootdn "{admin}"
rootpw {rootpw}
directory {d}/{name}/data
index objectClass eq
index uid,mail eq
index entryCSN,entryUUID eq
# RFC 4533 change feed (a later feature follows mailHost changes with it)
overlay syncprov
syncprov-checkpoint 100 10

# The change feed's first refresh reads the whole subtree at once, as any RFC 4533 consumer
# does: the service account must not be held to the default size limit of 500 entries.
limits dn.exact="{service}" size=unlimited time=unlimited

# Passwords: only for binding. Everything else: read by the mailswitch service account.
# The rootdn bypasses ACLs and can write everything.
access to attrs=userPassword
    by anonymous auth
    by * none
access to *
    by dn.exact="{service}" read
    by anonymous auth
    by * none
""".format(d=d, name=name, suffix=SUFFIX, admin=ADMIN_DN, service=SERVICE_DN, rootpw=ADMIN_PASSWORD)
    if not syncprov:
        text = "\n".join(line for line in text.splitlines() if "syncprov" not in line) + "\n"
    return text


def ldif_value(attribute, value):
    """An LDIF line; base64 (`attr:: `) when the value is not a safe string (RFC 2849)."""
    raw = value.encode("utf-8")
    safe = (raw and all(0x20 <= b < 0x7f for b in raw) and raw[:1] not in (b" ", b":", b"<")
            and not raw.endswith(b" "))
    if safe:
        return "%s: %s\n" % (attribute, value)
    return "%s:: %s\n" % (attribute, base64.b64encode(raw).decode())


def users_ldif():
    out = ["dn: %s\nobjectClass: dcObject\nobjectClass: organization\ndc: example\no: Example\n" % SUFFIX,
           "dn: %s\nobjectClass: organizationalUnit\nou: people\n" % PEOPLE,
           "dn: %s\nobjectClass: simpleSecurityObject\nobjectClass: organizationalRole\ncn: mailswitch\n%s"
           % (SERVICE_DN, ldif_value("userPassword", SERVICE_PASSWORD))]
    for name, (password, host) in USERS.items():
        entry = ("dn: uid=%s,%s\nobjectClass: inetOrgPerson\nobjectClass: inetLocalMailRecipient\n"
                 "uid: %s\ncn: %s\nsn: %s\nmail: %s@example.org\n" % (name, PEOPLE, name, name.title(), name, name))
        entry += ldif_value("userPassword", password)
        if host is not None:
            entry += "mailHost: %s\n" % host
        out.append(entry)
    return "\n".join(out)


def ldap_answers(d, uri=LDAP_URI):
    return subprocess.run(["ldapsearch", "-x", "-H", uri, "-D", SERVICE_DN, "-y", os.path.join(d, "ldap.secret"),
                           "-b", PEOPLE, "-s", "base", "-o", "nettimeout=2", "-l", "2", "dn"],
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode == 0


def start_slapd(d, name="slapd", port=LDAP_PORT):
    conf = os.path.join(d, name, "slapd.conf")
    errors = os.path.join(d, name, "slapd.stderr")
    with open(errors, "w") as err:
        # slapd daemonizes (its child points stdio at /dev/null); stderr shows config errors.
        result = subprocess.run(["slapd", "-f", conf, "-h", "ldap://%s:%d/" % (LDAP_HOST, port)],
                                stdin=subprocess.DEVNULL, stdout=err, stderr=err)
    if result.returncode != 0:
        raise LabError("slapd failed to start (exit %d):\n%s" % (result.returncode, tail(errors)))
    uri = "ldap://%s:%d" % (LDAP_HOST, port)
    if not wait_until(lambda: ldap_answers(d, uri), START_TIMEOUT):
        raise LabError("slapd did not answer an ldapsearch on %s within %ds:\n%s"
                       % (uri, START_TIMEOUT, tail(errors)))


def slapd_pid(d, name="slapd"):
    return our_pid(os.path.join(d, name, "slapd.pid"), os.path.join(d, name, "slapd.conf"))


def start_plain_slapd(d):
    """A second slapd with the same users and no syncprov, on PLAIN_LDAP_PORT."""
    base = os.path.join(d, "slapd-plain")
    if slapd_pid(d, "slapd-plain"):
        return
    shutil.rmtree(base, ignore_errors=True)
    os.makedirs(os.path.join(base, "data"))
    conf = os.path.join(base, "slapd.conf")
    with open(conf, "w") as f:
        f.write(slapd_conf(d, "slapd-plain", syncprov=False))
    result = subprocess.run(["slapadd", "-q", "-f", conf, "-l", os.path.join(d, "slapd", "users.ldif")],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    if result.returncode != 0:
        raise LabError("slapadd failed:\n" + result.stdout.decode("utf-8", "replace"))
    start_slapd(d, "slapd-plain", PLAIN_LDAP_PORT)


# ---------------------------------------------------------------------------------------------
# test PKI (openssl CLI)

CERT_DAYS = 30
LOOPBACK_NAMES = ["DNS:localhost", "IP:127.0.0.1"]
SERVER_USAGE = {"rsa": "critical, digitalSignature, keyEncipherment", "ec": "critical, digitalSignature"}
# name -> (key type, subject CN, subjectAltNames or None, role); role is "ca", "server",
# "client", or "self-signed server". All but ca and self-signed ones are signed by the CA.
CERTS = {
    "ca": ("rsa", "mailswitch lab CA", None, "ca"),
    "mail": ("rsa", "mail.example.test", ["DNS:mail.example.test"] + LOOPBACK_NAMES, "server"),
    "mail-ec": ("ec", "mail.example.test", ["DNS:mail.example.test"] + LOOPBACK_NAMES, "server"),
    "other": ("rsa", "imap.other.test", ["DNS:imap.other.test"], "server"),
    "legacy": ("rsa", "legacy.store.test", ["DNS:legacy.store.test"] + LOOPBACK_NAMES, "server"),
    "new": ("rsa", "new.store.test", ["DNS:new.store.test"] + LOOPBACK_NAMES, "server"),
    "modern": ("rsa", "modern.store.test", ["DNS:modern.store.test"] + LOOPBACK_NAMES, "server"),
    "rogue": ("rsa", "legacy.store.test", ["DNS:legacy.store.test", "IP:127.0.0.1"], "self-signed server"),
    "client": ("rsa", "mailswitch-proxy", None, "client"),
}
if BENCH:
    del CERTS["modern"]
    for _name in BENCH_HOSTS:
        _kind, _cn, _sans, _role = CERTS[_name]
        CERTS[_name] = (_kind, _cn, _sans + ["DNS:" + BENCH_SERVER_NAME, "IP:" + BENCH_HOSTS[_name]], _role)


def openssl(*args):
    result = subprocess.run(["openssl"] + list(args), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    if result.returncode != 0:
        raise LabError("openssl %s failed (exit %d):\n%s" % (args[0], result.returncode,
                                                           result.stdout.decode("utf-8", "replace")))


def cert_config(name):
    """An openssl config for `req` (subject) and `x509 -extfile` / `req -extensions` (section ext)."""
    kind, cn, sans, role = CERTS[name]
    org = "mailswitch rogue" if role == "self-signed server" else "mailswitch lab"
    lines = ["[req]", "distinguished_name = dn", "prompt = no", "utf8 = yes", "",
             "[dn]", "O = " + org, "CN = " + cn, "", "[ext]", "subjectKeyIdentifier = hash"]
    if role == "ca":
        lines += ["basicConstraints = critical, CA:TRUE", "keyUsage = critical, keyCertSign, cRLSign"]
    else:
        lines += ["basicConstraints = CA:FALSE"]
        if role != "self-signed server":
            lines += ["authorityKeyIdentifier = keyid, issuer"]
        if role == "client":
            lines += ["keyUsage = critical, digitalSignature", "extendedKeyUsage = clientAuth"]
        else:
            lines += ["keyUsage = " + SERVER_USAGE[kind], "extendedKeyUsage = serverAuth"]
    if sans:
        lines.append("subjectAltName = " + ", ".join(sans))
    return "\n".join(lines) + "\n"


def in_parallel(function, items):
    """function(item) for every item, on threads (openssl runs as child processes); re-raises
    the first error."""
    errors = []
    def run(item):
        try:
            function(item)
        except BaseException as error:   # noqa: B036 - handed to the caller below
            errors.append(error)
    threads = [threading.Thread(target=run, args=(item,)) for item in items]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]


def make_pki(d):
    """DIR/tls: the lab CA and the certificates in CERTS (about 1 s, mostly RSA key generation)."""
    tls = os.path.join(d, "tls")
    work = os.path.join(tls, "work")
    os.makedirs(work)
    os.chmod(tls, 0o755)
    def path(name, ext):
        return os.path.join(tls, name + "." + ext)
    def key(name):
        if CERTS[name][0] == "ec":
            openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", path(name, "key"))
        else:
            openssl("genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", path(name, "key"))
        os.chmod(path(name, "key"), 0o600)
        with open(os.path.join(work, name + ".cnf"), "w") as f:
            f.write(cert_config(name))
    def cert(name):
        cnf = os.path.join(work, name + ".cnf")
        serial = "0x%x" % (secrets.randbits(63) | 1 << 62)   # distinct, positive serials
        common = ["-days", str(CERT_DAYS), "-sha256", "-set_serial", serial, "-out", path(name, "pem")]
        if CERTS[name][3] in ("ca", "self-signed server"):
            openssl("req", "-new", "-x509", "-config", cnf, "-extensions", "ext", "-key", path(name, "key"), *common)
        else:
            csr = os.path.join(work, name + ".csr")
            openssl("req", "-new", "-config", cnf, "-key", path(name, "key"), "-out", csr)
            openssl("x509", "-req", "-in", csr, "-CA", path("ca", "pem"), "-CAkey", path("ca", "key"),
                    "-extfile", cnf, "-extensions", "ext", *common)
        os.chmod(path(name, "pem"), 0o644)
    in_parallel(key, list(CERTS))
    cert("ca")
    in_parallel(cert, [name for name in CERTS if name != "ca"])
    subprocess.run(["rm", "-rf", "--one-file-system", work], check=True)


def tls_state(d):
    tls = os.path.join(d, "tls")
    files = {"ca": "ca.pem", "ca_key": "ca.key", "cert": "mail.pem", "key": "mail.key",
             "ec_cert": "mail-ec.pem", "ec_key": "mail-ec.key", "other_cert": "other.pem", "other_key": "other.key",
             "client_cert": "client.pem", "client_key": "client.key", "rogue_cert": "rogue.pem",
             "rogue_key": "rogue.key"}
    state = {field: os.path.join(tls, name) for field, name in files.items()}
    state.update({"dir": tls, "server_name": "mail.example.test", "other_server_name": "imap.other.test"})
    return state


# ---------------------------------------------------------------------------------------------
# Dovecot stores

def ensure_vmail():
    try:
        return pwd.getpwnam("vmail")
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", "vmail"],
                       check=True)
        return pwd.getpwnam("vmail")


PASSDB = """passdb {
  driver = passwd-file
  args = scheme=PLAIN username_format=%%u %(base)s/passwd
}
"""

# modern: SASL PLAIN with an authzid is a master login when the authcid is in master-passwd
# (pass = yes: the user must then exist in the passdb below); the password passdb answers the
# password mechanisms only and the oauth2 one the token mechanisms only (Dovecot 2.3's passdb
# `mechanisms` filter), so a token is never tried as a password nor a password as a token.
MODERN_MECHANISMS = "plain login oauthbearer xoauth2"
MODERN_PASSDBS = """passdb {
  driver = passwd-file
  master = yes
  pass = yes
  args = scheme=PLAIN username_format=%%u %(base)s/master-passwd
}
passdb {
  driver = passwd-file
  mechanisms = plain login
  args = scheme=PLAIN username_format=%%u %(base)s/passwd
}
passdb {
  driver = oauth2
  mechanisms = xoauth2 oauthbearer
  args = %(base)s/dovecot-oauth2.conf.ext
}
# Log why a login failed (never the password or token).
auth_verbose = yes
"""

# modern's oauth2 passdb (Dovecot 2.3): RFC 7662 introspection by POST (token=...) to the
# token stub; the answer's "username" must equal the login name (the OAUTHBEARER a= / XOAUTH2
# user=, lowercased) and "active" must be true.
OAUTH2_CONF = """# Generated by scripts/lab.py: the modern store's oauth2 passdb.
introspection_mode = post
introspection_url = %(url)s
username_attribute = username
active_attribute = active
active_value = true
timeout_msecs = 5000
"""


def dovecot_conf(d, name, vmail):
    base = os.path.join(d, name)
    ports = ALL_STORES[name]
    cert = os.path.join(d, "tls", STORE_TLS[name][0])
    return """# Private Dovecot store "{name}" for the mailswitch lab (generated by scripts/lab.py).
instance_name = mailswitch-lab-{name}
base_dir = {base}/run
state_dir = {base}/state
log_path = {base}/dovecot.log
info_log_path = {base}/dovecot.log
log_timestamp = "%Y-%m-%d %H:%M:%S "
protocols = imap pop3
listen = {host}
# TLS: implicit on the imaps/pop3s ports, STARTTLS/STLS offered on the plain ones (where
# plaintext logins stay allowed). The config process reads the files as root at start.
ssl = yes
ssl_cert = <{cert}.pem
ssl_key = <{cert}.key
ssl_dh = <{d}/tls/dh.pem
disable_plaintext_auth = no
auth_mechanisms = {mechanisms}
# Honour ID x-originating-ip / XCLIENT from the proxy (the log then shows rip=<client>).
login_trusted_networks = 127.0.0.0/8
# ... and a PROXY protocol header on the imap_haproxy listener (IMAP port + 1).
haproxy_trusted_networks = 127.0.0.0/8
login_greeting = {name} store ready.
# After login, CAPABILITY names the store that answered.
imap_capability = +X-STORE-{upper}
mail_location = maildir:{base}/mail/%u
first_valid_uid = {uid}
mail_uid = {uid}
mail_gid = {gid}
default_login_user = dovenull
default_internal_user = dovecot
# The move tests hold hundreds of sessions per store, many per user, all from 127.0.0.1:
# Dovecot's defaults (100 processes per service, 10 connections per user and address)
# would refuse them.
default_process_limit = 1000
default_client_limit = 4000
mail_max_userip_connections = 1000
pop3_uidl_format = %08Xu%08Xv
# Failed logins answer after auth_failure_delay (2 s, the default); the growing per-IP
# penalty (up to 15 s) is off (see service anvil below) so wrong-password tests stay fast
# and never run into a proxy's backend login timeout.
{passdbs}userdb {{
  driver = static
  args = uid={uid} gid={gid} home={base}/home/%u
}}
service anvil {{
  unix_listener anvil-auth-penalty {{
    mode = 0
  }}
}}
service imap-login {{
  inet_listener imap {{
    address = {host}
    port = {imap}
  }}
  inet_listener imaps {{
    address = {host}
    port = {imaps}
    ssl = yes
  }}
  inet_listener imap_haproxy {{
    address = {host}
    port = {imap_haproxy}
    haproxy = yes
  }}
}}
service pop3-login {{
  inet_listener pop3 {{
    address = {host}
    port = {pop3}
  }}
  inet_listener pop3s {{
    address = {host}
    port = {pop3s}
    ssl = yes
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
""".format(name=name, upper=name.upper(), base=base, uid=vmail.pw_uid, gid=vmail.pw_gid, d=d, cert=cert,
           mechanisms=MODERN_MECHANISMS if name == "modern" else "plain login",
           passdbs=(MODERN_PASSDBS if name == "modern" else PASSDB) % {"base": base},
           imap=ports["imap"], pop3=ports["pop3"], imaps=ports["imaps"], pop3s=ports["pop3s"], imap_haproxy=ports["imap"] + 1,
           host=STORE_HOST[name]) + (BENCH_STORE_TUNING.format(cpus=os.cpu_count() or 1) if BENCH else "")


# Bench mode: the stores are what every system ends at (direct access included), so they are
# made fast enough that the proxies, not the stores, make the difference: login processes in
# high-performance mode (one process per CPU, many connections each), mail processes reused
# for further sessions (Dovecot's documented trade of isolation for speed), and limits sized
# for thousands of sessions, all from 127.0.0.1 (the proxies) or as the same user.
BENCH_STORE_TUNING = """# Bench mode (MAILSWITCH_LAB_BENCH=1).
mail_max_userip_connections = 100000
service imap-login {{
  service_count = 0
  process_min_avail = {cpus}
  client_limit = 10000
}}
service pop3-login {{
  service_count = 0
  process_min_avail = {cpus}
  client_limit = 10000
}}
service imap {{
  service_count = 1000
  process_min_avail = {cpus}
  process_limit = 5000
}}
service pop3 {{
  service_count = 1000
  process_min_avail = {cpus}
  process_limit = 5000
}}
service auth {{
  client_limit = 12000
}}
"""


def seed_mailbox(base, user, store, vmail):
    """INBOX with exactly one small message saying which store it lives on. `user` is the
    store's login name: "alice", or on modern "alice@example.org"."""
    maildir = os.path.join(base, "mail", user)
    for sub in ("cur", "new", "tmp"):
        os.makedirs(os.path.join(maildir, sub), exist_ok=True)
    name = user.split("@", 1)[0]
    message = ("From: lab@example.org\r\nTo: %s@example.org\r\nSubject: welcome to %s\r\nX-Store: %s\r\n"
               "Date: Mon, 23 Nov 2026 00:00:00 +0000\r\nMessage-ID: <welcome-%s-%s@example.org>\r\n\r\n"
               "This mailbox lives on the %s store.\r\n" % (name, store, store, store, name, store)).encode()
    with open(os.path.join(maildir, "new", "1700000000.welcome.lab,S=%d" % len(message)), "wb") as f:
        f.write(message)
    for root, dirs, files in os.walk(maildir):
        for entry in dirs + files:
            os.chown(os.path.join(root, entry), vmail.pw_uid, vmail.pw_gid)
    os.chown(maildir, vmail.pw_uid, vmail.pw_gid)


def store_pid(d, name):
    return our_pid(os.path.join(d, name, "run", "master.pid"), os.path.join(d, name, "dovecot.conf"))


def start_store(d, name):
    base = os.path.join(d, name)
    conf = os.path.join(base, "dovecot.conf")
    if not os.path.exists(conf):
        raise LabError("no lab in %s (run: lab.py up --dir %s)" % (d, d))
    if store_pid(d, name):
        log("store %s is already running" % name)
        return
    ports = ALL_STORES[name]
    host = STORE_HOST[name]
    for port in ports.values():
        if port_open(port, host) or not port_bindable(port, host):
            raise LabError("port %d (store %s) is already in use" % (port, name))
    stdout = os.path.join(base, "dovecot.stdout")
    with open(stdout, "a") as out:
        process = subprocess.Popen(["dovecot", "-F", "-c", conf], stdin=subprocess.DEVNULL, stdout=out,
                                   stderr=out, start_new_session=True)
    def ready():
        if process.poll() is not None:
            raise LabError("Dovecot store %s exited with status %d:\n%s%s" % (
                name, process.returncode, tail(stdout), tail(os.path.join(base, "dovecot.log"))))
        return all(port_open(port, host) for port in ports.values())
    if not wait_until(ready, START_TIMEOUT):
        raise LabError("Dovecot store %s did not accept connections on %s within %ds:\n%s"
                       % (name, "/".join(str(p) for p in ports.values()), START_TIMEOUT,
                          tail(os.path.join(base, "dovecot.log"))))


def stop_store(d, name):
    terminate(store_pid(d, name))
    ports, host = ALL_STORES[name], STORE_HOST[name]
    if not wait_until(lambda: not any(port_open(port, host) for port in ports.values()), STOP_TIMEOUT):
        raise LabError("store %s still accepts connections after stopping" % name)


# ---------------------------------------------------------------------------------------------
# token introspection stub (modern's OAuth)

def token_stub_pid(d):
    return our_pid(os.path.join(d, "token-stub", "stub.pid"), os.path.join(d, "token-stub", "users"))


def start_token_stub(d):
    base = os.path.join(d, "token-stub")
    users = os.path.join(base, "users")
    if not os.path.exists(users):
        raise LabError("no lab in %s (run: lab.py up --dir %s)" % (d, d))
    if token_stub_pid(d):
        log("the token stub is already running")
        return
    if port_open(TOKEN_STUB_PORT) or not port_bindable(TOKEN_STUB_PORT):
        raise LabError("port %d (token stub) is already in use" % TOKEN_STUB_PORT)
    stderr = os.path.join(base, "stub.stderr")
    with open(stderr, "a") as err:
        # --users: its path is also what identifies this lab's stub in /proc (token_stub_pid).
        process = subprocess.Popen([sys.executable, os.path.abspath(TOKEN_STUB), "--port", str(TOKEN_STUB_PORT),
                                    "--domain", USER_DOMAIN, "--users", users, "--log", os.path.join(base, "requests.log")],
                                   stdin=subprocess.DEVNULL, stdout=err, stderr=err, start_new_session=True)
    with open(os.path.join(base, "stub.pid"), "w") as f:
        f.write("%d\n" % process.pid)
    def ready():
        if process.poll() is not None:
            raise LabError("the token stub exited with status %d:\n%s" % (process.returncode, tail(stderr)))
        return port_open(TOKEN_STUB_PORT)
    if not wait_until(ready, START_TIMEOUT):
        raise LabError("the token stub did not accept connections on %d within %ds:\n%s"
                       % (TOKEN_STUB_PORT, START_TIMEOUT, tail(stderr)))


def stop_token_stub(d):
    terminate(token_stub_pid(d))
    if not wait_until(lambda: not port_open(TOKEN_STUB_PORT), STOP_TIMEOUT):
        raise LabError("the token stub still accepts connections after stopping")


# ---------------------------------------------------------------------------------------------
# commands

def down(d):
    pids = ([store_pid(d, name) for name in {**ALL_STORES, **MODERN}] + [slapd_pid(d), slapd_pid(d, "slapd-plain")]
            + [token_stub_pid(d)])
    # In parallel: each daemon takes 2-3 s to exit after SIGTERM.
    threads = [threading.Thread(target=terminate, args=(pid,)) for pid in pids if pid]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def store_state(d, name):
    ports = ALL_STORES[name]
    state = {protocol: "%s:%d" % (STORE_HOST[name], port) for protocol, port in ports.items()}
    state.update({"log": os.path.join(d, name, "dovecot.log"), "server_name": STORE_TLS[name][1],
                  "cert": os.path.join(d, "tls", STORE_TLS[name][0] + ".pem")})
    return state


def write_state(d, pids):
    users = {name: {"password": pw, "mailHost": host, "in_ldap": True} for name, (pw, host) in USERS.items()}
    users.update({name: {"password": pw, "mailHost": None, "in_ldap": False} for name, pw in STORE_ONLY_USERS.items()})
    state = {
        "ldap_uri": LDAP_URI,
        "base": PEOPLE,
        "bind_dn": SERVICE_DN,
        "bind_password_file": os.path.join(d, "ldap.secret"),
        "admin_dn": ADMIN_DN,
        "admin_password_file": os.path.join(d, "admin.secret"),
        "stores": {name: store_state(d, name) for name in STORES},
        "rogue": store_state(d, "rogue"),
        "tls": tls_state(d),
        "users": users,
        "pids": pids,
    }
    if BENCH:
        state["bench"] = True
        state["bench_server_name"] = BENCH_SERVER_NAME
    else:
        # modern's identity features: login names are addresses, a master user, OAuth tokens.
        state["modern"] = {
            "login_name": "%n@" + USER_DOMAIN,   # in mailswitch's login_name template terms
            "master_user": MASTER_USER,
            "master_password_file": os.path.join(d, "master.secret"),
            "oauth_mechanisms": ["OAUTHBEARER", "XOAUTH2"],
            "token_format": "token-<user>",
        }
        state["token_stub"] = {
            "introspection_url": TOKEN_STUB_URL,
            "port": TOKEN_STUB_PORT,
            "token_prefix": "token-",
            "domain": USER_DOMAIN,
            "requests_log": os.path.join(d, "token-stub", "requests.log"),
        }
    tmp = os.path.join(d, "lab.json.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(state, f, indent=2, ensure_ascii=False)
        f.write("\n")
    os.replace(tmp, os.path.join(d, "lab.json"))


def update_state(d, change):
    """Applies change(dict) to DIR/lab.json, if there is one."""
    path = os.path.join(d, "lab.json")
    try:
        with open(path, encoding="utf-8") as f:
            state = json.load(f)
    except (OSError, ValueError):
        return
    change(state)
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(state, f, indent=2, ensure_ascii=False)
        f.write("\n")
    os.replace(tmp, path)


def write_secret(path, value):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(value)   # no trailing newline


def up(d):
    if os.path.isdir(d):
        down(d)   # a lab already running from DIR is replaced
        for entry in MANAGED:
            path = os.path.join(d, entry)
            if os.path.isdir(path) and not os.path.islink(path):
                subprocess.run(["rm", "-rf", "--one-file-system", path], check=True)
            elif os.path.lexists(path):
                os.remove(path)
    # not rogue's: started later
    ports = [(LDAP_HOST, LDAP_PORT)] + [(STORE_HOST[n], p) for n, s in STORES.items() for p in s.values()]
    if not BENCH:
        ports.append(("127.0.0.1", TOKEN_STUB_PORT))
    for host, port in ports:
        if port_open(port, host) or not port_bindable(port, host):
            raise LabError("port %d is already in use (another lab or demo running? "
                           "`lab.py down --dir OTHERDIR`, or see `ss -ltnp 'sport = :%d'`)" % (port, port))
    for tool in ("slapd", "slapadd", "ldapsearch", "ldapmodify", "dovecot", "openssl"):
        if not shutil.which(tool):
            raise LabError("%s not found: run scripts/install-deps" % tool)
    vmail = ensure_vmail()
    os.makedirs(os.path.join(d, "slapd", "data"))
    os.chmod(d, 0o755)   # Dovecot's unprivileged processes must traverse it
    make_pki(d)
    with open(os.path.join(d, "tls", "dh.pem"), "w") as f:
        f.write(FFDHE2048)   # Dovecot's ssl_dh (only used for DHE cipher suites)
    write_secret(os.path.join(d, "admin.secret"), ADMIN_PASSWORD)
    write_secret(os.path.join(d, "ldap.secret"), SERVICE_PASSWORD)
    if not BENCH:
        write_secret(os.path.join(d, "master.secret"), MASTER_PASSWORD)
    conf = os.path.join(d, "slapd", "slapd.conf")
    with open(conf, "w") as f:
        f.write(slapd_conf(d))
    ldif = os.path.join(d, "slapd", "users.ldif")
    with open(ldif, "w", encoding="utf-8") as f:
        f.write(users_ldif())
    result = subprocess.run(["slapadd", "-q", "-f", conf, "-l", ldif], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    if result.returncode != 0:
        raise LabError("slapadd failed:\n" + result.stdout.decode("utf-8", "replace"))
    start_slapd(d)

    store_users = {name: pw for name, (pw, _) in USERS.items()}
    store_users.update(STORE_ONLY_USERS)
    if not BENCH:
        # The token stub (modern's oauth2 passdb asks it): tokens of every store user are active.
        os.makedirs(os.path.join(d, "token-stub"))
        with open(os.path.join(d, "token-stub", "users"), "w", encoding="utf-8") as f:
            f.write("".join(user + "\n" for user in store_users))
        start_token_stub(d)
    for name in ALL_STORES:   # rogue's directory too; start-rogue starts it
        base = os.path.join(d, name)
        for sub in ("run", "state", "mail", "home"):
            os.makedirs(os.path.join(base, sub))
        for sub in ("mail", "home"):
            os.chown(os.path.join(base, sub), vmail.pw_uid, vmail.pw_gid)
        # modern knows the users by address only.
        logins = {("%s@%s" % (user, USER_DOMAIN) if name == "modern" else user): pw for user, pw in store_users.items()}
        with open(os.path.join(base, "passwd"), "w", encoding="utf-8") as f:
            for user, pw in logins.items():
                assert ":" not in pw and "\n" not in pw
                f.write("%s:{PLAIN}%s::::::\n" % (user, pw))
        if name == "modern":
            with open(os.path.join(base, "master-passwd"), "w", encoding="utf-8") as f:
                f.write("%s:{PLAIN}%s::::::\n" % (MASTER_USER, MASTER_PASSWORD))
            with open(os.path.join(base, "dovecot-oauth2.conf.ext"), "w") as f:
                f.write(OAUTH2_CONF % {"url": TOKEN_STUB_URL})
        with open(os.path.join(base, "dovecot.conf"), "w") as f:
            f.write(dovecot_conf(d, name, vmail))
        # A large lab (the replica benchmark's 100,000 users) seeds the first few thousand
        # mailboxes only: Dovecot creates the others' INBOX at their first login.
        for user in list(logins)[:SEED_LIMIT]:
            seed_mailbox(base, user, name, vmail)
        if name in STORES:
            start_store(d, name)

    pids = {"slapd": slapd_pid(d), **{name: store_pid(d, name) for name in STORES}}
    if not BENCH:
        pids["token_stub"] = token_stub_pid(d)
    write_state(d, pids)
    stores = ["%s (%sIMAP %d, POP3 %d, IMAPS %d, POP3S %d)" % (
        name, STORE_HOST[name] + " " if BENCH else "", p["imap"], p["pop3"], p["imaps"], p["pop3s"])
        for name, p in STORES.items()]
    print("lab up in %s: slapd %s, stores %s and %s%s; lab CA %s" % (
        d, LDAP_URI, ", ".join(stores[:-1]), stores[-1], "" if BENCH else "; token stub " + TOKEN_STUB_URL,
        os.path.join(d, "tls", "ca.pem")))


def flip(d, users, value, offline=False, uri=LDAP_URI):
    """One ldapmodify (or, offline, one slapmodify) run for every user in the comma-separated list."""
    names = [u for u in users.split(",") if u]
    changes = []
    for user in names:
        dn = "uid=%s,%s" % (user, PEOPLE)
        if value == "-":
            changes.append("dn: %s\nchangetype: modify\ndelete: mailHost\n" % dn)
        else:
            changes.append("dn: %s\nchangetype: modify\nreplace: mailHost\n%s" % (dn, ldif_value("mailHost", value)))
    if offline:
        if slapd_pid(d):
            raise LabError("offline-flip needs slapd stopped (lab.py stop-slapd)")
        command = ["slapmodify", "-q", "-f", os.path.join(d, "slapd", "slapd.conf")]
    else:
        # -c: go on past a user without mailHost when deleting it (noSuchAttribute).
        command = ["ldapmodify", "-x", "-c", "-H", uri, "-D", ADMIN_DN, "-y", os.path.join(d, "admin.secret")]
    result = subprocess.run(command, input="\n".join(changes).encode(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    # 16 = noSuchAttribute: deleting a mailHost that is already absent is fine.
    if result.returncode not in (0, 16) or (result.returncode == 16 and value != "-"):
        raise LabError("%s %s failed (exit %d): %s" % (command[0], users, result.returncode,
                                                     result.stderr.decode("utf-8", "replace").strip()))
    def record(state):
        for user in names:
            if user in state.get("users", {}):
                state["users"][user]["mailHost"] = None if value == "-" else value
    update_state(d, record)
    print("%s: mailHost %s" % (",".join(names) if len(names) <= 5 else "%d users" % len(names),
                               "deleted" if value == "-" else "= " + value))


def stop_slapd(d):
    pid = slapd_pid(d)
    if pid:
        terminate(pid)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["up", "down", "flip", "offline-flip", "stop-store", "start-store",
                                            "start-rogue", "stop-rogue", "stop-slapd", "start-slapd",
                                            "start-plain-slapd", "start-token-stub", "stop-token-stub"])
    parser.add_argument("args", nargs="*")
    parser.add_argument("--dir", required=True, help="lab directory (created by up)")
    parser.add_argument("--plain", action="store_true", help="flip: on the slapd without syncprov")
    options = parser.parse_args()
    d = os.path.abspath(options.dir)
    # slapd, slapadd and dovecot live in /usr/sbin, which a non-login PATH may lack.
    os.environ["PATH"] = os.environ.get("PATH", "/usr/bin:/bin") + ":/usr/sbin:/sbin"
    try:
        if options.command == "up":
            if options.args:
                parser.error("up takes no arguments")
            try:
                up(d)
            except BaseException:
                down(d)   # never leave half a lab running
                raise
        elif options.command == "down":
            if os.path.isdir(d):
                down(d)
        elif options.command in ("flip", "offline-flip"):
            if len(options.args) != 2:
                parser.error("usage: lab.py %s USER[,USER...] VALUE --dir DIR" % options.command)
            flip(d, *options.args, offline=options.command == "offline-flip",
                 uri="ldap://%s:%d" % (LDAP_HOST, PLAIN_LDAP_PORT) if options.plain else LDAP_URI)
        elif options.command == "start-plain-slapd":
            start_plain_slapd(d)
        elif options.command in ("stop-slapd", "start-slapd"):
            if options.args:
                parser.error("%s takes no arguments" % options.command)
            if options.command == "stop-slapd":
                stop_slapd(d)
            else:
                start_slapd(d)
                update_state(d, lambda state: state.setdefault("pids", {}).update({"slapd": slapd_pid(d)}))
        elif options.command in ("start-token-stub", "stop-token-stub"):
            if options.args:
                parser.error("%s takes no arguments" % options.command)
            if BENCH:
                raise LabError("bench mode has no token stub")
            if options.command == "start-token-stub":
                start_token_stub(d)
            else:
                stop_token_stub(d)
            update_state(d, lambda state: state.setdefault("pids", {}).update({"token_stub": token_stub_pid(d)}))
        elif options.command in ("start-rogue", "stop-rogue"):
            if options.args:
                parser.error("%s takes no arguments" % options.command)
            if options.command == "start-rogue":
                start_store(d, "rogue")
            else:
                stop_store(d, "rogue")
            update_state(d, lambda state: state.setdefault("pids", {}).update({"rogue": store_pid(d, "rogue")}))
        else:
            if len(options.args) != 1 or options.args[0] not in STORES:
                parser.error("usage: lab.py %s %s --dir DIR" % (options.command, "|".join(STORES)))
            if options.command == "stop-store":
                stop_store(d, options.args[0])
            else:
                name = options.args[0]
                start_store(d, name)
                update_state(d, lambda state: state.setdefault("pids", {}).update({name: store_pid(d, name)}))
    except LabError as error:
        log(str(error))
        sys.exit(1)


if __name__ == "__main__":
    main()
