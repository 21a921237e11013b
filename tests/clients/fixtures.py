"""Test fixtures for the client server: a tiny same-node relay and a running node on 127.0.0.1.

`LocalRelay` is NOT the real routing (that is node/protocol/relay/core.py): it delivers to every live session of the
recipient id on this node with a fresh random `eid` and answers `delivered`, else `queued`.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import attrs
import trio

from node.net.clients import ClientServer, ClientSession
from node.protocol.identity import Identity
from node.protocol.settings import ClientsSection
from node.protocol.wire.client import Deliver, Envelope, Receipt, Status


class LocalRelay:
    def __init__(self) -> None:
        self.homes: dict[bytes, dict[int, ClientSession]] = {}
        self.envelopes = 0

    def client_online(self, session: ClientSession, address_key: str) -> None:
        self.homes.setdefault(session.client_id, {})[session.conn_id] = session

    def client_offline(self, session: ClientSession) -> None:
        sessions = self.homes.get(session.client_id, {})
        sessions.pop(session.conn_id, None)
        if not sessions:
            self.homes.pop(session.client_id, None)

    def client_envelope(self, session: ClientSession, env: Envelope) -> None:
        self.envelopes += 1
        msg = Deliver(kind=env.kind, sender=session.client_id, call=env.call, body=env.body, eid=os.urandom(16))
        delivered = [s.send(msg) for s in list(self.homes.get(env.to, {}).values())]
        status = Status.DELIVERED if any(delivered) else Status.QUEUED
        session.send(Receipt(ref=env.ref, status=status))


@attrs.frozen
class Node:
    server: ClientServer
    relay: LocalRelay
    identity: Identity
    port: int

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/v1/client"


@asynccontextmanager
async def running_node(**config: Any) -> AsyncIterator[Node]:
    identity = Identity.generate()
    relay = LocalRelay()
    server = ClientServer(identity=identity, config=ClientsSection(**config), relay=relay)
    async with trio.open_nursery() as nursery:
        port = await nursery.start(server.serve, "127.0.0.1", 0)
        yield Node(server=server, relay=relay, identity=identity, port=port)
        nursery.cancel_scope.cancel()


def run(fn: Callable[[], Awaitable[None]], *, mock_clock: bool = False, limit_s: float = 20.0) -> None:
    """Run an async test under trio with a hard time bound (virtual time when mock_clock)."""

    async def bounded() -> None:
        with trio.fail_after(limit_s):
            await fn()

    clock = trio.testing.MockClock(autojump_threshold=0) if mock_clock else None
    trio.run(bounded, clock=clock)


async def wait_until(pred: Callable[[], bool]) -> None:
    """Wait (until the test's fail_after) for a condition that a server task will make true."""
    while not pred():
        await trio.sleep(0.005)
