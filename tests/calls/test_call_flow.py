"""Call flows through the Call layer (node/client/call.py) between clients on different real nodes (127.0.0.1):
every end reason, answered elsewhere across three devices on three nodes, busy, missed from the mailbox."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

import trio

from node.app.service import NodeHandle
from node.client.call import CallClient, call_client
from node.client.connection import connect_client
from node.protocol.call import Candidate, Changed, Command, Description, End, RestartIce, State, Timers
from node.protocol.e2ee import Ice
from node.protocol.identity import Identity
from tests.integration.cluster import federation, until, url

OFFER = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=ice-ufrag:aaaa\r\n"
ANSWER = OFFER.replace("aaaa", "bbbb")


@asynccontextmanager
async def device(node: NodeHandle, ident: Identity, timers: Timers | None = None) -> AsyncIterator[CallClient]:
    async with connect_client(url(node), ident) as conn, call_client(conn, timers=timers) as calls:
        yield calls


async def event(calls: CallClient, pred: Callable[[Command], bool], timeout: float = 10) -> Command:
    with trio.fail_after(timeout):
        while True:
            ev = await calls.events.receive()
            if pred(ev):
                return ev


async def state(calls: CallClient, st: State, end: End | None = None, timeout: float = 10) -> Changed:
    ev = await event(calls, lambda e: isinstance(e, Changed) and e.state is st, timeout)
    assert isinstance(ev, Changed) and ev.end is end, ev
    return ev


async def homed(nodes: Sequence[NodeHandle], client: Identity, *homes: NodeHandle) -> None:
    """Wait until every owner of `client` holds its lease from each of `homes`: a call to it then rings there."""
    want = {h.identity.id for h in homes}

    def leased() -> bool:
        now = trio.current_time()
        owners = [n.relay.core.owner for n in nodes if n.identity.id in n.relay.core.owner.ranking.of(client.id)]
        return bool(owners) and all(want <= set(o.leases.homes(client.id, now)) for o in owners)

    await until(leased, timeout=10)


async def ring(caller: CallClient, callee: Identity, *ringing: CallClient) -> bytes:
    call = await caller.start_call(callee.id, sdp=OFFER, video=False)
    await state(caller, State.OUTGOING)
    for dev in ringing:
        got = await state(dev, State.INCOMING)
        assert got.call == call
    return call


async def test_outgoing_connected_then_hangup_across_nodes(tmp_path: Path) -> None:
    alice, bob = Identity.generate(), Identity.generate()
    async with federation(tmp_path, 3) as nodes, device(nodes[0], alice) as a, device(nodes[2], bob) as b:
        servers = await a.ice_servers()
        assert servers.servers == () and servers.ttl == 0  # these nodes have no [turn]
        call = await ring(a, bob, b)
        offer = await event(b, lambda e: isinstance(e, Description))
        assert isinstance(offer, Description) and offer.sdp == OFFER and offer.what == "offer"
        await a.candidate(call, Ice(cand="candidate:1 1 udp 2122260223 127.0.0.1 40000 typ host", mid="0", mline=0))
        await a.gathering_done(call)
        await b.accept(call, sdp=ANSWER, video=False)
        await state(b, State.CONNECTING)
        cands = [await event(b, lambda e: isinstance(e, Candidate)) for _ in range(2)]
        assert [c.ice.cand[:11] for c in cands if isinstance(c, Candidate)] == ["candidate:1", ""]
        await state(a, State.CONNECTING)
        answer = await event(a, lambda e: isinstance(e, Description))
        assert isinstance(answer, Description) and answer.sdp == ANSWER
        await b.candidate(call, Ice(cand="candidate:2 1 udp 2122260223 127.0.0.1 40001 typ host", mid="0"))
        got = await event(a, lambda e: isinstance(e, Candidate))
        assert isinstance(got, Candidate) and got.ice.cand.startswith("candidate:2")
        await a.connected(call)
        await b.connected(call)
        await state(a, State.CONNECTED)
        await state(b, State.CONNECTED)
        await b.hangup(call)
        await state(b, State.ENDED, End.HANGUP)
        await state(a, State.ENDED, End.HANGUP)


async def test_rejected_and_failed(tmp_path: Path) -> None:
    alice, bob = Identity.generate(), Identity.generate()
    quick = Timers(reconnect_window_s=1.5)
    async with (
        federation(tmp_path, 2) as nodes,
        device(nodes[0], alice, quick) as a,
        device(nodes[1], bob, quick) as b,
    ):
        call = await ring(a, bob, b)
        await b.reject(call, "declined")
        await state(b, State.ENDED, End.REJECTED)
        await state(a, State.ENDED, End.REJECTED)
        call = await ring(a, bob, b)
        await b.accept(call, sdp=ANSWER, video=False)
        await state(a, State.CONNECTING)
        # nobody reaches "connected" within the window: both sides end failed (the first to time out tells the other)
        await state(a, State.ENDED, End.FAILED)
        await state(b, State.ENDED, End.FAILED)


async def test_missed_when_the_callee_does_not_answer(tmp_path: Path) -> None:
    alice, bob = Identity.generate(), Identity.generate()
    quick = Timers(ring_timeout_s=1.5)
    async with federation(tmp_path, 2) as nodes, device(nodes[0], alice, quick) as a, device(nodes[1], bob) as b:
        await ring(a, bob, b)
        await state(a, State.ENDED, End.MISSED)
        await state(b, State.ENDED, End.MISSED)


async def test_missed_from_the_mailbox_when_the_callee_stays_offline(tmp_path: Path) -> None:
    """The offer waits in the offline callee's mailbox for `[relay] mailbox_ttl` (the ring timeout); its `expired`
    receipt ends the call as missed, long before the caller's own (here 30 s) ring timer."""
    alice, dave = Identity.generate(), Identity.generate()
    async with (
        federation(tmp_path, 2, relay={"mailbox_ttl": 1.5}) as nodes,
        device(nodes[0], alice, Timers(ring_timeout_s=30)) as a,
    ):
        start = trio.current_time()
        await a.start_call(dave.id, sdp=OFFER, video=False)
        await state(a, State.OUTGOING)
        await state(a, State.ENDED, End.MISSED, timeout=15)
        assert trio.current_time() - start < 15
        async with device(nodes[1], dave) as d:
            with trio.move_on_after(1.0):
                ev = await d.events.receive()
                raise AssertionError(f"an expired call never rings: {ev}")


async def test_answered_elsewhere_across_three_devices_on_three_nodes(tmp_path: Path) -> None:
    # alice shares node 0 with one of bob's devices, and each bob device sends its notice from a node where bob is
    # homed: the relay must still reach bob's devices on the other nodes (node/protocol/relay/core.py, `_route`)
    alice, bob = Identity.generate(), Identity.generate()
    async with federation(tmp_path, 3) as nodes, AsyncExitStack() as stack:
        a = await stack.enter_async_context(device(nodes[0], alice))
        bobs = [await stack.enter_async_context(device(n, bob)) for n in nodes]
        await homed(nodes, bob, *nodes)
        call = await ring(a, bob, *bobs)
        await bobs[1].accept(call, sdp=ANSWER, video=False)
        await state(bobs[1], State.CONNECTING)
        await state(bobs[0], State.ENDED, End.ANSWERED_ELSEWHERE)
        await state(bobs[2], State.ENDED, End.ANSWERED_ELSEWHERE)
        await state(a, State.CONNECTING)
        await a.connected(call)
        await state(a, State.CONNECTED)
        await a.hangup(call)
        await state(bobs[1], State.ENDED, End.HANGUP)


async def test_busy_device_does_not_stop_the_others_and_the_caller_ends_busy(tmp_path: Path) -> None:
    alice, bob, carol = Identity.generate(), Identity.generate(), Identity.generate()
    quick = Timers(ring_timeout_s=3)
    async with federation(tmp_path, 3) as nodes, AsyncExitStack() as stack:
        a = await stack.enter_async_context(device(nodes[0], alice, quick))
        c = await stack.enter_async_context(device(nodes[2], carol))
        bob1 = await stack.enter_async_context(device(nodes[1], bob))
        first = await ring(c, bob, bob1)
        await bob1.accept(first, sdp=ANSWER, video=False)
        await state(bob1, State.CONNECTING)
        bob2 = await stack.enter_async_context(device(nodes[2], bob))  # bob's second device comes online
        await homed(nodes, bob, nodes[1], nodes[2])
        call = await ring(a, bob, bob2)
        busy = await state(bob1, State.ENDED, End.BUSY)
        assert busy.call == call, "bob1 answered busy for alice's call; its call with carol goes on"
        assert bob1.phone.calls[first].state is State.CONNECTING
        await state(a, State.ENDED, End.BUSY, timeout=10)
        await state(bob2, State.ENDED, End.MISSED)


async def test_media_lost_ice_restart_in_the_same_call(tmp_path: Path) -> None:
    alice, bob = Identity.generate(), Identity.generate()
    async with federation(tmp_path, 2) as nodes, device(nodes[0], alice) as a, device(nodes[1], bob) as b:
        call = await ring(a, bob, b)
        await b.accept(call, sdp=ANSWER, video=False)
        await state(a, State.CONNECTING)
        await a.connected(call)
        await state(a, State.CONNECTED)
        await a.media_lost(call)
        await state(a, State.CONNECTING)
        restart = await event(a, lambda e: isinstance(e, RestartIce))
        assert isinstance(restart, RestartIce) and restart.call == call
        await a.renegotiate(call, sdp=OFFER.replace("aaaa", "aaa2"), video=True)
        reoffer = await event(b, lambda e: isinstance(e, Description) and e.what == "reoffer")
        assert isinstance(reoffer, Description) and "aaa2" in reoffer.sdp and reoffer.video
        await b.reanswer(call, sdp=ANSWER.replace("bbbb", "bbb2"), video=True)
        reanswer = await event(a, lambda e: isinstance(e, Description) and e.what == "reanswer")
        assert isinstance(reanswer, Description) and "bbb2" in reanswer.sdp
        await b.candidate(call, Ice(cand="candidate:old", ufrag="bbbb"))
        await b.candidate(call, Ice(cand="candidate:new", ufrag="bbb2"))
        got = await event(a, lambda e: isinstance(e, Candidate))
        assert isinstance(got, Candidate) and got.ice.cand == "candidate:new", "the old generation's is dropped"
        await a.connected(call)
        await state(a, State.CONNECTED)
