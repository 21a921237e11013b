"""The relay driver with a real client server, core and client, on 127.0.0.1 in virtual time (trio MockClock).

Checks the parts the pure tests cannot: the node's challenge nonce carries its clock, so the hello signature is a
home claim the core accepts (a call between two clients of the node is delivered), and the driver closes a
connection with 1001 one lease period before its claim ages out (docs/protocol.md, "Relay authority").
"""

from __future__ import annotations

import random

import trio
import trio.testing

from node.app.metrics import NodeMetrics
from node.client.connection import ConnectionClosed, connect_client
from node.net.clients import ClientServer
from node.net.peers import PeerLinks
from node.net.relay import RelayDriver
from node.protocol.identity import Identity
from node.protocol.relay.core import RelayCore
from node.protocol.settings import ClientsSection, RelaySection
from node.protocol.wire.client import Deliver, Receipt, Status

CLAIM_AGE_MAX_S = 600.0


async def _scenario() -> None:
    node = Identity.generate()
    links = PeerLinks(node, admit=lambda p: False, address_of=lambda p: None)
    config = RelaySection(claim_age_max_s=CLAIM_AGE_MAX_S)
    core = RelayCore(node_id=node.id, config=config, rng=random.Random(1), now=trio.current_time(), sign=node.sign)
    driver = RelayDriver(core=core, links=links, metrics=NodeMetrics())
    server = ClientServer(identity=node, config=ClientsSection(), relay=driver)
    alice, bob = Identity.generate(), Identity.generate()
    async with trio.open_nursery() as nursery:
        await nursery.start(driver.run)
        port = await nursery.start(server.serve, "127.0.0.1", 0)
        url = f"ws://127.0.0.1:{port}/v1/client"
        async with connect_client(url, alice) as a, connect_client(url, bob) as b:
            t0 = trio.current_time()
            ref = await b.send_envelope("call_offer", alice.id, b"c", b"offer")
            got = await a.receive()
            assert isinstance(got, Deliver) and got.sender == bob.id
            receipt = await b.receive()
            assert isinstance(receipt, Receipt) and (receipt.ref, receipt.status) == (ref, Status.DELIVERED)
            closed: ConnectionClosed | None = None
            try:
                while True:
                    await a.receive()  # answers the node's pings meanwhile
            except ConnectionClosed as exc:
                closed = exc
            elapsed = trio.current_time() - t0
            assert closed.code == 1001 and "claim" in closed.reason
            assert CLAIM_AGE_MAX_S - config.lease_ttl_s - 5 <= elapsed <= CLAIM_AGE_MAX_S - config.lease_ttl_s + 5
        nursery.cancel_scope.cancel()


def test_the_driver_accepts_real_hello_claims_and_closes_1001_before_they_age_out() -> None:
    async def bounded() -> None:
        with trio.fail_after(CLAIM_AGE_MAX_S + 60):  # virtual seconds
            await _scenario()

    trio.run(bounded, clock=trio.testing.MockClock(autojump_threshold=0))
