"""Opening the ports a node or registry listens on, with an error an operator can act on.

A port that cannot be opened (another process holds it, a port below 1024 without the right, an address this
machine does not have) used to end `homing node run` and `homing bootstrap run` with a traceback of trio's
exception groups. Each bind now raises `ListenError`, which names the address, the setting it came from and what
to do; the CLI prints it on one line and exits 1 (node/cli/__init__.py).
"""

from __future__ import annotations

import errno
import socket

import trio

from node.protocol.errors import ListenError
from node.protocol.settings import format_hostport

# what to do about the errors an operator meets, by errno
_HINTS = {
    errno.EADDRINUSE: "another process holds it (another homing node or registry?): stop it, or choose another port",
    errno.EACCES: "ports below 1024 need root or CAP_NET_BIND_SERVICE: choose a port of 1024 or more, or put a TLS "
    "proxy on 443 in front (docs/operations.md, step 5)",
    errno.EADDRNOTAVAIL: "no network interface of this machine has that address: use one it has, or 0.0.0.0 / ::",
}


def listen_error(exc: OSError, host: str, port: int, key: str) -> ListenError:
    """The ListenError for `exc`, raised when binding `host:port`, the address the setting `key` gave."""
    reason = exc.strerror or str(exc)
    hint = _HINTS.get(exc.errno or 0)
    return ListenError(format_hostport(host or "0.0.0.0", port), key, f"{reason}; {hint}" if hint else reason)


async def open_listeners(host: str, port: int, *, key: str, backlog: int | None = None) -> list[trio.SocketListener]:
    """`trio.open_tcp_listeners(port, host=host or None)`, raising ListenError instead of OSError."""
    try:
        return await trio.open_tcp_listeners(port, host=host or None, backlog=backlog)
    except OSError as exc:
        raise listen_error(exc, host, port, key) from exc


def bind_udp(host: str, port: int, *, key: str) -> socket.socket:
    """A UDP socket bound to `host:port` (IPv6 when `host` has a colon), raising ListenError instead of OSError."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise listen_error(exc, host, port, key) from exc
    return sock
