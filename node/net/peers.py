"""Peer links: persistent, authenticated, encrypted relay links between nodes (trio driver).

The state machine is node/protocol/peerlink.py (`PeerLinkCore`: queues, dialling with backoff, version
negotiation, one link per pair, retire with FIFO hold-back; read its docstring first). This module is its byte
pump: it runs the dials and the handshake (node/net/peerconn.py), reads and decrypts frames into the core, and
carries out the core's commands (write, half-close, close, deliver, report unreachable).

- Sending never blocks the caller: with a link up, `PeerLinks.send` stages the frame in the link's `OutBuffer`
  (node/net/sockio.py), which the node's flusher seals and writes once per scheduler batch: every frame the batch
  produced for that peer in one box (link version 2, up to `Limits.PEER_FRAME_MAX`) and one syscall, without a
  task switch; with no link yet, the core queues it (bounded; False when full) until the dialled link takes it
  over. When a link breaks, what it had not written is lost and `on_unreachable(peer)` tells the relay, which has
  its own retries and receipts.
- A link that lost the election is written out and half-closed (`_half_close`), and read until the other side's
  EOF; while it is read, the winner's reader stops after a held batch until the core says `Resume` (and a retired
  link's reader, behind an older one: the core's rules L1-L5). The listener passes the link number of the
  dialler's LINK_HELLO to the core (`Channel.peer_link`): the core orders links by it, not by when they arrive.
- Timers (dial deadlines, retired links, held batches, backoff) run through `CoreTimer` (node/net/timer.py).
- Each link has a budget of CPU time (`[peers] handle_cpu_per_s`, `handle_cpu_burst_s`; docs/security.md,
  "Malicious node operator"): the thread CPU time of opening (decrypting) and decoding each frame and of every call
  that hands its maps to the core (and through it to the relay) is charged to the link's bucket, and while the
  bucket is in debt the reader neither hands over, reads nor decrypts anything until it has refilled. Only the
  socket reads (each asking for at least 64 KiB) are not charged: what a link costs is measured between the awaits
  that may let other tasks run, never across one (`_reader`). What the member sent waits in the socket buffers
  (TCP backpressure); nothing is dropped and the link is not closed for it.
"""

from __future__ import annotations

import contextlib
import math
import secrets
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from typing import Any, Protocol

import attrs
import trio

from node.net.peerconn import Address, Channel, dial
from node.net.slicing import next_turn, slice_end
from node.net.sockio import Flusher, OutBuffer
from node.net.timer import CoreTimer
from node.protocol.crypto import RekeyPolicy
from node.protocol.errors import RemoteProtocolError, TransportError
from node.protocol.identity import Identity
from node.protocol.peerlink import (
    DEFAULT_LIMITS,
    QUEUED,
    Abort,
    Close,
    Command,
    Deliver,
    Dial,
    HalfClose,
    PeerLimits,
    PeerLinkCore,
    Resume,
    SetBatch,
    Unreachable,
    Write,
)
from node.protocol.ratelimit import TokenBucket
from node.protocol.refusals import Refusal
from node.protocol.wire import Limits, packb
from node.protocol.wire.peer import LEASE_CLAIMS_MAX

# maps handed to the core per call while a batch is read: the time slice is checked between calls (a map costs
# 5-100 µs; a LEASE of 256 claims more, so a call can run past the slice), and one call per map would add its
# own cost to every cross-node envelope
MAPS_PER_CALL = 16
# ids (the `ids` lists of LEASE and LEASE_DROP, one signature check each for a LEASE's claims) handed to the core
# per call: a call holds fewer maps when theirs add up to more, and a map with more is handed over alone. 16 LEASEs
# of 256 claims in one call were 4,096 checks (~0.3 s) the time slice and the CPU budget could not split; one of
# them is 256 checks, ~19 ms at 75 us, within the 20 ms slice.
IDS_PER_CALL = LEASE_CLAIMS_MAX


def calls(batch: list[dict[str, Any]]) -> Iterator[list[dict[str, Any]]]:
    """The maps of `batch` in order, in calls of at most `MAPS_PER_CALL` maps and `IDS_PER_CALL` ids (a map with
    more ids than that alone)."""
    if not any(isinstance(m.get("ids"), list) for m in batch):
        # the common case, a batch of envelopes and receipts: slices of MAPS_PER_CALL, nothing counted (a busy
        # link's batch holds 150-340 maps, and the count below took 0.25 µs a map)
        for i in range(0, len(batch), MAPS_PER_CALL):
            yield batch[i : i + MAPS_PER_CALL]
        return
    start = ids = 0
    for i, msg in enumerate(batch):
        items = msg.get("ids")
        n = len(items) if isinstance(items, list) else 0
        if i > start and (i - start >= MAPS_PER_CALL or ids + n > IDS_PER_CALL):
            yield batch[start:i]
            start, ids = i, 0
        ids += n
    if start < len(batch):
        yield batch[start:]


def _rekey(limits: PeerLimits) -> RekeyPolicy:
    return RekeyPolicy(frames_max=limits.rekey_frames_max, interval_s=limits.rekey_interval_s)


def _now() -> float:
    return trio.current_time()


# --- persistent links: the byte pump around node/protocol/peerlink.py ---------------------------------------


class _LinkOut(OutBuffer):
    """A link's send side: frames are staged as plaintext and sealed, a batch to a box, when written.

    A failed or stuck write ends the link (its reader's scope is cancelled).
    """

    __slots__ = ("_plain", "_writing_batch", "batch", "chan", "failed", "frames", "scope")

    def __init__(self, chan: Channel, flusher: Flusher, write_timeout_s: float) -> None:
        super().__init__(chan.stream, flusher, write_timeout_s)
        self.chan = chan
        self.scope = trio.CancelScope()
        self.frames = 0  # queued and not yet taken by a write or by the writer task
        self._writing_batch = (0, 0)  # (frames, bytes) of the batch the writer task took
        self.failed = False  # a write failed: what was queued then is lost
        self.batch = False  # the peer reads frames holding several maps (link version 2)
        self._plain: list[bytes] = []

    @property
    def backlog(self) -> int:
        """Frames the socket has not taken (bounded by `queue_max`): those queued, and the writer task's batch in
        the share of its bytes still unwritten. Frames are sealed into boxes and a socket takes bytes, so a batch
        written in part counts its frames in proportion, rounded up.

        Not "frames since the buffer was last empty": while frames keep coming, the writer task finds more each
        time it finishes a batch, the buffer is never empty, and that count refused a healthy link's frames once
        it had written `queue_max` of them (tests/integration/test_peer_links.py)."""
        frames, nbytes = self._writing_batch
        return self.frames + (-(-frames * self._sending // nbytes) if nbytes else 0)

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
        self.frames = 0

    def _kept(self, left: int, total: int) -> None:
        self.frames = -(-self.frames * left // total)

    def _take(self, nbytes: int) -> None:
        super()._take(nbytes)
        self._writing_batch, self.frames = (self.frames, nbytes), 0

    def _sent(self) -> None:
        super()._sent()
        self._writing_batch = (0, 0)

    def _write_failed(self) -> None:
        self.failed = True
        self.scope.cancel()


@attrs.define(slots=True, eq=False)
class _Conn:
    """One link's connection: what the driver holds for a link id of the core."""

    id: int
    chan: Channel
    out: _LinkOut
    we_initiated: bool
    budget: TokenBucket  # milliseconds of CPU (`[peers] handle_cpu_per_s`, `handle_cpu_burst_s`)
    resume: trio.Event = attrs.Factory(trio.Event)  # the core released a held batch: read on
    handled_s: float = 0.0  # CPU seconds spent opening, decoding and handling what this link sent
    throttled_s: float = 0.0  # seconds this link was not read because its budget was spent
    close_now: trio.Event = attrs.Factory(trio.Event)  # the core said Close
    lost: bool = False  # it held frames it never wrote when it was closed


class PeerEvents(Protocol):
    """What peer links report to (the relay driver, node/net/relay.py); calls never block."""

    def peer_frames(self, peer: bytes, frames: Sequence[dict[str, Any]]) -> None:
        """Frames received on a link from `peer` (maps, in order; up to `MAPS_PER_CALL` at a time)."""

    def peer_unreachable(self, peer: bytes) -> None:
        """A link to `peer` broke, or could not be established, while frames were pending."""


class _NoEvents:
    def peer_frames(self, peer: bytes, frames: Sequence[dict[str, Any]]) -> None:
        pass

    def peer_unreachable(self, peer: bytes) -> None:
        pass


class PeerLinks:
    """Persistent relay links to other nodes, with bounded per-peer queues (the core: PeerLinkCore).

    `address_of(peer_id)` gives a peer's link address (from SWIM member meta) or None when it is not a live member.
    `run(events)` starts the links; `events` (a PeerEvents port) hears every frame and every unreachable peer.
    """

    def __init__(
        self,
        identity: Identity,
        *,
        admit: Callable[[bytes], bool],
        address_of: Callable[[bytes], Address | None],
        on_refused: Callable[[Refusal], None] = lambda reason: None,
        limits: PeerLimits = DEFAULT_LIMITS,
        flusher: Flusher | None = None,
        cpu_clock: Callable[[], float] = time.thread_time,
    ) -> None:
        """`cpu_clock` measures what a link costs (seconds): the thread's CPU time, so a busy machine's other
        processes do not count against a link (one read per call of up to `MAPS_PER_CALL` maps and one after each
        socket read or wait, ~0.6 us each here, against 5-100 us per map handled)."""
        self.identity = identity
        self.cpu_clock = cpu_clock
        self.handled_s = 0.0  # all links together: CPU seconds spent opening, decoding, handling what they sent
        self.throttled_s = 0.0  # all links together: seconds links were not read for their budget (metrics)
        self.admit = admit
        self.address_of = address_of
        self._events: PeerEvents = _NoEvents()  # the port given to run()
        self.on_refused = on_refused
        self.limits = limits
        # the node shares one flusher between clients and peer links; standalone links run their own
        self.flusher = flusher if flusher is not None else Flusher()
        self._own_flusher = flusher is None
        # links are numbered on the wire from a random base: a restarted node does not reuse numbers (peerlink L2)
        self.core = PeerLinkCore(node_id=identity.id, limits=limits, tag_base=secrets.randbelow(2**52))
        self._conns: dict[int, _Conn] = {}
        self._dials: dict[int, trio.CancelScope | None] = {}  # dial tasks the core wants (scope once started)
        self._timer = CoreTimer(
            tick=self.core.timer, next_deadline=self.core.next_deadline, flush=self._run, defer=self.flusher.defer
        )
        self._running = False
        self._nursery: trio.Nursery | None = None

    @property
    def link_count(self) -> int:
        return self.core.link_count

    def link(self, peer: bytes) -> _Conn | None:
        """The connection of the peer's active link."""
        link = self.core.active_link(peer)
        return self._conns.get(link.id) if link is not None else None

    def dialling(self, peer: bytes) -> bool:
        return self.core.dialling(peer)

    def pending_frames(self) -> int:
        """Frames queued to any peer and not yet written (graceful leave waits for these to drain)."""
        return self.core.queued_frames() + sum(c.out.backlog for c in self._conns.values())

    async def run(self, events: PeerEvents, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        self._events = events
        async with trio.open_nursery() as nursery:
            if self._own_flusher:
                await nursery.start(self.flusher.run)
            self._nursery = nursery
            nursery.start_soon(self._timer.run)
            task_status.started()
            await trio.sleep_forever()

    def send(self, peer: bytes, msg: dict[str, Any]) -> bool:
        """Queue `msg` for `peer`; False when the queue is full or we cannot run (the caller treats it as lost)."""
        if self._nursery is None:
            return False
        link = self.core.active.get(peer)
        if link is not None:
            return self._stage(self._conns[link], msg)
        target = self.core.send(peer, msg, trio.current_time())
        if target >= 0:
            return self._stage(self._conns[target], msg)
        self._run()
        return target == QUEUED

    def drop_peer(self, peer: bytes) -> None:
        """Forget a peer that left or died: close its link and drop what was queued for it."""
        self.core.drop_peer(peer, trio.current_time())
        self._run()

    def _stage(self, conn: _Conn, msg: dict[str, Any]) -> bool:
        out = conn.out
        if out.backlog >= self.limits.queue_max:
            return False
        out.frames += 1
        out.stage(packb(msg))
        return True

    # -- carrying out the core's commands ---------------------------------------------------------------------

    def _run(self) -> None:
        """Carry out what the core decided (re-entrant calls, e.g. a reply sent from `on_message`, are picked up
        by the loop of the outermost call)."""
        if self._running:
            return
        self._running = True
        try:
            while cmds := self.core.drain():
                for cmd in cmds:
                    self._do(cmd)
        finally:
            self._running = False
        self._timer.wake()

    def _do(self, cmd: Command) -> None:
        match cmd:
            case Write(link=link, msgs=msgs):
                conn = self._conns.get(link)
                if conn is not None:
                    for msg in msgs:
                        self._stage(conn, msg)
            case Deliver(peer=peer, msgs=msgs):
                self._events.peer_frames(peer, msgs)
            case Dial(link=link, peer=peer, deadline=deadline):
                self._dials[link] = None
                self._start(self._dial, link, peer, deadline, on_fail=lambda: self._dial_failed(link))
            case Abort(link=link):
                scope = self._dials.pop(link, None)
                if scope is not None:
                    scope.cancel()
            case SetBatch(link=link):
                if (conn := self._conns.get(link)) is not None:
                    conn.out.batch = True
            case HalfClose(link=link):
                if (conn := self._conns.get(link)) is not None:
                    self._start(self._half_close, conn, on_fail=lambda: self.core.half_closed(link, _now()))
            case Close(link=link):
                if (conn := self._conns.get(link)) is not None:
                    conn.lost = conn.out.pending_bytes > 0 or conn.out.failed
                    conn.out.discard()  # queued in this batch: without this the flusher would still write it
                    conn.out.scope.cancel()
                    conn.close_now.set()
            case Resume(link=link):
                if (conn := self._conns.get(link)) is not None:
                    conn.resume.set()
            case Unreachable(peer=peer):
                self._events.peer_unreachable(peer)

    def _start(self, fn: Callable[..., Awaitable[None]], *args: Any, on_fail: Callable[[], None]) -> None:
        try:
            if self._nursery is None:
                raise RuntimeError("not running")
            self._nursery.start_soon(fn, *args)
        except RuntimeError:  # shutting down: the nursery takes no new tasks
            on_fail()

    # -- tasks --------------------------------------------------------------------------------------------------

    def _dial_failed(self, link: int) -> None:
        self._dials.pop(link, None)
        self.core.dial_failed(link, _now())

    async def _dial(self, link: int, peer: bytes, deadline: float) -> None:
        if link not in self._dials:
            return  # abandoned before it started (the peer was dropped)
        addr = self.address_of(peer)
        if addr is None:
            self._dials.pop(link, None)
            self.core.dial_failed(link, trio.current_time(), no_address=True)
            self._run()
            return
        chan: Channel | None = None
        with trio.CancelScope(deadline=deadline) as scope:
            self._dials[link] = scope
            with contextlib.suppress(TransportError, RemoteProtocolError, trio.TooSlowError):
                chan = await dial(addr, self.identity, peer, self.admit, math.inf, _rekey(self.limits))
        wanted = self._dials.pop(link, None) is not None
        if chan is None or not wanted:
            self.core.dial_failed(link, trio.current_time())
            self._run()
            if chan is not None:
                await chan.aclose()
            return
        await self._run_link(link, chan, we_initiated=True)

    async def accept(self, chan: Channel) -> None:
        """Run an inbound link connection (after the handshake and its LINK_HELLO) until it ends.

        The listener's connection task runs the link itself: trio closes a served stream when its handler returns.
        """
        link = self.core.accepted(chan.peer_id, chan.peer_version, trio.current_time(), chan.peer_link)
        await self._run_link(link, chan, we_initiated=False)

    async def _run_link(self, link: int, chan: Channel, *, we_initiated: bool) -> None:
        budget = TokenBucket(
            self.limits.handle_cpu_per_s * 1000.0, self.limits.handle_cpu_burst_s * 1000.0, trio.current_time()
        )
        out = _LinkOut(chan, self.flusher, self.limits.io_timeout_s)
        conn = _Conn(id=link, chan=chan, we_initiated=we_initiated, out=out, budget=budget)
        self._conns[link] = conn
        if we_initiated:
            self.core.dial_succeeded(link, trio.current_time())
        self._run()
        clean = True  # cancelled by Close: the core decided, it knows what that loses
        try:
            with conn.out.scope:  # cancelled by Close, or when a write fails
                await self._reader(conn)
        except TransportError:
            clean = chan.clean_eof and not conn.out.failed
        except RemoteProtocolError:
            clean = False  # the link is gone; what was lost is reported by the core
        finally:
            try:
                self.core.read_ended(link, trio.current_time(), clean=clean)
                self._run()
                await conn.close_now.wait()  # at once for an active link; a retired one also half-closes first
            finally:
                if not conn.close_now.is_set():  # cancelled (the node is stopping)
                    conn.lost = conn.out.pending_bytes > 0 or conn.out.failed
                conn.out.discard()  # nothing may be written to the socket once it is closed (its fd can be reused)
                del self._conns[link]
                await chan.aclose()
                self.core.closed(link, conn.lost, trio.current_time())
                self._run()

    async def _reader(self, conn: _Conn) -> None:
        """Read batches and hand their maps to the core (`calls`: `MAPS_PER_CALL` maps, `IDS_PER_CALL` ids at a
        time), for at most a time slice (`[peers] handle_slice_s`, node/net/slicing.py) between two turns of the
        other tasks, and within the link's budget of CPU (`_within_budget`). A batch may hold 256 KiB of maps and a
        read several batches: handled in one go, one member's frames held the loop.

        The budget is charged with the thread CPU time from `mark` to the end of each call: what the link cost since
        the reader last let the other tasks run or last charged, so opening (decrypting) and decoding a frame, its
        header and the checks of its maps are charged with its first call, and each further call with its own
        handling. `mark` is taken again after every await that may have let another task run (a socket read, the
        slice's turn, a wait for budget or for `Resume`), never across one: their CPU is not this link's. An await
        of a frame that was already buffered (`chan.reads` unchanged) does not suspend and is charged. Only the
        socket reads themselves (each asks for at least `READ_AHEAD`, 64 KiB) and the copying of what they return
        go uncharged. One clock read per call."""
        chan, base, flusher, cpu = conn.chan, self.limits.handle_slice_s, self.flusher, self.cpu_clock
        stop, reads = slice_end(base, flusher.last_turn_s), chan.reads
        mark = cpu()
        try:
            while True:
                header, ciphertext = await chan.receive_sealed()
                if chan.reads != reads:  # the read let the others run: a new slice, and the CPU from here is ours
                    stop, reads = slice_end(base, flusher.last_turn_s), chan.reads
                    mark = cpu()
                batch = chan.open_batch(header, ciphertext)
                if not all(isinstance(msg, dict) for msg in batch):
                    raise RemoteProtocolError("peer frame is not a map")
                for maps in calls(batch):
                    if time.perf_counter() >= stop:
                        self._charge(conn, cpu() - mark)  # the frame's opening, before the others run
                        await next_turn()
                        stop = slice_end(base, flusher.last_turn_s)
                        mark = cpu()
                    go = self.core.received(conn.id, maps, trio.current_time())
                    self._run()
                    spent = cpu()
                    self._charge(conn, spent - mark)
                    mark = spent
                    # checked after each charge, so before the next call and the next read alike: while the budget
                    # is spent nothing more is handed over, read or decrypted
                    if await self._within_budget(conn):
                        stop, mark = slice_end(base, flusher.last_turn_s), cpu()
                    if not go:  # held until the retired links of this peer are read to their end
                        await conn.resume.wait()
                        conn.resume = trio.Event()
                        stop, mark = slice_end(base, flusher.last_turn_s), cpu()
                if flusher.flush_if_quiet():  # a lone frame's deliveries go out now (node/net/sockio.py)
                    mark = cpu()  # what they cost is not this link's
        except RemoteProtocolError as exc:  # a bad frame from the peer, or one the core refused: the link ends
            self.on_refused(exc.refusal)
            raise

    def _charge(self, conn: _Conn, spent_s: float) -> None:
        spent_s = max(0.0, spent_s)
        conn.budget.charge(trio.current_time(), spent_s * 1000.0)
        conn.handled_s += spent_s
        self.handled_s += spent_s

    async def _within_budget(self, conn: _Conn) -> bool:
        """Wait, reading nothing, until the link's budget of CPU is out of debt; True when it waited.

        The wait is cancellable: a Close meanwhile ends the reader, and the maps of the batch it held are what the
        core would have ignored from a closing link anyway. Over any T seconds a link costs at most
        `handle_cpu_burst_s + handle_cpu_per_s * T` plus one frame's opening and one call (the last ones before the
        debt shows)."""
        now = trio.current_time()
        wait = conn.budget.wait_s(now, 0.0)
        if wait <= 0.0:
            return False
        await trio.sleep(wait)
        waited = trio.current_time() - now
        conn.throttled_s += waited
        self.throttled_s += waited
        return True

    async def _half_close(self, conn: _Conn) -> None:
        """Write out what a retired link holds, then send EOF: the other side then knows nothing more comes."""
        try:
            conn.out.flush_now()
            await conn.out.drain(self.limits.io_timeout_s)
            stream = conn.chan.stream
            done = not conn.out.pending_bytes and not conn.out.failed
            if done and isinstance(stream, trio.abc.HalfCloseableStream):
                # BusyResourceError: a writer that outlived the drain still holds the send side (no EOF then)
                with contextlib.suppress(
                    trio.BrokenResourceError, trio.BusyResourceError, trio.ClosedResourceError, OSError
                ):
                    await stream.send_eof()
        finally:
            self.core.half_closed(conn.id, trio.current_time())
            self._run()
