"""Hostile peer-link connections: refused, counted, and the node keeps serving its real peers."""

from __future__ import annotations

import os
import re
import struct
import time
from pathlib import Path
from typing import Any

import trio

from node.app.listrefresh import RegistryEtags
from node.app.service import NodeHandle, _Follower, run_node
from node.client.discovery.model import Source
from node.client.discovery.sources import open_list
from node.net.peerconn import handshake
from node.protocol.errors import TransportError
from node.protocol.identity import Identity, verify_signature
from node.protocol.nodelist import NodeEntry, build_node_list
from node.protocol.wire import Limits, MsgType, packb, unpack_all
from tests.integration.cluster import federation, loopback_config, refused_count, until
from tests.integration.test_peer_links import costly_to_decode, decode_cpu_s, least_cpu_s

ATTACKER = "127.0.0.2"  # another /32 than the node's members on 127.0.0.1


def refused_total(h: NodeHandle) -> float:
    return refused_count(h, "peer")


async def dial_from(host: str, port: int, me: Identity, node_id: bytes) -> bool:
    """Open a peer-port connection from `host` and run the dialler's handshake as `me`: True when it completed,
    False when the node closed it (refused unread, or `me` not admitted)."""
    sock = trio.socket.socket()
    await sock.bind((host, 0))
    with trio.fail_after(10):
        await sock.connect(("127.0.0.1", port))
        stream = trio.SocketStream(sock)
        try:
            chan = await handshake(stream, me, initiator=True, expected_id=node_id, admit=lambda i: True)
        except TransportError:
            await stream.aclose()
            return False
    await chan.aclose()
    return True


async def flood(hosts: list[str], per_host: int, port: int, me: Identity, node_id: bytes) -> tuple[int, float]:
    """`per_host` handshakes one after another from each of `hosts`, 8 hosts at a time: (how many the node
    closed, seconds taken)."""
    closed = 0

    async def attacker(host: str) -> None:
        nonlocal closed
        for _ in range(per_host):
            refused = not await dial_from(host, port, me, node_id)
            closed += refused  # after the await: `closed += await ...` would read `closed` before it

    start = trio.current_time()
    with trio.fail_after(60):
        for first in range(0, len(hosts), 8):
            async with trio.open_nursery() as attack:
                for host in hosts[first : first + 8]:
                    attack.start_soon(attacker, host)
    return closed, trio.current_time() - start


async def assert_paced(node: NodeHandle, attempts: int, closed: int, allowed: float, what: str) -> None:
    """Every attempt was refused, at most `allowed` of them after a handshake (`unadmitted`), the rest unread."""
    assert closed == attempts, f"{attempts - closed} attempts were not refused"
    await until(lambda: refused_count(node, "peer") >= attempts, 5.0)
    handshaken = refused_count(node, "peer", "unadmitted")
    paced = refused_count(node, "peer", "rate_limited")
    assert handshaken <= allowed, f"{handshaken:.0f} handshakes {what} ({paced:.0f} closed unread)"
    assert handshaken + paced == attempts, (handshaken, paced)


async def test_hostile_peer_connections_are_refused(tmp_path: Path) -> None:
    friend = Identity.generate()
    config = loopback_config(tmp_path, open_=False, federation={"allow": [friend.id_text]})
    async with trio.open_nursery() as nursery:
        node: NodeHandle = await nursery.start(run_node, config, Identity.generate())
        port = node.ports["peer"]

        async def attempt(payload: bytes) -> bytes:
            stream = await trio.open_tcp_stream("127.0.0.1", port)
            await stream.send_all(payload)
            got = b""
            with trio.fail_after(10):
                while True:
                    try:
                        chunk = await stream.receive_some(4096)
                    except trio.BrokenResourceError:  # a reset: closed with bytes of ours unread
                        break
                    if not chunk:
                        break
                    got += chunk
            await stream.aclose()
            return got

        # not a homing peer link at all
        assert await attempt(b"GET / HTTP/1.1\r\n\r\n" + bytes(200)) == b""
        with trio.fail_after(5):
            while refused_total(node) < 1:
                await trio.sleep(0.02)

        # a well-formed handshake from a key the node does not admit: closed before any reply
        stranger = Identity.generate()
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        with trio.fail_after(10):
            try:
                await handshake(stream, stranger, initiator=True, expected_id=node.identity.id, admit=lambda i: True)
                raise AssertionError("an unadmitted key completed the handshake")
            except TransportError:
                pass
        await stream.aclose()
        with trio.fail_after(5):
            while refused_total(node) < 2:
                await trio.sleep(0.02)

        # an admitted key completes the handshake, then sends garbage: the connection is dropped
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        with trio.fail_after(10):
            chan = await handshake(stream, friend, initiator=True, expected_id=node.identity.id, admit=lambda i: True)
            await stream.send_all(b"\x00\x00\x00\x20" + bytes(32))  # a frame that fails authentication
            assert await stream.receive_some(4096) == b""
        await chan.aclose()
        with trio.fail_after(5):
            while refused_total(node) < 3:
                await trio.sleep(0.02)

        # an established relay link that later carries a forged frame: dropped and counted too
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        with trio.fail_after(10):
            chan = await handshake(stream, friend, initiator=True, expected_id=node.identity.id, admit=lambda i: True)
            await chan.send({"t": int(MsgType.LINK_HELLO)})  # version 1: no answer frame
            await stream.send_all(b"\x00\x00\x00\x20" + bytes(32))
            assert await stream.receive_some(4096) == b""
        await chan.aclose()
        with trio.fail_after(5):
            while refused_total(node) < 4:
                await trio.sleep(0.02)
        node.request_shutdown()


async def test_one_address_without_a_key_gets_a_paced_share_of_peer_port_handshakes(tmp_path: Path) -> None:
    """A handshake costs the node about 1.3 ms of CPU (two X25519 operations, the Noise hashes) before it can know
    whether the key is admitted. One host without any key took a node's whole core that way (755 attempts a second,
    95-98 % of a core). Now each address opens at most `handshakes_per_address_burst` (200) connections at once,
    then `handshakes_per_address_per_s` (10) a second; the rest are closed unread, and a member on another
    address still gets in. On the code before: all 400 attempts were handshaken."""
    friend = Identity.generate()
    config = loopback_config(tmp_path, open_=False, federation={"allow": [friend.id_text]})
    limits = config.peers
    attempts, workers = 400, 8
    async with trio.open_nursery() as nursery:
        node: NodeHandle = await nursery.start(run_node, config, Identity.generate())
        port = node.ports["peer"]
        stranger, node_id = Identity.generate(), node.identity.id
        closed, elapsed = await flood([ATTACKER] * workers, attempts // workers, port, stranger, node_id)
        allowed = limits.handshakes_per_address_burst + limits.handshakes_per_address_per_s * elapsed + 1
        await assert_paced(node, attempts, closed, allowed, f"in {elapsed:.2f} s from one address")

        assert await dial_from("127.0.0.1", port, friend, node_id)  # a member's address has its own budget
        node.request_shutdown()


async def test_many_addresses_without_a_key_share_one_budget_of_peer_port_handshakes(tmp_path: Path) -> None:
    """The per-address pace above bounds one address; an attacker with many (an IPv6 /48 holds 65,536 /64s) had a
    fresh `handshakes_per_address_burst` at each, so together they could still take a node's CPU in handshakes
    (docs/security.md, "Known gaps", before). Now connections from addresses where no member is known share one
    node-wide budget (`[peers] stranger_handshakes_burst`, then `stranger_handshakes_per_s`); the rest are closed
    unread. A member's host is not charged: the node's own members are on 127.0.0.1 and one of them dials in
    after the flood; nor is the host of a node the registry lists name (an approved newcomer not yet in the
    table), while an address that is neither is refused. On the code before (the settings present, the gate
    without the node-wide budget): all 240 attempts were handshaken."""
    friend = Identity.generate()
    config = loopback_config(
        tmp_path,
        open_=False,
        federation={"allow": [friend.id_text]},
        peers={"stranger_handshakes_burst": 40, "stranger_handshakes_per_s": 0.01},  # no refill in the test
    )
    limits = config.peers
    addresses, per_address = 80, 3  # 240 attempts, 3 from each address: far inside each address's own burst
    attempts = addresses * per_address
    assert per_address < limits.handshakes_per_address_burst
    async with trio.open_nursery() as nursery:
        node: NodeHandle = await nursery.start(run_node, config, Identity.generate())
        port = node.ports["peer"]
        stranger, node_id = Identity.generate(), node.identity.id
        hosts = [f"127.0.1.{i + 1}" for i in range(addresses)]
        closed, elapsed = await flood(hosts, per_address, port, stranger, node_id)
        allowed = limits.stranger_handshakes_burst + limits.stranger_handshakes_per_s * elapsed + 1
        await assert_paced(node, attempts, closed, allowed, f"in {elapsed:.2f} s from {addresses} addresses")

        node.driver.set_listed_hosts(["127.0.0.9"])  # what the registry follower does with each list it reads
        assert await dial_from("127.0.0.1", port, friend, node_id), "a member's host was charged to strangers"
        assert await dial_from("127.0.0.9", port, friend, node_id), "a listed node's host was charged to strangers"
        assert not await dial_from("127.0.0.8", port, friend, node_id), "a stranger got in after the budget was spent"
        node.request_shutdown()


async def test_the_registry_follower_tells_the_peer_port_which_hosts_its_lists_name(tmp_path: Path) -> None:
    """Each list the follower reads names the approved nodes' addresses: their hosts are not charged to the peer
    port's strangers' budget (an approved newcomer is not in the member table yet), other hosts are; a node the
    newest list no longer names (banned, removed) is charged again."""
    registry = Identity.generate()
    config = loopback_config(tmp_path, open_=False)
    async with trio.open_nursery() as nursery:
        node: NodeHandle = await nursery.start(run_node, config, Identity.generate())
        now = int(time.time())
        newcomer = NodeEntry(
            id=Identity.generate().id, ws="ws://127.0.0.9:8443/v1/client", swim="127.0.0.9:7946",
            peer="127.0.0.9:7947", seen=now,
        )  # fmt: skip
        doc = build_node_list(registry, [newcomer], issued=now - 5, expires=now + 600)
        trust = frozenset([registry.id])
        signed = open_list(doc, trust, now, Source.REGISTRY, "test registry")
        assert not node.driver.member_host("127.0.0.9")
        follower = _Follower(node, trust, RegistryEtags(timeout_s=1.0), started=trio.current_time())
        follower.learn([signed])
        assert node.driver.member_host("127.0.0.9")
        assert not node.driver.member_host("127.0.0.8")
        follower.learn([])  # a conditional re-read answered 304: what is held stays
        assert node.driver.member_host("127.0.0.9")
        # the admin bans or removes the newcomer: the next list no longer names it, and its host is a stranger's
        other = NodeEntry(
            id=Identity.generate().id, ws="ws://127.0.0.7:8443/v1/client", swim="127.0.0.7:7946",
            peer="127.0.0.7:7947", seen=now,
        )  # fmt: skip
        newer = build_node_list(registry, [other], issued=now - 1, expires=now + 600)
        follower.learn([open_list(newer, trust, now, Source.REGISTRY, "test registry")])
        assert not node.driver.member_host("127.0.0.9"), "a node no longer listed stayed exempt"
        assert node.driver.member_host("127.0.0.7")
        follower.learn([signed])  # an older list read late from another source changes nothing
        assert not node.driver.member_host("127.0.0.9"), "an older list brought back a removed node"
        node.request_shutdown()


def _peer_seconds(node: NodeHandle) -> tuple[float, float]:
    """(homing_peer_handle_seconds_total, homing_peer_throttled_seconds_total) from the node's /metrics text."""
    node.refresh_gauges()
    text = node.metrics.render().decode()
    values = dict(re.findall(r"^(homing_peer_(?:handle|throttled)_seconds_total) (\S+)$", text, re.MULTILINE))
    return float(values.get("homing_peer_handle_seconds_total", 0)), float(
        values.get("homing_peer_throttled_seconds_total", 0)
    )


def _lease_call_cpu_s(lease: dict[str, Any]) -> float:
    """What one LEASE call can cost the victim on this host, at least 30 ms: decoding it and checking each claim's
    signature (within the window the member's signature budget, `[relay] claim_checks_per_peer_burst`, is not spent,
    so every claim is checked: 60-160 us each, 15-41 ms for 256; a margin of 30 ms was over by 4 ms on a slow host)."""
    plaintext = packb(lease)

    def call() -> None:
        unpack_all(plaintext, max_bytes=Limits.PEER_FRAME_MAX)
        for node_id, sig in zip(lease["ids"], lease["sg"], strict=True):
            verify_signature(node_id, plaintext[:100], sig)

    return max(0.03, least_cpu_s(call))


async def test_a_member_flooding_its_link_with_leases_gets_at_most_its_cpu_budget_and_keeps_its_link(
    tmp_path: Path,
) -> None:
    """A member of a two-node federation writes LEASEs of 256 claims for ids the victim owns, with signatures that
    do not verify (each one checked, 60-160 us, until the member's signature budget is spent, which this window does
    not reach; after it they would be refused unchecked, ~8 us a claim), as fast as its link takes them. The victim
    reports the CPU it spends on the link (`homing_peer_handle_seconds_total`) and, with a budget of 50 ms a second
    and a 20 ms burst, spends at most that over the window (plus one LEASE call, twice as measured here, as the
    budget is charged after each call), then reads nothing until it refills (`homing_peer_throttled_seconds_total`):
    the member's frames back up in TCP and in its own queue. The claims it does read are handled (refused, counted),
    and the link stays open."""
    per_s, burst_s, window_s = 0.05, 0.02, 2.0
    async with federation(tmp_path, 2, peers={"handle_cpu_per_s": per_s, "handle_cpu_burst_s": burst_s}) as nodes:
        victim, hostile = nodes
        now_ms = struct.pack(">Q", int(time.time() * 1000))
        lease = {
            "t": int(MsgType.LEASE),
            "h": hostile.identity.id,
            "ids": [os.urandom(32) for _ in range(256)],
            "ns": [now_ms + os.urandom(24) for _ in range(256)],
            "sg": [os.urandom(63) + b"\x01" for _ in range(256)],
            "ttl": 30_000,
        }
        hello = {"t": int(MsgType.LEASE_DROP), "h": hostile.identity.id, "ids": []}  # opens the link, costs nothing
        with trio.fail_after(10):
            while hostile.links.link(victim.identity.id) is None or victim.links.link(hostile.identity.id) is None:
                hostile.links.send(victim.identity.id, hello)
                await trio.sleep(0.01)
        conn = victim.links.link(hostile.identity.id)
        handled_before, throttled_before = _peer_seconds(victim)
        refused_before = refused_total(victim)
        sent = 0
        started = trio.current_time()
        with trio.move_on_after(window_s):
            while True:  # as fast as the link takes them: its queue (`[relay] peer_queue_max`), then TCP
                if hostile.links.send(victim.identity.id, lease):
                    sent += 1
                    if sent % 8 == 0:
                        await trio.lowlevel.checkpoint()
                else:
                    await trio.sleep(0.001)
        handled, throttled = _peer_seconds(victim)
        elapsed = trio.current_time() - started
        spent = handled - handled_before
        allowed = burst_s + per_s * elapsed + 2 * _lease_call_cpu_s(lease)
        assert spent <= allowed, f"{spent:.3f} s of CPU on the member's link in {elapsed:.2f} s (budget {allowed:.3f})"
        assert throttled - throttled_before >= elapsed / 2, throttled
        assert victim.links.link(hostile.identity.id) is conn  # read slowly, not closed
        refused = refused_total(victim) - refused_before
        assert refused >= 256, refused  # its claims were read and refused, not dropped unread


async def test_a_member_flooding_its_link_with_frames_costly_to_decode_gets_at_most_its_cpu_budget(
    tmp_path: Path,
) -> None:
    """A member of a two-node federation writes, as fast as its link takes them, frames of one map of 80,000 short
    strings (~240 KiB) of a relay type that does not exist: each costs the victim a few ms to decrypt and decode
    (over ten times what sealing it cost the member) and almost nothing to refuse. The victim charges the decrypting
    and decoding to the link: with a budget of 50 ms a second and a 20 ms burst, the CPU it reports for its peer
    links (`homing_peer_handle_seconds_total`) fits the budget over the window (plus one frame and a margin) and
    holds the frames' decoding; the maps it read and refused, at the least CPU one costs to decode (measured apart,
    before and after the window, so only within 2 times), fit it too; and it left the link unread for at least
    half the window (`homing_peer_throttled_seconds_total`). The link stays open. Without the charge the victim
    decoded such frames at the speed of the link and never throttled it."""
    per_s, burst_s, window_s = 0.05, 0.02, 1.5
    unknown = 200
    assert unknown not in {int(t) for t in MsgType}
    plaintext = costly_to_decode(t=unknown)
    decode_s = decode_cpu_s(plaintext)  # a lower bound of what one frame costs the victim
    async with federation(tmp_path, 2, peers={"handle_cpu_per_s": per_s, "handle_cpu_burst_s": burst_s}) as nodes:
        victim, hostile = nodes
        hello = {"t": int(MsgType.LEASE_DROP), "h": hostile.identity.id, "ids": []}  # opens the link, costs nothing
        with trio.fail_after(10):
            while hostile.links.link(victim.identity.id) is None or victim.links.link(hostile.identity.id) is None:
                hostile.links.send(victim.identity.id, hello)
                await trio.sleep(0.01)
        conn, hostile_link = victim.links.link(hostile.identity.id), hostile.links.link(victim.identity.id)
        assert hostile_link is not None
        out = hostile_link.out  # the member's own link: it writes pre-encoded maps, as a modified node would
        handled_before, throttled_before = _peer_seconds(victim)
        refused_before = refused_total(victim)
        started = trio.current_time()
        with trio.fail_after(10):
            while trio.current_time() < started + window_s:
                while out.pending_bytes < 4 * len(plaintext):  # its backlog stays small; the rest waits in TCP
                    out.stage(plaintext)
                await trio.sleep(0.001)
        handled, throttled = _peer_seconds(victim)
        elapsed = trio.current_time() - started
        spent, refused = handled - handled_before, refused_total(victim) - refused_before
        decode_s = min(decode_s, decode_cpu_s(plaintext))
        allowed = burst_s + per_s * elapsed + 2 * decode_s + 0.02
        # the frames it read, at the least CPU one costs: measured apart, that may be off by over 1.4 times on a
        # loaded machine; the frames read before the charge cost 4-10 times the budget
        assert refused * decode_s <= 2 * allowed, (
            f"the victim decoded and refused {refused:.0f} frames in {elapsed:.2f} s, at least "
            f"{refused * decode_s:.3f} s of CPU (budget {allowed:.3f})"
        )
        assert refused >= 1 and spent >= refused * decode_s / 2, (spent, refused, decode_s)  # decoding is charged
        assert spent <= allowed, f"{spent:.3f} s of CPU on the member's link in {elapsed:.2f} s (budget {allowed:.3f})"
        assert throttled - throttled_before >= elapsed / 2, throttled
        assert victim.links.link(hostile.identity.id) is conn  # read slowly, not closed
