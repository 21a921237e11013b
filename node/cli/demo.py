"""`homing demo`: a whole federation and a call flow on loopback, narrated hop by hop, then a clean exit.

What it runs, in this process, on 127.0.0.1 with free ports and a temporary directory:
- a bootstrap registry (auto approval) with a fresh signing key;
- three nodes that know only the registry's URL and key: they register, fetch the signed list, admit each
  other from it and join through it;
- clients alice (on node-1) and bob (on node-3) through the Call layer (node/client/call.py): ICE servers with a
  TURN credential from node-1, an SDP-shaped offer, trickled candidates both ways, answer, connected, hangup, every
  body end-to-end encrypted (docs/e2ee.md) so the nodes see ciphertext of a few fixed sizes only;
- carol, offline at first: alice's offer to her is queued in carol's mailbox at her rendezvous owners and
  rings when carol connects to node-2 (node/cli/demo_calls.py).
Every envelope's receipt and latency is printed. Everything is stopped and the directory removed at the end.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import trio

from node.app.config import build_config
from node.app.log import setup_logging
from node.app.service import NodeHandle, run_node
from node.cli.demo_calls import media_available, run_calls
from node.protocol.identity import Identity, short_id

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
    p.add_argument(
        "--media", action="store_true", help="also place a real WebRTC audio call (needs aiortc: homing[media])"
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
    if args.media and not media_available():
        print("demo: --media needs aiortc (pip install 'homing[media]')", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="homing-demo-") as tmp:
        try:
            trio.run(_demo, Path(tmp), args.media)
        except trio.TooSlowError:
            print(f"demo: did not finish within {DEMO_TIMEOUT_S:.0f} s", file=sys.stderr)
            return 1
    return 0


def say(text: str) -> None:
    print(text, flush=True)


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
    secret = tmp / "turn-secret"  # what an operator shares with coturn (docs/operations.md, "TURN")
    secret.write_bytes(os.urandom(24).hex().encode())
    secret.chmod(0o600)
    turn = {"urls": ["stun:127.0.0.1:3478", "turn:127.0.0.1:3478?transport=udp"], "secret_file": str(secret)}
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
                "turn": turn,
            },
            preset="local",
        )
        nodes.append(await nursery.start(run_node, config, Identity.generate()))
    return nodes


def _ws(h: NodeHandle) -> str:
    return f"ws://127.0.0.1:{h.ports['ws']}/v1/client"


async def _demo(tmp: Path, media: bool = False) -> None:
    with trio.fail_after(DEMO_TIMEOUT_S):
        async with trio.open_nursery() as nursery:
            say("homing demo: a registry, three nodes and three clients, all on 127.0.0.1\n")
            url, key = await _start_registry(nursery, tmp)
            say(f"  registry  {url}   signing key {short_id(key.id)}…")
            async with trio.open_nursery() as node_nursery:
                await _federation(node_nursery, tmp, url, key, media)
            nursery.cancel_scope.cancel()  # the nodes have left and deregistered: stop the registry
    say("demo finished: every envelope got exactly one terminal receipt")


async def _federation(nursery: trio.Nursery, tmp: Path, url: str, key: Identity, media: bool) -> None:
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
    await run_calls([_ws(h) for h in nodes], media=media)
    say(
        "\nstopping: each node says goaway to its clients, hands off its mailboxes, leaves the federation"
        " and deregisters"
    )
    for h in nodes:
        h.request_shutdown()
