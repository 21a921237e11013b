"""Peer links: authenticated, encrypted TCP connections between nodes (trio driver).

Theory of operation
- One TCP listener on the peer port serves two kinds of connection, told apart by the first sealed frame:
  a *sync* connection carries one push-pull exchange (SWIM full-state sync) and closes; a *link* connection is
  a persistent relay link that carries msgpack frames both ways until it breaks.
- Handshake (node/protocol/crypto.py): `MAGIC | hello` each way, initiator first; both derive session keys from the
  static and ephemeral X25519 keys. The initiator pins the id it expected; the responder refuses ids that
  admission does not admit. A handshake not finished in `handshake_timeout_s` is dropped.
- Framing: `length(4, big endian) | sealed frame`; a sealed frame holds one or more msgpack maps back to back.
  Once both ends have said they read batches (link version 2), a link seals, per scheduler batch, every frame
  the batch produced for that peer into one box (up to `Limits.PEER_FRAME_MAX`): one authenticated encryption
  and one length prefix per batch instead of per frame. The initiator's link frame says `{"k": 2, "v": 2}`; a
  version-2 responder then batches, and answers with the same map as its first frame on the link, after which
  the initiator batches too. A version-1 node (one map per frame, which every version reads) never sends nor
  receives the answer, so nodes of both versions link with each other during a rolling upgrade.
  A frame over the limit, a frame that fails authentication or anything undecodable closes that connection
  (the stream cannot be resynchronised) and is counted.
- One link per pair: if both sides dial at once, the link initiated by the smaller id wins. Each side *retires*
  the other link rather than closing it: it takes no new frames, writes out what it holds, half-closes (EOF) and
  is still read until the other side's EOF (at most `io_timeout_s`). Both sides may already have written frames on
  the losing link before they learn which one won; closing it unread would lose those without telling anyone.
  The winner's frames are held until the retired link has been read to its end, so frames keep their order
  across the switch (the relay relies on FIFO links).
- Sending never blocks the caller: with a link up, `PeerLinks.send` seals the frame into the link's `OutBuffer`
  (node/net/sockio.py), which the node's flusher writes once per scheduler batch, every frame the batch produced in
  one syscall and without a task switch; with no link yet, it waits on the peer's bounded queue (False when full)
  until the dialled link takes it over. When a link breaks, what it had not written is lost and
  `on_unreachable(peer)` tells the relay, which has its own retries and receipts.
- Reconnect with exponential backoff (capped) while there is something to send.
"""

from __future__ import annotations

import contextlib
import os
import struct
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

import attrs
import trio

from node.net.sockio import Flusher, OutBuffer, read_some
from node.protocol.crypto import LINK_HELLO_BYTES, LinkHandshake, LinkSession
from node.protocol.errors import NotAdmitted, RemoteProtocolError, TooLarge, TransportError
from node.protocol.identity import Identity, short_id
from node.protocol.nodelist import parse_card
from node.protocol.refusals import Refusal
from node.protocol.wire import Limits, MsgType, packb, require_map, unpack_all, unpackb

MAGIC = b"HML1"
KIND_SYNC = 1
KIND_LINK = 2
# Link versions, told in the link frames: 1 seals one map per frame; 2 also reads frames that hold a batch of maps.
LINK_VERSION = 2
KIND_PING = 3  # SWIM's TCP fallback probe: answered at once, then closed
KIND_CARD = 4  # "give me your signed card" (for goaway referrals): answered at once, then closed

Address = tuple[str, int]


@attrs.frozen(kw_only=True, slots=True)
class PeerLimits:
    handshake_timeout_s: float = 5.0
    io_timeout_s: float = 10.0
    queue_max: int = 4096
    connections_max: int = 1024
    backoff_min_s: float = 0.1
    backoff_max_s: float = 10.0


class _Buffered:
    """Exact-length reads from a trio stream (through `read_some`, as client sessions read); EOF, a reset or a
    closed stream is a TransportError."""

    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        self._fd = stream.socket.fileno() if isinstance(stream, trio.SocketStream) else -1
        self._buf = bytearray()
        self._drained = False  # the last read was short: wait for readability before the next

    async def read_exactly(self, n: int) -> bytes:
        while len(self._buf) < n:
            want = max(65536, n - len(self._buf))
            chunk = await read_some(self.stream, self._fd, want, wait_first=self._drained)
            if not chunk:
                raise TransportError("peer closed the connection, or it broke")
            self._drained = len(chunk) < want
            self._buf += chunk
        out = bytes(self._buf[:n])
        del self._buf[:n]
        return out


class Channel:
    """A handshaken connection: sealed, length-prefixed frames over a trio stream."""

    def __init__(self, reader: _Buffered, session: LinkSession, peer_id: bytes) -> None:
        self.stream = reader.stream
        self._reader = reader
        self.session = session
        self.peer_id = peer_id
        self.peer_reads_batches = False  # the initiator's link frame said version >= 2 (set by the listener)

    def frame_bytes(self, obj: Any) -> bytes:
        return self.frame_sealed(packb(obj))

    def frame_sealed(self, plaintext: bytes) -> bytes:
        ct = self.session.seal(plaintext)
        return struct.pack(">I", len(ct)) + ct

    async def send(self, obj: Any) -> None:
        await _send_all(self.stream, self.frame_bytes(obj))

    async def receive(
        self, max_bytes: int = Limits.PEER_FRAME_MAX, max_items: int = Limits.MSGPACK_CONTAINER_MAX
    ) -> Any:
        """The one object of one sealed frame (one-shot connections, the first frame of a link)."""
        return unpackb(await self._open_next(max_bytes), max_bytes=max_bytes, max_items=max_items)

    async def receive_batch(self) -> list[Any]:
        """The maps of one sealed frame of a link (a batch; see the module docstring)."""
        return unpack_all(await self._open_next(Limits.PEER_FRAME_MAX), max_bytes=Limits.PEER_FRAME_MAX)

    async def _open_next(self, max_bytes: int) -> bytes:
        (n,) = struct.unpack(">I", await self._reader.read_exactly(4))
        if n > max_bytes + 16:
            raise TooLarge(f"peer frame of {n} bytes exceeds {max_bytes}")
        return self.session.open(await self._reader.read_exactly(n))

    async def aclose(self) -> None:
        with trio.move_on_after(1) as cs:
            cs.shield = True
            with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                await self.stream.aclose()


async def _send_all(stream: trio.abc.Stream, data: bytes) -> None:
    try:
        await stream.send_all(data)
    except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
        raise TransportError(f"peer connection broke: {exc}") from exc


async def handshake(
    stream: trio.abc.Stream,
    identity: Identity,
    *,
    initiator: bool,
    expected_id: bytes | None,
    admit: Callable[[bytes], bool],
) -> Channel:
    """Run the peer-link handshake on `stream`. Raises RemoteProtocolError or TransportError."""
    hs = LinkHandshake(identity, os.urandom(32))
    reader = _Buffered(stream)
    if initiator:
        await _send_all(stream, MAGIC + hs.hello())
    got = await reader.read_exactly(len(MAGIC) + LINK_HELLO_BYTES)
    if got[: len(MAGIC)] != MAGIC:
        raise RemoteProtocolError("not a homing peer link (bad magic)")
    their_hello = got[len(MAGIC) :]
    peer_id, session = hs.finish(their_hello, initiator=initiator)
    if expected_id is not None and peer_id != expected_id:
        raise RemoteProtocolError("peer is not the node we dialled (id mismatch)")
    if not admit(peer_id):
        raise NotAdmitted(f"peer {short_id(peer_id)} is not admitted to the federation")
    if not initiator:
        await _send_all(stream, MAGIC + hs.hello())
    return Channel(reader, session, peer_id)


async def dial(
    addr: Address, identity: Identity, expected_id: bytes, admit: Callable[[bytes], bool], timeout_s: float
) -> Channel:
    with trio.fail_after(timeout_s):
        try:
            stream = await trio.open_tcp_stream(addr[0], addr[1])
        except OSError as exc:
            raise TransportError(f"cannot reach peer at {addr[0]}:{addr[1]}: {exc}") from exc
        try:
            return await handshake(stream, identity, initiator=True, expected_id=expected_id, admit=admit)
        except BaseException:
            await stream.aclose()
            raise


# --- push-pull (SWIM full state sync) ------------------------------------------------------------------


async def push_pull(
    addr: Address,
    identity: Identity,
    expected_id: bytes,
    admit: Callable[[bytes], bool],
    state: bytes,
    *,
    join: bool,
    timeout_s: float,
) -> bytes:
    """Send our SWIM state to a peer and return its state (both encoded by node/protocol/wire/swim.py)."""
    with trio.fail_after(timeout_s):
        chan = await dial(addr, identity, expected_id, admit, timeout_s)
        try:
            await chan.send({"k": KIND_SYNC, "t": int(MsgType.PUSH_PULL), "join": join, "state": state})
            reply = require_map(await chan.receive(Limits.PUSH_PULL_MAX + 1024, max_items=16), "push-pull reply")
            if reply.get("t") != MsgType.PUSH_PULL_REPLY or not isinstance(reply.get("state"), bytes):
                raise RemoteProtocolError("bad push-pull reply")
            state_bytes: bytes = reply["state"]
            return state_bytes
        finally:
            await chan.aclose()


async def _ask(
    kind: int, addr: Address, identity: Identity, expected_id: bytes, admit: Callable[[bytes], bool], timeout_s: float
) -> dict[str, Any] | None:
    """One question on a short-lived connection: the answer map, or None (no answer within `timeout_s`)."""
    with trio.move_on_after(timeout_s):
        try:
            chan = await dial(addr, identity, expected_id, admit, timeout_s)
        except (TransportError, RemoteProtocolError, trio.TooSlowError):
            return None
        try:
            await chan.send({"k": kind})
            reply = await chan.receive(4096, max_items=8)
            return reply if isinstance(reply, dict) and reply.get("k") == kind else None
        except (TransportError, RemoteProtocolError):
            return None
        finally:
            await chan.aclose()
    return None


async def stream_ping(
    addr: Address, identity: Identity, expected_id: bytes, admit: Callable[[bytes], bool], *, timeout_s: float
) -> bool:
    """SWIM's TCP fallback probe: True when the node at `addr` proves `expected_id` and answers within `timeout_s`."""
    return await _ask(KIND_PING, addr, identity, expected_id, admit, timeout_s) is not None


async def fetch_card(
    addr: Address, identity: Identity, expected_id: bytes, admit: Callable[[bytes], bool], *, timeout_s: float
) -> str | None:
    """The signed referral card of the node at `addr`, verified to be `expected_id`'s own, or None."""
    reply = await _ask(KIND_CARD, addr, identity, expected_id, admit, timeout_s)
    uri = reply.get("card") if reply else None
    if not isinstance(uri, str):
        return None
    try:
        card = parse_card(uri, now=time.time(), allow_plain_ws=True)  # the client that gets it decides on ws://
    except RemoteProtocolError:
        return None
    return uri if card.id == expected_id else None


# --- persistent links ----------------------------------------------------------------------------------


class _LinkOut(OutBuffer):
    """A link's send side: frames are staged as plaintext and sealed, a batch to a box, when written.

    A failed or stuck write ends the link (its reader's scope is cancelled).
    """

    __slots__ = ("_plain", "batch", "chan", "failed", "frames", "scope")

    def __init__(self, chan: Channel, flusher: Flusher, write_timeout_s: float) -> None:
        super().__init__(chan.stream, flusher, write_timeout_s)
        self.chan = chan
        self.scope = trio.CancelScope()
        self.frames = 0  # queued since the buffer was last empty: the bound on a link's backlog
        self.failed = False  # a write failed: what was queued then is lost
        self.batch = False  # the peer reads frames holding several maps (link version 2)
        self._plain: list[bytes] = []

    def stage(self, plaintext: bytes) -> None:
        self._plain.append(plaintext)
        self._out_bytes += len(plaintext)
        self._mark()

    def _stage(self) -> None:
        if not self._plain:
            return
        if not self.batch:  # a version-1 peer: one map per sealed frame
            self._out.extend(self.chan.frame_sealed(p) for p in self._plain)
            self._plain.clear()
            return
        box: list[bytes] = []
        size = 0
        for p in self._plain:
            if box and size + len(p) > Limits.PEER_FRAME_MAX:
                self._out.append(self.chan.frame_sealed(b"".join(box)))
                box, size = [], 0
            box.append(p)
            size += len(p)
        self._out.append(self.chan.frame_sealed(b"".join(box) if len(box) > 1 else box[0]))
        self._plain.clear()

    def _drop(self) -> None:
        super()._drop()
        self._plain.clear()

    def _write_failed(self) -> None:
        self.failed = True
        self.scope.cancel()


@attrs.define(slots=True)
class _Link:
    chan: Channel
    we_initiated: bool
    out: _LinkOut
    retired: trio.Event | None = None  # set once a retired link has written out what it held and half-closed
    read_done: trio.Event = attrs.field(factory=trio.Event)  # its reader has ended (EOF, error or cancelled)


class PeerLinks:
    """Persistent relay links to other nodes, with bounded per-peer queues.

    `address_of(peer_id)` gives a peer's link address (from SWIM member meta) or None when it is not a live member.
    `on_message(peer_id, msg)` is called for every frame received on a link (a map; never blocks).
    `on_unreachable(peer_id)` is called when a link breaks or cannot be established while frames were pending.
    """

    def __init__(
        self,
        identity: Identity,
        *,
        admit: Callable[[bytes], bool],
        address_of: Callable[[bytes], Address | None],
        on_message: Callable[[bytes, dict[str, Any]], None],
        on_unreachable: Callable[[bytes], None],
        on_refused: Callable[[Refusal], None] = lambda reason: None,
        limits: PeerLimits = PeerLimits(),
        flusher: Flusher | None = None,
    ) -> None:
        self.identity = identity
        self.admit = admit
        self.address_of = address_of
        self.on_message = on_message
        self.on_unreachable = on_unreachable
        self.on_refused = on_refused
        self.limits = limits
        # the node shares one flusher between clients and peer links; standalone links run their own
        self.flusher = flusher if flusher is not None else Flusher()
        self._own_flusher = flusher is None
        self._queues: dict[bytes, deque[dict[str, Any]]] = {}  # frames waiting for a link to be dialled
        self._links: dict[bytes, _Link] = {}
        self._retiring: dict[bytes, list[_Link]] = {}  # links that lost a simultaneous dial, still being read
        self._dialers: set[bytes] = set()
        self._nursery: trio.Nursery | None = None

    @property
    def link_count(self) -> int:
        return len(self._links)

    def pending_frames(self) -> int:
        """Frames queued to any peer and not yet written (graceful leave waits for these to drain)."""
        return sum(len(q) for q in self._queues.values()) + sum(
            link.out.frames for link in self._links.values() if link.out.pending_bytes
        )

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            if self._own_flusher:
                await nursery.start(self.flusher.run)
            self._nursery = nursery
            task_status.started()
            await trio.sleep_forever()

    def send(self, peer: bytes, msg: dict[str, Any]) -> bool:
        """Queue `msg` for `peer`; False when the queue is full or we cannot run (the caller treats it as lost)."""
        if peer == self.identity.id or self._nursery is None:
            return False
        link = self._links.get(peer)
        if link is not None:
            return self._queue_on(link, msg)
        q = self._queues.setdefault(peer, deque())
        if len(q) >= self.limits.queue_max:
            return False
        q.append(msg)
        if peer not in self._dialers:
            try:
                self._nursery.start_soon(self._dial_loop, peer)
            except RuntimeError:  # shutting down: the nursery takes no new tasks
                q.pop()
                return False
            self._dialers.add(peer)
        return True

    def drop_peer(self, peer: bytes) -> None:
        """Forget a peer that left or died: close its link and drop what was queued for it."""
        self._queues.pop(peer, None)
        link = self._links.pop(peer, None)
        if link is not None:
            link.out.discard()  # queued in this batch: without this the flusher would still write it at its end
            link.out.scope.cancel()
            if self._nursery is not None:
                self._nursery.start_soon(link.chan.aclose)

    def _queue_on(self, link: _Link, msg: dict[str, Any]) -> bool:
        out = link.out
        if not out.pending_bytes:
            out.frames = 0
        if out.frames >= self.limits.queue_max:
            return False
        out.frames += 1
        out.stage(packb(msg))
        return True

    async def _dial_loop(self, peer: bytes) -> None:
        backoff = self.limits.backoff_min_s
        try:
            while self._queues.get(peer) and peer not in self._links:
                addr = self.address_of(peer)
                if addr is None:
                    self._fail_queue(peer)
                    return
                try:
                    chan = await dial(addr, self.identity, peer, self.admit, self.limits.handshake_timeout_s)
                    await chan.send({"k": KIND_LINK, "v": LINK_VERSION})
                except (TransportError, RemoteProtocolError, trio.TooSlowError):
                    self._fail_queue(peer)
                    await trio.sleep(backoff)
                    backoff = min(backoff * 2, self.limits.backoff_max_s)
                    continue
                assert self._nursery is not None
                self._nursery.start_soon(self._run_link, self._adopt(chan, we_initiated=True))
                return
        finally:
            self._dialers.discard(peer)

    def _fail_queue(self, peer: bytes) -> None:
        q = self._queues.get(peer)
        if q:
            q.clear()
            self.on_unreachable(peer)

    async def accept(self, chan: Channel) -> None:
        """Run an inbound link connection (after the handshake and the link frame) until it ends.

        The listener's connection task runs the link itself: trio closes a served stream when its handler returns.
        """
        await self._run_link(self._adopt(chan, we_initiated=False))

    def _adopt(self, chan: Channel, *, we_initiated: bool) -> _Link:
        """Make `chan` the link to its peer, unless an existing link wins: then `chan` is retired at once."""
        peer = chan.peer_id
        link = _Link(
            chan=chan, we_initiated=we_initiated, out=_LinkOut(chan, self.flusher, self.limits.io_timeout_s)
        )
        if not we_initiated and chan.peer_reads_batches:
            link.out.batch = True
            link.out.stage(packb({"k": KIND_LINK, "v": LINK_VERSION}))  # our first frame: we read batches too
        existing = self._links.get(peer)
        if existing is not None:
            # both sides dialled: keep the link initiated by the smaller id
            new_wins = (self.identity.id < peer) == we_initiated
            if not new_wins:
                self._retire(link)
                return link
            del self._links[peer]
            self._retire(existing)
        self._links[peer] = link
        for msg in self._queues.pop(peer, ()):  # what waited for the link goes first, in order
            self._queue_on(link, msg)
        return link

    def _retire(self, link: _Link) -> None:
        """A link that lost to the other one: it takes no new frames, but what it holds is written, and what the
        other side wrote on it before it learnt which link won is still read (until its EOF, at most `io_timeout_s`).
        """
        link.retired = trio.Event()
        self._retiring.setdefault(link.chan.peer_id, []).append(link)
        link.out.scope.deadline = min(link.out.scope.deadline, trio.current_time() + self.limits.io_timeout_s)
        try:
            if self._nursery is None:
                raise RuntimeError("not running")
            self._nursery.start_soon(self._half_close, link)
        except RuntimeError:  # not running or shutting down (`accept` runs in the listener's task): no EOF
            link.retired.set()

    async def _half_close(self, link: _Link) -> None:
        """Write out what a retired link holds, then send EOF: the other side then knows nothing more comes."""
        assert link.retired is not None
        try:
            link.out.flush_now()
            await link.out.drain(self.limits.io_timeout_s)
            stream = link.chan.stream
            done = not link.out.pending_bytes and not link.out.failed
            if done and isinstance(stream, trio.abc.HalfCloseableStream):
                # BusyResourceError: a writer that outlived the drain still holds the send side (no EOF then)
                with contextlib.suppress(
                    trio.BrokenResourceError, trio.BusyResourceError, trio.ClosedResourceError, OSError
                ):
                    await stream.send_eof()
        finally:
            link.retired.set()

    async def _run_link(self, link: _Link) -> None:
        chan = link.chan
        peer = chan.peer_id
        try:
            # cancelled when a write fails or the link is dropped; a retired link's also has a deadline
            with link.out.scope:
                await self._reader(link)
        except (TransportError, RemoteProtocolError):
            pass  # the link is gone; what was lost is reported below
        finally:
            link.read_done.set()
            retiring = self._retiring.get(peer)
            if retiring is not None and link in retiring:
                retiring.remove(link)
                if not retiring:
                    del self._retiring[peer]
            try:
                if link.retired is not None:  # the other side is done with it: finish our own half before closing
                    with trio.move_on_after(self.limits.io_timeout_s):
                        await link.retired.wait()
            finally:
                lost = link.out.pending_bytes > 0 or link.out.failed
                link.out.discard()  # nothing may be written to the socket once it is closed (its fd can be reused)
                current = self._links.get(peer) is link
                if current:
                    del self._links[peer]
                    self._fail_queue(peer)
                if current or lost:
                    self.on_unreachable(peer)
                await chan.aclose()
            if self._queues.get(peer) and peer not in self._dialers and self._nursery is not None:
                with contextlib.suppress(RuntimeError):  # RuntimeError: shutting down
                    self._nursery.start_soon(self._dial_loop, peer)
                    self._dialers.add(peer)

    async def _reader(self, link: _Link) -> None:
        chan, peer = link.chan, link.chan.peer_id
        while True:
            try:
                batch = await chan.receive_batch()
                if not all(isinstance(msg, dict) for msg in batch):
                    raise RemoteProtocolError("peer frame is not a map")
            except RemoteProtocolError as exc:
                self.on_refused(exc.refusal)
                raise
            if link.retired is None and self._retiring.get(peer):
                await self._after_retired(peer)
            for msg in batch:
                if "t" not in msg and msg.get("k") == KIND_LINK:  # the responder's answer to our link frame
                    version = msg.get("v")
                    link.out.batch = link.out.batch or (isinstance(version, int) and version >= 2)
                    continue
                self.on_message(peer, msg)

    async def _after_retired(self, peer: bytes) -> None:
        """FIFO across a switch of links: what the peer wrote on a link it then retired was written before what it
        writes on the winner, so the winner's frames wait until the retired links are read to their end (at most
        `io_timeout_s`; the retired link's own deadline ends it by then anyway)."""
        with trio.move_on_after(self.limits.io_timeout_s):
            for old in list(self._retiring.get(peer, ())):
                await old.read_done.wait()


# --- listener ------------------------------------------------------------------------------------------

SyncHandler = Callable[[bytes, bytes, bool], bytes]  # (peer id, their state, join) -> our state


async def serve_peers(
    listeners: list[trio.SocketListener],
    *,
    identity: Identity,
    admit: Callable[[bytes], bool],
    on_link: Callable[[Channel], Awaitable[None]],
    on_sync: SyncHandler,
    card: str | Callable[[], str] = "",
    limits: PeerLimits = PeerLimits(),
    on_refused: Callable[[Refusal], None] = lambda reason: None,
) -> None:
    """Accept peer connections: push-pull syncs are answered and closed; links go to `on_link` (which keeps them)."""
    active = 0

    async def handle(stream: trio.SocketStream) -> None:
        nonlocal active
        if active >= limits.connections_max:
            on_refused(Refusal.RATE_LIMITED)  # connections_max
            await stream.aclose()
            return
        active += 1
        chan: Channel | None = None
        keep = False
        try:
            with trio.fail_after(limits.handshake_timeout_s):
                chan = await handshake(stream, identity, initiator=False, expected_id=None, admit=admit)
                first = require_map(await chan.receive(Limits.PUSH_PULL_MAX + 1024, max_items=16), "first frame")
            if first.get("k") == KIND_LINK:
                version = first.get("v", 1)
                chan.peer_reads_batches = isinstance(version, int) and version >= 2
                keep = True
                await on_link(chan)
            elif first.get("k") in (KIND_PING, KIND_CARD):
                with trio.fail_after(limits.io_timeout_s):
                    await chan.send({"k": first["k"], "card": card() if callable(card) else card})
            elif first.get("k") == KIND_SYNC and isinstance(first.get("state"), bytes):
                reply = on_sync(chan.peer_id, first["state"], bool(first.get("join")))
                with trio.fail_after(limits.io_timeout_s):
                    await chan.send({"t": int(MsgType.PUSH_PULL_REPLY), "state": reply})
            else:
                raise RemoteProtocolError("unknown peer connection kind")
        except RemoteProtocolError as exc:
            on_refused(exc.refusal)
        except (TransportError, trio.TooSlowError):
            on_refused(Refusal.MALFORMED)  # the exchange timed out or broke off
        finally:
            active -= 1
            if not keep:
                await (chan.aclose() if chan is not None else stream.aclose())

    await trio.serve_listeners(handle, listeners)
