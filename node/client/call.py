"""The `Call` layer of the reference client (docs/client-protocol.md, "Calls"): node/protocol/call.py over a connection.

    async with connect_client(url, identity) as conn, call_client(conn) as calls:
        servers = await calls.ice_servers()                 # STUN/TURN for the peer connection
        call = await calls.start_call(peer_id, sdp=offer_sdp, video=False)
        async for event in calls.events:                    # Changed, Description, Candidate, RestartIce
            ...
        await calls.candidate(call, Ice(cand=..., mid="0", mline=0, ufrag=...))
        await calls.connected(call)                         # the peer connection reached "connected"
        await calls.hangup(call)

A thin trio driver: it feeds every delivered envelope and the `expired`/`rejected` receipts of our offers into the
pure `Phone`, sends what it says, runs its timers, and hands the rest to the app as `events`. While the layer runs it
owns the connection's receive side (`conn.receive()`); other messages (goaway, errors) go to `other`.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Protocol

import trio

from node.client.connection import ClientConnection
from node.protocol.call import Command, Phone, Send, State, Timers
from node.protocol.e2ee import Ice
from node.protocol.wire.client import ClientMessage, Deliver, IceServers, Receipt, Status

EVENTS_MAX = 1024  # events the app has not read yet; the layer waits (and stops reading) when full
OFFER_REFS_MAX = 64


class CallObserver(Protocol):
    """Optional hooks (the demo narrates with them): every envelope sent, every receipt received."""

    def sent(self, conn: ClientConnection, send: Send, ref: int) -> None: ...
    def receipt(self, conn: ClientConnection, receipt: Receipt) -> None: ...


class CallClient:
    """Calls of one device over one ClientConnection. Create it with `call_client`."""

    def __init__(
        self, conn: ClientConnection, *, timers: Timers | None = None, observer: CallObserver | None = None
    ) -> None:
        self.conn = conn
        self.observer = observer
        self.phone = Phone(identity=conn.identity, random_bytes=os.urandom, timers=timers)
        self._events_in, self.events = trio.open_memory_channel[Command](EVENTS_MAX)
        self._other_in, self.other = trio.open_memory_channel[ClientMessage](EVENTS_MAX)
        self._offer_refs: dict[int, bytes] = {}
        self._poke = trio.Event()
        self._lock = trio.Lock()  # one Phone step (and its sends) at a time

    # --- app actions ---------------------------------------------------------------------------------------

    async def ice_servers(self) -> IceServers:
        return await self.conn.ice_servers()

    async def start_call(self, peer: bytes, *, sdp: str, video: bool) -> bytes:
        async with self._lock:
            call, cmds = self.phone.start_call(peer=peer, sdp=sdp, video=video, now=_now(), wall_s=time.time())
            await self._do(cmds)
        return call

    async def accept(self, call: bytes, *, sdp: str, video: bool) -> None:
        await self._step(lambda now: self.phone.accept(call, sdp=sdp, video=video, now=now))

    async def reject(self, call: bytes, reason: str = "declined") -> None:
        await self._step(lambda now: self.phone.reject(call, reason=reason, now=now))

    async def hangup(self, call: bytes) -> None:
        await self._step(lambda now: self.phone.hangup(call, now=now))

    async def candidate(self, call: bytes, ice: Ice) -> None:
        await self._step(lambda now: self.phone.local_candidate(call, ice, now=now))

    async def gathering_done(self, call: bytes) -> None:
        await self._step(lambda now: self.phone.gathering_done(call, now=now))

    async def connected(self, call: bytes) -> None:
        await self._step(lambda now: self.phone.media_connected(call, now=now))

    async def media_lost(self, call: bytes) -> None:
        await self._step(lambda now: self.phone.media_lost(call, now=now))

    async def renegotiate(self, call: bytes, *, sdp: str, video: bool) -> None:
        await self._step(lambda now: self.phone.renegotiate(call, sdp=sdp, video=video, now=now))

    async def reanswer(self, call: bytes, *, sdp: str, video: bool) -> None:
        await self._step(lambda now: self.phone.reanswer(call, sdp=sdp, video=video, now=now))

    # --- driver --------------------------------------------------------------------------------------------

    async def _step(self, fn: Callable[[float], list[Command]]) -> None:
        async with self._lock:
            await self._do(fn(_now()))

    async def _do(self, cmds: list[Command]) -> None:
        for cmd in cmds:
            if isinstance(cmd, Send):
                ref = await self.conn.send_envelope(cmd.kind, cmd.to, cmd.call, cmd.body)
                if self.observer is not None:
                    self.observer.sent(self.conn, cmd, ref)
                live = self.phone.calls.get(cmd.call)
                if cmd.kind == "call_offer" and live is not None and live.state is State.OUTGOING:
                    self._offer_refs[ref] = cmd.call
                    while len(self._offer_refs) > OFFER_REFS_MAX:
                        del self._offer_refs[next(iter(self._offer_refs))]
            else:
                await self._events_in.send(cmd)
        self._poke.set()

    async def _reader(self) -> None:
        while True:
            await self._on_message(await self.conn.receive())

    async def _on_message(self, msg: ClientMessage) -> None:
        if isinstance(msg, Deliver):
            kind, sender, call, body = msg.kind.value, msg.sender, msg.call, msg.body
            await self._step(
                lambda now: self.phone.on_envelope(
                    kind=kind, sender=sender, call=call, body=body, now=now, wall_s=time.time()
                )
            )
        elif isinstance(msg, Receipt):
            if self.observer is not None:
                self.observer.receipt(self.conn, msg)
            offer = self._offer_refs.pop(msg.ref, None) if msg.status is not Status.QUEUED else None
            if offer is not None and msg.status is Status.EXPIRED:
                await self._step(lambda now: self.phone.offer_expired(offer, now=now))
            elif offer is not None and msg.status is Status.REJECTED:
                await self._step(lambda now: self.phone.offer_refused(offer, now=now))
        else:
            with contextlib.suppress(trio.WouldBlock):
                self._other_in.send_nowait(msg)  # goaway, errors: dropped when the app does not read them

    async def _timers(self) -> None:
        while True:
            self._poke = trio.Event()
            with trio.move_on_at(self.phone.next_deadline()):
                await self._poke.wait()
                continue
            await self._step(self.phone.tick)


def _now() -> float:
    return trio.current_time()


@asynccontextmanager
async def call_client(
    conn: ClientConnection, *, timers: Timers | None = None, observer: CallObserver | None = None
) -> AsyncIterator[CallClient]:
    """Run the Call layer over `conn` until the block exits (the connection stays open)."""
    client = CallClient(conn, timers=timers, observer=observer)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(client._reader)
        nursery.start_soon(client._timers)
        try:
            yield client
        finally:
            nursery.cancel_scope.cancel()
