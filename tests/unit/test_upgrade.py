"""The node's own WebSocket upgrade (node/protocol/wire/upgrade.py) against wsproto's server handshake.

The node answered upgrades with wsproto's `H11Handshake` before; it now answers them from its own parse of the
head. Generated requests (every combination of the headers the rules look at, named twice, in any case, with
HTTP/1.0 and 1.1) go to both: the same ones are accepted, with the same Sec-WebSocket-Accept, subprotocols and
target, and the same ones refused, with the same status and Sec-WebSocket-Version answer.
"""

from __future__ import annotations

import base64

import h11
from hypothesis import given, settings
from hypothesis import strategies as st
from wsproto.connection import ConnectionType
from wsproto.events import AcceptConnection, Request
from wsproto.handshake import H11Handshake
from wsproto.utilities import RemoteProtocolError

from node.protocol.decoy import parse_head, split_head
from node.protocol.wire import upgrade

KEY = base64.b64encode(bytes(range(16))).decode()


def wsproto_answer(raw: bytes) -> tuple[str, object]:
    """("accept", (accept header, subprotocols, target)) or ("reject", (status, version header))."""
    hs = H11Handshake(ConnectionType.SERVER)
    try:
        hs.receive_data(raw)
        events = list(hs.events())
    except RemoteProtocolError as exc:
        hint = exc.event_hint
        status = getattr(hint, "status_code", 400)
        version = dict(getattr(hint, "headers", None) or []).get(b"Sec-WebSocket-Version")
        return "reject", (status, version.decode() if version else None)
    except h11.RemoteProtocolError:
        return "reject", (400, None)
    request = next(e for e in events if isinstance(e, Request))
    sub = request.subprotocols[0] if request.subprotocols else None
    answer = bytes(hs.send(AcceptConnection(subprotocol=sub)))
    return "accept", (_headers(answer), tuple(request.subprotocols), request.target)


def own_answer(raw: bytes) -> tuple[str, object]:
    got = split_head(raw)
    assert got is not None
    head = parse_head(got[0])
    if head.bad:  # the decoy answers these (node/net/clients.py); wsproto must refuse them too
        return "reject", (400, None)
    checked = upgrade.check(head)
    if isinstance(checked, upgrade.Rejected):
        version = dict(checked.headers).get("Sec-WebSocket-Version")
        return "reject", (checked.status, version)
    sub = checked.subprotocols[0] if checked.subprotocols else None
    return "accept", (_headers(upgrade.accept(checked, sub)), checked.subprotocols, checked.target)


def _headers(response: bytes) -> dict[str, str]:
    lines = response.decode("latin-1").split("\r\n")
    assert lines[0].startswith("HTTP/1.1 101"), lines[0]
    return {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:] if line)}


def _case(name: str, upper: bool) -> str:
    return name.upper() if upper else name


header = st.sampled_from
requests = st.fixed_dictionaries(
    {
        "method": header(["GET", "GET", "GET", "POST"]),
        "version": header(["HTTP/1.1", "HTTP/1.1", "HTTP/1.0"]),
        "target": header(["/v1/client", "/v1/client?format=json", "/other"]),
        "host": header([None, "node.example", "127.0.0.1:8443"]),
        "connection": st.lists(
            header(["Upgrade", "upgrade", "keep-alive, Upgrade", "close", "keep-alive"]), max_size=2
        ),
        "upgrade": st.lists(header(["websocket", "WebSocket", "h2c", "websocket, h2c"]), max_size=2),
        "ws_version": st.lists(header(["13", "8", "14"]), max_size=2),
        "key": st.lists(header([KEY, "short", "dGhlIHNhbXBsZSBub25jZQ=="]), max_size=2),
        "protocol": st.lists(header(["homing.v1.json", "x, homing.v1.json", "chat"]), max_size=2),
        "shout": st.booleans(),
        "extra": st.lists(header(["X-Forwarded-For: 203.0.113.7", "Origin: https://a.example", "Accept: */*"])),
    }
)


def build(r: dict[str, object]) -> bytes:
    shout = bool(r["shout"])
    lines = [f"{r['method']} {r['target']} {r['version']}"]
    if r["host"] is not None:
        lines.append(f"{_case('Host', shout)}: {r['host']}")
    for name, key in (
        ("Connection", "connection"),
        ("Upgrade", "upgrade"),
        ("Sec-WebSocket-Version", "ws_version"),
        ("Sec-WebSocket-Key", "key"),
        ("Sec-WebSocket-Protocol", "protocol"),
    ):
        for value in r[key]:  # type: ignore[attr-defined]
            lines.append(f"{_case(name, shout)}: {value}")
    lines += list(r["extra"])  # type: ignore[call-overload]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


@settings(max_examples=600, deadline=None)
@given(requests)
def test_the_same_requests_are_accepted_and_refused_as_by_wsproto(r: dict[str, object]) -> None:
    raw = build(r)
    own, theirs = own_answer(raw), wsproto_answer(raw)
    if len(r["key"]) > 1 and theirs[0] == "accept":  # type: ignore[arg-type]
        assert own == ("reject", (400, None)), raw  # the one difference (node/protocol/wire/upgrade.py rule 4)
    else:
        assert own == theirs, raw


def test_the_accept_key_of_rfc_6455() -> None:
    assert upgrade.accept_key("dGhlIHNhbXBsZSBub25jZQ==") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="  # RFC 6455 §1.3


def test_a_refusal_says_its_status_headers_and_length_and_closes() -> None:
    answer = upgrade.reject(503, (("Retry-After", "1"),), b"busy\n")
    assert answer == (
        b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\nContent-Length: 5\r\nConnection: close\r\n\r\nbusy\n"
    )
