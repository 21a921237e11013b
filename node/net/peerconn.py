"""Peer-port connections: the Noise handshake on a stream, sealed frames, one-shot exchanges and the listener.

- `handshake` / `dial`: the peer-link handshake (node/protocol/crypto.py, docs/protocol.md "Peer links"), the dialler
  first; ephemerals from `os.urandom`. The dialler pins the id it dials; the listener refuses ids that admission
  does not admit, and acts on a connection only once its first frame (a control frame, node/protocol/wire/link.py)
  has decrypted: that frame authenticates the dialler.
- `Channel`: Noise transport frames (`header | ciphertext`, a frame holding one or more msgpack maps) over a stream.
  A frame over the limit, a frame that fails authentication or anything undecodable raises: the caller closes the
  connection (the stream cannot be resynchronised) and counts it.
- One-shot exchanges on a fresh connection: `push_pull` (SWIM full-state sync), `stream_ping` (SWIM's TCP fallback
  probe) and `fetch_card` (the node's signed referral card, for `goaway`); both of the last two are LINK_PING.
- `serve_peers`: the listener. Before anything is read, a connection must fit `connections_max`,
  `connections_per_address_max`, `preauth_per_address_max` and its address's rate of new connections
  (`handshakes_per_address_per_s`, `_burst`), all per /32 or /64 (node/protocol/ratelimit.py `address_key`), and,
  unless a member of the federation is known at its address (`member_host`), the node-wide budget of strangers'
  connections (`stranger_handshakes_per_s`, `_burst`); it then has `handshake_timeout_s` to authenticate and send its
  first frame, or it is closed. Until that frame has authenticated the listener reads less than 4 KiB ahead, and
  the frame's announced length must fit the node-wide bytes of unauthenticated first frames (`preauth_bytes_max`,
  at most half of it for strangers, `preauth_bytes_per_address_max` per address: node/protocol/ratelimit.py
  `PreauthBytes`), reserved before its body is read, or the connection is closed (docs/security.md, "Active
  network attacker").
  LINK_HELLO hands the connection to `on_link` (PeerLinks.accept, node/net/peers.py), which keeps it.
"""

from __future__ import annotations

import contextlib
import functools
import os
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import trio

from node.net.sockio import read_some
from node.protocol.crypto import (
    DEFAULT_REKEY,
    LINK_FRAME_HEADER_BYTES,
    LINK_MAGIC,
    LinkHandshake,
    LinkSession,
    RekeyPolicy,
    handshake_length,
)
from node.protocol.errors import NotAdmitted, OverBudget, RemoteProtocolError, TransportError
from node.protocol.identity import Identity, short_id
from node.protocol.nodelist import parse_card
from node.protocol.peerlink import DEFAULT_LIMITS, PeerLimits
from node.protocol.ratelimit import KeyedBuckets, PreauthBytes, TokenBucket, address_key
from node.protocol.refusals import Refusal
from node.protocol.wire import Limits, packb, require_map, unpack_all, unpackb
from node.protocol.wire.link import (
    LinkHello,
    LinkPing,
    LinkPong,
    PushPull,
    PushPullReply,
    control_from_map,
    control_to_map,
)

Address = tuple[str, int]
# addresses whose handshake rate is tracked (~100 B each): an attacker must cycle more addresses than this within
# `handshakes_per_address_burst / _per_s` seconds (20 s by default) to get a fresh bucket back
ADDRESSES_PACED_MAX = 65_536
# bytes a read asks for at least: on a link (many small frames per read), and on the listener's side of a connection
# until its first frame has authenticated (1,024 connections x 4 KiB: 4 MiB at most, besides the first frames)
READ_AHEAD = 65_536
PREAUTH_READ_AHEAD = 4096


def _rekey(limits: PeerLimits) -> RekeyPolicy:
    return RekeyPolicy(frames_max=limits.rekey_frames_max, interval_s=limits.rekey_interval_s)


class _Buffered:
    """Exact-length reads from a trio stream (through `read_some`, as client sessions read); EOF, a reset or a
    closed stream is a TransportError.

    A read asks the socket for at least `ahead` bytes (more when a frame needs more), so that many small frames cost
    one read: `READ_AHEAD` (64 KiB) on an authenticated connection, `PREAUTH_READ_AHEAD` (4 KiB) on the listener's
    side until the first frame has authenticated. An unauthenticated connection then makes the node hold only the
    handshake messages, the first frame (which `serve_peers` reserves) and less than 4 KiB more, while a link's
    handshake, its LINK_HELLO and the frames behind it still come in as few reads as before."""

    def __init__(self, stream: trio.abc.Stream, *, ahead: int = READ_AHEAD) -> None:
        self.stream = stream
        self.ahead = ahead
        self._fd = stream.socket.fileno() if isinstance(stream, trio.SocketStream) else -1
        self._buf = bytearray()
        self._drained = False  # the last read was short: wait for readability before the next
        self.clean_eof = False  # the stream ended between frames (not mid-frame)
        self.reads = 0  # socket reads so far: each one let the other tasks run (`read_some` is a checkpoint)

    async def read_exactly(self, n: int) -> bytes:
        while len(self._buf) < n:
            want = max(self.ahead, n - len(self._buf))
            chunk = await read_some(self.stream, self._fd, want, wait_first=self._drained)
            self.reads += 1
            if not chunk:
                self.clean_eof = not self._buf
                raise TransportError("peer closed the connection, or it broke")
            self._drained = len(chunk) < want
            self._buf += chunk
        out = bytes(self._buf[:n])
        del self._buf[:n]
        return out


class Channel:
    """A handshaken connection: Noise transport frames (node/protocol/crypto.py) over a trio stream."""

    def __init__(self, reader: _Buffered, session: LinkSession, peer_id: bytes) -> None:
        self.stream = reader.stream
        self._reader = reader
        self.session = session
        self.peer_id = peer_id
        self.peer_version = 1  # the link version the initiator's LINK_HELLO said (set by the listener)
        self.peer_link = 0  # the initiator's number for the link, its LINK_HELLO's `l` (set by the listener)

    def frame_bytes(self, obj: Any) -> bytes:
        return self.frame_sealed(packb(obj))

    def frame_sealed(self, plaintext: bytes) -> bytes:
        return self.session.seal(plaintext, trio.current_time())

    async def send(self, obj: Any) -> None:
        await _send_all(self.stream, self.frame_bytes(obj))

    async def receive(
        self,
        max_bytes: int = Limits.PEER_FRAME_MAX,
        max_items: int = Limits.MSGPACK_CONTAINER_MAX,
        *,
        reserve: Callable[[int], contextlib.AbstractContextManager[None]] | None = None,
    ) -> Any:
        """The one object of one sealed frame (one-shot connections, the first frame of a link).

        `reserve(n)` is entered with the frame's announced ciphertext length before its body is read and left once
        the frame is decoded or has failed (it may raise to refuse the frame: `serve_peers`' preauth bytes)."""
        header = await self._reader.read_exactly(LINK_FRAME_HEADER_BYTES)
        n = LinkSession.frame_length(header, max_bytes)
        with reserve(n) if reserve is not None else contextlib.nullcontext():
            plaintext = self.session.open(header, await self._reader.read_exactly(n))
            return unpackb(plaintext, max_bytes=max_bytes, max_items=max_items)

    async def receive_sealed(self) -> tuple[bytes, bytes]:
        """The header and ciphertext of a link's next frame, read but not yet opened: `open_batch` opens it.

        Two steps so that a link's reader can measure the CPU of opening and decoding a frame, which never awaits,
        apart from the reads, which may let the other tasks run (node/net/peers.py `_reader`)."""
        header = await self._reader.read_exactly(LINK_FRAME_HEADER_BYTES)
        n = LinkSession.frame_length(header, Limits.PEER_FRAME_MAX)
        return header, await self._reader.read_exactly(n)

    def open_batch(self, header: bytes, ciphertext: bytes) -> list[Any]:
        """The maps of a link's frame from `receive_sealed` (a batch; see the module docstring): decrypted and
        decoded, synchronously. Raises RemoteProtocolError (the link cannot go on)."""
        return unpack_all(self.session.open(header, ciphertext), max_bytes=Limits.PEER_FRAME_MAX)

    def read_ahead(self) -> None:
        """The connection has authenticated: reads ask for `READ_AHEAD` bytes from now on (`_Buffered`)."""
        self._reader.ahead = READ_AHEAD

    @property
    def reads(self) -> int:
        """Socket reads so far; unchanged across `receive_sealed` means the frame was already buffered (no yield)."""
        return self._reader.reads

    @property
    def clean_eof(self) -> bool:
        """The peer's EOF came between two frames (a reset there looks the same: see node/net/sockio.py)."""
        return self._reader.clean_eof

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
    rekey: RekeyPolicy = DEFAULT_REKEY,
) -> Channel:
    """Run the peer-link Noise handshake on `stream` (the initiator must name `expected_id`).

    Raises RemoteProtocolError (NotAdmitted for a key admission refuses) or TransportError. The responder's
    Channel is not authenticated until its first frame has been received (key-compromise impersonation: see
    node/protocol/crypto.py); every caller reads that frame before it acts on the connection.
    """
    reader = _Buffered(stream, ahead=READ_AHEAD if initiator else PREAUTH_READ_AHEAD)  # listener: until authenticated
    hs = LinkHandshake(identity, random_bytes=os.urandom, expected_id=expected_id if initiator else None, rekey=rekey)
    if initiator:
        assert expected_id is not None
        if not admit(expected_id):
            raise NotAdmitted(f"peer {short_id(expected_id)} is not admitted to the federation")
        await _send_all(stream, hs.start())
        n = handshake_length(await reader.read_exactly(2))
        session = hs.finish(await reader.read_exactly(n), trio.current_time())
        return Channel(reader, session, expected_id)
    head = await reader.read_exactly(len(LINK_MAGIC) + 2)
    if head[: len(LINK_MAGIC)] != LINK_MAGIC:
        raise RemoteProtocolError("not a homing peer link of this version (bad magic)")
    peer_id = hs.read_hello(await reader.read_exactly(handshake_length(head[len(LINK_MAGIC) :])))
    if not admit(peer_id):
        raise NotAdmitted(f"peer {short_id(peer_id)} is not admitted to the federation")
    answer, session = hs.answer(trio.current_time())
    await _send_all(stream, answer)
    return Channel(reader, session, peer_id)


async def dial(
    addr: Address,
    identity: Identity,
    expected_id: bytes,
    admit: Callable[[bytes], bool],
    timeout_s: float,
    rekey: RekeyPolicy = DEFAULT_REKEY,
) -> Channel:
    with trio.fail_after(timeout_s):
        try:
            stream = await trio.open_tcp_stream(addr[0], addr[1])
        except OSError as exc:
            raise TransportError(f"cannot reach peer at {addr[0]}:{addr[1]}: {exc}") from exc
        try:
            return await handshake(stream, identity, initiator=True, expected_id=expected_id, admit=admit, rekey=rekey)
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
            await chan.send(control_to_map(PushPull(state=state, join=join)))
            reply = control_from_map(
                require_map(await chan.receive(Limits.PUSH_PULL_MAX + 1024, max_items=16), "push-pull reply")
            )
            if not isinstance(reply, PushPullReply):
                raise RemoteProtocolError("bad push-pull reply")
            return reply.state
        finally:
            await chan.aclose()


async def _ping(
    addr: Address, identity: Identity, expected_id: bytes, admit: Callable[[bytes], bool], timeout_s: float
) -> LinkPong | None:
    """LINK_PING on a short-lived connection: the LINK_PONG, or None (no answer within `timeout_s`)."""
    with trio.move_on_after(timeout_s):
        try:
            chan = await dial(addr, identity, expected_id, admit, timeout_s)
        except (TransportError, RemoteProtocolError, trio.TooSlowError):
            return None
        try:
            await chan.send(control_to_map(LinkPing()))
            reply = control_from_map(require_map(await chan.receive(4096, max_items=8), "ping reply"))
            return reply if isinstance(reply, LinkPong) else None
        except (TransportError, RemoteProtocolError):
            return None
        finally:
            await chan.aclose()
    return None


async def stream_ping(
    addr: Address, identity: Identity, expected_id: bytes, admit: Callable[[bytes], bool], *, timeout_s: float
) -> bool:
    """SWIM's TCP fallback probe: True when the node at `addr` proves `expected_id` and answers within `timeout_s`."""
    return await _ping(addr, identity, expected_id, admit, timeout_s) is not None


async def fetch_card(
    addr: Address, identity: Identity, expected_id: bytes, admit: Callable[[bytes], bool], *, timeout_s: float
) -> str | None:
    """The signed referral card of the node at `addr`, verified to be `expected_id`'s own, or None."""
    reply = await _ping(addr, identity, expected_id, admit, timeout_s)
    if reply is None:
        return None
    try:
        card = parse_card(reply.card, now=time.time(), allow_plain_ws=True)  # the client that gets it decides on ws://
    except RemoteProtocolError:
        return None
    return reply.card if card.id == expected_id else None


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
    limits: PeerLimits = DEFAULT_LIMITS,
    on_refused: Callable[[Refusal], None] = lambda reason: None,
    member_host: Callable[[str], bool] = lambda key: False,
) -> None:
    """Accept peer connections: push-pull syncs and pings are answered and closed; links go to `on_link`.

    Before anything is read, a connection must fit `connections_max`, `connections_per_address_max`,
    `preauth_per_address_max` and its address's handshake rate (per /32 or /64, node/protocol/ratelimit.py
    `address_key`), and, from an address where `member_host` knows no member, the node-wide rate of strangers'
    connections; it then has `handshake_timeout_s` to authenticate and send its first frame, or it is closed.
    Its first frame must fit the node-wide bytes of unauthenticated first frames (node/protocol/ratelimit.py
    `PreauthBytes`: `preauth_bytes_max`, half of it for strangers, `preauth_bytes_per_address_max` per address),
    reserved from the frame's header before its body is read, or the connection is closed (`rate_limited`).
    """
    gate = _PeerGate(limits, member_host)
    budget = PreauthBytes(limits.preauth_bytes_max, limits.preauth_bytes_per_address_max)

    async def handle(stream: trio.SocketStream) -> None:
        key = address_key(_remote_host(stream))
        if not gate.enter(key, trio.current_time()):
            on_refused(Refusal.RATE_LIMITED)  # connections_max, a per-address limit or the address's rate
            await stream.aclose()
            return
        chan: Channel | None = None
        keep = authed = False
        try:
            with trio.fail_after(limits.handshake_timeout_s):
                chan = await handshake(
                    stream, identity, initiator=False, expected_id=None, admit=admit, rekey=_rekey(limits)
                )
                reserve = functools.partial(_reserved, budget, key, member_host)
                first = require_map(
                    await chan.receive(Limits.PUSH_PULL_MAX + 1024, max_items=16, reserve=reserve), "first frame"
                )
                request = control_from_map(first)  # authenticated: the first frame decrypted
            gate.authenticated(key)
            authed = True
            chan.read_ahead()
            if isinstance(request, LinkHello):
                chan.peer_version = request.version
                chan.peer_link = request.link
                keep = True
                await on_link(chan)
            elif isinstance(request, LinkPing):
                with trio.fail_after(limits.io_timeout_s):
                    await chan.send(control_to_map(LinkPong(card=card() if callable(card) else card)))
            elif isinstance(request, PushPull):
                reply = on_sync(chan.peer_id, request.state, request.join)
                del first, request  # not kept through the reply's write: the state may be 6 MiB
                with trio.fail_after(limits.io_timeout_s):
                    await chan.send(control_to_map(PushPullReply(state=reply)))
            else:
                raise RemoteProtocolError("a peer connection must start with LINK_HELLO, LINK_PING or PUSH_PULL")
        except RemoteProtocolError as exc:
            on_refused(exc.refusal)
        except (TransportError, trio.TooSlowError):
            on_refused(Refusal.MALFORMED)  # the exchange timed out or broke off
        finally:
            gate.leave(key, authenticated=authed)
            if not keep:
                await (chan.aclose() if chan is not None else stream.aclose())

    await trio.serve_listeners(handle, listeners)


@contextlib.contextmanager
def _reserved(budget: PreauthBytes, key: str, member_host: Callable[[str], bool], n: int) -> Iterator[None]:
    """Hold `n` bytes of `budget` for a first frame from `key` while it is read and decoded; given back on every way
    out (read, refused, timed out, cancelled). A frame that does not fit raises OverBudget: nothing waits."""
    member = member_host(key)
    if not budget.take(key, n, member=member):
        raise OverBudget(
            f"a first frame of {n} bytes from {key} does not fit the peer port's unauthenticated bytes "
            f"({budget.held} of {budget.total} held, {budget.strangers} by strangers)"
        )
    try:
        yield
    finally:
        budget.give(key, n, member=member)


def _remote_host(stream: trio.SocketStream) -> str:
    try:
        return str(stream.socket.getpeername()[0])
    except OSError:  # already reset
        return ""


class _PeerGate:
    """Counts connections on the peer port: in total, per address, and per address still unauthenticated; paces
    each address's new connections (a token bucket per address); and paces all addresses where no member is known
    together (one node-wide bucket), so that many addresses cannot add up to a node's CPU in handshakes.

    A member's host is asked for only when the strangers' bucket is empty: in calm times members spend its tokens
    too (a few connections a minute each), under a flood they pass on their own per-address budget."""

    def __init__(self, limits: PeerLimits, member_host: Callable[[str], bool] = lambda key: False) -> None:
        self._limits = limits
        self._member_host = member_host
        self._strangers = TokenBucket(limits.stranger_handshakes_per_s, limits.stranger_handshakes_burst)
        self._active = 0
        self._per_address: dict[str, int] = {}
        self._preauth: dict[str, int] = {}
        self._rate: KeyedBuckets[str] = KeyedBuckets(
            limits.handshakes_per_address_per_s, limits.handshakes_per_address_burst, ADDRESSES_PACED_MAX
        )

    def enter(self, key: str, now: float) -> bool:
        lim = self._limits
        if (
            self._active >= lim.connections_max
            or self._per_address.get(key, 0) >= lim.connections_per_address_max
            or self._preauth.get(key, 0) >= lim.preauth_per_address_max
            or not self._rate.take(key, now)
            or not (self._strangers.take(now) or self._member_host(key))
        ):
            return False
        self._active += 1
        self._per_address[key] = self._per_address.get(key, 0) + 1
        self._preauth[key] = self._preauth.get(key, 0) + 1
        return True

    def authenticated(self, key: str) -> None:
        self._preauth[key] = _dec(self._preauth, key)

    def leave(self, key: str, *, authenticated: bool) -> None:
        self._active -= 1
        self._per_address[key] = _dec(self._per_address, key)
        if not authenticated:
            self._preauth[key] = _dec(self._preauth, key)
        for table in (self._per_address, self._preauth):
            if table.get(key) == 0:
                del table[key]


def _dec(table: dict[str, int], key: str) -> int:
    return max(0, table.get(key, 0) - 1)
