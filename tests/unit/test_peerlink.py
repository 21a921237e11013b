"""node/protocol/peerlink.py `PeerLinkCore`: two cores joined by fake links, no sockets (like h11's ConnectionPair).

`Net` carries out both cores' commands: a `Dial` waits until the test completes or loses it; `Write` appends a
batch to the other end's inbound queue; `HalfClose` and `Close` put an EOF after what was written; the test decides
when each end reads (`read`), so interleavings that sockets make rare are spelled out here.
"""

from __future__ import annotations

from collections import deque
from typing import Any

import attrs
import pytest

from node.protocol.errors import RemoteProtocolError
from node.protocol.peerlink import (
    QUEUED,
    REFUSED,
    Abort,
    Close,
    Deliver,
    Dial,
    HalfClose,
    LinkState,
    PeerLimits,
    PeerLinkCore,
    Resume,
    SetBatch,
    Unreachable,
    Write,
)
from node.protocol.wire import MsgType
from node.protocol.wire.link import LinkHello, LinkHelloOk, control_from_map, control_to_map

SMALL, BIG = bytes([1]) * 32, bytes([2]) * 32
LIMITS = PeerLimits(handshake_timeout_s=5.0, io_timeout_s=10.0, backoff_min_s=1.0, backoff_max_s=4.0, queue_max=16)


@attrs.define(eq=False)
class Fake:
    """One connection: link ids at each end, and the batches (plus EOF) in flight towards each end."""

    ends: dict[str, int]
    inbound: dict[str, deque[list[dict[str, Any]]]] = attrs.Factory(lambda: {"x": deque(), "y": deque()})
    eof: dict[str, bool] = attrs.Factory(lambda: {"x": False, "y": False})
    broken: bool = False  # ends in a reset, not a clean EOF


class Net:
    def __init__(self) -> None:
        self.now = 0.0
        self.cores = {"x": PeerLinkCore(node_id=SMALL, limits=LIMITS), "y": PeerLinkCore(node_id=BIG, limits=LIMITS)}
        self.ids = {"x": SMALL, "y": BIG}
        self.conns: list[Fake] = []
        self.dials: dict[str, list[int]] = {"x": [], "y": []}
        self.delivered: dict[str, list[Any]] = {"x": [], "y": []}
        self.unreachable: dict[str, list[bytes]] = {"x": [], "y": []}
        self.aborted: dict[str, list[int]] = {"x": [], "y": []}
        self.batch: dict[str, set[int]] = {"x": set(), "y": set()}
        self.paused: set[tuple[str, int]] = set()
        self.closed: set[tuple[str, int]] = set()

    @staticmethod
    def other(name: str) -> str:
        return "y" if name == "x" else "x"

    def conn(self, name: str, link: int) -> Fake | None:
        return next((c for c in self.conns if c.ends.get(name) == link), None)

    def send(self, name: str, n: Any) -> int:
        core = self.cores[name]
        msg = {"t": 99, "n": n}
        target = core.send(self.ids[self.other(name)], msg, self.now)
        if target >= 0:
            self._write(name, target, (msg,))
        self.process()
        return target

    def process(self) -> None:
        busy = True
        while busy:
            busy = False
            for name, core in self.cores.items():
                for cmd in core.drain():
                    busy = True
                    self._do(name, cmd)

    def _do(self, name: str, cmd: object) -> None:
        core = self.cores[name]
        match cmd:
            case Dial(link=link):
                self.dials[name].append(link)
            case Write(link=link, msgs=msgs):
                self._write(name, link, msgs)
            case SetBatch(link=link):
                self.batch[name].add(link)
            case HalfClose(link=link):
                self._eof_from(name, link)
                core.half_closed(link, self.now)
            case Close(link=link):
                conn = self.conn(name, link)
                if conn is not None and conn.inbound[name]:  # closed with data unread: TCP answers with a reset
                    conn.broken = True
                self._eof_from(name, link)
                self.closed.add((name, link))
                core.closed(link, False, self.now)
            case Resume(link=link):
                self.paused.discard((name, link))
            case Deliver(msgs=msgs):
                self.delivered[name].extend(m["n"] for m in msgs)
            case Unreachable(peer=peer):
                self.unreachable[name].append(peer)
            case Abort(link=link):
                self.aborted[name].append(link)
                if link in self.dials[name]:  # the driver cancels that dial: it never lands
                    self.dials[name].remove(link)

    def _write(self, name: str, link: int, msgs: tuple[dict[str, Any], ...]) -> None:
        conn = self.conn(name, link)
        if conn is not None and (name, link) not in self.closed and not conn.eof[self.other(name)]:
            conn.inbound[self.other(name)].append(list(msgs))

    def _eof_from(self, name: str, link: int) -> None:
        conn = self.conn(name, link)
        if conn is not None:
            conn.eof[self.other(name)] = True

    def connect(self, dialler: str, *, version: int = 2, accept: bool = True) -> Fake:
        """Complete the oldest pending dial of `dialler`: the other side accepts it (its LINK_HELLO said `version`),
        at once, or (`accept=False`) when the test calls `accept`: a listener slow to hand the connection over."""
        link = self.dials[dialler].pop(0)
        conn = Fake(ends={dialler: link})
        self.conns.append(conn)
        self.cores[dialler].dial_succeeded(link, self.now)
        self.process()
        if accept:
            self.accept(conn, version=version)
        return conn

    def accept(self, conn: Fake, *, version: int = 2) -> None:
        """The listener hands the connection `conn` over to its core."""
        ((dialler, link),) = conn.ends.items()
        listener = self.other(dialler)
        hello = conn.inbound[listener].popleft()  # the listener's driver reads the LINK_HELLO, not the core
        assert hello == [{"t": int(MsgType.LINK_HELLO), "v": 2, "l": link}]
        conn.ends[listener] = self.cores[listener].accepted(self.ids[dialler], version, self.now, link)
        self.process()

    def read(self, name: str, conn: Fake, batches: int = 1_000_000) -> None:
        """`name` reads up to `batches` batches from `conn` (stopping while held), then the EOF if it is next."""
        link, core = conn.ends[name], self.cores[name]
        while batches and conn.inbound[name] and (name, link) not in self.paused and (name, link) not in self.closed:
            if not core.received(link, conn.inbound[name].popleft(), self.now):
                self.paused.add((name, link))
            batches -= 1
            self.process()
        paused = (name, link) in self.paused  # the driver's reader waits for Resume before it reads on
        if not conn.inbound[name] and conn.eof[name] and (name, link) not in self.closed and not paused:
            core.read_ended(link, self.now, clean=not conn.broken)
            self.process()

    def read_all(self) -> None:
        for _ in range(50):
            for conn in list(self.conns):
                for name in ("x", "y"):
                    if name in conn.ends:
                        self.read(name, conn)

    def advance(self, seconds: float) -> None:
        self.now += seconds
        for core in self.cores.values():
            core.timer(self.now)
        self.process()


def active(net: Net, name: str) -> int | None:
    link = net.cores[name].active_link(net.ids[net.other(name)])
    return link.id if link is not None else None


# --- sending, dialling, versions -------------------------------------------------------------------------------


def test_frames_queue_until_the_dial_completes_then_go_first_in_order() -> None:
    net = Net()
    assert [net.send("x", i) for i in range(3)] == [QUEUED] * 3
    assert len(net.dials["x"]) == 1  # one dial, however many frames
    net.connect("x")
    link = active(net, "x")
    assert link is not None and net.send("x", 3) == link  # the hot path: the link's id, nothing queued
    net.read_all()
    assert net.delivered["y"] == [0, 1, 2, 3]
    assert net.cores["x"].queued_frames() == 0


def test_the_queue_is_bounded_and_self_is_refused() -> None:
    net = Net()
    assert [net.send("x", i) for i in range(LIMITS.queue_max)] == [QUEUED] * LIMITS.queue_max
    assert net.send("x", "over") == REFUSED
    assert net.cores["x"].send(SMALL, {"t": 99}, 0.0) == REFUSED


@pytest.mark.parametrize("version", [1, 2])
def test_version_negotiation_batches_only_when_both_read_batches(version: int) -> None:
    net = Net()
    net.send("x", "a")
    conn = net.connect("x", version=version)
    y_link, x_link = conn.ends["y"], conn.ends["x"]
    assert (y_link in net.batch["y"]) == (version == 2)
    net.read_all()
    assert (x_link in net.batch["x"]) == (version == 2)  # after LINK_HELLO_OK
    assert net.delivered == {"x": [], "y": ["a"]}  # control frames are never delivered


def test_a_control_frame_out_of_place_is_refused_and_changes_nothing() -> None:
    net = Net()
    net.send("x", "a")
    conn = net.connect("x")
    net.read_all()
    core, link = net.cores["y"], conn.ends["y"]
    with pytest.raises(RemoteProtocolError):  # LINK_HELLO_OK to the listener: only a dialler gets one
        core.received(link, [{"t": int(MsgType.LINK_HELLO_OK), "v": 2}, {"t": 99, "n": "b"}], net.now)
    with pytest.raises(RemoteProtocolError):
        core.received(link, [{"t": int(MsgType.LINK_HELLO_OK), "v": "two"}], net.now)
    assert core.drain() == [] and net.delivered["y"] == ["a"]


# --- one link per pair -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("order", ["small-first", "big-first"])
def test_simultaneous_dials_keep_the_smaller_ids_link_on_both_sides_and_lose_nothing(order: str) -> None:
    net = Net()
    for i in range(3):
        net.send("x", f"x{i}")
        net.send("y", f"y{i}")
    first, second = ("x", "y") if order == "small-first" else ("y", "x")
    c1 = net.connect(first)
    net.send(first, f"{first}-after")  # on the first link, before the second dial lands
    c2 = net.connect(second)
    winner = c1 if first == "x" else c2  # the link the smaller id dialled
    assert active(net, "x") == winner.ends["x"] and active(net, "y") == winner.ends["y"]
    for i in range(3, 6):
        net.send("x", f"x{i}")
        net.send("y", f"y{i}")
    net.read_all()
    assert net.delivered["y"] == [f"x{i}" for i in range(3)] + ["x-after"] * (first == "x") + [
        f"x{i}" for i in range(3, 6)
    ]
    assert net.delivered["x"] == [f"y{i}" for i in range(3)] + ["y-after"] * (first == "y") + [
        f"y{i}" for i in range(3, 6)
    ]
    loser = c2 if winner is c1 else c1
    assert ("x", loser.ends["x"]) in net.closed and ("y", loser.ends["y"]) in net.closed
    assert net.cores["x"].link_count == net.cores["y"].link_count == 1
    assert net.unreachable == {"x": [], "y": []}


def test_retire_with_frames_in_flight_keeps_fifo_by_holding_the_winner() -> None:
    """Y wrote y0..y4 on its own link before X's dial (the winner) reached it, then y5..y9 on the winner. X reads
    the winner first: those frames wait until the retired link has been read to its EOF."""
    net = Net()
    net.send("x", "x0")  # X dials (will win) ...
    net.send("y", "y0")  # ... and so does Y
    y_link = net.connect("y")  # Y's dial lands first: active on both sides for now
    for i in range(1, 5):
        net.send("y", f"y{i}")
    x_link = net.connect("x")  # X's dial lands: it wins, Y's link is retired on both sides
    assert net.cores["x"].link(y_link.ends["x"]).state is LinkState.RETIRED  # type: ignore[union-attr]
    for i in range(5, 10):
        net.send("y", f"y{i}")
    net.read("x", x_link)  # the winner first: held
    assert net.delivered["x"] == [] and ("x", x_link.ends["x"]) in net.paused
    net.read("x", y_link)  # the retired link to its EOF, then the held batch, then the rest
    net.read_all()
    assert net.delivered["x"] == [f"y{i}" for i in range(10)]
    assert net.delivered["y"] == ["x0"]
    assert net.unreachable == {"x": [], "y": []}


def test_a_retired_link_that_never_ends_releases_the_held_frames_after_io_timeout() -> None:
    net = Net()
    net.send("x", "x0")
    net.send("y", "y0")
    y_link = net.connect("y")
    x_link = net.connect("x")
    net.send("y", "y1")
    y_link.eof["x"] = False  # Y's half-close never arrives at X (a stuck peer)
    y_link.inbound["x"].clear()
    net.read("x", x_link)
    assert net.delivered["x"] == []
    net.advance(LIMITS.io_timeout_s + 0.1)
    net.read_all()
    assert net.delivered["x"] == ["y1"]
    assert ("x", y_link.ends["x"]) in net.closed
    assert net.unreachable["x"] == [BIG]  # closed before Y's EOF: what it still carried is lost, and said so


def _slow_listener_race(net: Net) -> tuple[Fake, Fake]:
    """Y's dial lands and Y writes y0..y4 on it, but X's listener has not handed it over yet; X's dial then lands
    and wins (Y retires its own link for it), and Y writes y5..y9 on the winner. Returns (Y's link, X's link)."""
    net.send("y", "y0")
    y_link = net.connect("y", accept=False)  # at X: handshake and LINK_HELLO read, not yet `accepted`
    for i in range(1, 5):
        net.send("y", f"y{i}")
    net.send("x", "x0")  # X knows no link to Y: it dials
    x_link = net.connect("x")
    assert active(net, "y") == x_link.ends["y"]  # Y retired its own link for X's
    for i in range(5, 10):
        net.send("y", f"y{i}")
    return y_link, x_link


def test_the_winner_waits_for_a_retired_link_the_listener_has_not_handed_over_yet() -> None:
    """Rule L2: the winner's LINK_HELLO_OK names Y's retired link; X holds the winner's frames until its listener
    has handed that link over and it has been read to its end."""
    net = Net()
    y_link, x_link = _slow_listener_race(net)
    net.read("x", x_link)  # the winner first: its LINK_HELLO_OK names Y's link, unknown at X yet: held
    assert net.delivered["x"] == [] and ("x", x_link.ends["x"]) in net.paused
    net.accept(y_link)  # the listener catches up: retired at once (X's own link is active and wins)
    net.read_all()
    assert net.delivered["x"] == [f"y{i}" for i in range(10)]
    assert net.delivered["y"] == ["x0"]
    assert net.unreachable == {"x": [], "y": []}
    assert ("x", y_link.ends["x"]) in net.closed and ("y", y_link.ends["y"]) in net.closed


def test_a_retired_link_read_out_before_the_winners_answer_is_not_waited_for() -> None:
    """The retired link reached X's core, and was read to its end, before X read the winner's LINK_HELLO_OK naming
    it: X remembers the numbers of the links it accepted, so the winner is not held."""
    net = Net()
    y_link, x_link = _slow_listener_race(net)
    net.accept(y_link)
    net.read("x", y_link)
    assert net.delivered["x"] == [f"y{i}" for i in range(5)] and ("x", y_link.ends["x"]) in net.closed
    net.read("x", x_link)
    assert net.delivered["x"] == [f"y{i}" for i in range(10)]
    assert ("x", x_link.ends["x"]) not in net.paused and net.unreachable == {"x": [], "y": []}


def test_a_named_link_that_never_comes_releases_the_winner_after_io_timeout_and_is_reported() -> None:
    """Rule L3: a peer naming a link it never hands over (a hostile one, or a connection that died at the
    listener) holds its own frames on the winner for at most io_timeout_s; then they are delivered and the peer
    is reported unreachable (the named link's frames are lost)."""
    net = Net()
    y_link, x_link = _slow_listener_race(net)
    net.conns.remove(y_link)  # it never reaches X's core
    net.read("x", x_link)
    net.advance(LIMITS.io_timeout_s - 0.1)
    assert net.delivered["x"] == [] and net.unreachable["x"] == []
    net.advance(0.2)
    net.read_all()
    assert net.delivered["x"] == [f"y{i}" for i in range(5, 10)]
    assert net.unreachable["x"] == [BIG]
    net.send("y", "later")  # the winner is read on, not held again
    net.read_all()
    assert net.delivered["x"][-1] == "later"


def test_links_the_peer_dialled_are_read_out_in_the_order_of_their_numbers() -> None:
    """Rule L4: X's dial is stuck at Y's listener but active at X, so X retires each link Y dials; Y sees its link
    end (X's EOF), reports it and dials again. Y's two links are both being read at X: the second one's frames
    wait for the first one's end."""
    net = Net()
    net.send("x", "x0")
    net.connect("x", accept=False)  # active at X, never handed over at Y
    net.send("y", "y0")
    one = net.connect("y")  # retired at X at once (X's own link wins), active at Y
    net.send("y", "y1")
    net.read("y", one)  # X's answer, then its EOF: Y's active link ended
    assert net.unreachable["y"] == [SMALL]
    net.send("y", "y2")
    two = net.connect("y")
    net.read("x", two)  # held: Y numbered `one` lower, and it is still being read
    assert net.delivered["x"] == [] and ("x", two.ends["x"]) in net.paused
    net.read("x", one)
    net.read_all()
    assert net.delivered["x"] == ["y0", "y1", "y2"]


def test_a_held_batch_waits_only_for_links_retired_before_it_was_read() -> None:
    """Rule L5: X's winner holds y5 (read with Y's LINK_HELLO_OK, in one box) for Y's retired link 1. Y then loses
    the winner's connection (X, paused on the held batch, does not see it), reports it, and dials again: link 2,
    retired at X, brings y6. y5 still goes first, then y6 (L4: after link 1), not after link 2 is read out."""
    net = Net()
    net.send("x", "x0")
    net.send("y", "y0")
    first = net.connect("y")  # Y's dial lands first: active on both sides for now
    net.send("y", "y1")
    winner = net.connect("x")  # X's dial wins; Y's link is retired on both sides
    net.send("y", "y5")
    answer, y5 = winner.inbound["x"]
    winner.inbound["x"] = deque([answer + y5])  # one sealed box, as the driver writes them
    net.read("x", winner)  # held: link 1 is still being read
    assert net.delivered["x"] == [] and ("x", winner.ends["x"]) in net.paused
    winner.inbound["y"].clear()  # the winner's connection breaks at Y
    winner.eof["y"] = winner.broken = True
    net.read("y", winner)
    assert net.unreachable["y"] == [SMALL]
    net.send("y", "y6")  # Y dials again
    second = net.connect("y")
    assert net.cores["x"].link(second.ends["x"]).state is LinkState.RETIRED  # type: ignore[union-attr]
    net.read("x", second)  # held behind link 1 (L4), not delivered yet
    assert net.delivered["x"] == []
    net.read("x", first)
    net.read_all()
    assert net.delivered["x"] == ["y0", "y1", "y5", "y6"]


def test_a_hostile_link_hello_ok_is_bounded_and_a_second_one_is_refused() -> None:
    net = Net()
    net.send("x", "a")
    conn = net.connect("x")
    core, link = net.cores["x"], conn.ends["x"]
    ok = conn.inbound["x"].popleft()
    assert ok == [{"t": int(MsgType.LINK_HELLO_OK), "v": 2, "r": []}]
    with pytest.raises(RemoteProtocolError):  # more numbers than RETIRED_LINKS_MAX
        core.received(link, [{"t": int(MsgType.LINK_HELLO_OK), "v": 2, "r": [1, 2, 3, 4, 5]}], net.now)
    with pytest.raises(RemoteProtocolError):
        core.received(link, [{"t": int(MsgType.LINK_HELLO_OK), "v": 2, "r": [0]}], net.now)
    assert core.received(link, ok, net.now)
    with pytest.raises(RemoteProtocolError):  # one answer per link: a repeated one cannot start a new hold
        core.received(link, [{"t": int(MsgType.LINK_HELLO_OK), "v": 2, "r": [7]}], net.now)
    assert core.drain() == [SetBatch(link)]


@pytest.mark.parametrize(
    "frame",
    [
        {"t": int(MsgType.LINK_HELLO), "v": 2, "l": -1},
        {"t": int(MsgType.LINK_HELLO), "v": 2, "l": 2**53},
        {"t": int(MsgType.LINK_HELLO), "v": 2, "l": True},
        {"t": int(MsgType.LINK_HELLO_OK), "v": 2, "r": 5},
        {"t": int(MsgType.LINK_HELLO_OK), "v": 2, "r": ["1"]},
        {"t": int(MsgType.LINK_HELLO_OK), "v": 2, "r": [2**53]},
    ],
)
def test_link_numbers_out_of_range_are_refused(frame: dict[str, Any]) -> None:
    with pytest.raises(RemoteProtocolError):
        control_from_map(frame)


def test_link_hello_and_its_answer_round_trip_and_default_when_absent() -> None:
    hello, ok = LinkHello(version=2, link=2**53 - 1), LinkHelloOk(version=2, retired=(1, 2, 3, 4))
    assert control_from_map(control_to_map(hello)) == hello and control_from_map(control_to_map(ok)) == ok
    assert control_from_map({"t": int(MsgType.LINK_HELLO)}) == LinkHello(version=1, link=0)
    assert control_from_map({"t": int(MsgType.LINK_HELLO_OK), "v": 2}) == LinkHelloOk(version=2, retired=())


# --- failures --------------------------------------------------------------------------------------------------


def test_a_peer_that_stops_mid_handshake_is_given_up_at_the_deadline_then_retried_after_backoff() -> None:
    net = Net()
    net.send("x", "lost")
    (stuck,) = net.dials["x"]
    net.advance(LIMITS.handshake_timeout_s - 0.1)
    assert net.aborted["x"] == []
    net.advance(0.2)
    assert net.aborted["x"] == [stuck] and net.unreachable["x"] == [BIG]  # the queued frame is reported lost
    net.dials["x"].clear()
    net.send("x", "later")  # during the backoff: queued, no dial yet
    assert net.dials["x"] == []
    net.advance(LIMITS.backoff_min_s)
    assert len(net.dials["x"]) == 1
    net.cores["x"].dial_succeeded(stuck, net.now)  # the stuck attempt completing late is closed, not adopted
    net.process()
    assert ("x", stuck) in net.closed
    net.connect("x")
    net.read_all()
    assert net.delivered["y"] == ["later"]


def test_failed_dials_back_off_doubling_to_the_cap_and_reset_when_idle() -> None:
    net = Net()
    gaps = []
    net.send("x", 0)
    for i in range(4):
        link = net.dials["x"].pop()
        net.cores["x"].dial_failed(link, net.now)
        net.process()
        net.send("x", i + 1)
        start = net.now
        while not net.dials["x"]:
            net.advance(0.25)
        gaps.append(net.now - start)
    assert gaps == [1.0, 2.0, 4.0, 4.0]
    assert net.unreachable["x"] == [BIG] * 4
    net.cores["x"].dial_failed(net.dials["x"].pop(), net.now)
    net.process()
    net.advance(10.0)  # the backoff ends with nothing queued: it resets
    net.send("x", "now")
    assert len(net.dials["x"]) == 1


def test_a_peer_without_an_address_fails_at_once_without_backoff() -> None:
    net = Net()
    net.send("x", "a")
    net.cores["x"].dial_failed(net.dials["x"].pop(), net.now, no_address=True)
    net.process()
    assert net.unreachable["x"] == [BIG]
    net.send("x", "b")
    assert len(net.dials["x"]) == 1


def test_the_active_link_ending_is_reported_and_the_next_send_redials() -> None:
    net = Net()
    net.send("x", "a")
    conn = net.connect("x")
    net.read_all()
    conn.eof["x"] = True  # Y's end went away
    net.read("x", conn)
    assert net.unreachable["x"] == [BIG] and active(net, "x") is None
    net.send("x", "b")
    net.connect("x")
    net.read_all()
    assert net.delivered["y"] == ["a", "b"]


def test_drop_peer_forgets_the_queue_abandons_the_dial_and_reports_nothing() -> None:
    net = Net()
    net.send("x", "a")
    (link,) = net.dials["x"]
    net.cores["x"].drop_peer(BIG, net.now)
    net.process()
    assert net.aborted["x"] == [link] and net.unreachable["x"] == []
    assert net.cores["x"].queued_frames() == 0 and not net.cores["x"].dialling(BIG)
    net.advance(LIMITS.handshake_timeout_s * 2)
    assert net.unreachable["x"] == []


def test_drop_peer_closes_the_active_link_without_reporting() -> None:
    net = Net()
    net.send("x", "a")
    conn = net.connect("x")
    net.cores["x"].drop_peer(BIG, net.now)
    net.process()
    assert ("x", conn.ends["x"]) in net.closed and net.unreachable["x"] == []
    assert net.cores["x"].link_count == 0


# --- random interleavings ----------------------------------------------------------------------------------------


def _is_ordered_subsequence(got: list[Any], sent: list[Any]) -> bool:
    it = iter(sent)
    return all(any(g == s for s in it) for g in got)


@pytest.mark.parametrize("seed", range(200))
def test_random_interleavings_deliver_in_order_once_or_report_unreachable(seed: int) -> None:
    """Sends from both sides, both dials landing in either order or failing, reads of any link at any time:
    each side receives what the other sent, in order and at most once; anything missing was reported."""
    _random_interleavings(seed, slow_listener=False)


@pytest.mark.parametrize("seed", range(200))
def test_random_interleavings_with_slow_listeners_deliver_in_order_once_or_report_unreachable(seed: int) -> None:
    """The same, and a listener may hand a connection whose dial has landed to its core at any later step (rules
    L1-L3): frames the peer wrote on it before it retired it still come before those of the winner."""
    _random_interleavings(seed, slow_listener=True)


def _random_interleavings(seed: int, *, slow_listener: bool) -> None:
    import random

    rng = random.Random(seed)
    net = Net()
    sent: dict[str, list[Any]] = {"x": [], "y": []}
    pending: list[Fake] = []  # dials that landed, not yet handed over by the listener

    def accept(conn: Fake) -> None:
        pending.remove(conn)
        if not conn.broken:  # a connection that broke at the listener never reaches its core
            net.accept(conn)

    for step in range(60):
        op = rng.random()
        name = rng.choice("xy")
        if op < 0.45:
            if net.send(name, (name, step)) != REFUSED:
                sent[name].append((name, step))
        elif op < 0.6 and net.dials[name]:
            if rng.random() < 0.15:
                net.cores[name].dial_failed(net.dials[name].pop(0), net.now)
                net.process()
            elif slow_listener and rng.random() < 0.5:
                pending.append(net.connect(name, accept=False))
            else:
                net.connect(name)
        elif slow_listener and op < 0.65 and pending:
            accept(rng.choice(pending))
        elif op < 0.87 and net.conns:
            conn = rng.choice(net.conns)
            if name in conn.ends:
                net.read(name, conn, batches=rng.randint(1, 3))
        elif op < 0.9 and net.conns:  # the connection breaks: what was in flight is lost, both ends see a reset
            conn = rng.choice(net.conns)
            if any((end, link) in net.closed for end, link in conn.ends.items()):
                continue  # a sender that already closed cannot learn of a later loss (no transport could say)
            conn.broken = True
            for end in "xy":
                conn.inbound[end].clear()
                conn.eof[end] = True
        else:
            net.advance(rng.choice([0.1, 1.0, 3.0]))
    for _ in range(20):  # let everything settle: pending dials land, every link is read, every timer fires
        for name in "xy":
            while net.dials[name]:
                net.connect(name)
        while pending:
            accept(pending[0])
        net.read_all()
        net.advance(LIMITS.io_timeout_s + 1)
    for receiver, sender in (("x", "y"), ("y", "x")):
        got = net.delivered[receiver]
        assert len(got) == len(set(got)), f"seed {seed}: duplicates at {receiver}"
        assert _is_ordered_subsequence(got, sent[sender]), f"seed {seed}: out of order at {receiver}"
        if not net.unreachable[sender]:
            assert got == sent[sender], f"seed {seed}: {receiver} is missing frames nobody reported"
    assert net.cores["x"].link_count <= 1 and net.cores["y"].link_count <= 1
