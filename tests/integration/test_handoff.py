"""Graceful leave hands mailboxes to the next owners: a queued offer survives all its original owners leaving."""

from __future__ import annotations

from pathlib import Path

import trio

from node.client.connection import connect_client
from node.protocol.identity import Identity
from node.protocol.relay.rendezvous import owners
from node.protocol.wire.client import Deliver, Receipt
from tests.integration.cluster import federation, next_matching, terminal_receipt, url


async def test_queued_offer_survives_every_original_owner_leaving(tmp_path: Path) -> None:
    alice = Identity.generate()
    async with federation(tmp_path, 5) as nodes:
        ids = [h.identity.id for h in nodes]
        # a callee none of whose 3 owners is alice's node (node 0) or node 1, where the callee will connect
        while True:
            carol = Identity.generate()
            first_owners = owners(carol.id, ids, 3)
            if ids[0] not in first_owners and ids[1] not in first_owners:
                break
        async with connect_client(url(nodes[0]), alice) as a:
            ref = await a.send_envelope("call_offer", carol.id, b"h1", b"offer")
            queued = await next_matching(a, lambda m: isinstance(m, Receipt) and m.ref == ref)
            assert isinstance(queued, Receipt) and queued.status.value == "queued"
            for owner in first_owners:
                leaver = next(h for h in nodes if h.identity.id == owner)
                leaver.request_shutdown()
                with trio.fail_after(15):
                    while any(
                        any(m.id == owner and m.state.value != "left" for m in h.swim.members())
                        for h in nodes
                        if not h.shutdown_requested.is_set()
                    ):
                        await trio.sleep(0.05)
            stayed = [h for h in nodes if not h.shutdown_requested.is_set()]
            assert {h.identity.id for h in stayed} == {ids[0], ids[1]}
            assert sum(h.relay.core.stats().mailbox_envelopes for h in stayed) >= 1, "the entry was handed off"
            async with connect_client(url(nodes[1]), carol) as c:
                got = await next_matching(c, lambda m: isinstance(m, Deliver) and m.sender == alice.id)
                assert isinstance(got, Deliver) and got.body == b"offer"
            assert (await terminal_receipt(a, ref)).status.value == "delivered"
