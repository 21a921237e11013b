"""A hostile volunteer: a real admitted node that joins a federation and then misbehaves (issue 11).

    python -m tests.adversarial.hostile.node DATA_DIR SEED_HOST:PORT [PRESET]     (SWIM preset, default local)

It runs the node's own composition root (`run_node`: the real SWIM, peer-link and client drivers, an open
federation so its fresh key is admitted), then reads one JSON command per line on stdin and runs each in the
background; finished commands are reported on stdout as `{"done": NAME, ...}`. The first line it prints is
`{"ready": ID, "ports": {...}}`. Nothing here is a switch inside the node: the misbehaviour is this program using
its own handle (peer links, its SWIM sealer) and its own sockets to say what an honest node never says.

Commands (ids are hex; `src` is the 127.0.0.0/8 address a flood comes from):
  forge        {frm, to, n}          ENVELOPE / HANDOFF frames "from" a client of another node     (finding 3)
  steal        {id}                  LEASE_DROP for every home, then a LEASE naming itself          (finding 3)
  lease_flood  {n}                   n fake 24-hour leases to every honest member, two homes each   (finding 3)
  claim_flood  {victim, n}           n fresh claims with well-formed signatures that do not verify, in
                                     LEASE frames of 256, for ids the victim owns (signature checks)
  evict        {victim, duration_s}  SWIM "victim is dead" at the highest incarnation, repeated      (finding 2)
  whois        {host, port, rate_per_s, duration_s, src}  a WHOIS flood                              (finding 8)
  peer_idle    {host, port, n, duration_s, src}  idle TCP connections to a peer port              (finding 8)
  mailbox_flood {ws, keys, offers, body_bytes, src, duration_s}  offers from fresh keys, many connections (4)
  pings        {ws, size_bytes, src, duration_s}  WebSocket pings, never reading the pongs           (finding 5)
  fragments    {ws, frames, src}     empty continuation frames                                        (finding 5)
"""

from __future__ import annotations

import json
import os
import socket
import struct
import sys
import time
from pathlib import Path
from typing import Any

import attrs
import trio

from tests.adversarial.hostile.compat import (
    INCARNATION_MAX,
    Envelope,
    Gossip,
    Identity,
    Kind,
    MemberState,
    MsgType,
    NodeHandle,
    Update,
    build_config,
    encode_client_message,
    encode_datagram,
    encode_whois,
    id_text,
    run_node,
)
from tests.clients.rawws import RawClient
from tests.integration.cluster import loopback_config

DAY_MS = 86_400_000
PEER_IDS_MAX = 512
LEASE_CLAIMS_MAX = 256
REPLICAS = 3  # the default [relay] replicas
SEND_RETRIES_MAX = 300  # 10 ms apart: a peer link that stays full for 3 s is given up on


def emit(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


class Hostile:
    def __init__(self, handle: NodeHandle) -> None:
        self.h = handle
        self.me = handle.identity.id

    def honest(self) -> list[Any]:
        return [m for m in self.h.swim.members() if m.id != self.me and m.state.value == "alive"]

    async def frame(self, peer: bytes, frame: dict[str, Any]) -> bool:
        for _ in range(SEND_RETRIES_MAX):
            if self.h.links.send(peer, frame):
                return True
            await trio.sleep(0.01)
        return False

    async def forge(self, frm: str, to: str, n: int = 5) -> dict[str, Any]:
        a, b = bytes.fromhex(frm), bytes.fromhex(to)
        sent = 0
        nodes = [m.id for m in self.honest()]
        for i in range(n):
            for origin in [self.me, *nodes]:  # as the origin, and "pushing another node's envelope"
                bare = {"t": int(MsgType.ENVELOPE), "eid": os.urandom(16), "o": origin, "to": b, "from": a}
                bare |= {"k": "call_offer", "c": b"forged-%d" % i, "b": b"evil"}
                signed = {**bare, "eid": os.urandom(16), "cn": bytes(32), "cs": bytes(64), "ex": 2**62}
                signed["os"] = bytes(64)
                handoff = {**signed, "t": int(MsgType.HANDOFF), "eid": os.urandom(16), "ttl": 60_000}
                for peer in nodes:
                    for f in (bare, signed, handoff, {**handoff, "eid": os.urandom(16), "cn": b"", "cs": b""}):
                        sent += await self.frame(peer, f)
        return {"sent": sent}

    async def steal(self, id: str) -> dict[str, Any]:
        b = bytes.fromhex(id)
        nodes = [m.id for m in self.honest()]
        sent = 0
        for peer in nodes:
            for home in nodes:
                sent += await self.frame(peer, {"t": int(MsgType.LEASE_DROP), "h": home, "ids": [b]})
            lease = {"t": int(MsgType.LEASE), "h": self.me, "ids": [b], "ttl": DAY_MS}
            sent += await self.frame(peer, lease)
            sent += await self.frame(peer, {**lease, "ns": [bytes(32)], "sg": [bytes(64)]})
        return {"sent": sent}

    async def lease_flood(self, n: int) -> dict[str, Any]:
        """n fake ids leased for a day to every honest member, naming itself as the home and naming another honest
        node (a home that stays alive: when the hostile node itself is declared dead its leases go with it)."""
        started = time.monotonic()
        sent = 0
        nodes = [m.id for m in self.honest()]
        for k, peer in enumerate(nodes):
            other = nodes[(k + 1) % len(nodes)]
            for i in range(0, n, PEER_IDS_MAX):
                ids = [j.to_bytes(32, "big") for j in range(i, min(n, i + PEER_IDS_MAX))]
                claims = {"ns": [bytes(32)] * len(ids), "sg": [bytes(64)] * len(ids)}
                for home in (other, self.me):
                    lease = {"t": int(MsgType.LEASE), "h": home, "ids": ids, "ttl": DAY_MS}
                    sent += await self.frame(peer, lease)
                    sent += await self.frame(peer, {**lease, **claims})
                await trio.sleep(0)
        return {"frames": sent, "elapsed_s": time.monotonic() - started}

    async def claim_flood(self, victim: str, n: int) -> dict[str, Any]:
        """Each claim costs nothing to make and, before per-peer check budgets, one Ed25519 check at the victim
        (fresh nonce: no cache hit; S below the group order: the check runs to its end)."""
        from node.protocol.relay.rendezvous import owners  # only here: the pre-11 layout has no such module

        v = bytes.fromhex(victim)
        members = sorted(m.id for m in self.h.swim.members() if m.state.value == "alive")
        started = time.monotonic()
        frames = claims = 0
        while claims < n:
            ids, nonces, sigs = [], [], []
            while len(ids) < min(LEASE_CLAIMS_MAX, n - claims):
                client = os.urandom(32)
                if v in owners(client, members, REPLICAS):
                    sig = bytearray(os.urandom(64))
                    sig[63] &= 0x0F
                    ids.append(client)
                    nonces.append(struct.pack(">Q", int(time.time() * 1000)) + os.urandom(24))
                    sigs.append(bytes(sig))
            lease = {"t": int(MsgType.LEASE), "h": self.me, "ids": ids, "ns": nonces, "sg": sigs, "ttl": 30_000}
            frames += await self.frame(v, lease)
            claims += len(ids)
            await trio.sleep(0)
        return {"frames": frames, "claims": claims, "elapsed_s": time.monotonic() - started}

    async def evict(self, victim: str, duration_s: float, interval_s: float = 0.1) -> dict[str, Any]:
        v = bytes.fromhex(victim)
        sock = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        await sock.bind(("127.0.0.1", 0))
        sent = 0
        deadline = trio.current_time() + duration_s
        while trio.current_time() < deadline:
            members = self.h.swim.members()
            target = next((m for m in members if m.id == v), None)
            if target is not None:
                dead = attrs.evolve(target, incarnation=INCARNATION_MAX, state=MemberState.DEAD)
                payload = encode_datagram(Gossip(updates=(Update(member=dead, by=b""),)))
                for m in members:
                    if m.id not in (self.me, v):
                        await sock.sendto(self.h.driver.sealer.seal(m.id, payload), m.addr)
                        sent += 1
            await trio.sleep(interval_s)
        sock.close()
        return {"sent": sent}

    async def whois(self, host: str, port: int, rate_per_s: float, duration_s: float, src: str) -> dict[str, Any]:
        sock = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        await sock.bind((src, 0))
        sent = 0
        started = trio.current_time()
        while (elapsed := trio.current_time() - started) < duration_s:
            while sent < elapsed * rate_per_s:
                await sock.sendto(encode_whois(os.urandom(32), os.urandom(16)), (host, port))
                sent += 1
            await trio.sleep(0.01)
        sock.close()
        return {"sent": sent}

    async def peer_idle(self, host: str, port: int, n: int, duration_s: float, src: str) -> dict[str, Any]:
        held: list[trio.socket.SocketType] = []
        opened = 0
        with trio.move_on_after(duration_s):
            while True:
                held = [s for s in held if s.fileno() >= 0]
                while len(held) < n:
                    s = trio.socket.socket()
                    try:
                        await s.bind((src, 0))
                        with trio.fail_after(1):
                            await s.connect((host, port))
                    except (OSError, trio.TooSlowError):
                        s.close()
                        break
                    held.append(s)
                    opened += 1
                await trio.sleep(0.2)
        for s in held:
            s.close()
        return {"opened": opened}  # more than n: the node closed some and the flood opened them again

    async def mailbox_flood(
        self, ws: int, keys: int, offers: int, body_bytes: int, src: str, duration_s: float = 30.0
    ) -> dict[str, Any]:
        sent = refused = 0
        limit = trio.CapacityLimiter(20)

        async def one(k: int) -> None:
            nonlocal sent, refused
            async with limit:
                try:
                    with trio.fail_after(20):
                        client = await RawClient.connect(ws, source=src)
                        await client.authenticate(Identity.generate())
                        for j in range(offers):
                            env = Envelope(
                                kind=Kind.CALL_OFFER,
                                to=os.urandom(32),
                                call=b"f%d" % j,
                                body=bytes(body_bytes),
                                ref=j + 1,
                            )
                            await client.send_message(encode_client_message(env, json=False))
                            sent += 1
                        await client.stream.aclose()
                except Exception:  # refused at the upgrade, closed by the node, too slow: all count as refused
                    refused += 1

        with trio.move_on_after(duration_s):  # a node that takes everything would keep the flood going
            async with trio.open_nursery() as nursery:
                for k in range(keys):
                    nursery.start_soon(one, k)
        return {"sent": sent, "refused_connections": refused}

    async def pings(self, ws: int, size_bytes: int, src: str, duration_s: float = 30.0) -> dict[str, Any]:
        client = await RawClient.connect(ws, rcvbuf_bytes=4096, source=src)
        await client.authenticate(Identity.generate())
        batch = client.ping_bytes(b"p" * 125) * 1000
        sent = 0
        closed = False
        deadline = trio.current_time() + duration_s
        while sent < size_bytes and trio.current_time() < deadline:
            with trio.move_on_after(max(0.01, deadline - trio.current_time())) as stalled:
                try:
                    await client.stream.send_all(batch)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    closed = True  # the node ended the connection
                    break
            if stalled.cancelled_caught:  # the node stopped reading but kept the connection: not a close
                break
            sent += len(batch)
            await trio.sleep(0)
        await trio.aclose_forcefully(client.stream)
        return {"sent_bytes": sent, "closed": closed}

    async def fragments(self, ws: int, frames: int, src: str) -> dict[str, Any]:
        client = await RawClient.connect(ws, source=src)
        await client.authenticate(Identity.generate())
        sent = await client.flood_empty_fragments(frames)
        await trio.aclose_forcefully(client.stream)
        return {"sent_frames": sent, "close_code": client.close_code}

    async def run(self, cmd: dict[str, Any]) -> None:
        name = cmd.pop("do")
        started = time.monotonic()
        try:
            result = await getattr(self, name)(**cmd)
        except Exception as exc:  # report, never die: the test decides what a failed attack means
            result = {"error": f"{type(exc).__name__}: {exc}"}
        emit({"done": name, "s": round(time.monotonic() - started, 2), **result})


async def main(data_dir: Path, seed: str, preset: str = "local") -> None:
    config = loopback_config(data_dir, join=[seed])
    if preset != "local":
        config = build_config(
            {
                "node": {"data_dir": str(data_dir), **{k: "127.0.0.1:0" for k in ("ws", "swim", "peer", "metrics")}},
                "federation": {"open": True, "join": [seed]},
            },
            preset=preset,
        )
    async with trio.open_nursery() as nursery:
        handle: NodeHandle = await nursery.start(run_node, config, Identity.generate())
        hostile = Hostile(handle)
        emit({"ready": id_text(handle.identity.id), "id": handle.identity.id.hex(), "ports": handle.ports})
        while line := await trio.to_thread.run_sync(sys.stdin.readline, abandon_on_cancel=True):
            nursery.start_soon(hostile.run, json.loads(line))
        handle.request_shutdown()
        await trio.sleep(0.5)
        nursery.cancel_scope.cancel()


if __name__ == "__main__":
    trio.run(main, Path(sys.argv[1]), sys.argv[2], sys.argv[3] if len(sys.argv) > 3 else "local")
