"""Hostile clients in their own process, for tests/adversarial/test_flood.py (so their CPU is not the test's).

`python -m tests.adversarial.attacker URL SECONDS [ADDRESS]` runs, until SECONDS have passed, from ADDRESS
(default 127.0.0.2: another address than the test's well-behaved clients, as a real attacker's would be; a fresh
one per round, as the node charges an abusive address and a round should not start in the last round's debt):
- a flooder: connects with a fresh key, sends envelopes at 100 times the rate limit, with a
  malformed frame and, on every fifth connection from the second on, a frame over 128 KiB mixed in; when the node
  closes it (4429 abuse, 1009 too big) it reconnects at once (as fast as the node lets its address) and starts
  again;
- a slow reader: connects and never reads again, while a feeder sends it 60 KiB envelopes, 50 at a time, until
  their receipts say `queued` (the node closed the slow reader, 2 s after its socket stopped taking bytes, so it
  is offline).
It prints `ready` when both run; a line (or EOF) on stdin stops it early. Then it prints one JSON line: the
close codes the flooder saw (0: the close frame was not processed before the send failed), envelopes it sent,
the receipts it got, and whether the slow reader was disconnected.

Note: the client library's send can raise wsproto's LocalProtocolError instead of ConnectionClosed when the node's
close frame was read but not yet processed (reported to the client library's owner); the flooder treats both alike.
"""

from __future__ import annotations

import json
import os
import sys
from collections import Counter
from typing import Any

import trio
from wsproto.utilities import LocalProtocolError as WsLocalProtocolError

from node.client.connection import ClientError, connect_client, open_websocket
from node.protocol.identity import Identity, client_auth_message
from node.protocol.wire import Limits
from node.protocol.wire.client import (
    Challenge,
    Hello,
    Receipt,
    Status,
    Welcome,
    decode_client_frame,
    encode_client_message,
)

BODY = b"f" * 200
BIG_BODY = b"s" * 60_000
# 20 envelopes and a bad frame every 10 ms: about 2,000 envelopes/s, 100 times the rate limit (20/s), from one
# address. An unpaced loop only measures how much CPU this process takes from the node on a shared 2-core
# machine, which a real attacker (on another machine) would not.
FLOOD_BATCH = 20
FLOOD_PAUSE_S = 0.01
ATTACKER_ADDRESS = "127.0.0.2"  # loopback, but not the 127.0.0.1 of the clients the test measures (a default)


async def _drain(conn: Any, receipts: Counter[str]) -> None:
    try:
        while True:
            msg = await conn.receive()
            if isinstance(msg, Receipt):
                receipts[msg.reason.value if msg.reason else msg.status.value] += 1
    except ClientError:
        pass


async def flooder(url: str, stats: dict[str, Any], address: str) -> None:
    victim = os.urandom(32)  # an offline id: its mailbox fills, then it is refused too
    while True:
        stats["connections"] += 1
        conns: list[Any] = []
        try:
            async with connect_client(url, Identity.generate(), local_address=address) as conn:
                conns.append(conn)
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(_drain, conn, stats["receipts"])
                    await _flood(conn, stats, victim)
                    nursery.cancel_scope.cancel()
        except* (ClientError, WsLocalProtocolError):  # see the note in the module docstring
            pass
        code = conns[0].close_code if conns else None
        stats["closes"][code or 0] += 1
        if not conns:
            await trio.sleep(0.01)  # refused at connect (e.g. the per-IP limit): do not spin


async def _flood(conn: Any, stats: dict[str, Any], victim: bytes) -> None:
    if stats["connections"] % 5 == 2:
        await conn.send_raw(b"\x00" * (Limits.CLIENT_FRAME_MAX + 1))
    while conn.close_code is None:
        for _ in range(FLOOD_BATCH):
            await conn.send_envelope("call_offer", victim, b"flood", BODY)
            stats["sent"] += 1
        await conn.send_raw(b"\xc1 not msgpack")
        await trio.sleep(FLOOD_PAUSE_S)


async def slow_reader(url: str, stats: dict[str, Any], ready: trio.Event, address: str) -> None:
    who = Identity.generate()
    ws = await open_websocket(url, local_address=address)
    challenge = decode_client_frame(await ws.receive_message(), from_node=True)
    assert isinstance(challenge, Challenge)
    sig = who.sign(client_auth_message(challenge.node, challenge.nonce))
    await ws.send_message(encode_client_message(Hello(id=who.id, nonce=os.urandom(32), sig=sig), json=False))
    assert isinstance(decode_client_frame(await ws.receive_message(), from_node=True), Welcome)
    ready.set()  # from here on it never reads
    while not stats["slow_reader_dropped"]:
        try:
            async with connect_client(url, Identity.generate(), local_address=address) as feeder:
                for _ in range(50):  # within the general burst (60): the feeder itself is well behaved
                    ref = await feeder.send_envelope("call_offer", who.id, b"feed", BIG_BODY)
                    msg = await feeder.receive()
                    if isinstance(msg, Receipt) and msg.ref == ref and msg.status is Status.QUEUED:
                        stats["slow_reader_dropped"] = True
                        break
        except ClientError:
            pass  # refused at connect: the flooder spent the address's handshakes
        # the node drops deliveries that do not fit while the socket still took bytes in the last
        # DELIVERY_STALL_S (node/net/session.py), so the slow reader is closed about that long after its buffers
        # fill: feed it at a pace, not a new connection per round as fast as the address may
        await trio.sleep(0.25)
    await trio.aclose_forcefully(ws.stream)


async def main(url: str, seconds: float, address: str) -> None:
    os.nice(10)  # the attacker's own CPU is not the node's problem: yield the shared cores to node and test
    stats: dict[str, Any] = {
        "closes": Counter(), "receipts": Counter(), "connections": 0, "sent": 0,
        "slow_reader_dropped": False,
    }  # fmt: skip
    ready = trio.Event()
    with trio.move_on_after(seconds):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(slow_reader, url, stats, ready, address)
            await ready.wait()
            async with trio.open_nursery() as flooding:
                flooding.start_soon(flooder, url, stats, address)
                print("ready", flush=True)
                await trio.to_thread.run_sync(sys.stdin.readline, abandon_on_cancel=True)  # the test says stop
                flooding.cancel_scope.cancel()
            # the slow reader's feeder goes on until the node has closed it (or SECONDS end): that takes
            # DELIVERY_STALL_S after its buffers filled, which can outlast the test's measurement
    stats["closes"] = {str(k): v for k, v in stats["closes"].items()}
    print(json.dumps(stats), flush=True)


if __name__ == "__main__":
    trio.run(main, sys.argv[1], float(sys.argv[2]), sys.argv[3] if len(sys.argv) > 3 else ATTACKER_ADDRESS)
