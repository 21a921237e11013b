"""`homing demo`: a whole federation and a call flow on loopback, narrated hop by hop, then a clean exit.

What it runs, in this process, on 127.0.0.1 with free ports and a temporary directory:
- a bootstrap registry (auto approval) with a fresh signing key;
- three nodes that know only the registry's URL and key: they register, fetch the signed list, admit each
  other from it and join through it;
- clients alice (on node-1) and bob (on node-3): offer, ice candidates both ways, answer, hangup;
- carol, offline at first: alice's offer to her is queued in carol's mailbox at her rendezvous owners and
  delivered when carol connects to node-2.
Every envelope's receipt and latency is printed. Everything is stopped and the directory removed at the end.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import trio

from node.app.config import build_config
from node.app.log import setup_logging
from node.app.service import NodeHandle, run_node
from node.client.connection import ClientConnection, connect_client
from node.protocol.identity import Identity, short_id
from node.protocol.wire.client import Deliver, Receipt

DEMO_TIMEOUT_S = 60.0


def register(sub: Any) -> None:
    p = sub.add_parser(
        "demo", help="run a registry, three nodes and three clients on loopback and place a call across nodes"
    )
    p.add_argument("--verbose", action="store_true", help="also print the nodes' own log lines")
    p.add_argument(
        "--web", action="store_true", help="serve the browser call page on 127.0.0.1 and print two links (docs/web.md)"
    )
    p.add_argument(
        "--web-port", type=int, default=0, metavar="PORT", help="port of the page with --web (default: free)"
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    setup_logging("info" if args.verbose else "error")
    if args.web:
        from node.cli.webdemo import missing_packages, run_web_demo

        problem = missing_packages()
        if problem:
            print(f"demo: {problem}", file=sys.stderr)
            return 1
        with tempfile.TemporaryDirectory(prefix="homing-demo-") as tmp:
            trio.run(lambda: run_web_demo(Path(tmp), web_port=args.web_port))
        return 0
    with tempfile.TemporaryDirectory(prefix="homing-demo-") as tmp:
        try:
            trio.run(_demo, Path(tmp))
        except trio.TooSlowError:
            print(f"demo: did not finish within {DEMO_TIMEOUT_S:.0f} s", file=sys.stderr)
            return 1
    return 0


def say(text: str) -> None:
    print(text, flush=True)


class Narrator:
    """Prints each envelope's hops, receipt and latency."""

    def __init__(self, names: dict[bytes, str], homes: dict[bytes, str]) -> None:
        self.names = names
        self.homes = homes

    def name(self, ident: Identity) -> str:
        return self.names[ident.id]

    async def send(
        self,
        conn: ClientConnection,
        sender: Identity,
        to: Identity,
        kind: str,
        call: bytes,
        body: bytes,
        receiver: ClientConnection | None,
    ) -> str:
        start = time.perf_counter()
        ref = await conn.send_envelope(kind, to.id, call, body)
        statuses = []
        got = None
        while True:
            msg = await conn.receive()
            if isinstance(msg, Receipt) and msg.ref == ref:
                statuses.append(msg.status.value)
                if msg.status.value != "queued":
                    break
                self._line(sender, to, kind, body, "queued", None)
                say(
                    "               (the callee is offline: the envelope waits in its mailbox at its rendezvous owners)"
                )
                return "queued"
        ms = (time.perf_counter() - start) * 1000
        if receiver is not None:
            got = await _expect(receiver, sender, kind)
        self._line(sender, to, kind, body, statuses[-1], ms, got)
        return statuses[-1]

    def _line(
        self,
        sender: Identity,
        to: Identity,
        kind: str,
        body: bytes,
        status: str,
        ms: float | None,
        got: Deliver | None = None,
    ) -> None:
        a, b = self.names[sender.id], self.names[to.id]
        ha, hb = self.homes[sender.id], self.homes.get(to.id, "?")
        route = f"{a} → {ha} ⇒ {hb} → {b}" if ha != hb else f"{a} → {ha} → {b}"
        latency = f"{ms:6.1f} ms" if ms is not None else "        "
        extra = f"  eid {got.eid.hex()[:8]}" if got is not None else ""
        say(f"  {kind:<12} {route:<36} {len(body):>4} B  receipt {status:<10} {latency}{extra}".rstrip())


async def _expect(conn: ClientConnection, sender: Identity, kind: str) -> Deliver:
    with trio.fail_after(10):
        while True:
            msg = await conn.receive()
            if isinstance(msg, Deliver) and msg.sender == sender.id and msg.kind.value == kind:
                return msg


async def _start_registry(nursery: trio.Nursery, tmp: Path) -> tuple[str, Identity]:
    from bootstrap.app import run_bootstrap
    from bootstrap.config import BootstrapConfig
    from bootstrap.registry import Policy
    from bootstrap.service import load_identity
    from bootstrap.store import Store

    # the demo's nodes are its own: approve them at once (a real registry defaults to manual approval)
    config = BootstrapConfig(data_dir=tmp / "registry", listen="127.0.0.1:0", policy=Policy(approval="auto"))
    config.data_dir.mkdir(parents=True)
    key, _ = load_identity(config, create=True)
    Store.open(config.data_dir, create=True).close()
    port = await nursery.start(lambda task_status: run_bootstrap(config, task_status=task_status))
    return f"http://127.0.0.1:{port}", key


async def _start_nodes(nursery: trio.Nursery, tmp: Path, url: str, key: Identity) -> list[NodeHandle]:
    nodes = []
    for i in range(1, 4):
        config = build_config(
            {
                "node": {
                    "data_dir": str(tmp / f"node-{i}"),
                    "ws": "127.0.0.1:0",
                    "swim": "127.0.0.1:0",
                    "peer": "127.0.0.1:0",
                    "metrics": "127.0.0.1:0",
                    "log_level": "error",
                },
                "federation": {"bootstrap": [url], "trust": [key.id_text], "heartbeat_s": 1.0},
            },
            preset="local",
        )
        nodes.append(await nursery.start(run_node, config, Identity.generate()))
    return nodes


def _ws(h: NodeHandle) -> str:
    return f"ws://127.0.0.1:{h.ports['ws']}/v1/client"


async def _demo(tmp: Path) -> None:
    with trio.fail_after(DEMO_TIMEOUT_S):
        async with trio.open_nursery() as nursery:
            say("homing demo: a registry, three nodes and three clients, all on 127.0.0.1\n")
            url, key = await _start_registry(nursery, tmp)
            say(f"  registry  {url}   signing key {short_id(key.id)}…")
            async with trio.open_nursery() as node_nursery:
                await _federation(node_nursery, tmp, url, key)
            nursery.cancel_scope.cancel()  # the nodes have left and deregistered: stop the registry
    say("demo finished: every envelope got exactly one terminal receipt")


async def _federation(nursery: trio.Nursery, tmp: Path, url: str, key: Identity) -> None:
    start = time.perf_counter()
    nodes = await _start_nodes(nursery, tmp, url, key)
    for i, h in enumerate(nodes, 1):
        say(f"  node-{i}    {_ws(h)}   id {short_id(h.identity.id)}…")
    everyone = {h.identity.id for h in nodes}
    while not all({m.id for m in h.swim.members() if m.state.value == "alive"} == everyone for h in nodes):
        await trio.sleep(0.05)
    say(
        f"\n  the nodes knew only the registry; {time.perf_counter() - start:.1f} s later each sees 3 alive"
        " members (signed list → admission → SWIM join)\n"
    )
    await _calls(nodes)
    say(
        "\nstopping: each node says goaway to its clients, hands off its mailboxes, leaves the federation"
        " and deregisters"
    )
    for h in nodes:
        h.request_shutdown()


async def _calls(nodes: list[NodeHandle]) -> None:
    alice, bob, carol = Identity.generate(), Identity.generate(), Identity.generate()
    names = {alice.id: "alice", bob.id: "bob", carol.id: "carol"}
    homes = {alice.id: "node-1", bob.id: "node-3", carol.id: "node-2"}
    n = Narrator(names, homes)
    async with connect_client(_ws(nodes[0]), alice) as a, connect_client(_ws(nodes[2]), bob) as b:
        for who, conn in (("alice", a), ("bob", b)):
            say(
                f"  {who:<5} connected to {homes[conn.identity.id]} and proved its id; the node proved"
                f" {short_id(conn.node_id)}…  ({conn.handshake_ms:.1f} ms)"
            )
        say("\ncall 1: alice calls bob (different nodes; bodies are opaque, end-to-end encrypted bytes)")
        call = b"call-0001"
        await n.send(a, alice, bob, "call_offer", call, b"<encrypted SDP offer>" * 4, b)
        for i in range(3):
            await n.send(a, alice, bob, "call_ice", call, f"<encrypted candidate {i}>".encode(), b)
        await n.send(b, bob, alice, "call_answer", call, b"<encrypted SDP answer>" * 4, a)
        for i in range(2):
            await n.send(b, bob, alice, "call_ice", call, f"<encrypted candidate {i}>".encode(), a)
        await n.send(a, alice, bob, "call_hangup", call, b"", b)

        say("\ncall 2: alice calls carol, who is offline")
        ref_status = await n.send(a, alice, carol, "call_offer", b"call-0002", b"<encrypted SDP offer>", None)
        assert ref_status == "queued"
        start = time.perf_counter()
        async with connect_client(_ws(nodes[1]), carol) as c:
            say(f"  carol connected to node-2 {(time.perf_counter() - start) * 1000:.1f} ms later")
            got = await _expect(c, alice, "call_offer")
            while True:
                msg = await a.receive()
                if isinstance(msg, Receipt) and msg.status.value != "queued":
                    break
            ms = (time.perf_counter() - start) * 1000
            say(
                f"  call_offer   mailbox ⇒ node-2 → carol                  receipt {msg.status.value:<10}"
                f" {ms:6.1f} ms after carol connected  eid {got.eid.hex()[:8]}"
            )
