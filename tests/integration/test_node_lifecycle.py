"""Node lifecycle with real processes: SIGTERM (goaway with other nodes' cards, `left`, exit < 10 s) and
kill -9 of a callee's node (the callee re-homes elsewhere and still gets its calls)."""

from __future__ import annotations

import signal
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio

from node.client.connection import ConnectionClosed, _open, connect_client
from node.protocol.identity import Identity
from node.protocol.nodelist import parse_card
from node.protocol.wire.client import Deliver, GoAway, Receipt
from tests.integration.procs import NodeProcess


@asynccontextmanager
async def _never_reading(url: str, identity: Identity) -> AsyncIterator[None]:
    """A client that completes the handshake and then reads nothing: the node's close frame stays unanswered."""
    conn = await _open(url, identity, None, False, None)  # connect_client would start a reader that answers it
    try:
        yield
    finally:
        with trio.move_on_after(2):
            await conn.close()


@pytest.fixture
def three(tmp_path: Path) -> Iterator[list[NodeProcess]]:
    procs: list[NodeProcess] = []
    try:
        procs.append(NodeProcess(tmp_path, "n0", []))
        seed = f"127.0.0.1:{procs[0].ports['swim']}"
        procs.append(NodeProcess(tmp_path, "n1", [seed]))
        # n2 is the one the tests stop; a client that never answers its close frame holds it in the federation
        # while the leave waits for its clients (up to 2 s, close_timeout_s outlasting it): see the goaway test.
        slow_close = tmp_path / "n2.toml"
        slow_close.write_text("[clients]\nclose_timeout_s = 6.0\n")
        procs.append(NodeProcess(tmp_path, "n2", [seed], "--config", str(slow_close)))
        deadline = time.monotonic() + 20
        while not all(list(p.states().values()).count("alive") == 3 for p in procs):
            assert time.monotonic() < deadline, "3 nodes did not converge"
            time.sleep(0.1)
        yield procs
    finally:
        for p in procs:
            p.stop()


async def wait_states(procs: list[NodeProcess], member: bytes, state: str, timeout: float) -> None:
    from node.protocol.identity import id_text

    with trio.fail_after(timeout):
        while not all(p.states().get(id_text(member)) == state for p in procs):
            await trio.sleep(0.1)


@pytest.mark.timeout(90)
async def test_sigterm_sends_goaway_with_other_nodes_then_leaves(three: list[NodeProcess]) -> None:
    leaver = three[2]
    client = Identity.generate()
    async with connect_client(leaver.url, client, expected_node_id=leaver.id) as conn:
        t0 = time.monotonic()
        leaver.proc.send_signal(signal.SIGTERM)
        with trio.fail_after(10):
            msg = await conn.receive()
        assert isinstance(msg, GoAway), msg
        cards = [parse_card(uri, now=time.time()) for uri in msg.nodes]  # each verifies: signed by the node it names
        assert {c.id for c in cards} == {three[0].id, three[1].id}
        assert {c.ws for c in cards} == {three[0].url, three[1].url}
        with trio.fail_after(10):
            with pytest.raises(ConnectionClosed) as closed:
                while True:
                    await conn.receive()
        assert closed.value.code == 1001
    code = await trio.to_thread.run_sync(lambda: leaver.proc.wait(10))
    assert code == 0 and time.monotonic() - t0 < 10
    await wait_states(three[:2], leaver.id, "left", 10)
    # the card from goaway leads to a working node
    async with connect_client(cards[0].ws, client, expected_node_id=cards[0].id) as again:
        assert again.node_id == cards[0].id


@pytest.mark.timeout(90)
async def test_a_client_told_goaway_is_callable_on_its_new_node_while_the_old_one_is_still_a_member(
    three: list[NodeProcess],
) -> None:
    """The stopping node stays a member, and one of the callee's owners, until the others hear its leave; meanwhile
    it declines the re-homed callee's lease (docs/protocol.md, "Who may say what"), and the other owners' answer
    finds the callee. A second client that never reads, so never answers its close frame, keeps the stopping node
    in that window until it closes at the end of this test (the node's log then shows the goaway wait end a few
    milliseconds after SIGTERM: the whole exchange below takes about that long on a quiet machine), or for at most
    the 2 s the leave waits for its clients. Whether the call lands inside it is printed, not asserted: on a loaded
    CI machine the exchange took longer than those 2 s twice. What must hold either way: the callee, re-homed,
    gets the offer and the caller `delivered`."""
    from node.protocol.identity import id_text

    leaver = three[2]
    caller, callee, silent = Identity.generate(), Identity.generate(), Identity.generate()
    async with connect_client(three[0].url, caller) as a, _never_reading(leaver.url, silent):
        async with connect_client(leaver.url, callee, expected_node_id=leaver.id) as b:
            leaver.proc.send_signal(signal.SIGTERM)
            with trio.fail_after(10):
                assert isinstance(await b.receive(), GoAway)
        async with connect_client(three[1].url, callee) as b2:
            ref = await a.send_envelope("call_offer", callee.id, b"moved", b"offer")
            with trio.fail_after(5):
                while not isinstance(m := await b2.receive(), Deliver):
                    pass
            assert m.body == b"offer" and m.sender == caller.id
            # Usually still in the window; not asserted: on a loaded CI machine the leave can be heard first (the
            # never-reading client holds it for at most 2 s), and the lease the stopping node declines is checked
            # in-process (tests/relay/test_scenarios.py).
            print("leaver as seen when the offer arrived:", three[0].states().get(id_text(leaver.id)))
            with trio.fail_after(5):
                while not (isinstance(r := await a.receive(), Receipt) and r.ref == ref and r.status.value != "queued"):
                    pass
            assert r.status.value == "delivered"
    code = await trio.to_thread.run_sync(lambda: leaver.proc.wait(10))
    assert code == 0


@pytest.mark.timeout(90)
async def test_kill_9_of_callee_node_then_rehoming_elsewhere(three: list[NodeProcess]) -> None:
    caller, callee = Identity.generate(), Identity.generate()
    async with connect_client(three[0].url, caller) as a:
        async with connect_client(three[2].url, callee) as b:
            ref = await a.send_envelope("call_offer", callee.id, b"k9", b"first")
            with trio.fail_after(10):
                while not isinstance(m := await b.receive(), Deliver):
                    pass
            assert m.body == b"first"
            first_eid = m.eid
            three[2].proc.send_signal(signal.SIGKILL)
            await trio.to_thread.run_sync(lambda: three[2].proc.wait(5))
            with trio.fail_after(10), pytest.raises(ConnectionClosed):
                while True:
                    await b.receive()
        receipts: dict[int, list[str]] = {ref: []}
        # while the callee has no node, an offer is queued in its mailbox (or refused nowhere: never lost)
        ref2 = await a.send_envelope("call_offer", callee.id, b"k9-2", b"second")
        receipts[ref2] = []
        await wait_states(three[:2], three[2].id, "dead", 20)
        async with connect_client(three[1].url, callee) as b2:  # the callee re-homes on another node
            with trio.fail_after(15):
                # a mailbox replica whose copy of the first offer was still in flight to the dead home may push
                # it again: the same eid, which a client drops (docs/client-protocol.md); never a new one
                while not isinstance(m := await b2.receive(), Deliver) or m.eid == first_eid:
                    assert not isinstance(m, Deliver) or m.body == b"first"
            assert m.body == b"second" and m.sender == caller.id
            ref3 = await a.send_envelope("call_answer", callee.id, b"k9-3", b"third")
            receipts[ref3] = []
            with trio.fail_after(15):
                while not isinstance(m := await b2.receive(), Deliver):
                    pass
            assert m.body == b"third"
        with trio.fail_after(15):
            while not all(s and s[-1] != "queued" for s in receipts.values()):
                r = await a.receive()
                if isinstance(r, Receipt):
                    receipts[r.ref].append(r.status.value)
        for ref_, statuses in receipts.items():
            terminal = [s for s in statuses if s != "queued"]
            assert terminal == ["delivered"], (ref_, statuses)
