"""A call load generator that keeps the books on receipts (docs/client-protocol.md: one terminal receipt per envelope).

    python -m tests.faults.loadgen --url ws://10.213.7.1:7400/v1/client --url ... --pairs 10 --seconds 60 \
        --out result.json

Clients come in pairs (caller, callee) homed on different nodes. A caller places a call every `--interval-s`
(jittered): `call_offer`; the callee answers each offer it gets with `call_answer`; the caller, once it has the
answer, sends `call_hangup`. A call completes when the caller got the answer within `--call-timeout-s`.

The ledger: every envelope is registered before it is sent, under (client, connection, ref). Its `queued` receipt
is counted; its terminal receipt removes it and a second terminal receipt for it is a violation
(`duplicate_terminal`). A client whose connection drops (node killed, closed, or no pong within
`--ping-timeout-s`) reconnects to the next node; its envelopes still waiting then can no longer get a receipt on
that connection: they are `orphaned` (the sender must resend), not lost. After the run, the generator waits up to
`--drain-s` for the rest; whatever is still waiting after that is `lost`.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import attrs
import trio
from wsproto.utilities import LocalProtocolError

from node.client.connection import ClientConnection, ClientError, connect_client
from node.protocol.identity import Identity
from node.protocol.wire.client import Deliver, Envelope, Kind, Receipt

CONNECT_CONCURRENCY_MAX = 64
RECONNECT_PAUSE_S = 0.3
SEND_TIMEOUT_S = 5.0
LOST_SAMPLES_MAX = 20


def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    s = sorted(values)
    return round(s[min(len(s) - 1, int(q * len(s)))], 2)


@attrs.define
class Ledger:
    started: float = attrs.field(factory=time.monotonic)
    sent: int = 0
    queued: int = 0
    terminal: Counter[str] = attrs.field(factory=Counter)
    duplicate_terminal: int = 0
    unknown_receipts: int = 0
    orphaned: int = 0
    pending: dict[tuple[int, int, int], tuple[float, str]] = attrs.field(factory=dict)
    done: set[tuple[int, int, int]] = attrs.field(factory=set)
    latencies_ms: list[float] = attrs.field(factory=list)
    calls_started: int = 0
    calls_completed: int = 0
    calls_failed: int = 0
    deliveries: int = 0
    duplicate_deliveries: int = 0
    reconnects: int = 0
    timeline: list[list[float]] = attrs.field(factory=list)

    def receipt(self, key: tuple[int, int, int], status: str) -> None:
        if status == "queued":
            self.queued += 1
            return
        if key in self.done:
            self.duplicate_terminal += 1
            return
        entry = self.pending.pop(key, None)
        if entry is None:
            self.unknown_receipts += 1
            return
        self.done.add(key)
        self.terminal[status] += 1
        if status == "delivered":
            self.latencies_ms.append((time.monotonic() - entry[0]) * 1000.0)

    def orphan(self, client: int, gen: int) -> None:
        for key in [k for k in self.pending if k[0] == client and k[1] == gen]:
            del self.pending[key]
            self.orphaned += 1

    def tick(self) -> None:
        """One timeline row: [unix time, sent, terminal receipts, waiting, calls completed, calls failed]."""
        row = [round(time.time(), 1), self.sent, sum(self.terminal.values()), len(self.pending)]
        self.timeline.append([*row, self.calls_completed, self.calls_failed])

    def report(self) -> dict[str, Any]:
        return {
            "sent": self.sent,
            "terminal": dict(self.terminal),
            "terminal_total": sum(self.terminal.values()),
            "queued_receipts": self.queued,
            "orphaned": self.orphaned,
            "lost": len(self.pending),
            "lost_samples": [[*list(k), v[1]] for k, v in list(self.pending.items())[:LOST_SAMPLES_MAX]],
            "duplicate_terminal": self.duplicate_terminal,
            "unknown_receipts": self.unknown_receipts,
            "latency_ms": {
                "n": len(self.latencies_ms),
                "p50": pct(self.latencies_ms, 0.50),
                "p99": pct(self.latencies_ms, 0.99),
                "max": pct(self.latencies_ms, 1.0),
            },
            "calls": {"started": self.calls_started, "completed": self.calls_completed, "failed": self.calls_failed},
            "deliveries": self.deliveries,
            "duplicate_deliveries": self.duplicate_deliveries,
            "reconnects": self.reconnects,
            "timeline": self.timeline,
        }


@attrs.define(eq=False)
class Client:
    idx: int
    identity: Identity
    urls: list[str]
    partner: bytes = b""
    conn: ClientConnection | None = None
    gen: int = 0
    ref: int = 0
    connected: trio.Event = attrs.field(factory=trio.Event)
    ever_connected: trio.Event = attrs.field(factory=trio.Event)
    answers: dict[bytes, trio.Event] = attrs.field(factory=dict)
    seen_eids: set[bytes] = attrs.field(factory=set)


@attrs.define
class Load:
    clients: list[Client]
    ledger: Ledger
    rng: random.Random
    interval_s: float
    call_timeout_s: float
    ping_every_s: float
    ping_timeout_s: float
    stop_calls: trio.Event = attrs.field(factory=trio.Event)
    stop_all: trio.Event = attrs.field(factory=trio.Event)
    connect_limit: trio.CapacityLimiter = attrs.field(factory=lambda: trio.CapacityLimiter(CONNECT_CONCURRENCY_MAX))

    async def send(self, c: Client, kind: str, to: bytes, call: bytes, body: bytes) -> bool:
        """Register then send one envelope; False when the client has no connection (nothing was sent)."""
        with trio.move_on_after(SEND_TIMEOUT_S):
            await c.connected.wait()
        conn = c.conn
        if conn is None:
            return False
        c.ref += 1
        key = (c.idx, c.gen, c.ref)
        self.ledger.pending[key] = (time.monotonic(), kind)
        self.ledger.sent += 1
        try:
            with trio.fail_after(SEND_TIMEOUT_S):
                await conn.send(Envelope(kind=Kind(kind), to=to, call=call, body=body, ref=c.ref))
        except (ClientError, trio.TooSlowError, LocalProtocolError):
            # LocalProtocolError: node/client/connection.py lets wsproto's error through when the node's close frame is
            # read but not yet handled (state REMOTE_CLOSING); it means the same as ConnectionClosed here.
            pass  # the connection is going away: the reader's exit orphans this envelope with the rest
        return True

    async def client_loop(self, c: Client) -> None:
        cur = 0  # index into c.urls: the home node first, the next one after each drop
        while not self.stop_all.is_set():
            url = c.urls[cur % len(c.urls)]
            try:
                await self._connected(c, url)
            except* ClientError:
                pass  # refused, lost or closed: try the next node
            if self.stop_all.is_set():
                return
            cur += 1
            self.ledger.reconnects += 1
            await trio.sleep(RECONNECT_PAUSE_S)

    async def _connected(self, c: Client, url: str) -> None:
        """One connection's life: connect (a bounded number at once), serve it until it drops."""
        holding = True
        await self.connect_limit.acquire()
        try:
            async with connect_client(url, c.identity, timeout_s=10) as conn:
                self.connect_limit.release()
                holding = False
                c.gen += 1
                c.conn = conn
                c.connected.set()
                c.ever_connected.set()
                try:
                    await self._serve(c, conn)
                finally:
                    c.conn = None
                    c.connected = trio.Event()
                    self.ledger.orphan(c.idx, c.gen)
        finally:
            if holding:
                self.connect_limit.release()

    async def _serve(self, c: Client, conn: ClientConnection) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._keepalive, conn, nursery.cancel_scope)
            nursery.start_soon(self._stopper, nursery.cancel_scope)
            gen = c.gen
            try:
                while True:
                    msg = await conn.receive()
                    if isinstance(msg, Receipt):
                        self.ledger.receipt((c.idx, gen, msg.ref), msg.status.value)
                    elif isinstance(msg, Deliver):
                        await self._on_deliver(c, msg)
            except ClientError:
                nursery.cancel_scope.cancel()  # the connection is gone

    async def _stopper(self, scope: trio.CancelScope) -> None:
        await self.stop_all.wait()
        scope.cancel()

    async def _keepalive(self, conn: ClientConnection, scope: trio.CancelScope) -> None:
        while True:
            await trio.sleep(self.ping_every_s)
            with trio.move_on_after(self.ping_timeout_s) as cs:
                try:
                    await conn.ping()
                except ClientError:
                    break
            if cs.cancelled_caught:
                break  # a node that stopped answering (paused, cut off): move on
        scope.cancel()

    async def _on_deliver(self, c: Client, msg: Deliver) -> None:
        self.ledger.deliveries += 1
        if msg.eid in c.seen_eids:
            self.ledger.duplicate_deliveries += 1
            return
        if len(c.seen_eids) > 10_000:
            c.seen_eids.clear()
        c.seen_eids.add(msg.eid)
        if msg.kind.value == "call_offer":
            await self.send(c, "call_answer", msg.sender, msg.call, b"answer:" + msg.call)
        elif msg.kind.value == "call_answer":
            event = c.answers.get(msg.call)
            if event is not None:
                event.set()

    async def caller_loop(self, c: Client) -> None:
        n = 0
        await trio.sleep(self.rng.uniform(0, self.interval_s))
        while not self.stop_calls.is_set():
            n += 1
            call = f"{c.idx}-{n}".encode()
            event = c.answers[call] = trio.Event()
            self.ledger.calls_started += 1
            if await self.send(c, "call_offer", c.partner, call, b"offer:" + call):
                with trio.move_on_after(self.call_timeout_s):
                    await event.wait()
            del c.answers[call]
            if event.is_set():
                self.ledger.calls_completed += 1
                await self.send(c, "call_hangup", c.partner, call, b"")
            else:
                self.ledger.calls_failed += 1
            await trio.sleep(self.interval_s * self.rng.uniform(0.5, 1.5))


def make_clients(urls: list[str], pairs: int, homes: list[tuple[int, int]] | None = None) -> list[Client]:
    """Caller 2k and callee 2k+1, homed on different nodes: by default pair k on nodes k and k+1+k//n;
    `homes` gives (caller node, callee node) indices into `urls` instead, used round robin."""
    n = len(urls)
    if not homes:
        homes = [(k % n, (k + 1 + k // n) % n) for k in range(pairs)]
    clients = []
    for k in range(pairs):
        for j, home in enumerate(homes[k % len(homes)]):
            order = [urls[(home + i) % n] for i in range(n)]
            clients.append(Client(idx=2 * k + j, identity=Identity.generate(), urls=order))
    for k in range(pairs):
        a, b = clients[2 * k], clients[2 * k + 1]
        a.partner, b.partner = b.identity.id, a.identity.id
    return clients


def parse_homes(text: str) -> list[tuple[int, int]]:
    """"0-1,2-3" -> [(0, 1), (2, 3)]"""
    out = []
    for part in filter(None, text.split(",")):
        a, b = part.split("-")
        out.append((int(a), int(b)))
    return out


async def run_load(args: argparse.Namespace) -> dict[str, Any]:
    ledger = Ledger()
    load = Load(
        clients=make_clients(args.url, args.pairs, parse_homes(args.homes)),
        ledger=ledger,
        rng=random.Random(args.seed),
        interval_s=args.interval_s,
        call_timeout_s=args.call_timeout_s,
        ping_every_s=args.ping_every_s,
        ping_timeout_s=args.ping_timeout_s,
    )
    progress = Path(args.out).with_suffix(".progress") if args.out else None
    async with trio.open_nursery() as nursery:
        for c in load.clients:
            nursery.start_soon(load.client_loop, c)
        with trio.fail_after(args.connect_s):
            for c in load.clients:
                await c.ever_connected.wait()
        if progress:
            progress.write_text("connected\n")
        for c in load.clients[::2]:
            nursery.start_soon(load.caller_loop, c)
        end = trio.current_time() + args.seconds
        while trio.current_time() < end:
            await trio.sleep(min(args.tick_s, end - trio.current_time()))
            ledger.tick()
            if progress:
                progress.write_text(json.dumps(ledger.timeline[-1]) + "\n")
        load.stop_calls.set()
        with trio.move_on_after(args.call_timeout_s + 1):
            while any(c.answers for c in load.clients):
                await trio.sleep(0.1)
        with trio.move_on_after(args.drain_s):
            while ledger.pending:
                await trio.sleep(0.1)
        ledger.tick()
        load.stop_all.set()
    return ledger.report()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="homing call load generator with receipt accounting")
    p.add_argument("--url", action="append", required=True, help="node client URL (repeatable)")
    p.add_argument("--pairs", type=int, default=10)
    p.add_argument("--homes", default="", help="caller-callee node indices per pair, e.g. 0-1,2-3 (round robin)")
    p.add_argument("--seconds", type=float, default=30.0, help="how long callers place calls")
    p.add_argument("--interval-s", type=float, default=1.0, help="mean pause between one caller's calls")
    p.add_argument("--call-timeout-s", type=float, default=15.0)
    p.add_argument("--ping-every-s", type=float, default=2.0)
    p.add_argument("--ping-timeout-s", type=float, default=4.0)
    p.add_argument("--drain-s", type=float, default=30.0, help="wait this long for the last receipts")
    p.add_argument("--connect-s", type=float, default=60.0, help="every client must connect within this")
    p.add_argument("--tick-s", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=int(os.environ.get("HOMING_SEED", "1")))
    p.add_argument("--out", help="write the JSON report here (default: stdout)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    report = trio.run(run_load, args)
    text = json.dumps(report, indent=1)
    if args.out:
        tmp = Path(args.out + ".tmp")
        tmp.write_text(text)
        tmp.replace(args.out)
    else:
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
