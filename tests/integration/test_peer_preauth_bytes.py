"""The peer port's node-wide cap on the bytes of first frames that connections not yet authenticated hold.

Issue: a first frame (a PUSH_PULL) may be 6 MiB and is authenticated only once all of it has been read, so every
address could make a node hold `[peers] preauth_per_address_max` (8) of them while it sent them slowly, and many
addresses added up: nothing node-wide bounded it. Now a frame's announced length is reserved from
`preauth_bytes_max` (strangers together at most half of it, one address at most `preauth_bytes_per_address_max`)
before its body is read, a frame that does not fit closes its connection at once, and the reservation is given
back when the connection ends.

Real sockets on 127.0.0.0/8 and `serve_peers` as node/app/service.py wires it: the slow senders are strangers at
127.0.0.2-9 (each with its own admitted key: in an open federation anyone passes the handshake, in a closed one a
replayed msg1 does), the member syncs from 127.0.0.1, where the node knows a member.
"""

from __future__ import annotations

import os
import struct

import trio

from node.net.peerconn import handshake, push_pull, serve_peers
from node.protocol.crypto import LinkHandshake
from node.protocol.identity import Identity
from node.protocol.peerlink import PeerLimits
from node.protocol.refusals import Refusal
from node.protocol.wire import Limits, require_map
from node.protocol.wire.link import PushPull, PushPullReply, control_from_map, control_to_map
from tests.integration.test_peer_links import WAIT_S, wait_until

PREAUTH_READ_AHEAD = 4096  # node/net/peerconn.py (a literal here: the code before it has no such name)
MEMBER = "127.0.0.1"
STRANGERS = [f"127.0.0.{i}" for i in range(2, 10)]  # 8 addresses (/32s)
PER_STRANGER = 2  # connections from each: within `preauth_per_address_max`
FRAME = Limits.PUSH_PULL_MAX + 1024 + 16  # the largest first frame the node reads (its ciphertext length)
# The defaults this test is about: strangers share half of `preauth_bytes_max`, one address holds at most
# `preauth_bytes_per_address_max`; so at most 1 largest frame per address, 5 for all strangers together.
STRANGERS_SHARE = 32 * 1024 * 1024
PER_ADDRESS = 8 * 1024 * 1024
HELD_MAX = min(len(STRANGERS) * (PER_ADDRESS // FRAME), STRANGERS_SHARE // FRAME)
# Unauthenticated connections would otherwise hold on for this long: the cap must close them, not the timeout.
LIMITS = PeerLimits(handshake_timeout_s=120.0)


async def _open_from(host: str, port: int, node_id: bytes) -> trio.SocketStream:
    sock = trio.socket.socket()
    await sock.bind((host, 0))
    await sock.connect(("127.0.0.1", port))
    stream = trio.SocketStream(sock)
    await handshake(stream, Identity.generate(), initiator=True, expected_id=node_id, admit=lambda i: True)
    return stream


async def _sync_from(host: str, port: int, me: Identity, node_id: bytes, state: bytes) -> bytes:
    """A push-pull from `host` (`push_pull` with a chosen source address): the node's state in reply."""
    sock = trio.socket.socket()
    await sock.bind((host, 0))
    await sock.connect(("127.0.0.1", port))
    chan = await handshake(trio.SocketStream(sock), me, initiator=True, expected_id=node_id, admit=lambda i: True)
    try:
        await chan.send(control_to_map(PushPull(state=state, join=False)))
        reply = control_from_map(require_map(await chan.receive(Limits.PUSH_PULL_MAX + 1024, max_items=16), "reply"))
        assert isinstance(reply, PushPullReply)
        return reply.state
    finally:
        await chan.aclose()


async def test_slow_first_frames_from_many_addresses_hold_no_more_than_the_cap_and_members_still_sync() -> None:
    node = Identity.generate()
    member = Identity.generate()
    synced: list[tuple[bytes, int]] = []
    refused: list[Refusal] = []

    def on_sync(peer: bytes, state: bytes, join: bool) -> bytes:
        synced.append((peer, len(state)))
        return b"the node's state"

    async def on_link(chan: object) -> None:
        raise AssertionError("no link is made in this test")

    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    async with trio.open_nursery() as nursery:
        nursery.start_soon(
            lambda: serve_peers(
                listeners,
                identity=node,
                admit=lambda i: True,
                on_link=on_link,
                on_sync=on_sync,
                limits=LIMITS,
                on_refused=refused.append,
                member_host=lambda key: key == MEMBER,
            )
        )
        # each stranger announces the largest first frame and sends 1 KiB of it, then nothing (a slow sender)
        senders: list[trio.SocketStream] = []
        with trio.fail_after(WAIT_S):
            for host in STRANGERS:
                for _ in range(PER_STRANGER):
                    stream = await _open_from(host, port, node.id)
                    await stream.send_all(struct.pack(">I", FRAME) + bytes(1024))
                    senders.append(stream)
        closed: list[int] = []

        async def watch(i: int, stream: trio.SocketStream) -> None:
            try:
                data = await stream.receive_some(4096)
            except trio.BrokenResourceError:  # reset: the node closed it with our bytes unread
                data = b""
            assert data == b"", "the node sends nothing before the first frame"
            closed.append(i)

        watchers = trio.CancelScope()

        async def watch_all() -> None:
            with watchers:
                async with trio.open_nursery() as each:
                    for i, stream in enumerate(senders):
                        each.start_soon(watch, i, stream)

        nursery.start_soon(watch_all)
        total = len(senders)
        await wait_until(
            lambda: len(closed) >= total - HELD_MAX,
            f"the node to close the {total - HELD_MAX} frames over its cap at once (closed {len(closed)} of {total})",
            timeout_s=10.0,
        )
        assert (LIMITS.preauth_bytes_max // 2, LIMITS.preauth_bytes_per_address_max) == (STRANGERS_SHARE, PER_ADDRESS)
        held = total - len(closed)
        assert held * FRAME <= LIMITS.preauth_bytes_max // 2, f"{held} unauthenticated frames of {FRAME} bytes held"
        assert refused.count(Refusal.RATE_LIMITED) == total - HELD_MAX

        # a member's largest sync still fits, beside the strangers' share
        with trio.fail_after(WAIT_S):
            reply = await push_pull(
                ("127.0.0.1", port), member, node.id, lambda i: True, bytes(Limits.PUSH_PULL_MAX), join=False,
                timeout_s=WAIT_S,
            )  # fmt: skip
        assert reply == b"the node's state"
        assert synced == [(member.id, Limits.PUSH_PULL_MAX)]
        assert len(closed) == total - HELD_MAX, "the member's sync closed a stranger's connection"

        # the slow senders give up: their reservations come back, and a stranger's largest sync fits again
        watchers.cancel()
        for stream in senders:
            await stream.aclose()
        await wait_until(lambda: len(refused) == total, "the node to count every slow sender")
        newcomer = Identity.generate()
        with trio.fail_after(WAIT_S):
            state = await _sync_from("127.0.0.20", port, newcomer, node.id, bytes(Limits.PUSH_PULL_MAX))
        assert state == b"the node's state"
        assert synced[-1] == (newcomer.id, Limits.PUSH_PULL_MAX)
        nursery.cancel_scope.cancel()


async def test_the_listener_reads_little_ahead_before_the_first_frame_authenticates() -> None:
    """Besides the first frame, an unauthenticated connection makes the node hold only the handshake messages and
    less than `PREAUTH_READ_AHEAD` (4 KiB) more: the rest of what it sends stays in the kernel until the node asks
    for it (before, each read took up to 64 KiB, for up to `connections_max` connections)."""
    node, stranger = Identity.generate(), Identity.generate()
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    with trio.fail_after(WAIT_S):
        client = await trio.open_tcp_stream("127.0.0.1", port)
        server = await listeners[0].accept()
        msg1 = LinkHandshake(stranger, random_bytes=os.urandom, expected_id=node.id).start()
        await client.send_all(msg1 + bytes(60_000))  # msg1, then what no frame header has asked for yet
        chan = await handshake(server, node, initiator=False, expected_id=None, admit=lambda i: True)
        assert chan.peer_id == stranger.id
        ahead = len(chan._reader._buf)  # what the listener holds beyond the messages it has taken
        assert ahead < PREAUTH_READ_AHEAD, f"the listener read {ahead} bytes ahead before authentication"
        await chan.aclose()
        await client.aclose()
    for listener in listeners:
        await listener.aclose()
