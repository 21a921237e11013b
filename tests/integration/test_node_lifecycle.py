"""Node lifecycle with real processes: SIGTERM (goaway with other nodes' cards, `left`, exit < 10 s) and
kill -9 of a callee's node (the callee re-homes elsewhere and still gets its calls)."""

from __future__ import annotations

import json
import signal
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

from node.client import ConnectionClosed, connect_client
from node.identity import Identity, parse_id
from node.nodelist import parse_card
from node.wire.client import Deliver, GoAway, Receipt
from tests.helpers import homing_cmd, homing_env, wait_for_file


class Proc:
    def __init__(self, tmp: Path, name: str, join: list[str]) -> None:
        self.dir = tmp / name
        args = [
            "node",
            "run",
            "--data-dir",
            str(self.dir),
            "--preset",
            "local",
            "--open",
            "--ws",
            "127.0.0.1:0",
            "--swim",
            "127.0.0.1:0",
            "--peer",
            "127.0.0.1:0",
            "--metrics",
            "127.0.0.1:0",
        ]
        for seed in join:
            args += ["--join", seed]
        self.log = (tmp / f"{name}.log").open("w")
        self.proc = subprocess.Popen(homing_cmd(*args), env=homing_env(), stdout=self.log, stderr=subprocess.STDOUT)
        self.ports = wait_for_file(self.dir / "ports.json", timeout=20)
        self.id = parse_id(self.members()["self"])
        self.url = f"ws://127.0.0.1:{self.ports['ws']}/v1/client"

    def members(self) -> dict[str, object]:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.ports['metrics']}/v1/members", timeout=5) as resp:
            doc: dict[str, object] = json.loads(resp.read())
            return doc

    def states(self) -> dict[str, str]:
        return {m["id"]: m["state"] for m in self.members()["members"]}  # type: ignore[attr-defined,index]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.log.close()


@pytest.fixture
def three(tmp_path: Path) -> Iterator[list[Proc]]:
    procs: list[Proc] = []
    try:
        procs.append(Proc(tmp_path, "n0", []))
        seed = f"127.0.0.1:{procs[0].ports['swim']}"
        procs += [Proc(tmp_path, f"n{i}", [seed]) for i in (1, 2)]
        deadline = time.monotonic() + 20
        while not all(list(p.states().values()).count("alive") == 3 for p in procs):
            assert time.monotonic() < deadline, "3 nodes did not converge"
            time.sleep(0.1)
        yield procs
    finally:
        for p in procs:
            p.stop()


async def wait_states(procs: list[Proc], member: bytes, state: str, timeout: float) -> None:
    from node.identity import id_text

    with trio.fail_after(timeout):
        while not all(p.states().get(id_text(member)) == state for p in procs):
            await trio.sleep(0.1)


@pytest.mark.timeout(90)
async def test_sigterm_sends_goaway_with_other_nodes_then_leaves(three: list[Proc]) -> None:
    leaver = three[2]
    client = Identity.generate()
    async with connect_client(leaver.url, client, expected_node_id=leaver.id) as conn:
        t0 = time.monotonic()
        leaver.proc.send_signal(signal.SIGTERM)
        with trio.fail_after(10):
            msg = await conn.receive()
        assert isinstance(msg, GoAway), msg
        cards = [parse_card(uri) for uri in msg.nodes]  # each verifies: signed by the node it names
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
async def test_kill_9_of_callee_node_then_rehoming_elsewhere(three: list[Proc]) -> None:
    caller, callee = Identity.generate(), Identity.generate()
    async with connect_client(three[0].url, caller) as a:
        async with connect_client(three[2].url, callee) as b:
            ref = await a.send_envelope("call_offer", callee.id, b"k9", b"first")
            with trio.fail_after(10):
                while not isinstance(m := await b.receive(), Deliver):
                    pass
            assert m.body == b"first"
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
                while not isinstance(m := await b2.receive(), Deliver):
                    pass
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
