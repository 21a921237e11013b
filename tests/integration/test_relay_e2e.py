"""Call signalling across real nodes: full call flow, offline delivery, cancel by hangup, expiry, re-homing."""

from __future__ import annotations

from pathlib import Path

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
