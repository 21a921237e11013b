"""Opening the ports a node or registry listens on, with an error an operator can act on.

A port that cannot be opened (another process holds it, a port below 1024 without the right, an address this
machine does not have) used to end `homing node run` and `homing bootstrap run` with a traceback of trio's
exception groups. Each bind now raises `ListenError`, which names the address, the setting it came from and what
to do; the CLI prints it on one line and exits 1 (node/cli/__init__.py).

The SWIM socket also asks the kernel for a larger receive buffer (`UDP_RECEIVE_BUFFER`), and `udp_drops` reads how
many datagrams the kernel dropped because that buffer was full (docs/swim.md, "Receive buffer").
"""

from __future__ import annotations

import errno
import os
import socket

import trio

from node.protocol.errors import ListenError
from node.protocol.settings import format_hostport

# The SWIM socket's receive buffer, in bytes (as memberlist's udpRecvBufSize, 2 MiB). Linux's default, 208 KiB,
# holds 92 datagrams of 768 bytes (a padded WHOIS; each costs ~2.3 KiB of buffer): a node that stalls for 0.1 s
# under a flood of 1,000 a second loses every datagram behind it, an honest member's ack or an honest joiner's
# WHOIS as much as the flood's. 2 MiB holds 1,820 of them, 1.8 s of that flood. Linux caps the request at
# net.core.rmem_max (docs/operations.md, "7c. Kernel settings"); the node says so at start.
UDP_RECEIVE_BUFFER = 2 * 2**20

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


def bind_udp(host: str, port: int, *, key: str, rcvbuf: int = UDP_RECEIVE_BUFFER) -> socket.socket:
    """A UDP socket bound to `host:port` (IPv6 when `host` has a colon), raising ListenError instead of OSError,
    with a receive buffer of `rcvbuf` bytes asked for (what the kernel granted: `receive_buffer(sock)`)."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)  # capped, never refused, by Linux
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise listen_error(exc, host, port, key) from exc
    return sock


def receive_buffer(sock: socket.socket) -> int:
    """The receive buffer the kernel gave `sock`, in the bytes asked for with SO_RCVBUF. Linux reports twice what
    it set (the other half is for its bookkeeping), so this is half of what it reports: a request granted whole
    reads back as itself, one capped by net.core.rmem_max as that cap."""
    return sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) // 2


def udp_drops(sock: socket.socket) -> int | None:
    """Datagrams the kernel dropped for `sock` because its receive buffer was full, since it was opened: the last
    column of the socket's line in /proc/net/udp (or udp6), found by the socket's inode. None where there is no
    such file (not Linux) or the socket is closed."""
    try:
        inode = str(os.fstat(sock.fileno()).st_ino)
    except OSError:  # closed: fileno() is -1
        return None
    for name in ("/proc/net/udp", "/proc/net/udp6"):
        try:
            with open(name) as f:
                for line in f:
                    fields = line.split()
                    if len(fields) >= 13 and fields[9] == inode:
                        return int(fields[-1])
        except OSError:
            continue
    return None
