#!/usr/bin/env python3
"""Socket activation as systemd does it (sd_listen_fds(3)), for a test: listen on ADDRESS,
put the socket on descriptor 3, set LISTEN_FDS=1 and LISTEN_PID to this process (which the
program then becomes), and exec the program.

  activate.py 127.0.0.1:9943 PROGRAM [ARGS...]
"""
import os
import socket
import sys


def main():
    host, port = sys.argv[1].rsplit(":", 1)
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((host, int(port)))
    listener.listen(128)
    if listener.fileno() != 3:
        os.dup2(listener.fileno(), 3)
    # dup2 onto itself changes nothing: say it explicitly, or the socket closes on exec.
    os.set_inheritable(3, True)
    os.environ["LISTEN_FDS"] = "1"
    os.environ["LISTEN_PID"] = str(os.getpid())
    os.execv(sys.argv[2], sys.argv[2:])


if __name__ == "__main__":
    main()
