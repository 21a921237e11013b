"""Keepalive from the server's one task (node/net/clients.py, "Keepalive"): an online session's reader has no
timer of its own, its ping/idle deadline is filed in the server's heap, and a frame from the client moves it
(the heap entry is refiled when it surfaces). The ping/idle timings themselves: tests/clients/test_limits.py."""

from __future__ import annotations

import math

import trio

from node.protocol.identity import Identity

from .fixtures import run, running_node, wait_until
from .rawws import RawClient

ALICE = Identity.generate()


def test_an_online_session_has_no_reader_timer_and_is_filed_for_keepalive() -> None:
    async def main() -> None:
        async with running_node(ping_interval_s=30, idle_timeout_s=120) as node:
            client = await RawClient.connect(node.port)
            (session,) = node.server.sessions.values()
            assert session._scope.deadline < math.inf  # handshake timer: the reader's own
            await client.authenticate(ALICE)
            await wait_until(lambda: session.online)
            start = trio.current_time()
            assert session._scope.deadline == math.inf  # no per-session timer once online
            assert node.server._keepalive_due.deadline_of(session) == start + 30
            await trio.sleep(20)
            await client.stream.send_all(client.ping_bytes(b"x"))  # the client speaks: keepalive moves
            await trio.sleep(15)  # past the first deadline: refiled at the ping's time + 30, no ping sent
            assert node.server._keepalive_due.deadline_of(session) == start + 50
            assert session._scope.deadline == math.inf
            await client.stream.aclose()
            await wait_until(lambda: not node.server.sessions)
            assert len(node.server._keepalive_due) == 0

    run(main, mock_clock=True, limit_s=300)
