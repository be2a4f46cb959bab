#!/usr/bin/env python3
"""A synthetic IMAP store for benchmarks and tests: accepts ANY login, then just holds the connection.

    python3 Tests/Fixtures/synthetic_store.py PORT [--host 127.0.0.X] [--name NAME]
                                              [--tls CERT KEY [--client-ca CA]] [--login-delay S]

With --login-delay it answers a login S seconds late, as a store does under Dovecot's per-address
auth penalty (the behaviour under test, not a wait). With --tls it speaks implicit TLS; with --client-ca it also demands a client certificate signed
by CA (the handshake fails without one), for testing mailswitch's backend client certificates.

Listens on 127.0.0.1:PORT (loopback only). After login its capabilities include X-STORE-NAME
(default SYNTHETIC), so a client can tell which store a proxy took it to. It speaks just enough IMAP for mailswitch's backend
login (Sources/MailProtocol/IMAPBackendLogin.swift): the greeting carries its capabilities, so
mailswitch sends `M2 ID (...)` then `M3 AUTHENTICATE PLAIN <base64>` (SASL-IR) at once. Also
handled: LOGIN (atoms, quoted strings, literals {n} with a "+" continuation and {n+}),
AUTHENTICATE PLAIN without an initial response, CAPABILITY, NOOP, LOGOUT; any other command
gets a tagged OK. Nothing is stored. One asyncio task per connection; no per-session timers.
Prints "ready PORT" on stdout once listening; SIGTERM/SIGINT stop it.
"""
import argparse
import asyncio
import resource
import ssl
import signal
import sys

GREETING = b"* OK [CAPABILITY IMAP4rev1 SASL-IR LITERAL+ ID AUTH=PLAIN] synthetic store ready.\r\n"
PRE_CAPS = b"* CAPABILITY IMAP4rev1 SASL-IR LITERAL+ ID AUTH=PLAIN\r\n"
POST_CAPS = b"* CAPABILITY IMAP4rev1 IDLE LITERAL+ X-STORE-SYNTHETIC\r\n"
LOGGED_IN = b" OK [CAPABILITY IMAP4rev1 IDLE LITERAL+ X-STORE-SYNTHETIC] Logged in\r\n"


def name_store(name):
    global POST_CAPS, LOGGED_IN
    marker = b"X-STORE-" + name.upper().encode("ascii")
    POST_CAPS = POST_CAPS.replace(b"X-STORE-SYNTHETIC", marker)
    LOGGED_IN = LOGGED_IN.replace(b"X-STORE-SYNTHETIC", marker)
MAX_LINE = 65536
MAX_LITERAL = 65536


def raise_nofile():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


async def read_command(reader, writer):
    """One command line with its literals inlined (as b"{n}" markers removed). Returns
    (line_without_literals, [literal payloads]) or None at EOF."""
    parts, literals = [], []
    while True:
        line = await reader.readline()
        if not line:
            return None
        if len(line) > MAX_LINE:
            raise ValueError("line too long")
        line = line.rstrip(b"\r\n")
        # A literal announcement ends the line: {n} or {n+}.
        if line.endswith(b"}") and b"{" in line:
            start = line.rindex(b"{")
            spec = line[start + 1:-1]
            plus = spec.endswith(b"+")
            digits = spec[:-1] if plus else spec
            if digits.isdigit():
                n = int(digits)
                if n > MAX_LITERAL:
                    raise ValueError("literal too long")
                if not plus:
                    writer.write(b"+ OK\r\n")
                    await writer.drain()
                literals.append(await reader.readexactly(n))
                parts.append(line[:start] + b"\x00")   # marker where the literal stood
                continue
        parts.append(line)
        return b"".join(parts), literals


LOGIN_DELAY = 0.0


async def handle(reader, writer):
    try:
        writer.write(GREETING)
        await writer.drain()
        logged_in = False
        while True:
            command = await read_command(reader, writer)
            if command is None:
                return
            line, _literals = command
            words = line.split(b" ", 2)
            tag = words[0] if words and words[0] else b"*"
            name = words[1].upper() if len(words) > 1 else b""
            if name == b"ID":
                writer.write(b"* ID NIL\r\n" + tag + b" OK ID completed.\r\n")
            elif name == b"AUTHENTICATE":
                rest = words[2].split(b" ") if len(words) > 2 else []
                if len(rest) < 2:   # no initial response: ask for it
                    writer.write(b"+ \r\n")
                    await writer.drain()
                    response = await reader.readline()
                    if not response:
                        return
                    if response.rstrip(b"\r\n") == b"*":
                        writer.write(tag + b" BAD Authentication cancelled.\r\n")
                        await writer.drain()
                        continue
                await asyncio.sleep(LOGIN_DELAY)
                writer.write(tag + LOGGED_IN)
                logged_in = True
            elif name == b"LOGIN":
                await asyncio.sleep(LOGIN_DELAY)
                writer.write(tag + LOGGED_IN)
                logged_in = True
            elif name == b"CAPABILITY":
                writer.write((POST_CAPS if logged_in else PRE_CAPS) + tag + b" OK CAPABILITY completed.\r\n")
            elif name == b"NOOP":
                writer.write(tag + b" OK NOOP completed.\r\n")
            elif name == b"LOGOUT":
                writer.write(b"* BYE synthetic store logging out.\r\n" + tag + b" OK LOGOUT completed.\r\n")
                await writer.drain()
                return
            else:
                writer.write(tag + b" OK " + (name or b"?") + b" completed.\r\n")
            await writer.drain()
    except (ConnectionError, asyncio.IncompleteReadError, ValueError, OSError):
        pass
    finally:
        writer.close()   # flushes what is buffered (a LOGOUT's reply), then closes


async def main(host, port, tls):
    raise_nofile()
    server = await asyncio.start_server(handle, host, port, backlog=4096, limit=MAX_LINE + 2, ssl=tls)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print("ready %d" % port, flush=True)
    async with server:
        await stop.wait()


def tls_context(o):
    if not o.tls:
        return None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(*o.tls)
    if o.client_ca:
        context.verify_mode = ssl.CERT_REQUIRED
        context.load_verify_locations(o.client_ca)
    return context


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("port", type=int)
    parser.add_argument("--host", default="127.0.0.1", help="a loopback address to listen on")
    parser.add_argument("--tls", nargs=2, metavar=("CERT", "KEY"))
    parser.add_argument("--client-ca", metavar="CA")
    parser.add_argument("--name", default="synthetic", help="advertised after login as X-STORE-NAME")
    parser.add_argument("--login-delay", type=float, default=0.0, metavar="S",
                        help="answer each login S seconds late (a slow store)")
    options = parser.parse_args()
    LOGIN_DELAY = options.login_delay
    if not options.name.isalnum():
        sys.exit("synthetic_store.py: --name must be letters and digits")
    name_store(options.name)
    if options.client_ca and not options.tls:
        sys.exit("synthetic_store.py: --client-ca needs --tls")
    if not options.host.startswith("127."):
        sys.exit("synthetic_store.py: loopback addresses only")
    asyncio.run(main(options.host, options.port, tls_context(options)))
