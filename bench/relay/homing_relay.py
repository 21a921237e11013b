"""homing's client server with a same-node relay (deliver to every live session, else `queued`), for bench/relay.

Usage: python bench/relay/homing_relay.py PORT  (prints "listening PORT" when ready). Rate limits are lifted so
the bench measures the WebSocket layer and the protocol work, not the token buckets.
"""

from __future__ import annotations

import os
import sys

import trio

from node.net.clients import ClientServer, ClientSession
from node.protocol.identity import Identity
from node.protocol.settings import ClientsSection
from node.protocol.wire.client import Deliver, Envelope, Receipt, Status


class BenchRelay:
    def __init__(self) -> None:
        self.homes: dict[bytes, dict[int, ClientSession]] = {}

    def client_online(self, session: ClientSession, address_key: str) -> None:
        self.homes.setdefault(session.client_id, {})[session.conn_id] = session

    def client_offline(self, session: ClientSession) -> None:
        sessions = self.homes.get(session.client_id, {})
        sessions.pop(session.conn_id, None)
        if not sessions:
            self.homes.pop(session.client_id, None)

    def client_envelope(self, session: ClientSession, env: Envelope) -> None:
        targets = self.homes.get(env.to)
        ok = False
        if targets:
            msg = Deliver(kind=env.kind, sender=session.client_id, call=env.call, body=env.body, eid=os.urandom(16))
            ok = any([s.send(msg) for s in list(targets.values())])
        session.send(Receipt(ref=env.ref, status=Status.DELIVERED if ok else Status.QUEUED))


async def main(port: int) -> None:
    config = ClientsSection(
        connections_max=50_000, connections_per_ip_max=50_000, rate_per_s=1e9, burst=10**9,
        ice_rate_per_s=1e9, ice_burst=10**9, handshakes_per_address_per_s=1e9, handshakes_per_address_burst=10**9,
    )
    server = ClientServer(identity=Identity.generate(), config=config, relay=BenchRelay())
    async with trio.open_nursery() as nursery:
        bound = await nursery.start(server.serve, "127.0.0.1", port)
        print(f"listening {bound}", flush=True)


if __name__ == "__main__":
    trio.run(main, int(sys.argv[1]) if len(sys.argv) > 1 else 0)
