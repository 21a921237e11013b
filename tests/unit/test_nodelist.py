"""Signed documents of docs/bootstrap.md and docs/discovery.md: node lists, registrations, leaves and cards."""

from __future__ import annotations

import msgpack
import pytest

from node.protocol.errors import BadSignature, Expired, RemoteProtocolError
from node.protocol.identity import (
    NODE_LIST,
    Identity,
    b64u_decode,
    b64u_encode,
    decode_document,
    encode_document,
    sign_document,
)
from node.protocol.nodelist import (
    LIST_BYTES_MAX,
    NodeEntry,
    build_leave,
    build_node_list,
    build_registration,
    make_card,
    open_leave,
    open_node_list,
    open_registration,
    parse_card,
)
from node.protocol.txt import decode_txt, encode_txt

REG = Identity.from_seed(b"r" * 32)
NODE = Identity.from_seed(b"n" * 32)


def entry(ident: Identity = NODE) -> NodeEntry:
    return NodeEntry(
        id=ident.id, ws="ws://127.0.0.1:7400/v1/client", swim="127.0.0.1:7401", peer="127.0.0.1:7402", seen=1000
    )


def test_node_list_round_trip() -> None:
    doc = build_node_list(REG, [entry()], issued=1000, expires=2000)
    nl = open_node_list(doc, {REG.id}, now=1500)
    assert nl.nodes == (entry(),)
    assert (nl.issued, nl.expires, nl.signer) == (1000, 2000, REG.id)


def test_node_list_untrusted_key_refused() -> None:
    doc = build_node_list(NODE, [entry()], issued=1000, expires=2000)
    with pytest.raises(BadSignature):
        open_node_list(doc, {REG.id}, now=1500)


def test_node_list_tampered_refused() -> None:
    doc = build_node_list(REG, [entry()], issued=1000, expires=2000)
    body = bytearray(doc["body"])
    body[-5] ^= 1
    with pytest.raises(BadSignature):
        open_node_list({**doc, "body": bytes(body)}, {REG.id}, now=1500)


def test_node_list_expired_refused() -> None:
    doc = build_node_list(REG, [entry()], issued=1000, expires=2000)
    with pytest.raises(Expired):
        open_node_list(doc, {REG.id}, now=2001)


@pytest.mark.parametrize("bad", [None, [], {"body": b"x"}, {"body": 1, "key": b"k", "sig": b"s"}])
def test_node_list_malformed_refused(bad: object) -> None:
    with pytest.raises(RemoteProtocolError):
        open_node_list(bad, {REG.id}, now=0)


def test_registration_must_be_signed_by_its_node() -> None:
    doc = build_registration(NODE, ws="ws://h:1/v1/client", swim="h:2", peer="h:3", ts=5, ttl=60, reg=REG.id)
    assert open_registration(doc).id == NODE.id
    forged = build_registration(REG, ws="ws://h:1/v1/client", swim="h:2", peer="h:3", ts=5, ttl=60, reg=REG.id)
    body_with_other_id = decode_document(encode_document(forged))
    reg = open_registration(body_with_other_id)
    assert reg.id == REG.id  # a node may only register itself: the id is the signer


def test_leave_round_trip() -> None:
    assert open_leave(build_leave(NODE, ts=9)) == (NODE.id, 9)


def test_card_round_trip_and_tamper() -> None:
    uri = make_card(NODE, ws="wss://sig.example.org/v1/client", ts=77)
    card = parse_card(uri, now=78)
    assert (card.id, card.ws, card.ts) == (NODE.id, "wss://sig.example.org/v1/client", 77)
    raw = bytearray(b64u_decode(uri.split("/")[-1]))
    raw[-3] ^= 1
    with pytest.raises(RemoteProtocolError):
        parse_card("homing://node/" + b64u_encode(bytes(raw)), now=78)
    with pytest.raises(RemoteProtocolError):
        parse_card("homing://node/!!!", now=78)


def test_node_list_members_round_trip_and_old_lists_still_read() -> None:
    """Bridge ids ride in the additive `members` field (docs/bootstrap.md); a list without it reads as no members
    and carries no `members` key at all, so readers that predate it see the same body."""
    doc = build_node_list(REG, [entry()], issued=1000, expires=2000, members=[b"\x07" * 32])
    nl = open_node_list(doc, {REG.id}, now=1500)
    assert nl.members == (b"\x07" * 32,) and nl.nodes == (entry(),)
    old = build_node_list(REG, [entry()], issued=1000, expires=2000)
    assert "members" not in msgpack.unpackb(old["body"])
    assert open_node_list(old, {REG.id}, now=1500).members == ()


@pytest.mark.parametrize("bad", [b"\x07" * 32, [b"short"], ["a" * 32]])
def test_node_list_malformed_members_refused(bad: object) -> None:
    body = {"v": 1, "issued": 1000, "expires": 2000, "nodes": [], "members": bad}
    with pytest.raises(RemoteProtocolError, match="members"):
        open_node_list(sign_document(REG, NODE_LIST, body), {REG.id}, now=1500)


def test_a_full_list_with_members_fits_dns_txt_and_keeps_them() -> None:
    """The registry's byte budget (`LIST_BYTES_MAX`, members included) stays below what one DNS answer carries, and
    the TXT export carries `members` in the signed body (docs/bootstrap.md "Bridges in the list")."""
    members = [bytes([i % 256, i // 256]) * 16 for i in range(1100)]  # about 37 KiB of ids
    doc = build_node_list(REG, [entry()], issued=1000, expires=2000, members=members)
    assert len(encode_document(doc)) <= LIST_BYTES_MAX
    back = decode_txt(encode_txt(doc))
    assert open_node_list(back, {REG.id}, now=1500).members == tuple(members)
