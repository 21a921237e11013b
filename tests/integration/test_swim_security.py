"""Forged, replayed, truncated, oversized and unadmitted SWIM datagrams: each refused, counted, state unchanged.

A real node on 127.0.0.1 and a raw UDP socket playing the attacker (docs/protocol.md: "a forged or replayed packet
changes nothing").
"""

from __future__ import annotations

import socket
from pathlib import Path

import trio

from node.app.service import NodeHandle, run_node
from node.protocol.crypto import DatagramSealer
from node.protocol.identity import Identity
from node.protocol.swim.messages import Ping
from node.protocol.wire.seed import WHOIS_BYTES, encode_whois
from node.protocol.wire.swim import encode_datagram
from tests.integration.cluster import loopback_config, refused_count, until


def refused(h: NodeHandle, reason: str) -> float:
    return refused_count(h, "swim", reason)


def table(h: NodeHandle) -> list[tuple[bytes, str, int]]:
    return sorted((m.id, m.state.value, m.incarnation) for m in h.swim.members())


async def test_hostile_datagrams_change_nothing(tmp_path: Path) -> None:
    friend = Identity.generate()
    config = loopback_config(tmp_path, open_=False, federation={"allow": [friend.id_text]})
    async with trio.open_nursery() as nursery:
        node: NodeHandle = await nursery.start(run_node, config, Identity.generate())
        target = ("127.0.0.1", node.ports["swim"])
        before = table(node)
        sock = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        await sock.bind(("127.0.0.1", 0))

        # a legitimate packet from an admitted key is accepted once ...
        sealer = DatagramSealer(friend, epoch_ms=1)
        packet = sealer.seal(node.identity.id, encode_datagram(Ping(seq=1)))
        await sock.sendto(packet, target)
        with trio.fail_after(5):
            data, _ = await sock.recvfrom(2048)  # the ack proves it was accepted
        assert data[0] == 1
        # ... and a replay of it is refused
        await sock.sendto(packet, target)
        await until(lambda: refused(node, "replayed") >= 1)

        # forged: one bit flipped in the ciphertext
        forged = bytearray(sealer.seal(node.identity.id, encode_datagram(Ping(seq=2))))
        forged[-1] ^= 1
        await sock.sendto(bytes(forged), target)
        await until(lambda: refused(node, "forged") >= 1)

        # sealed by a key the node does not admit
        stranger = DatagramSealer(Identity.generate(), epoch_ms=1)
        await sock.sendto(stranger.seal(node.identity.id, encode_datagram(Ping(seq=3))), target)
        await until(lambda: refused(node, "unadmitted") >= 1)

        # truncated, garbage, oversized, short WHOIS (amplification guard)
        await sock.sendto(packet[:40], target)
        await sock.sendto(b"\x07garbage", target)
        await until(lambda: refused(node, "malformed") >= 2)
        await sock.sendto(b"\x01" + bytes(1500), target)
        await until(lambda: refused(node, "oversized") >= 1)
        await sock.sendto(encode_whois(friend.id, bytes(16))[: WHOIS_BYTES // 2], target)
        await until(lambda: refused(node, "malformed") >= 3)

        # nothing about the table changed (the stranger was never added; the friend only pinged)
        assert all(m_id != stranger._identity.id for m_id, _, _ in table(node))
        assert [row for row in table(node) if row[0] == node.identity.id] == [
            row for row in before if row[0] == node.identity.id
        ]
        # and the node still serves: a fresh legitimate ping is answered
        await sock.sendto(sealer.seal(node.identity.id, encode_datagram(Ping(seq=9))), target)
        with trio.fail_after(5):
            data, _ = await sock.recvfrom(2048)
        assert data[0] == 1
        node.request_shutdown()
