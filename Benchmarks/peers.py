#!/usr/bin/env python3
"""The systems under test for the benchmarks, all routing from the bench lab's one LDAP data set.

Needs a lab started in bench mode (scripts/lab.py with MAILSWITCH_LAB_BENCH=1): stores "legacy"
on 127.0.0.2 and "new" on 127.0.0.3 (same port numbers), every user's mailHost its store's
address. Needs root (as the lab does).

  peers.py up --lab LABDIR --dir PEERDIR [--systems mailswitch,perdition,dovecot]
                                 start each system, wait until every endpoint listens, write
                                 PEERDIR/peers.json
  peers.py down --dir PEERDIR    stop everything started from PEERDIR (never fails if down)
  peers.py check --dir PEERDIR   log in as user0001 (legacy) and user0002 (new) through every
                                 system and directly, IMAP and POP3, plain and TLS, and check
                                 that each landed on its store; with a system that checks
                                 passwords itself (below) also a wrong password through it:
                                 refused as an authentication failure and absent from both
                                 stores' logs (the same attempt directly, first, must be in them)
  peers.py cpu --dir PEERDIR     CPU seconds used so far by each system (all its processes)

The systems (ports = base + the lab's port offset, all on 127.0.0.1):
  mailswitch  .build/release/mailswitch (or $MAILSWITCH_BINARY), its config made from
              config/mailswitch.example.yaml: backends named "127.0.0.2" and "127.0.0.3"
              IMAP 4143 (STARTTLS offered), POP3 4110 (STLS offered), IMAPS 4993, POP3S 4995
  perdition   Perdition 2.2, LDAP map (libperditiondb_ldap): four daemons, one per endpoint
              (perdition.imap4/pop3 with tls_listen, perdition.imap4s/pop3s with ssl_listen),
              a process forked per connection (Perdition's only model), a new LDAP connection
              and bind per login; clients may use IMAP LOGIN and POP3 USER/PASS only. Its LOGIN
              reply carries no [CAPABILITY] (ask CAPABILITY after login to see the store), it
              writes multi-line replies in several writes without TCP_NODELAY (Nagle and
              delayed ACKs can add ~40 ms to a reply), and its TLS key exchange is P-256
              where the others use X25519: all as shipped, nothing to configure.
              IMAP 5143, POP3 5110, IMAPS 5993, POP3S 5995
  dovecot     Dovecot 2.3 as a proxy: passdb ldap (proxy=y, nopassword=y, host=mailHost: the store
              checks the password, as with the other two), login processes in high-performance
              mode (one per CPU, many connections each)
              IMAP 6143, POP3 6110, IMAPS 6993, POP3S 6995
  direct      the stores themselves: a user's endpoint is its mailHost with the stores' ports
Only with --systems, the same proxies checking every password themselves before any store sees
it (the store checks it again): a simple bind as the user's entry, no cache of passwords.
  mailswitch-verify  mailswitch with routing.verify_credentials: ldap_bind (verify_connections
              and verify_cache_ttl left at their defaults: 4 bind connections, no cache)
              IMAP 7143, POP3 7110, IMAPS 7993, POP3S 7995
  dovecot-verify     Dovecot's proxy with auth binds: passdb ldap with auth_bind = yes, the DN
              found by pass_filter (a DN template ignores pass_attrs, mailHost too), then a
              bind as it with the client's password; proxy=y without nopassword
              IMAP 7243, POP3 7210, IMAPS 8093, POP3S 8095
All the proxies serve the same RSA 2048 certificate (LABDIR/tls/mail.pem, name
mail.example.test), accept TLS 1.2 and up, and talk plaintext to the stores.

From Python (Benchmarks/bench.py): up(), down(), roots(), tree_pids(), cpu_seconds(),
bench_users(), endpoint_for(), server_name().
"""
import argparse
import glob
import json
import os
import pwd
import re
import resource
import signal
import socket
import subprocess
import sys
import threading
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "scripts"))
# The lab's process and file helpers (scripts/lab.py), shared rather than copied.
from lab import alive, cmdline, read_pid, signal_all, tail, wait_until  # noqa: E402

EXAMPLE_CONFIG = os.path.join(REPO, "config", "mailswitch.example.yaml")
DEFAULT_MAILSWITCH = os.path.join(REPO, ".build", "release", "mailswitch")
PERDITION_LDAP = (glob.glob("/usr/lib/*/libperditiondb_ldap.so.0") or ["/usr/lib/libperditiondb_ldap.so.0"])[0]
# Dovecot's LDAP passdb driver (package dovecot-ldap). Without it the auth process dies at
# start and every login is "Auth process broken", which reads like a Dovecot failure.
DOVECOT_LDAP_DRIVER = "/usr/lib/dovecot/modules/auth/libauthdb_ldap.so"
SYSTEMS = ["mailswitch", "perdition", "dovecot"]          # the default set
# Opt-in (--systems): a proxy that checks every password with an LDAP bind -> the system it is
# otherwise the same as.
VERIFYING = {"mailswitch-verify": "mailswitch", "dovecot-verify": "dovecot"}
KNOWN = SYSTEMS + list(VERIFYING)
ENDPOINTS = ["imap", "pop3", "imaps", "pop3s"]
# With the bench lab's offset of 300 the verifying systems' ports (7443, 7410, 8293, 8295 and
# 7543, 7510, 8393, 8395) are clear of the relays (7143..7393), the tests' moved listeners
# (8143.. in steps of 100) and the lab's.
BASE_PORTS = {
    "mailswitch": {"imap": 4143, "pop3": 4110, "imaps": 4993, "pop3s": 4995},
    "perdition": {"imap": 5143, "pop3": 5110, "imaps": 5993, "pop3s": 5995},
    "dovecot": {"imap": 6143, "pop3": 6110, "imaps": 6993, "pop3s": 6995},
    "mailswitch-verify": {"imap": 7143, "pop3": 7110, "imaps": 7993, "pop3s": 7995},
    "dovecot-verify": {"imap": 7243, "pop3": 7210, "imaps": 8093, "pop3s": 8095},
}
LAB_LDAP_BASE_PORT = 3389          # scripts/lab.py: LDAP port without offset
PROXY_SERVER_NAME = "mail.example.test"
START_TIMEOUT = 20.0
STOP_TIMEOUT = 10.0
_popens = {}                       # pid -> Popen, so that down() reaps what up() started in-process


class PeerError(Exception):
    pass


def log(message):
    print("peers: " + message, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------
# processes

def _parents():
    parent_of = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open("/proc/%s/stat" % entry) as f:
                    parent_of[int(entry)] = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                pass
    return parent_of


def tree_pids(roots):
    """Every current process of the trees under roots, roots included (live or zombie)."""
    roots = [p for p in roots or [] if os.path.exists("/proc/%d" % p)]
    parent_of = _parents()
    found, frontier = set(roots), set(roots)
    while frontier:
        frontier = {p for p, parent in parent_of.items() if parent in frontier and p not in found}
        found |= frontier
    return sorted(found)


def cpu_seconds(roots):
    """CPU seconds of the whole trees: utime + stime of every current process, plus cutime +
    cstime of each (its exited, reaped children: Perdition's per-connection processes, Dovecot's
    exited ones). Nothing is counted twice: a reaped child's time is only in its parent's
    cutime/cstime. Read it before and after a run; the difference is the system's CPU."""
    ticks = 0
    for pid in tree_pids(roots):
        try:
            with open("/proc/%d/stat" % pid) as f:
                fields = f.read().rsplit(")", 1)[1].split()
            ticks += sum(int(fields[i]) for i in (11, 12, 13, 14))   # utime stime cutime cstime
        except (OSError, IndexError, ValueError):
            pass
    return ticks / os.sysconf("SC_CLK_TCK")


def terminate(pid):
    """SIGTERM pid, wait (bounded), then SIGTERM what it left behind, then SIGKILL stragglers."""
    if not pid or not alive(pid):
        _reap(pid)
        return
    everyone = set(tree_pids([pid]))
    signal_all([pid], signal.SIGTERM)
    wait_until(lambda: not alive(pid), STOP_TIMEOUT)
    everyone |= set(tree_pids([pid]))
    signal_all(everyone, signal.SIGTERM)
    if not wait_until(lambda: not any(alive(p) for p in everyone), 3.0):
        signal_all(everyone, signal.SIGKILL)
        wait_until(lambda: not any(alive(p) for p in everyone), 3.0)
    _reap(pid)


def _reap(pid):
    process = _popens.pop(pid, None)
    if process is not None:
        try:
            process.wait(timeout=1)
        except subprocess.TimeoutExpired:
            pass


def raise_fd_limit():
    """In the child before exec: the soft descriptor limit up to the hard one (a proxy holds two
    descriptors per session)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def remove(path):
    try:
        os.remove(path)
    except FileNotFoundError:
        pass


def spawn(argv, logfile):
    with open(logfile, "ab") as out:
        process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                                   start_new_session=True, preexec_fn=raise_fd_limit)
    _popens[process.pid] = process
    return process


def port_open(address):
    host, port = address.rsplit(":", 1)
    try:
        with socket.create_connection((host, int(port)), timeout=0.5):
            return True
    except OSError:
        return False


def listening(address):
    """True when a socket listens on address (read from /proc/net/tcp: no connection is made, so
    the systems' logs and counters see nothing)."""
    host, port = address.rsplit(":", 1)
    local = "%s:%04X" % ("".join("%02X" % int(b) for b in reversed(host.split("."))), int(port))
    try:
        with open("/proc/net/tcp") as f:
            next(f)
            return any(fields[1] == local and fields[3] == "0A" for fields in (line.split() for line in f))
    except OSError:
        return port_open(address)


def port_bindable(address):
    host, port = address.rsplit(":", 1)
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((host, int(port)))
        return True
    except OSError:
        return False
    finally:
        s.close()


def wait_listening(name, processes, endpoints, logfile):
    def ready():
        for process in processes:
            if process.poll() is not None:
                raise PeerError("%s exited with status %d:\n%s" % (name, process.returncode, tail(logfile)))
        return all(listening(a) for a in endpoints)
    if not wait_until(ready, START_TIMEOUT):
        raise PeerError("%s did not accept connections on %s within %ds:\n%s"
                        % (name, ", ".join(endpoints), START_TIMEOUT, tail(logfile)))


# ---------------------------------------------------------------------------------------------
# the lab

def load_lab(lab_dir):
    try:
        with open(os.path.join(lab_dir, "lab.json"), encoding="utf-8") as f:
            state = json.load(f)
    except (OSError, ValueError) as error:
        raise PeerError("no bench lab in %s (%s)" % (lab_dir, error))
    if not state.get("bench"):
        raise PeerError("%s is not a bench lab: start it with MAILSWITCH_LAB_BENCH=1 scripts/lab.py up" % lab_dir)
    state["dir"] = os.path.abspath(lab_dir)
    return state


def lab_port_offset(state):
    return int(state["ldap_uri"].rsplit(":", 1)[1].strip("/")) - LAB_LDAP_BASE_PORT


def store_ports(state):
    """The stores' port per endpoint (the same on both stores in bench mode)."""
    return {e: int(state["stores"]["legacy"][e].rsplit(":", 1)[1]) for e in ENDPOINTS}


def store_hosts(state):
    """{"127.0.0.2": "legacy", "127.0.0.3": "new"}."""
    return {state["stores"][name]["imap"].rsplit(":", 1)[0]: name for name in state["stores"]}


def read_secret(path):
    with open(path) as f:
        return f.read().rstrip("\n")


def bench_users(state):
    """[(user, store, password)] for user0001..userN: the store ("legacy"/"new") each must reach."""
    hosts = store_hosts(state)
    users = []
    for name in sorted(state["users"]):
        entry = state["users"][name]
        if re.fullmatch(r"user\d{4}", name) and entry.get("in_ldap") and entry.get("mailHost") in hosts:
            users.append((name, hosts[entry["mailHost"]], entry["password"]))
    return users


def endpoint_for(running, state, system, endpoint):
    """A function (user, store) -> "host:port" where that user connects for `endpoint`
    (imap|pop3|imaps|pop3s) on `system`. For "direct" it is the user's own store."""
    if system == "direct":
        by_store = {name: state["stores"][name][endpoint] for name in state["stores"]}
        return lambda user, store: by_store[store]
    address = running["systems"][system]["endpoints"][endpoint]
    return lambda user, store: address


def server_name(state, system):
    """The name to verify (and send as SNI) in TLS towards `system`."""
    return state.get("bench_server_name", "store.bench.test") if system == "direct" else PROXY_SERVER_NAME


def roots(running, system):
    """The root processes of a system (their trees are all of it); [] for direct."""
    if system == "direct":
        return []
    return list(running["systems"][system]["roots"])


def ports_for(system, offset):
    return {e: "127.0.0.1:%d" % (p + offset) for e, p in BASE_PORTS[system].items()}


# ---------------------------------------------------------------------------------------------
# mailswitch

def mailswitch_config(state, endpoints, example_path=EXAMPLE_CONFIG, instance="mailswitch-bench"):
    """config/mailswitch.example.yaml made into the bench configuration: listeners on the bench
    ports, the lab's directory and secret, the RSA certificate only (the peers serve that one
    too; with the ECDSA one beside it, clients would pick the cheaper ECDSA handshake), one
    backend per store named by its address (the mailHost value) with plaintext store legs.
    `instance` names the admin socket and the holds file in the lab's directory (one per
    mailswitch running at once)."""
    with open(example_path, encoding="utf-8") as f:
        text = f.read()
    d = state["dir"]
    ports = store_ports(state)

    def sub(pattern, replacement, flags=re.M):
        nonlocal text
        text, n = re.subn(pattern, lambda m: replacement, text, flags=flags)
        if n != 1:
            raise PeerError("mailswitch_config: %r matched %d times in %s" % (pattern, n, example_path))

    sub(r"^  certificates:\n(?:    - \{ cert: .*\n)+",
        '  certificates:\n    - { cert: "%s", key: "%s" }\n' % (os.path.join(d, "tls", "mail.pem"),
                                                               os.path.join(d, "tls", "mail.key")))
    for endpoint, example in (("imap", "127.0.0.1:1143"), ("pop3", "127.0.0.1:1110"),
                              ("imaps", "127.0.0.1:1993"), ("pop3s", "127.0.0.1:1995")):
        sub(r'(?<=address: ")%s(?=")' % re.escape(example), endpoints[endpoint])
    sub(r'^  uris: \[.*\]', '  uris: ["%s"]' % state["ldap_uri"])
    sub(r'^  bind_dn: .*', '  bind_dn: "%s"' % state["bind_dn"])
    sub(r'^  bind_password_file: .*', '  bind_password_file: "%s"' % state["bind_password_file"])
    sub(r'^  base: .*', '  base: "%s"' % state["base"])
    # An example from before the admin socket existed has neither key (the moves benchmark
    # runs the previous release beside the current one).
    if re.search(r"^admin:", text, re.M):
        sub(r'^  socket: .*', '  socket: "%s"' % os.path.join(d, instance + ".sock"))
        sub(r'^  state_file: .*', '  state_file: "%s"' % os.path.join(d, instance + "-holds.json"))
    # Metrics stay on, as a site runs them, on a free port (the example's 9143 may be taken by
    # the tests' or the demo's instance); an example from before metrics has no such key.
    if re.search(r"^metrics:", text, re.M):
        sub(r'^  address: .*', '  address: "127.0.0.1:%d"' % free_port())
    # Every client of the benchmarks is on 127.0.0.1 (an example from before limits has no such key).
    if re.search(r"^  max_connections_per_ip: ", text, re.M):
        sub(r'^  max_connections_per_ip: .*', '  max_connections_per_ip: 1000000')
    sub(r'^  default_backend: .*', '  default_backend: "%s"' % state["stores"]["legacy"]["imap"].rsplit(":", 1)[0])
    backends = ["backends:"]
    for name in ("legacy", "new"):
        host = state["stores"][name]["imap"].rsplit(":", 1)[0]
        backends += ['  "%s":                     # store "%s" of the bench lab' % (host, name),
                     '    hosts: ["%s:%d"]' % (host, ports["imap"]),
                     '    pop3_hosts: ["%s:%d"]' % (host, ports["pop3"]),
                     '    tls: none',
                     '    forward_client_address: true']
    # From "backends:" to the comments before the next top-level key.
    sub(r"^backends:\n(?:(?:  .*|)\n)*?(?=(?:#.*\n)*[a-z_]+:)", "\n".join(backends) + "\n\n")
    left = [line for line in text.splitlines() if "/etc/mailswitch" in line and not line.lstrip().startswith("#")]
    if left:
        raise PeerError("mailswitch_config: a path under /etc/mailswitch is left: %s" % "; ".join(left))
    return ("# The mailswitch configuration of the benchmarks: %s with the bench lab's\n"
            "# paths, ports and stores (generated by Benchmarks/peers.py).\n" % os.path.relpath(example_path, REPO)) + text


def free_port():
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def mailswitch_binary():
    return os.environ.get("MAILSWITCH_BINARY", DEFAULT_MAILSWITCH)


def verify_credentials(text):
    """A bench configuration with routing.verify_credentials: ldap_bind (the example's commented
    line switched on); verify_connections and verify_cache_ttl stay at their defaults."""
    text, n = re.subn(r"^  # (verify_credentials: ldap_bind)$", r"  \1", text, flags=re.M)
    if n != 1:
        raise PeerError("verify_credentials: '  # verify_credentials: ldap_bind' matched %d times in %s" % (n, EXAMPLE_CONFIG))
    return text


def start_mailswitch(state, peer_dir, offset, system="mailswitch"):
    """mailswitch, or with system "mailswitch-verify" the same with verify_credentials on."""
    d = os.path.join(peer_dir, system)
    os.makedirs(d, exist_ok=True)
    endpoints = ports_for(system, offset)
    config = os.path.join(d, "mailswitch.yaml")
    text = mailswitch_config(state, endpoints, instance=system + "-bench")
    if system == "mailswitch-verify":
        text = verify_credentials(text)
    with open(config, "w", encoding="utf-8") as f:
        f.write(text)
    binary = mailswitch_binary()
    if not os.access(binary, os.X_OK):
        raise PeerError("no mailswitch binary at %s (swift build -c release, or set MAILSWITCH_BINARY)" % binary)
    check = subprocess.run([binary, "check-config", "--config", config], stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True)
    if check.returncode != 0:
        raise PeerError("mailswitch check-config %s failed:\n%s" % (config, check.stdout))
    logfile = os.path.join(d, "mailswitch.log")
    pid_file = os.path.join(d, "mailswitch.pid")
    remove(pid_file)
    process = spawn([binary, "serve", "--config", config, "--pid-file", pid_file], logfile)
    wait_listening(system, [process], endpoints.values(), logfile)
    return {"name": system, "roots": [process.pid], "pid_files": [pid_file], "marker": config,
            "endpoints": endpoints, "server_name": PROXY_SERVER_NAME, "config": config, "log": logfile,
            "notes": "one process, event loops; IMAP/POP3 STARTTLS offered on the plain ports"
                     + ("; every password checked by a bind as the user (4 connections, no cache)"
                        if system == "mailswitch-verify" else "")}


# ---------------------------------------------------------------------------------------------
# Perdition

PERDITION_MODES = {   # endpoint -> (program, ssl_mode)
    "imap": ("perdition.imap4", "tls_listen"),
    "pop3": ("perdition.pop3", "tls_listen"),
    "imaps": ("perdition.imap4s", "ssl_listen"),
    "pop3s": ("perdition.pop3s", "ssl_listen"),
}


def perdition_config(state, endpoint, listen, d):
    """One perdition daemon's configuration file (mode 0600: it holds the LDAP bind password,
    which Perdition's LDAP map only takes inside its URL)."""
    d_tls = os.path.join(state["dir"], "tls")
    host, port = listen.rsplit(":", 1)
    bind_dn = state["bind_dn"].replace(",", "%2c")
    password = read_secret(state["bind_password_file"])
    if re.search(r"[\s,\"'#\\%?]", password):
        raise PeerError("the LDAP bind password has characters Perdition's map URL cannot carry")
    ldap_host = state["ldap_uri"].split("://", 1)[1].rstrip("/")
    # ldap_version:URL; attributes: the first is the login name to use at the store, the
    # second the host (Perdition joins them "user@host"); the port comes from outgoing_port.
    url = "3:ldap://%s/%s?uid,mailHost?sub?(uid=%%s)?!bindname=%s,x-bindpw=%s" % (
        ldap_host, state["base"], bind_dn, password)
    lines = [
        "# perdition %s for the mailswitch benchmarks (generated by Benchmarks/peers.py)" % endpoint,
        "no_daemon",
        "log_facility %s" % os.path.join(d, endpoint + ".log"),
        "pid_file %s" % os.path.join(d, endpoint, "perdition.pid"),
        "bind_address %s" % host,
        "listen_port %s" % port,
        "outgoing_port %d" % store_ports(state)["pop3" if endpoint.startswith("pop3") else "imap"],
        "no_lookup",                 # no reverse DNS per connection
        "server_resp_line",          # the store's own reply to the login, as the other proxies
        "map_library %s" % PERDITION_LDAP,
        'map_library_opt "%s"' % url,
        "ssl_mode %s" % PERDITION_MODES[endpoint][1],
        "ssl_cert_file %s" % os.path.join(d_tls, "mail.pem"),
        "ssl_key_file %s" % os.path.join(d_tls, "mail.key"),
        "ssl_ca_file %s" % os.path.join(d_tls, "ca.pem"),
        "ssl_dh_params_file %s" % os.path.join(d_tls, "dh.pem"),
        "ssl_listen_min_proto_version tlsv1.2",
        "",
    ]
    return "\n".join(lines)


def start_perdition(state, peer_dir, offset):
    if not os.path.exists(PERDITION_LDAP):
        raise PeerError("%s missing: apt-get install perdition perdition-ldap (scripts/install-deps)" % PERDITION_LDAP)
    d = os.path.join(peer_dir, "perdition")
    os.makedirs(d, exist_ok=True)
    nobody = pwd.getpwnam("nobody")
    # Perdition drops to nobody after binding and then reopens its log; the key is read before.
    os.chown(d, nobody.pw_uid, nobody.pw_gid)
    endpoints = ports_for("perdition", offset)
    processes, pid_files, logs = [], [], []
    for endpoint in ENDPOINTS:
        program, _ = PERDITION_MODES[endpoint]
        conf = os.path.join(d, endpoint + ".conf")
        fd = os.open(conf, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(perdition_config(state, endpoint, endpoints[endpoint], d))
        logfile = os.path.join(d, endpoint + ".log")
        with open(logfile, "a"):
            pass
        os.chown(logfile, nobody.pw_uid, nobody.pw_gid)
        os.makedirs(os.path.join(d, endpoint), exist_ok=True)
        os.chown(os.path.join(d, endpoint), nobody.pw_uid, nobody.pw_gid)   # it removes its pid file as nobody
        # Perdition refuses to start while its pid file names a process it thinks is running
        # (a predecessor just stopped may still be an unreaped zombie).
        remove(os.path.join(d, endpoint, "perdition.pid"))
        stdout = os.path.join(d, endpoint + ".stdout")
        processes.append(spawn(["/usr/sbin/" + program, "-f", conf], stdout))
        pid_files.append(os.path.join(d, endpoint, "perdition.pid"))
        logs.append(logfile)
    for endpoint, process in zip(ENDPOINTS, processes):
        wait_listening("perdition (%s)" % endpoint, [process], [endpoints[endpoint]],
                       os.path.join(d, endpoint + ".stdout"))
    return {"name": "perdition", "roots": [p.pid for p in processes], "pid_files": pid_files,
            "marker": os.path.join(d, ""), "endpoints": endpoints, "server_name": PROXY_SERVER_NAME,
            "config": [os.path.join(d, e + ".conf") for e in ENDPOINTS], "log": logs,
            "notes": "four daemons (one per endpoint), one process forked per connection, an LDAP "
                     "connection and bind per login; IMAP LOGIN and POP3 USER/PASS only"}


# ---------------------------------------------------------------------------------------------
# Dovecot as a proxy

def dovecot_ldap_conf(state, auth_bind=False):
    ports = store_ports(state)
    if auth_bind:
        password = """# Authentication binds: the entry's DN is found with pass_filter (as the service account),
# then bound as with the client's password; proxy=y then forwards that password to the store,
# which checks it again, as mailswitch-verify's stores do. On the same one asynchronous LDAP
# connection (blocking = no, the default; Dovecot 2.3 binds it back as dn before its next
# search); no auth cache, so every login binds. (auth_bind_userdn, a DN template, would skip
# the search but ignores pass_attrs: no mailHost, no proxying.)
auth_bind = yes
pass_filter = (&(objectClass=inetOrgPerson)(uid=%u))
pass_attrs = =proxy=y, mailHost=host, =port=%{{if;%s;eq;pop3;{pop3};{imap}}}"""
    else:
        password = """# No password at the proxy (the service account may not read userPassword anyway): the store
# checks the password the proxy forwards, as with mailswitch and Perdition. One asynchronous
# LDAP connection in the auth process (blocking = no, the default); no auth cache.
pass_filter = (&(objectClass=inetOrgPerson)(uid=%u))
pass_attrs = =proxy=y, =nopassword=y, mailHost=host, =port=%{{if;%s;eq;pop3;{pop3};{imap}}}"""
    return ("""# Dovecot proxy passdb for the mailswitch benchmarks (generated by Benchmarks/peers.py).
uris = {uri}
dn = {dn}
dnpass = {password}
ldap_version = 3
base = {base}
scope = subtree
deref = never
""" + password + "\n").format(uri=state["ldap_uri"], dn=state["bind_dn"], password=read_secret(state["bind_password_file"]),
                              base=state["base"], pop3=ports["pop3"], imap=ports["imap"])


def dovecot_conf(state, d, endpoints, offset, instance="mailswitch-bench-proxy"):
    tls = os.path.join(state["dir"], "tls")
    cpus = os.cpu_count() or 1
    port = {e: int(a.rsplit(":", 1)[1]) for e, a in endpoints.items()}
    return """# Dovecot 2.3 as an LDAP-routing proxy for the mailswitch benchmarks (generated by
# Benchmarks/peers.py).
instance_name = {instance}-{offset}
base_dir = {d}/run
state_dir = {d}/state
log_path = {d}/dovecot.log
info_log_path = {d}/dovecot.log
log_timestamp = "%Y-%m-%d %H:%M:%S "
protocols = imap pop3
listen = 127.0.0.1
ssl = yes
ssl_cert = <{tls}/mail.pem
ssl_key = <{tls}/mail.key
ssl_dh = <{tls}/dh.pem
ssl_min_protocol = TLSv1.2
disable_plaintext_auth = no
auth_mechanisms = plain login
auth_cache_size = 0
login_trusted_networks = 127.0.0.0/8
default_login_user = dovenull
default_internal_user = dovecot
passdb {{
  driver = ldap
  args = {d}/dovecot-ldap.conf.ext
}}
# Never consulted for proxied logins; Dovecot wants one.
userdb {{
  driver = static
  args = uid=nobody gid=nogroup home=/nonexistent
}}
# High-performance mode: one login process per CPU, each holding many client connections
# (the proxied sessions live in the login processes).
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {imap}
  }}
  inet_listener imaps {{
    address = 127.0.0.1
    port = {imaps}
    ssl = yes
  }}
  service_count = 0
  process_min_avail = {cpus}
  client_limit = 10000
  vsz_limit = 1G
}}
service pop3-login {{
  inet_listener pop3 {{
    address = 127.0.0.1
    port = {pop3}
  }}
  inet_listener pop3s {{
    address = 127.0.0.1
    port = {pop3s}
    ssl = yes
  }}
  service_count = 0
  process_min_avail = {cpus}
  client_limit = 10000
  vsz_limit = 1G
}}
service auth {{
  client_limit = 1000
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
""".format(instance=instance, offset=offset, d=d, tls=tls, cpus=cpus, **port)


def start_dovecot(state, peer_dir, offset, system="dovecot"):
    """Dovecot's proxy, or with system "dovecot-verify" the same with auth binds."""
    if not os.path.exists(DOVECOT_LDAP_DRIVER):
        raise PeerError("%s missing: apt-get install dovecot-ldap (scripts/install-deps --bench)" % DOVECOT_LDAP_DRIVER)
    d = os.path.join(peer_dir, system)
    for sub in ("run", "state"):
        os.makedirs(os.path.join(d, sub), exist_ok=True)
    os.chmod(d, 0o755)
    endpoints = ports_for(system, offset)
    ldap_conf = os.path.join(d, "dovecot-ldap.conf.ext")
    fd = os.open(ldap_conf, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(dovecot_ldap_conf(state, auth_bind=system == "dovecot-verify"))
    conf = os.path.join(d, "dovecot.conf")
    with open(conf, "w") as f:
        f.write(dovecot_conf(state, d, endpoints, offset, instance="mailswitch-bench-" + ("proxy" if system == "dovecot" else system)))
    check = subprocess.run(["doveconf", "-c", conf, "-n"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if check.returncode != 0:
        raise PeerError("doveconf -c %s failed:\n%s" % (conf, check.stderr))
    logfile = os.path.join(d, "dovecot.log")
    remove(os.path.join(d, "run", "master.pid"))
    process = spawn(["dovecot", "-F", "-c", conf], os.path.join(d, "dovecot.stdout"))
    wait_listening(system, [process], endpoints.values(), logfile)
    return {"name": system, "roots": [process.pid], "pid_files": [os.path.join(d, "run", "master.pid")],
            "marker": conf, "endpoints": endpoints, "server_name": PROXY_SERVER_NAME, "config": conf,
            "log": logfile, "notes": "master + config/log/anvil/auth + %d imap-login and %d pop3-login "
                                     "processes (service_count = 0), one async LDAP connection%s" % (
                                         os.cpu_count() or 1, os.cpu_count() or 1,
                                         "; auth binds (search, bind as the user, bind back), no cache"
                                         if system == "dovecot-verify" else "")}


STARTERS = {"mailswitch": start_mailswitch, "perdition": start_perdition, "dovecot": start_dovecot,
            "mailswitch-verify": lambda state, peer_dir, offset: start_mailswitch(state, peer_dir, offset, "mailswitch-verify"),
            "dovecot-verify": lambda state, peer_dir, offset: start_dovecot(state, peer_dir, offset, "dovecot-verify")}


# ---------------------------------------------------------------------------------------------
# up / down

def direct_entry(state):
    ports = store_ports(state)
    by_host = {host: {e: "%s:%d" % (host, ports[e]) for e in ENDPOINTS} for host in store_hosts(state)}
    return {"name": "direct", "roots": [], "pid_files": [],
            "endpoints_by_mailHost": by_host,
            "stores": {name: host for host, name in store_hosts(state).items()},
            "rule": "a user connects to its mailHost (its store's address) on the stores' ports: "
                    "legacy users (user0001, user0003, ...) %s, new users (user0002, ...) %s" % (
                        ", ".join("%s:%d" % (state["stores"]["legacy"]["imap"].rsplit(":", 1)[0], ports[e]) for e in ENDPOINTS),
                        ", ".join("%s:%d" % (state["stores"]["new"]["imap"].rsplit(":", 1)[0], ports[e]) for e in ENDPOINTS)),
            "server_name": server_name(state, "direct")}


def write_peers(peer_dir, running):
    path = os.path.join(peer_dir, "peers.json")
    with open(path + ".tmp", "w", encoding="utf-8") as f:
        json.dump(running, f, indent=2)
        f.write("\n")
    os.replace(path + ".tmp", path)


def load_peers(peer_dir):
    try:
        with open(os.path.join(peer_dir, "peers.json"), encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def up(lab_dir, peer_dir, systems=SYSTEMS):
    """Starts the systems (a list of names from KNOWN; "direct" is ignored: always recorded)
    and returns what it also writes to PEERDIR/peers.json."""
    state = load_lab(lab_dir)
    peer_dir = os.path.abspath(peer_dir)
    if os.path.isdir(peer_dir):
        down(peer_dir)
    os.makedirs(peer_dir, exist_ok=True)
    os.chmod(peer_dir, 0o755)
    offset = lab_port_offset(state)
    systems = [s for s in systems if s != "direct"]
    unknown = [s for s in systems if s not in STARTERS]
    if unknown:
        raise PeerError("unknown system(s) %s (known: %s)" % (", ".join(unknown), ", ".join(KNOWN)))
    for system in systems:
        for address in ports_for(system, offset).values():
            if port_open(address) or not port_bindable(address):
                raise PeerError("%s (for %s) is already in use" % (address, system))
    running = {"lab": state["dir"], "port_offset": offset, "ca": state["tls"]["ca"],
               "systems": {"direct": direct_entry(state)}}
    write_peers(peer_dir, running)
    try:
        for system in systems:
            entry = STARTERS[system](state, peer_dir, offset)
            entry["executables"] = [exe(pid) for pid in entry["roots"]]
            entry["pids"] = tree_pids(entry["roots"])
            running["systems"][system] = entry
            write_peers(peer_dir, running)
            log("%s up: %s" % (system, ", ".join("%s %s" % kv for kv in entry["endpoints"].items())))
    except BaseException:
        down(peer_dir)
        for pid in list(_popens):   # started here but not yet recorded in peers.json
            terminate(pid)
        raise
    return running


def exe(pid):
    try:
        return os.readlink("/proc/%d/exe" % pid)
    except OSError:
        return None


def our_roots(entry):
    """The entry's root pids that are still ours, so a stale peers.json never makes us signal an
    unrelated process: alive, the same executable as at start, and either our configuration in
    its command line or its pid in one of our pid files (Perdition rewrites its command line)."""
    found = []
    pid_files = {read_pid(path) for path in entry.get("pid_files", [])}
    for pid, path in zip(entry.get("roots", []), entry.get("executables", [])):
        if alive(pid) and exe(pid) == path and (entry.get("marker", "\0") in cmdline(pid) or pid in pid_files):
            found.append(pid)
    return found


def down(peer_dir):
    """Stops every system recorded in PEERDIR/peers.json (in parallel)."""
    running = load_peers(os.path.abspath(peer_dir))
    if not running:
        return
    pids = [pid for entry in running.get("systems", {}).values() for pid in our_roots(entry)]
    threads = [threading.Thread(target=terminate, args=(pid,)) for pid in pids]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for entry in running.get("systems", {}).values():
        if not our_roots(entry):
            for path in entry.get("pid_files", []):
                remove(path)
        for address in entry.get("endpoints", {}).values():
            if listening(address):
                log("warning: %s (%s) still accepts connections" % (address, entry["name"]))


# ---------------------------------------------------------------------------------------------
# check: one login per user, system, protocol and TLS mode

def check(peer_dir):
    import imaplib
    import poplib
    import ssl
    running = load_peers(os.path.abspath(peer_dir))
    if not running:
        raise PeerError("no peers.json in %s" % peer_dir)
    state = load_lab(running["lab"])
    users = {u: (store, pw) for u, store, pw in bench_users(state)}
    failures = 0
    rows = []
    for system in running["systems"]:
        for endpoint in ENDPOINTS:
            for user in ("user0001", "user0002"):
                store, password = users[user]
                host, port = endpoint_for(running, state, system, endpoint)(user, store).rsplit(":", 1)
                port = int(port)
                # Verified against the address: the proxies' certificate names 127.0.0.1, each
                # store's its own address (the load generator checks server_name() instead).
                context = ssl.create_default_context(cafile=state["tls"]["ca"])
                try:
                    if endpoint.startswith("imap"):
                        if endpoint == "imaps":
                            c = imaplib.IMAP4_SSL(host, port, ssl_context=context, timeout=10)
                        else:
                            c = imaplib.IMAP4(host, port, timeout=10)
                        c.login(user, password)
                        capability = c.capability()[1][0].decode()
                        c.logout()
                        landed = "X-STORE-%s" % store.upper() in capability.split()
                        evidence = [w for w in capability.split() if w.startswith("X-STORE-")]
                    else:
                        if endpoint == "pop3s":
                            c = poplib.POP3_SSL(host, port, context=context, timeout=10)
                        else:
                            c = poplib.POP3(host, port, timeout=10)
                        c.user(user)
                        c.pass_(password)
                        headers = [line.decode() for line in c.top(1, 0)[1]]
                        c.quit()
                        evidence = [h for h in headers if h.lower().startswith("x-store:")]
                        landed = ("X-Store: %s" % store) in headers
                    result = "ok" if landed else "WRONG STORE"
                except Exception as error:   # noqa: BLE001 - reported, counted
                    result, evidence = "FAIL", ["%s: %s" % (type(error).__name__, error)]
                failures += result != "ok"
                rows.append((system, endpoint, user, store, result, " ".join(evidence)))
    verifying = [s for s in running["systems"] if s in VERIFYING]
    if verifying:
        # Directly first: the store refuses and logs it, which shows that the logs would tell.
        for system in ["direct"] + verifying:
            result, evidence = wrong_password(running, state, system, "user0001", users["user0001"][0])
            failures += result != "ok"
            rows.append((system, "imap", "user0001", "refused", result, evidence))
    for row in rows:
        print("%-17s %-6s %-9s -> %-7s %-11s %s" % row)
    return failures


def store_logs(state):
    return [os.path.join(state["dir"], name, "dovecot.log") for name in sorted(state["stores"])]


def log_sizes(paths):
    return {path: os.path.getsize(path) if os.path.exists(path) else 0 for path in paths}


def logged_since(sizes, needle):
    """The lines containing `needle` written to the files since `sizes` (log_sizes)."""
    found = []
    for path, size in sizes.items():
        try:
            with open(path, "rb") as f:
                f.seek(size)
                found += [line for line in f.read().decode("utf-8", "replace").splitlines() if needle in line]
        except OSError:
            pass
    return found


def wrong_password(running, state, system, user, store):
    """An IMAP LOGIN with a wrong password through `system`: ("ok", evidence) when it is refused
    as an authentication failure and, through a proxy, no store logged the attempt (its
    imap-login writes "user=<USER>" for every login, failed or not, when the connection ends);
    directly, when the store did log it."""
    import imaplib
    host, port = endpoint_for(running, state, system, "imap")(user, store).rsplit(":", 1)
    needle = "user=<%s>" % user
    sizes = log_sizes(store_logs(state))
    try:
        c = imaplib.IMAP4(host, int(port), timeout=20)
        try:
            c.login(user, "not-the-password")
            return "FAIL", "LOGIN with a wrong password accepted"
        except imaplib.IMAP4.error as error:
            reply = error.args[0].decode("utf-8", "replace") if error.args and isinstance(error.args[0], bytes) else str(error)
        finally:
            try:
                c.logout()
            except (imaplib.IMAP4.error, OSError):
                pass
    except OSError as error:
        return "FAIL", "%s: %s" % (type(error).__name__, error)
    if "AUTHENTICATIONFAILED" not in reply:
        return "FAIL", "not an authentication failure: %s" % reply
    if system == "direct":
        seen = wait_until(lambda: logged_since(sizes, needle), 5.0)
        lines = logged_since(sizes, needle)
        return ("ok" if seen else "FAIL"), "%s; the store logged: %s" % (reply, lines[0].strip() if lines else "nothing")
    time.sleep(1.5)    # what a store would log arrives when the proxy's connection to it ends
    lines = logged_since(sizes, needle)
    if lines:
        return "FAIL", "%s, but a store saw it: %s" % (reply, lines[0].strip())
    return "ok", "%s; no store logged %s" % (reply, needle)


# ---------------------------------------------------------------------------------------------

def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["up", "down", "check", "cpu"])
    parser.add_argument("--lab", help="the bench lab's directory (up)")
    parser.add_argument("--dir", required=True, help="directory for the peers' files and peers.json")
    parser.add_argument("--systems", default=",".join(SYSTEMS),
                        help="comma-separated, default: %s (opt-in: %s)" % (",".join(SYSTEMS), ",".join(VERIFYING)))
    options = parser.parse_args()
    os.environ["PATH"] = os.environ.get("PATH", "/usr/bin:/bin") + ":/usr/sbin:/sbin"
    try:
        if options.command == "up":
            if not options.lab:
                parser.error("up needs --lab DIR")
            running = up(options.lab, options.dir, [s for s in options.systems.split(",") if s])
            print("peers up: %s; %s" % (", ".join(s for s in running["systems"] if s != "direct"),
                                        os.path.join(os.path.abspath(options.dir), "peers.json")))
        elif options.command == "down":
            down(options.dir)
        elif options.command == "check":
            failures = check(options.dir)
            print("%d failure(s)" % failures)
            sys.exit(1 if failures else 0)
        else:
            running = load_peers(os.path.abspath(options.dir)) or {"systems": {}}
            for system, entry in running["systems"].items():
                if entry.get("roots"):
                    pids = tree_pids(our_roots(entry))
                    print("%-10s %8.2f s CPU  %d processes" % (system, cpu_seconds(our_roots(entry)), len(pids)))
    except PeerError as error:
        log(str(error))
        sys.exit(1)


if __name__ == "__main__":
    main()
