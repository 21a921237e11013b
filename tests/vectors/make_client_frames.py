"""Write tests/vectors/client_frames.json: frames, signatures and documents made by the Python node's own encoders.

The browser client's tests (web/test/codec.test.js and friends) decode and re-encode these bytes, so the two sides
provably speak the same client protocol v1 (docs/client-protocol.md) and discovery formats (docs/discovery.md).
Everything is deterministic (fixed seeds, nonces and times): running this again gives the same file, which
tests/web/test_vectors.py checks.

    python -m tests.vectors.make_client_frames [--check]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import dns.message
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rrset

from node.protocol.errors import RemoteProtocolError
from node.protocol.identity import (
    NODE_CARD,
    Identity,
    b64u_encode,
    client_auth_message,
    encode_document,
    node_auth_message,
    sign_document,
)
from node.protocol.nodelist import CARD_PREFIX, NodeEntry, build_node_list, make_card, parse_card
from node.protocol.txt import encode_txt
from node.protocol.webpush import private_key_from_scalar, public_point
from node.protocol.wire.client import (
    Challenge,
    Deliver,
    Envelope,
    Error,
    ErrorCode,
    GoAway,
    Hello,
    Kind,
    Ok,
    Ping,
    Pong,
    PushRegister,
    PushUnregister,
    Reason,
    Receipt,
    Status,
    Welcome,
    encode_client_message,
    message_to_map,
)

OUT = Path(__file__).with_name("client_frames.json")
NOW = 1_760_000_000


def _seed(n: int) -> bytes:
    return bytes([n]) * 32


def _jsonable(m: dict[str, Any]) -> dict[str, Any]:
    return {k: {"bytes": v.hex()} if isinstance(v, bytes) else v for k, v in m.items()}


def _frame(msg: Any) -> dict[str, Any]:
    packed = encode_client_message(msg, json=False)
    text = encode_client_message(msg, json=True)
    assert isinstance(packed, bytes) and isinstance(text, str)
    return {"map": _jsonable(message_to_map(msg)), "msgpack": packed.hex(), "json": text}


# (ws URL, seconds after NOW the reader checks it): the cases of docs/discovery.md "Referral card and QR"
CARD_CASES = [
    ("wss://sig.example.test/v1/client", 0),
    ("wss://sig.example.test/v1/client", 30 * 86_400),  # the last second of the default lifetime
    ("wss://sig.example.test/v1/client", 30 * 86_400 + 1),  # expired
    ("ws://127.0.0.1:7400/v1/client", 0),
    ("ws://127.3.4.5:7400/v1/client", 0),
    ("ws://localhost:7400/v1/client", 0),
    ("ws://[::1]:7400/v1/client", 0),
    ("ws://10.1.2.3:7400/v1/client", 0),
    ("ws://172.16.0.1/v1/client", 0),
    ("ws://172.31.255.254/v1/client", 0),
    ("ws://192.168.1.20:7400/v1/client", 0),
    ("ws://169.254.10.1/v1/client", 0),
    ("ws://[fd12:3456::1]:7400/v1/client", 0),
    ("ws://[fe80::1]/v1/client", 0),
    ("ws://sig.example.test/v1/client", 0),  # plain ws:// to a public host: refused
    ("ws://8.8.8.8:7400/v1/client", 0),
    ("ws://172.32.0.1/v1/client", 0),
    ("ws://11.0.0.1/v1/client", 0),
    ("ws://[2606:4700::1111]/v1/client", 0),
    ("ws://127.0.0.1.example.test/v1/client", 0),
    ("ws://[2001:0:4136:e378:8000:63bf:3fff:fdd2]/v1/client", 0),  # Teredo: public (Python's is_private says not)
    ("ws://198.18.0.1/v1/client", 0),
    ("ws://[::ffff:a00:1]/v1/client", 0),  # IPv4-mapped 10.0.0.1: private
    ("ws://10.1.2.3:7400/v1/client", 30 * 86_400 + 1),  # private but expired
]


def _card_vectors(node: Identity) -> list[dict[str, Any]]:
    """Cards and what the Python reader (parse_card) says about each at `now`: the browser must agree."""
    out: list[dict[str, Any]] = []
    cards = [(make_card(node, ws=ws, ts=NOW, allow_plain_ws=True), NOW + dt) for ws, dt in CARD_CASES]
    no_exp = sign_document(node, NODE_CARD, {"id": node.id, "ws": "wss://sig.example.test/v1/client", "ts": NOW})
    cards.append((CARD_PREFIX + b64u_encode(encode_document(no_exp)), NOW))  # a card from before `exp`
    for uri, now in cards:
        try:
            card = parse_card(uri, now=now)
            out.append({"uri": uri, "now": now, "ok": True, "ws": card.ws, "exp": card.exp})
        except RemoteProtocolError as exc:
            out.append({"uri": uri, "now": now, "ok": False, "error": str(exc)})
    return out


def build() -> dict[str, Any]:
    client, node, registry = Identity.from_seed(_seed(1)), Identity.from_seed(_seed(2)), Identity.from_seed(_seed(3))
    node_nonce, client_nonce = bytes(range(32)), bytes(range(32, 64))
    hello_sig = client.sign(client_auth_message(node.id, node_nonce))
    welcome_sig = node.sign(node_auth_message(client.id, client_nonce))
    peer, call, eid = Identity.from_seed(_seed(4)).id, b"call-0001", bytes(range(16))
    vapid = public_point(private_key_from_scalar(_seed(5)))  # a node's VAPID public key
    push = PushRegister(  # a browser's PushSubscription: its P-256 key and auth secret
        endpoint="https://push.example.test/wpush/v2/gAAAAABn-x_y",
        p256dh=public_point(private_key_from_scalar(_seed(6))),
        auth=bytes(range(100, 116)),
    )
    from_node = [
        _frame(Challenge(node=node.id, nonce=node_nonce)),
        _frame(Welcome(id=client.id, sig=welcome_sig)),
        *(_frame(Deliver(kind=k, sender=peer, call=call, body=b"\x00\x01ciphertext", eid=eid)) for k in Kind),
        *(_frame(Receipt(ref=7, status=s)) for s in Status if s is not Status.REJECTED),
        *(_frame(Receipt(ref=2**53 - 1, status=Status.REJECTED, reason=r)) for r in Reason),
        *(_frame(Error(code=c)) for c in ErrorCode),
        _frame(Error(code=ErrorCode.BAD_REQUEST, ref=9)),
        _frame(GoAway(nodes=(make_card(node, ws="ws://127.0.0.1:7400/v1/client", ts=NOW),))),
        _frame(Ping()),
        _frame(Pong()),
        _frame(Ok(of="push_register", vapid=vapid)),
        _frame(Ok(of="push_unregister")),
    ]
    to_node = [
        _frame(Hello(id=client.id, nonce=client_nonce, sig=hello_sig)),
        *(_frame(Envelope(kind=k, to=peer, call=call, body=b"body", ref=1)) for k in Kind),
        _frame(Envelope(kind=Kind.CALL_ICE, to=peer, call=b"x" * 64, body=bytes(300), ref=2**53 - 1)),
        _frame(Ping()),
        _frame(push),
        _frame(PushUnregister()),
    ]
    entries = [
        NodeEntry(
            id=Identity.from_seed(_seed(10 + i)).id,
            ws=f"ws://127.0.0.1:{7400 + i}/v1/client",
            swim=f"127.0.0.1:{7500 + i}",
            peer=f"127.0.0.1:{7600 + i}",
            seen=NOW,
        )
        for i in range(3)
    ]
    node_list = build_node_list(registry, entries, issued=NOW, expires=NOW + 3600)
    query = dns.message.make_query("_homing.example.test", dns.rdatatype.TXT, use_edns=0, pad=128)
    query.id = 0
    answer = dns.message.make_response(query)
    alias = "_homing.example.test."
    target = "lists.example.test."
    answer.answer.append(dns.rrset.from_text(alias, 300, "IN", "CNAME", target))
    for rec in [[b"v=spf1 -all"], *encode_txt(node_list)]:
        # one RRset per record: an RRset's rdatas have no fixed order in dnspython, and the vector must have one
        wire = b"".join(bytes([len(s)]) + s for s in rec)
        rdata = dns.rdata.from_wire(dns.rdataclass.IN, dns.rdatatype.TXT, wire, 0, len(wire))
        answer.answer.append(dns.rrset.from_rdata_list(target, 300, [rdata]))
    return {
        "about": "made by tests/vectors/make_client_frames.py from the Python node's encoders; do not edit",
        "handshake": {
            "client_seed": _seed(1).hex(),
            "client_id": client.id.hex(),
            "node_seed": _seed(2).hex(),
            "node_id": node.id.hex(),
            "node_nonce": node_nonce.hex(),
            "client_nonce": client_nonce.hex(),
            "client_auth_message": client_auth_message(node.id, node_nonce).hex(),
            "node_auth_message": node_auth_message(client.id, client_nonce).hex(),
            "hello_sig": hello_sig.hex(),
            "welcome_sig": welcome_sig.hex(),
        },
        "push_subscription": {  # PushSubscription.toJSON() of `push` (docs/client-protocol.md, "Push wake-up")
            "endpoint": push.endpoint,
            "keys": {"p256dh": b64u_encode(push.p256dh), "auth": b64u_encode(push.auth)},
        },
        "from_node": from_node,
        "to_node": to_node,
        "documents": {
            "now": NOW,
            "registry_id": b64u_encode(registry.id),
            "node_list": encode_document(node_list).hex(),
            "node_list_ids": [b64u_encode(e.id) for e in entries],
            "node_list_ws": [e.ws for e in entries],
            "node_card": make_card(node, ws="wss://sig.example.test/v1/client", ts=NOW),
            "node_card_id": b64u_encode(node.id),
            "cards": _card_vectors(node),
            "txt_records": [[s.hex() for s in rec] for rec in encode_txt(node_list)],
            "doh_query_name": "_homing.example.test",
            "doh_query": query.to_wire().hex(),
            "doh_answer": answer.to_wire(max_size=65535).hex(),
        },
    }


def main(argv: list[str]) -> int:
    text = json.dumps(build(), indent=1, sort_keys=False) + "\n"
    if "--check" in argv:
        if OUT.read_text() != text:
            print(f"{OUT} is out of date: run python -m tests.vectors.make_client_frames", file=sys.stderr)
            return 1
        return 0
    OUT.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
