"""Call signalling across real nodes: full call flow, offline delivery, cancel by hangup, expiry, re-homing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import trio

from node.client.connection import connect_client
from node.protocol.identity import Identity
from node.protocol.wire.client import Deliver, Receipt
from tests.integration.cluster import federation, next_matching, terminal_receipt, url


def delivered(sender: bytes, kind: str):  # type: ignore[no-untyped-def]
    return lambda m: isinstance(m, Deliver) and m.sender == sender and m.kind.value == kind


async def test_full_call_flow_between_clients_on_different_nodes(tmp_path: Path) -> None:
    alice, bob = Identity.generate(), Identity.generate()
    async with (
        federation(tmp_path, 3) as nodes,
        connect_client(url(nodes[0]), alice) as a,
        connect_client(url(nodes[2]), bob) as b,
    ):
        call = b"call-1"
        ref = await a.send_envelope("call_offer", bob.id, call, b"sdp-offer")
        offer = await next_matching(b, delivered(alice.id, "call_offer"))
        assert isinstance(offer, Deliver) and offer.body == b"sdp-offer" and len(offer.eid) == 16
        assert (await terminal_receipt(a, ref)).status.value == "delivered"
        refs = [await a.send_envelope("call_ice", bob.id, call, f"cand-{i}".encode()) for i in range(5)]
        bodies = [(await next_matching(b, delivered(alice.id, "call_ice"))).body for _ in range(5)]  # type: ignore[union-attr]
        assert bodies == [f"cand-{i}".encode() for i in range(5)], "one call's envelopes keep their order"
        for r in refs:
            assert (await terminal_receipt(a, r)).status.value == "delivered"
        ref = await b.send_envelope("call_answer", alice.id, call, b"sdp-answer")
        assert (await next_matching(a, delivered(bob.id, "call_answer"))).body == b"sdp-answer"  # type: ignore[union-attr]
        assert (await terminal_receipt(b, ref)).status.value == "delivered"
        ref = await a.send_envelope("call_hangup", bob.id, call, b"")
        await next_matching(b, delivered(alice.id, "call_hangup"))
        assert (await terminal_receipt(a, ref)).status.value == "delivered"


async def test_offline_callee_gets_the_offer_when_it_comes_online(tmp_path: Path) -> None:
    alice, carol = Identity.generate(), Identity.generate()
    async with federation(tmp_path, 3) as nodes, connect_client(url(nodes[0]), alice) as a:
        ref = await a.send_envelope("call_offer", carol.id, b"c2", b"offer")
        queued = await next_matching(a, lambda m: isinstance(m, Receipt) and m.ref == ref)
        assert isinstance(queued, Receipt) and queued.status.value == "queued"
        async with connect_client(url(nodes[1]), carol) as c:
            offer = await next_matching(c, delivered(alice.id, "call_offer"))
            assert offer.body == b"offer"  # type: ignore[union-attr]
        assert (await terminal_receipt(a, ref)).status.value == "delivered"


async def test_hangup_cancels_a_queued_offer(tmp_path: Path) -> None:
    alice, dave = Identity.generate(), Identity.generate()
    async with federation(tmp_path, 3) as nodes, connect_client(url(nodes[0]), alice) as a:
        offer_ref = await a.send_envelope("call_offer", dave.id, b"c3", b"offer")
        await next_matching(a, lambda m: isinstance(m, Receipt) and m.ref == offer_ref)  # queued
        hangup_ref = await a.send_envelope("call_hangup", dave.id, b"c3", b"")
        assert (await terminal_receipt(a, offer_ref)).status.value == "cancelled"
        assert (await terminal_receipt(a, hangup_ref)).status.value == "cancelled"
        async with connect_client(url(nodes[2]), dave) as d:
            with trio.move_on_after(1.0):
                msg = await d.receive()
                raise AssertionError(f"a callee never gets a dead call, got {msg}")


async def test_queued_offer_expires_with_one_terminal_receipt(tmp_path: Path) -> None:
    alice, erin = Identity.generate(), Identity.generate()
    async with federation(tmp_path, 2, relay={"mailbox_ttl": 1.0}) as nodes, connect_client(url(nodes[0]), alice) as a:
        ref = await a.send_envelope("call_offer", erin.id, b"c4", b"offer")
        await next_matching(a, lambda m: isinstance(m, Receipt) and m.ref == ref)  # queued
        assert (await terminal_receipt(a, ref, timeout=15)).status.value == "expired"


async def _first_receipts(conn: Any, refs: list[int]) -> dict[int, str]:
    """The first receipt of each of `refs` (queued, or terminal), by ref."""
    got: dict[int, str] = {}
    while len(got) < len(refs):
        msg = await next_matching(conn, lambda m: isinstance(m, Receipt) and m.ref in refs and m.ref not in got)
        assert isinstance(msg, Receipt)
        got[msg.ref] = msg.status.value
    return got


async def test_one_attacker_cannot_fill_a_callees_mailbox_and_lock_its_callers_out(tmp_path: Path) -> None:
    """docs/security.md, "Malicious client": one client with fresh keys at four addresses behind one node sends an
    offline callee all the offers it can (2 keys an address, 16 offers each). One address has at most 24 in its
    node's mailbox path to one recipient (`mailbox_per_address_per_id_max`), one origin node holds at most 32 of
    the callee's mailbox at each owner (`mailbox_per_origin_per_id_max`): the attacker gets at most 32 queued, and a
    caller through another node is still `queued` and delivered when the callee connects.
    On the code before, the attacker took all 64 entries and the caller was rejected `rate_limited`."""
    alice, callee = Identity.generate(), Identity.generate()
    with trio.fail_after(60):
        async with federation(tmp_path, 3) as nodes:
            queued: dict[str, int] = {}  # by address
            for a in range(4):
                address = f"127.0.0.{2 + a}"
                for _k in range(2):
                    async with connect_client(url(nodes[0]), Identity.generate(), local_address=address) as x:
                        refs = [await x.send_envelope("call_offer", callee.id, b"x%d" % i, b"x") for i in range(16)]
                        got = await _first_receipts(x, refs)
                        assert set(got.values()) <= {"queued", "rejected"}, got
                        queued[address] = queued.get(address, 0) + list(got.values()).count("queued")
            async with connect_client(url(nodes[1]), alice, local_address="127.0.0.1") as a_conn:
                ref = await a_conn.send_envelope("call_offer", callee.id, b"honest", b"offer")
                assert (await _first_receipts(a_conn, [ref]))[ref] == "queued"
                assert 0 < sum(queued.values()) <= 32 and max(queued.values()) <= 24, queued
                async with connect_client(url(nodes[2]), callee) as c:
                    offer = await next_matching(c, delivered(alice.id, "call_offer"))
                    assert isinstance(offer, Deliver) and offer.body == b"offer"
                assert (await terminal_receipt(a_conn, ref)).status.value == "delivered"
