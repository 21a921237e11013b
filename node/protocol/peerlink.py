"""The peer-link state machine (sans-IO): queues, dialling, one link per pair, retire with FIFO hold-back, versions.

node/net/peers.py is its byte pump: it opens and reads sockets, runs the Noise handshake (node/protocol/crypto.py)
and seals frames; this core decides everything else. Inputs carry `now`; outputs are typed commands taken with
`drain()`; timers are `next_deadline()` / `timer(now)`. Links are named by integer ids the core hands out.

Theory of operation
- `active[peer]` is the id of the peer's ACTIVE link: the driver stages a frame there directly (the hot path of
  every frame: one dict lookup). Otherwise `send(peer, msg)` answers with that id as well, or queues the frame
  (bounded by `queue_max`) and dials: `Dial(link, peer, deadline)`.
- A dial (TCP + handshake) must succeed by its deadline (`handshake_timeout_s`), else `Abort(link)`. A failed dial
  reports the queued frames lost (`Unreachable(peer)`) and backs off (doubling from `backoff_min_s` up to
  `backoff_max_s`); frames sent during the backoff wait for it, and a backoff that ends with nothing queued resets.
  A peer without an address fails at once, without backoff.
- The dialler's first frame is LINK_HELLO {v, l}; a listener of version >= 2 answers LINK_HELLO_OK {min(v, ours), r}
  and both then seal batches (`SetBatch`). Control frames never reach `Deliver`. `l` is the link's number at its
  dialler (`tag_base + id`: unique per core, and a restarted node starts elsewhere); `r` (rule L2 below).
- One link per pair: a second link to a peer is elected against the ACTIVE one; the link dialled by the smaller id
  wins on both sides. The loser is RETIRED: it takes no new frames, writes out what it holds and half-closes
  (`HalfClose`), and is still read until the other side's EOF. It closes once both are done, or `io_timeout_s`
  after it was retired.
- FIFO across the switch (hold-back): a batch received on the ACTIVE link while a RETIRED link of the same peer is
  still being read is held (`received` answers False: the driver stops reading that link) until every retired
  link has been read to its end, or `io_timeout_s` later; then `Deliver` and `Resume(link)`.
  L1. A link this node dialled is known here before the peer can write on it (its LINK_HELLO is written when the
      dial is adopted), so a retired one is always seen. An inbound one is known only once the listener hands it
      over (`accepted`), which may come after the winner's first frames (docs/protocol.md "Peer links").
  L2. So a listener whose inbound link wins names, in its LINK_HELLO_OK on it (`r`, at most `RETIRED_LINKS_MAX`),
      the numbers of its own links to that peer that it wrote frames on and retires or retired for it. The
      dialler holds the winner's frames (`awaiting`) until each named link has been accepted (then rule above:
      read to its end); a number it already saw accepted (`seen`, the last `SEEN_MAX` of the peer) needs no wait.
  L3. Bounded: one held batch per link, at most `RETIRED_LINKS_MAX` numbers awaited, for at most `io_timeout_s`
      from the hold; then the held batch is delivered and the peer reported `Unreachable` (what the missing link
      carried is lost, as for a broken link). A second LINK_HELLO_OK is refused.
  L4. A node has one dial at a time and adopts each when it lands, so the links it dialled carry its frames in the
      order of their numbers: a RETIRED link the peer dialled is held (as above) while one it numbered lower is
      still read. (Several of them are read at once only when a listener was slow across several of the peer's
      dials, each retired here for a link of ours the peer had not yet accepted.)
  L5. A batch held on the ACTIVE link waits for the RETIRED links still read when it was read (and those L2 names),
      not for links adopted later: a link that older frames came on is known here before the batch is read (L1),
      or named (L2), or was closed at the peer, which reported that; one adopted later carries newer frames (its
      dialler lost the connection of our ACTIVE link before our reader noticed: it is paused while held).
- A link whose reading ends is closed (`Close`); the driver answers `closed(link, lost)`. The ACTIVE link's end,
  a RETIRED link's end other than a clean EOF, or a link that lost unwritten frames, is reported
  `Unreachable(peer)`, and a peer with queued frames is redialled.
  `drop_peer` forgets the peer's queue, closes its link and abandons its dial without reporting anything.
"""

from __future__ import annotations

import enum
from collections import deque
from typing import Any, Final

import attrs

from node.protocol.deadlines import DeadlineHeap
from node.protocol.errors import RemoteProtocolError
from node.protocol.settings import PeersSection
from node.protocol.wire.link import (
    CONTROL_TYPES,
    LINK_VERSION,
    RETIRED_LINKS_MAX,
    LinkHello,
    LinkHelloOk,
    control_from_map,
    control_to_map,
)

QUEUED: Final = -1  # `send`: queued until a link is up
REFUSED: Final = -2  # `send`: the peer's queue is full, or it is ourselves
SEEN_MAX: Final = 8  # rule L2: numbers of inbound links accepted per peer, remembered (a deque: the oldest go)

Msg = dict[str, Any]


@attrs.frozen(kw_only=True, slots=True)
class PeerLimits(PeersSection):
    """The `[peers]` settings, plus the per-peer frame queue bound (`relay.peer_queue_max`)."""

    queue_max: int = attrs.field(default=4096, validator=attrs.validators.ge(1))


DEFAULT_LIMITS = PeerLimits()


class LinkState(enum.Enum):
    DIALLING = "dialling"  # TCP connect and handshake in flight (deadline: handshake_timeout_s)
    ACTIVE = "active"  # the peer's link: new frames go here
    RETIRED = "retired"  # lost an election: no new frames; written out, half-closed, read to its end
    CLOSING = "closing"  # `Close` emitted; waiting for the driver's `closed`


# --- commands ------------------------------------------------------------------------------------------------


@attrs.frozen(slots=True)
class Dial:
    link: int
    peer: bytes
    deadline: float


@attrs.frozen(slots=True)
class Abort:
    """Give up the dial `link` (its deadline passed, or its peer was dropped)."""

    link: int


@attrs.frozen(slots=True)
class Write:
    """Stage these frames on `link`, in order."""

    link: int
    msgs: tuple[Msg, ...]


@attrs.frozen(slots=True)
class SetBatch:
    """The peer reads batches: seal every frame of a scheduler batch into one box from now on."""

    link: int


@attrs.frozen(slots=True)
class HalfClose:
    """Write out what `link` holds, then send EOF; answer `half_closed(link)`."""

    link: int


@attrs.frozen(slots=True)
class Close:
    """Stop reading `link`, drop what it has not written, close it; answer `closed(link, lost)`."""

    link: int


@attrs.frozen(slots=True)
class Resume:
    """The batch held on `link` was delivered: read on."""

    link: int


@attrs.frozen(slots=True)
class Deliver:
    peer: bytes
    msgs: tuple[Msg, ...]


@attrs.frozen(slots=True)
class Unreachable:
    peer: bytes


Command = Dial | Abort | Write | SetBatch | HalfClose | Close | Resume | Deliver | Unreachable


# --- state ---------------------------------------------------------------------------------------------------


@attrs.define(slots=True, eq=False)
class Link:
    id: int
    peer: bytes
    we_initiated: bool
    state: LinkState
    batch: bool = False  # the peer reads batched frames
    reading: bool = True  # its reader has not ended
    half_closed: bool = False  # (RETIRED) EOF sent, or the attempt ended
    was_active: bool = False
    dropped: bool = False  # closed by drop_peer: nothing to report
    held: tuple[Msg, ...] | None = None  # a batch waiting for other links to be read out (`_must_hold`)
    number: int = 0  # (inbound) its number at the dialler, from LINK_HELLO `l` (0: none given)
    hello_ok: bool = False  # (dialled) its LINK_HELLO_OK was read
    awaiting: set[int] = attrs.Factory(set)  # (ACTIVE, dialled) rule L2: numbers of retired links not yet accepted
    hold_for: set[int] = attrs.Factory(set)  # (ACTIVE) rule L5: ids of the retired links its held batch waits for


@attrs.define(slots=True, eq=False)
class _Peer:
    queue: deque[Msg] = attrs.Factory(deque)
    active: int | None = None
    retired: list[int] = attrs.Factory(list)
    dial: int | None = None
    backoff_s: float = 0.0
    backing_off: bool = False
    seen: deque[int] = attrs.Factory(lambda: deque(maxlen=SEEN_MAX))  # rule L2: numbers of inbound links accepted


_DIAL, _RETIRE, _HELD, _RETRY = "dial", "retire", "held", "retry"


class PeerLinkCore:
    def __init__(self, *, node_id: bytes, limits: PeerLimits, tag_base: int = 0) -> None:
        """`tag_base` (0 <= it < 2**52): added to link ids to number links on the wire (rule L2); the driver gives
        a random one, so a restarted node does not reuse the numbers a peer may still remember."""
        if not 0 <= tag_base < 2**52:
            raise ValueError("tag_base must be in 0..2**52-1")
        self.node_id = node_id
        self.limits = limits
        self.tag_base = tag_base
        self._peers: dict[bytes, _Peer] = {}
        self._links: dict[int, Link] = {}
        self._next_id = 0
        self._timers: DeadlineHeap[tuple[str, Any]] = DeadlineHeap()
        self._out: list[Command] = []
        # peer -> its ACTIVE link's id: the hot path of every frame reads it directly (no call, no clock)
        self.active: dict[bytes, int] = {}

    # -- queries ------------------------------------------------------------------------------------------------

    @property
    def link_count(self) -> int:
        return len(self.active)

    def queued_frames(self) -> int:
        return sum(len(p.queue) for p in self._peers.values())

    def active_link(self, peer: bytes) -> Link | None:
        p = self._peers.get(peer)
        return self._links[p.active] if p is not None and p.active is not None else None

    def dialling(self, peer: bytes) -> bool:
        p = self._peers.get(peer)
        return p is not None and (p.dial is not None or p.backing_off)

    def link(self, link: int) -> Link | None:
        return self._links.get(link)

    def drain(self) -> list[Command]:
        out, self._out = self._out, []
        return out

    def next_deadline(self) -> float:
        return self._timers.next_deadline()

    # -- sending ------------------------------------------------------------------------------------------------

    def send(self, peer: bytes, msg: Msg, now: float) -> int:
        """The ACTIVE link's id (stage `msg` there), QUEUED, or REFUSED."""
        p = self._peers.get(peer)
        if p is not None and p.active is not None:
            return p.active
        if peer == self.node_id:
            return REFUSED
        if p is None:
            p = self._peers[peer] = _Peer(backoff_s=self.limits.backoff_min_s)
        if len(p.queue) >= self.limits.queue_max:
            return REFUSED
        p.queue.append(msg)
        self._maybe_dial(peer, p, now)
        return QUEUED

    def _maybe_dial(self, peer: bytes, p: _Peer, now: float) -> None:
        if p.queue and p.active is None and p.dial is None and not p.backing_off:
            link = self._new_link(peer, we_initiated=True, state=LinkState.DIALLING)
            p.dial = link.id
            deadline = now + self.limits.handshake_timeout_s
            self._timers.push((_DIAL, link.id), deadline)
            self._out.append(Dial(link.id, peer, deadline))

    def _new_link(self, peer: bytes, *, we_initiated: bool, state: LinkState) -> Link:
        self._next_id += 1
        link = self._links[self._next_id] = Link(id=self._next_id, peer=peer, we_initiated=we_initiated, state=state)
        return link

    def drop_peer(self, peer: bytes, now: float) -> None:
        """The peer left or died: forget its queue, close its link, abandon its dial."""
        p = self._peers.get(peer)
        if p is None:
            return
        p.queue.clear()
        if p.dial is not None:
            self._links.pop(p.dial, None)
            self._timers.discard((_DIAL, p.dial))
            self._out.append(Abort(p.dial))
            p.dial = None
        if p.active is not None:
            link = self._links[p.active]
            link.dropped = True
            self._close(link)
        self._gc(peer)

    # -- dialling -----------------------------------------------------------------------------------------------

    def dial_succeeded(self, link_id: int, now: float) -> None:
        """The dial's handshake completed. (A dial the core gave up on meanwhile is closed.)"""
        link = self._links.get(link_id)
        if link is None or link.state is not LinkState.DIALLING:
            self._out.append(Close(link_id))
            return
        p = self._peers[link.peer]
        p.dial = None
        p.backoff_s = self.limits.backoff_min_s
        self._timers.discard((_DIAL, link_id))
        hello = LinkHello(version=LINK_VERSION, link=self.tag_base + link_id)
        self._out.append(Write(link_id, (control_to_map(hello),)))
        self._adopt(link, now)

    def dial_failed(self, link_id: int, now: float, *, no_address: bool = False) -> None:
        link = self._links.get(link_id)
        if link is None or link.state is not LinkState.DIALLING:
            return
        del self._links[link_id]
        self._timers.discard((_DIAL, link_id))
        p = self._peers[link.peer]
        p.dial = None
        self._fail_queue(link.peer, p)
        if no_address:
            p.backoff_s = self.limits.backoff_min_s
            self._gc(link.peer)
            return
        p.backing_off = True
        self._timers.push((_RETRY, link.peer), now + p.backoff_s)
        p.backoff_s = min(p.backoff_s * 2, self.limits.backoff_max_s)

    def _fail_queue(self, peer: bytes, p: _Peer) -> None:
        if p.queue:
            p.queue.clear()
            self._out.append(Unreachable(peer))

    # -- links: adopt, elect, retire ----------------------------------------------------------------------------

    def accepted(self, peer: bytes, version: int, now: float, number: int = 0) -> int:
        """An inbound link, authenticated, whose LINK_HELLO said `version` and `number` (`l`). Returns its id."""
        p = self._peers.get(peer)
        if p is None:
            p = self._peers[peer] = _Peer(backoff_s=self.limits.backoff_min_s)
        link = self._new_link(peer, we_initiated=False, state=LinkState.ACTIVE)
        link.number = number
        if number:  # rule L2: the active link waits for this one to be read to its end (as retired), no longer
            p.seen.append(number)  # for it to come
            if p.active is not None and number in (active := self._links[p.active]).awaiting:
                active.awaiting.discard(number)
                active.hold_for.add(link.id)
        if version >= 2:
            link.batch = True
            self._out.append(SetBatch(link.id))
            answer = LinkHelloOk(version=min(version, LINK_VERSION), retired=self._replaced_by(link, p))
            self._out.append(Write(link.id, (control_to_map(answer),)))
        self._adopt(link, now)
        return link.id

    def _replaced_by(self, link: Link, p: _Peer) -> tuple[int, ...]:
        """Rule L2: the numbers of our own links to the peer, written on and retired (or about to be, for `link`);
        none when `link` will lose its election (nothing but LINK_HELLO_OK is written on it then)."""
        if p.active is not None and not self._wins(link):
            return ()
        ids = [*p.retired, *([p.active] if p.active is not None else [])]
        mine = [self._links[i] for i in ids]
        return tuple(self.tag_base + x.id for x in mine if x.we_initiated and x.was_active)[-RETIRED_LINKS_MAX:]

    def _wins(self, link: Link) -> bool:
        """The election against the peer's ACTIVE link: the link dialled by the smaller id wins on both sides."""
        return (self.node_id < link.peer) == link.we_initiated

    def _adopt(self, link: Link, now: float) -> None:
        p = self._peers[link.peer]
        if p.active is not None:
            if not self._wins(link):
                self._retire(link, now)
                return
            self._retire(self._links[p.active], now)
        p.active = self.active[link.peer] = link.id
        link.state = LinkState.ACTIVE
        link.was_active = True
        if p.queue:  # what waited for the link goes first, in order
            self._out.append(Write(link.id, tuple(p.queue)))
            p.queue.clear()

    def _retire(self, link: Link, now: float) -> None:
        p = self._peers[link.peer]
        if p.active == link.id:
            p.active = None
            del self.active[link.peer]
        link.state = LinkState.RETIRED
        p.retired.append(link.id)
        self._timers.push((_RETIRE, link.id), now + self.limits.io_timeout_s)
        self._out.append(HalfClose(link.id))

    # -- reading ------------------------------------------------------------------------------------------------

    def received(self, link_id: int, msgs: list[Msg], now: float) -> bool:
        """One batch read on `link_id`. False: it is held, read no further until `Resume`.

        Raises RemoteProtocolError (nothing changed) for a malformed control frame, or one that has no place on a
        link."""
        link = self._links.get(link_id)
        if link is None or link.state is LinkState.CLOSING:
            return True
        relay = [m for m in msgs if m.get("t") not in CONTROL_TYPES]
        if len(relay) != len(msgs):
            self._control(link, [m for m in msgs if m.get("t") in CONTROL_TYPES])
        if self._must_hold(link, reading=True):
            link.held = tuple(relay)
            self._timers.push((_HELD, link_id), now + self.limits.io_timeout_s)
            return False
        if relay:
            self._out.append(Deliver(link.peer, tuple(relay)))
        return True

    def _control(self, link: Link, msgs: list[Msg]) -> None:
        answers = [control_from_map(m) for m in msgs]  # may raise: before any change
        oks = [a for a in answers if isinstance(a, LinkHelloOk)]
        if len(oks) != len(answers) or link.we_initiated is False:
            raise RemoteProtocolError("a link control frame out of place")
        if link.hello_ok or len(oks) > 1:  # rule L3: one answer per link, one hold
            raise RemoteProtocolError("a second LINK_HELLO_OK on a link")
        answer = oks[0]
        link.hello_ok = True
        if not link.batch and answer.version >= 2:
            link.batch = True
            self._out.append(SetBatch(link.id))
        if link.state is LinkState.ACTIVE:  # rule L2: hold its frames until the links it replaced were accepted
            seen = self._peers[link.peer].seen
            link.awaiting = {n for n in answer.retired if n not in seen}

    def _must_hold(self, link: Link, *, reading: bool = False) -> bool:
        """What `link` read must wait (`reading`: a batch was just read; else: may a held one go now?): the ACTIVE
        link for the RETIRED ones still read when it was read, and for the links rule L2 names (L5); a RETIRED link
        the peer dialled for those it dialled before (rule L4)."""
        p = self._peers[link.peer]
        if not p.retired and not link.awaiting:  # the hot path: nothing to wait for (a dict lookup, no allocation)
            return False
        retired = [self._links[i] for i in p.retired]
        if link.state is LinkState.ACTIVE:
            if reading:
                link.hold_for = {r.id for r in retired if r.reading}
            live = (self._links.get(i) for i in link.hold_for)
            return bool(link.awaiting) or any(r is not None and r.reading for r in live)
        if link.state is LinkState.RETIRED and link.number:
            return any(r.reading and not r.we_initiated and 0 < r.number < link.number for r in retired)
        return False

    def _release_held(self, peer: bytes) -> None:
        p = self._peers.get(peer)
        if p is None:
            return
        # the ACTIVE link's held batch first: the retired links still held then came after it (L5), among them
        # the lower numbers first (L4)
        ids = [*([p.active] if p.active is not None else []), *sorted(p.retired, key=lambda i: self._links[i].number)]
        for i in ids:
            link = self._links[i]
            if link.held is not None and not self._must_hold(link):
                self._flush_held(link)

    def _flush_held(self, link: Link) -> None:
        held, link.held = link.held, None
        link.awaiting.clear()
        self._timers.discard((_HELD, link.id))
        if held:
            self._out.append(Deliver(link.peer, held))
        self._out.append(Resume(link.id))

    def read_ended(self, link_id: int, now: float, *, clean: bool = True) -> None:
        """The link's reader ended: `clean` at the peer's EOF between frames, else an error or a broken connection
        (then a retired link may have lost frames we wrote on it: reported, as for the active link)."""
        link = self._links.get(link_id)
        if link is None or not link.reading:
            return
        link.reading = False
        if link.state is LinkState.RETIRED:
            if not clean and not link.dropped:
                self._out.append(Unreachable(link.peer))
            if link.half_closed:
                self._close(link)
            self._release_held(link.peer)
        elif link.state is LinkState.ACTIVE:
            self._close(link)

    def half_closed(self, link_id: int, now: float) -> None:
        link = self._links.get(link_id)
        if link is None or link.state is not LinkState.RETIRED:
            return
        link.half_closed = True
        if not link.reading:
            self._close(link)

    def _close(self, link: Link, *, emit: bool = True) -> None:
        p = self._peers[link.peer]
        if link.held is not None:  # read before it closed: delivered (late, if a hold was cut short)
            self._flush_held(link)
        if p.active == link.id:
            p.active = None
            del self.active[link.peer]
            if not link.dropped:
                p.queue.clear()
                self._out.append(Unreachable(link.peer))
        if link.id in p.retired:
            p.retired.remove(link.id)
            self._release_held(link.peer)
        link.state = LinkState.CLOSING
        link.reading = False
        self._timers.discard((_RETIRE, link.id))
        if emit:
            self._out.append(Close(link.id))

    def closed(self, link_id: int, lost: bool, now: float) -> None:
        """The driver closed `link_id`; `lost`: it held frames it never wrote."""
        link = self._links.pop(link_id, None)
        if link is None:
            return
        if link.state is not LinkState.CLOSING:  # closed from below (the node is stopping)
            self._close(link, emit=False)
        p = self._peers.get(link.peer)
        if p is None:
            return
        if lost and not link.was_active and not link.dropped:
            self._out.append(Unreachable(link.peer))
        self._maybe_dial(link.peer, p, now)
        self._gc(link.peer)

    # -- timers -------------------------------------------------------------------------------------------------

    def timer(self, now: float) -> None:
        for kind, key in self._timers.pop_due(now):
            if kind == _DIAL:
                self._out.append(Abort(key))
                self.dial_failed(key, now)
            elif kind == _RETIRE:
                link = self._links.get(key)
                if link is not None and link.state is LinkState.RETIRED:
                    if link.reading and not link.dropped:  # the other side never finished: frames may be lost
                        self._out.append(Unreachable(link.peer))
                    self._close(link)
            elif kind == _HELD:
                link = self._links.get(key)
                if link is not None and link.held is not None:
                    if link.awaiting:  # rule L3: a replaced link never came; what it carried is lost
                        self._out.append(Unreachable(link.peer))
                    self._flush_held(link)
            else:
                self._retry(key, now)

    def _retry(self, peer: bytes, now: float) -> None:
        p = self._peers.get(peer)
        if p is None:
            return
        p.backing_off = False
        if not p.queue:
            p.backoff_s = self.limits.backoff_min_s
        self._maybe_dial(peer, p, now)
        self._gc(peer)

    def _gc(self, peer: bytes) -> None:
        p = self._peers.get(peer)
        if (
            p is not None
            and not p.queue
            and p.active is None
            and not p.retired
            and p.dial is None
            and not p.backing_off
            and not any(link.peer == peer for link in self._links.values())
        ):
            del self._peers[peer]
