"""The server side of the WebSocket opening handshake (RFC 6455 §4.2), pure: a parsed head in, bytes out.

The client port reads every request head itself (node/net/decoy.py `read_head`, node/protocol/decoy.py
`parse_head`) to choose between an upgrade at `[clients] path` and the decoy site; this module finishes the
upgrade from that same parse instead of handing the bytes to a second HTTP parser (wsproto over h11 did it before:
~10 % of a handshake's CPU on the node, and both libraries' import, docs/performance.md "One node at scale").

Rules, in the order they are checked (the same checks and answers as wsproto's server handshake, which
tests/unit/test_upgrade.py runs side by side on generated requests):
1. the method is GET, else 400;
2. `Connection` holds the token `upgrade` (comma-separated, any case), else 400;
3. `Sec-WebSocket-Version` is `13`, else 426 when present and 400 when absent, both with
   `Sec-WebSocket-Version: 13`;
4. `Sec-WebSocket-Key` is present, and only once (RFC 6455 §11.3.1), else 400 (wsproto joins two into one
   key, "a, b", and answers with a Sec-WebSocket-Accept no client accepts: the one difference);
5. `Upgrade` is `websocket` (any case), else 400;
6. `Host` is present, else 400 (node/protocol/decoy.py already answers 400 to HTTP/1.1 without it).
A header named twice counts by its last value, except `Sec-WebSocket-Protocol`, whose lists add up.
The answer to a valid request is 101 with `Sec-WebSocket-Accept` = base64(SHA-1(key + the RFC's GUID)) and the
chosen subprotocol, if any.
"""

from __future__ import annotations

import base64
import hashlib

import attrs

from node.protocol.decoy import Head

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"  # RFC 6455 §1.3
VERSION = "13"

_REASONS = {
    101: "Switching Protocols",
    400: "Bad Request",
    404: "Not Found",
    426: "Upgrade Required",
    429: "Too Many Requests",
    503: "Service Unavailable",
}


@attrs.frozen(slots=True)
class Upgrade:
    """A valid upgrade request: what the client port needs of it."""

    target: str  # as sent: path and query
    key: str  # Sec-WebSocket-Key
    subprotocols: tuple[str, ...]
    headers: tuple[tuple[str, str], ...]  # every header, lower-case names (X-Forwarded-For behind a proxy)

    def header_values(self, name: str) -> list[str]:
        return [value for key, value in self.headers if key == name]


@attrs.frozen(slots=True)
class Rejected:
    """An invalid one: the status and headers to answer with (rules 1-6)."""

    status: int
    headers: tuple[tuple[str, str], ...] = ()


def _tokens(value: str) -> list[str]:
    return [part.strip() for part in value.split(",")]


def check(head: Head) -> Upgrade | Rejected:
    """Rules 1-6 on a head that parsed (`head.bad` is 0)."""
    if head.method != "GET":
        return Rejected(400)  # rule 1
    connection: list[str] | None = None
    host = key = version = None
    keys = 0
    upgrade = ""
    subprotocols: list[str] = []
    for name, value in head.headers:
        if name == "connection":
            connection = _tokens(value)
        elif name == "host":
            host = value
        elif name == "sec-websocket-key":
            key = value
            keys += 1
        elif name == "sec-websocket-protocol":
            subprotocols.extend(_tokens(value))
        elif name == "sec-websocket-version":
            version = value
        elif name == "upgrade":
            upgrade = value
    if connection is None or not any(token.lower() == "upgrade" for token in connection):
        return Rejected(400)  # rule 2
    if version != VERSION:
        return Rejected(426 if version else 400, (("Sec-WebSocket-Version", VERSION),))  # rule 3
    if key is None or keys > 1:
        return Rejected(400)  # rule 4
    if upgrade.lower() != "websocket":
        return Rejected(400)  # rule 5
    if host is None:
        return Rejected(400)  # rule 6
    return Upgrade(target=head.target, key=key, subprotocols=tuple(subprotocols), headers=head.headers)


def accept_key(key: str) -> str:
    """Sec-WebSocket-Accept for a Sec-WebSocket-Key (RFC 6455 §4.2.2)."""
    return base64.b64encode(hashlib.sha1(key.encode("latin-1") + GUID).digest()).decode("ascii")


def accept(upgrade: Upgrade, subprotocol: str | None) -> bytes:
    """The 101 answer."""
    lines = [
        "HTTP/1.1 101 Switching Protocols",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Accept: {accept_key(upgrade.key)}",
    ]
    if subprotocol is not None:
        lines.append(f"Sec-WebSocket-Protocol: {subprotocol}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def reject(status: int, headers: tuple[tuple[str, str], ...] = (), body: bytes = b"") -> bytes:
    """A refusal: the status, `headers`, a Content-Length and `body`; the connection closes after it."""
    lines = [f"HTTP/1.1 {status} {_REASONS.get(status, '')}".rstrip()]
    lines += [f"{name}: {value}" for name, value in headers]
    lines += [f"Content-Length: {len(body)}", "Connection: close"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body
