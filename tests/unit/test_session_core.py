"""The client session core (node/protocol/session.py) driven by pure inputs: no socket, no clock, no event loop."""

from __future__ import annotations

import attrs
import pytest

import node.protocol.session as session_mod
from node.protocol.identity import Identity, client_auth_message, node_auth_message, verify_signature
from node.protocol.ratelimit import HeldBuckets
from node.protocol.refusals import Refusal
from node.protocol.session import (
    Close,
    Command,
    Control,
    Offline,
    Online,
    Refused,
    Send,
    SendPing,
    SendPong,
    SessionCore,
    State,
    ToRelay,
)
from node.protocol.settings import ClientsSection
from node.protocol.wire import Limits
from node.protocol.wire.client import (
    Challenge,
    CloseCode,
    Envelope,
    Error,
    ErrorCode,
    Hello,
    Kind,
    Ping,
    Pong,
    Reason,
    Receipt,
    Status,
    Welcome,
    decode_client_frame,
    encode_client_message,
)

NODE = Identity.from_seed(b"n" * 32)
ALICE = Identity.from_seed(b"a" * 32)
NONCE = b"c" * 32
CFG = ClientsSection(
    handshake_timeout_s=10.0,
    ping_interval_s=30.0,
    idle_timeout_s=120.0,
    close_timeout_s=2.0,
    rate_per_s=1.0,
    burst=5,
    ice_rate_per_s=1.0,
    ice_burst=3,
    abuse_strikes_max=4,
    message_fragments_max=8,
)


def core(cfg: ClientsSection = CFG) -> SessionCore:
    return SessionCore(config=cfg, identity=NODE, nonce=NONCE, handshake_deadline=10.0, now=0.0)


def hello_bytes(who: Identity = ALICE, *, json: bool = False, nonce: bytes = NONCE) -> bytes | str:
    hello = Hello(id=who.id, nonce=b"k" * 32, sig=who.sign(client_auth_message(NODE.id, nonce)))
    return encode_client_message(hello, json=json)


def whole(c: SessionCore, data: bytes | str, now: float = 1.0) -> list[Command]:
    return c.fragment(data, True, True, now)


def opened(cfg: ClientsSection = CFG) -> SessionCore:
    c = core(cfg)
    whole(c, hello_bytes())
    assert c.state is State.OPEN
    return c


def envelope(kind: str = "call_offer", ref: int = 1) -> bytes | str:
    return encode_client_message(Envelope(kind=Kind(kind), to=ALICE.id, call=b"c", body=b"x", ref=ref), json=False)


def sends(cmds: list[Command]) -> list[object]:
    return [c.msg for c in cmds if isinstance(c, Send)]


def closes(cmds: list[Command]) -> list[int]:
    return [c.code for c in cmds if isinstance(c, Close)]


def test_start_sends_the_challenge_with_the_nonce() -> None:
    assert core().start() == [Send(msg=Challenge(node=NODE.id, nonce=NONCE))]


@pytest.mark.parametrize("json", [False, True])
def test_hello_opens_welcomes_and_goes_online(json: bool) -> None:
    c = core()
    cmds = whole(c, hello_bytes(json=json))
    assert c.state is State.OPEN and c.online and c.json is json and c.client_id == ALICE.id
    welcome = sends(cmds)[0]
    assert isinstance(welcome, Welcome) and welcome.id == ALICE.id
    assert verify_signature(NODE.id, node_auth_message(ALICE.id, b"k" * 32), welcome.sig)
    assert cmds[-1] == Online(client_id=ALICE.id)
    assert c.nonce == b""  # the challenge nonce is used once


@pytest.mark.parametrize("data", [hello_bytes(nonce=b"x" * 32), b"\xc1", envelope()])
def test_a_bad_hello_is_refused_and_closed_with_4401(data: bytes | str) -> None:
    c = core()
    cmds = whole(c, data, now=3.0)
    assert cmds == [
        Refused(reason=Refusal.FORGED),
        Send(msg=Error(code=ErrorCode.AUTH_FAILED)),
        Close(code=CloseCode.AUTH_FAILED, reason="auth_failed"),
    ]
    assert c.state is State.CLOSING and c.next_deadline() == 5.0
    assert c.tick(5.0) == [] and c.closed  # the client never answered our close


def test_handshake_timeout_closes_with_4408() -> None:
    c = core()
    assert c.next_deadline() == 10.0
    assert c.tick(9.9) == []
    cmds = c.tick(10.0)
    assert cmds == [Refused(reason=Refusal.MALFORMED), Close(code=CloseCode.TIMEOUT, reason="handshake timeout")]
    assert c.state is State.CLOSING and c.next_deadline() == 12.0


def test_silence_pings_then_idle_closes_with_4408_and_goes_offline() -> None:
    c = opened()
    c.received(1.0)
    assert c.next_deadline() == 31.0
    assert c.tick(31.0) == [SendPing()]
    assert c.next_deadline() == 121.0  # idle_timeout_s from the last frame
    cmds = c.tick(121.0)
    assert Close(code=CloseCode.TIMEOUT, reason="idle timeout") in cmds
    assert Offline(client_id=ALICE.id) in cmds and not c.online


def test_any_frame_resets_the_ping_timer() -> None:
    c = opened()
    assert c.tick(31.0) == [SendPing()]
    c.received(40.0)
    assert c.next_deadline() == 70.0
    assert c.tick(69.0) == []


def test_envelopes_go_to_the_relay_and_spend_their_buckets() -> None:
    c = opened()
    out = [whole(c, envelope("call_ice", ref=i), now=2.0) for i in range(4)]
    assert [type(cmds[0]) for cmds in out[:3]] == [ToRelay] * 3  # ice_burst = 3
    assert out[0][0] == ToRelay(env=decode_client_frame(envelope("call_ice", ref=0)))  # type: ignore[arg-type]
    assert sends(out[3]) == [Receipt(ref=3, status=Status.REJECTED, reason=Reason.RATE_LIMITED)]
    assert Refused(reason=Refusal.RATE_LIMITED) in out[3]
    assert isinstance(whole(c, envelope("call_offer"), now=2.0)[0], ToRelay)  # the other bucket is untouched
    assert isinstance(whole(c, envelope("call_ice", ref=9), now=3.0)[0], ToRelay)  # refilled at 1/s


def test_strikes_in_a_row_close_with_4429_and_a_good_frame_forgives() -> None:
    c = opened()
    for _ in range(3):
        assert closes(whole(c, b"\xc1")) == []
    whole(c, envelope())  # accepted: the strikes start again
    for _ in range(3):
        assert closes(whole(c, b"\xc1")) == []
    cmds = whole(c, b"\xc1")
    assert closes(cmds) == [CloseCode.ABUSE] and sends(cmds) == [Error(code=ErrorCode.BAD_REQUEST)]
    assert c.state is State.CLOSING
    assert whole(c, envelope()) == []  # nothing is handled while closing


def test_a_message_over_the_frame_limit_closes_with_1009() -> None:
    c = opened()
    half = b"x" * (Limits.CLIENT_FRAME_MAX // 2)
    assert c.fragment(half, True, False, 1.0) == []
    cmds = c.fragment(half + b"xx", True, True, 1.0)
    assert cmds[0] == Refused(reason=Refusal.OVERSIZED) and closes(cmds) == [CloseCode.TOO_BIG]


def test_fragments_reassemble_and_empty_frames_count_toward_the_cap() -> None:
    c = opened()
    data = envelope()
    assert isinstance(data, bytes)
    assert c.fragment(data[:3], True, False, 1.0) == []
    assert c.fragment(data[3:5], False, False, 1.0) == []  # a piece of a frame (TCP cut it): not a frame
    assert c.fragment(b"", True, False, 1.0) == []
    assert isinstance(c.fragment(data[5:], True, True, 1.0)[0], ToRelay)
    for _ in range(CFG.message_fragments_max - 1):
        assert c.fragment(b"", True, False, 1.0) == []
    cmds = c.fragment(b"", True, False, 1.0)
    assert closes(cmds) == [CloseCode.TOO_BIG] and c.state is State.CLOSING


def test_websocket_pings_are_answered_within_the_bucket_then_struck() -> None:
    c = opened()
    assert [c.ws_ping(b"p", 1.0) for _ in range(4)] == [[SendPong(payload=b"p")]] * 4  # hello spent 0, burst 5
    cmds: list[Command] = []
    for _ in range(2):
        cmds += c.ws_ping(b"p", 1.0)
    assert SendPong(payload=b"p") in cmds and Refused(reason=Refusal.RATE_LIMITED) in cmds
    for _ in range(3):
        cmds = c.ws_ping(b"p", 1.0)
    assert closes(cmds) == [CloseCode.ABUSE]
    assert c.ws_ping(b"p", 1.0) == []  # no pong while closing


def test_app_ping_pong_and_a_second_hello_after_the_welcome() -> None:
    c = opened()
    assert whole(c, encode_client_message(Ping(), json=False)) == [Send(msg=Pong())]
    assert whole(c, encode_client_message(Pong(), json=False)) == []
    cmds = whole(c, hello_bytes())
    assert sends(cmds) == [Error(code=ErrorCode.BAD_REQUEST)] and c.online


@attrs.frozen
class IceServersRequest:
    """Stands for a control message the wire module adds (`{"t":"ice_servers"}`): not on this branch yet."""


def test_any_other_decoded_message_is_one_control_command(monkeypatch: pytest.MonkeyPatch) -> None:
    c, c2 = opened(), opened(attrs.evolve(CFG, burst=1))
    monkeypatch.setattr(session_mod, "decode_client_frame", lambda data: IceServersRequest())
    assert whole(c, b"ice") == [Control(msg=IceServersRequest())]  # type: ignore[arg-type]
    whole(c2, b"ice")
    assert sends(whole(c2, b"ice")) == [Error(code=ErrorCode.RATE_LIMITED)]  # control requests spend the bucket


def test_queue_full_closes_a_slow_reader_with_1008_once() -> None:
    c = opened()
    cmds = c.queue_full(5.0)
    assert cmds == [
        Refused(reason=Refusal.RATE_LIMITED),
        Offline(client_id=ALICE.id),
        Close(code=CloseCode.POLICY, reason="slow reader: send queue full"),
    ]
    assert c.queue_full(5.0) == [] and c.next_deadline() == 7.0


def test_server_close_then_client_close_ends_the_session() -> None:
    c = opened()
    assert closes(c.close(CloseCode.GOING_AWAY, "bye", 1.0)) == [CloseCode.GOING_AWAY]
    assert c.close(CloseCode.GOING_AWAY, "bye", 1.0) == []  # once
    assert c.remote_closed() == [] and c.state is State.CLOSED and c.next_deadline() == float("inf")


def test_client_close_or_eof_while_open_goes_offline_and_closed() -> None:
    c = opened()
    assert c.remote_closed() == [Offline(client_id=ALICE.id)]
    assert c.state is State.CLOSED and c.finish() == []


def test_garbage_on_the_wire_is_refused_and_closes_at_once() -> None:
    c = core()
    assert c.broken() == [Refused(reason=Refusal.MALFORMED)] and c.state is State.CLOSED


def test_a_failed_write_ends_the_session_at_the_next_tick() -> None:
    c = opened()
    assert c.write_failed() == [Offline(client_id=ALICE.id)]
    assert c.next_deadline() < 0
    assert c.tick(1.0) == [] and c.state is State.CLOSED


def test_finish_reports_offline_once_for_an_online_session_only() -> None:
    c = opened()
    assert c.finish() == [Offline(client_id=ALICE.id)] and c.finish() == []
    assert core().finish() == []


def test_a_closing_connection_is_read_only_up_to_its_byte_bound_then_ends() -> None:
    """A client closed for abuse that keeps sending: the node reads at most closing_read_bytes_max more bytes while
    it waits for the close frame, then ends the connection without waiting out close_timeout_s."""
    c = opened(attrs.evolve(CFG, closing_read_bytes_max=1000))
    assert 1009 in closes(c.close(1009, "too big", 2.0))
    assert c.state is State.CLOSING
    c.received(2.1, 1000)
    assert c.state is State.CLOSING  # within the bound: still waiting for the client's close frame
    c.received(2.2, 1)
    assert c.state is State.CLOSED and c.next_deadline() == float("inf")


def held_core(held: HeldBuckets[bytes], now: float) -> SessionCore:
    """A session of ALICE on a server whose buckets per id are `held`, welcomed at `now`."""
    c = SessionCore(config=CFG, identity=NODE, nonce=NONCE, handshake_deadline=now + 10.0, now=now, held=held)
    whole(c, hello_bytes(), now=now)
    assert c.state is State.OPEN
    return c


def relayed(c: SessionCore, kind: str, n: int, now: float) -> list[bool]:
    return [isinstance(whole(c, envelope(kind, ref=i), now=now)[0], ToRelay) for i in range(n)]


def test_a_reconnect_of_the_same_id_starts_from_the_buckets_it_left_not_a_full_burst() -> None:
    """The core spends the id's buckets (`held`), which outlive the connection: after the burst (5 envelopes, 3
    call_ice) a new connection of the same id at once gets nothing more, and the refill at the normal rate
    (1/s) brings it back. Without `held` each connection started full (docs/security.md, "Malicious client")."""
    held: HeldBuckets[bytes] = HeldBuckets(((CFG.rate_per_s, CFG.burst), (CFG.ice_rate_per_s, CFG.ice_burst)), 8)
    first = held_core(held, 1.0)
    assert relayed(first, "call_offer", 3, 1.0) == [True] * 3 and relayed(first, "call_ice", 3, 1.0) == [True] * 3
    assert first.remote_closed() == [Offline(client_id=ALICE.id)]
    again = held_core(held, 1.0)
    assert relayed(again, "call_offer", 3, 1.0) == [True, True, False]  # 5 in all, as on one connection
    assert relayed(again, "call_ice", 1, 1.0) == [False]
    again.finish()
    later = held_core(held, 1.0 + CFG.burst / CFG.rate_per_s)  # refilled at the normal rate: the burst is back
    assert relayed(later, "call_offer", CFG.burst + 1, 6.0) == [True] * CFG.burst + [False]
    assert relayed(later, "call_ice", CFG.ice_burst + 1, 6.0) == [True] * CFG.ice_burst + [False]


def test_connections_of_one_id_at_once_share_its_buckets() -> None:
    """A second connection of an id that is still connected (another device, or a phone on a new network before
    the node noticed the old connection died) spends the same tokens: opening one before closing the other buys no
    burst. The buckets are kept until the last connection ends."""
    held: HeldBuckets[bytes] = HeldBuckets(((CFG.rate_per_s, CFG.burst), (CFG.ice_rate_per_s, CFG.ice_burst)), 8)
    a, b = held_core(held, 1.0), held_core(held, 1.0)
    assert relayed(a, "call_offer", 4, 1.0) == [True] * 4
    assert relayed(b, "call_offer", 2, 1.0) == [True, False]
    a.finish()
    assert held.attached() == 1 and held.kept() == 0
    b.finish()
    assert held.attached() == 0 and held.kept() == 1
