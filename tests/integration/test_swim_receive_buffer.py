"""The SWIM socket's receive buffer (node/net/listen.py, docs/swim.md "Receive buffer"): a node that stalls for a
moment loses none of a burst the default buffer would drop, and what the kernel does drop is counted in
homing_swim_receive_drops_total (docs/operations.md, "Monitoring").

The stall is real: this test's task holds the node's trio loop while it sends (a blocking socket, no await), so the
node reads nothing until the burst is over, as a node descheduled on a busy host, or behind a long step, reads
nothing. Every datagram is a 768-byte one of an unknown kind, the size of a padded WHOIS: the node refuses each as
malformed, so the node's own counters say how many it read.
"""

from __future__ import annotations

import logging
import re
import socket
from pathlib import Path

import pytest
import trio

from node.app import service
from node.app.log import StructuredFormatter
from node.app.service import NodeHandle, run_node
from node.net.listen import UDP_RECEIVE_BUFFER, bind_udp, receive_buffer, udp_drops
from node.protocol.identity import Identity
from node.protocol.wire.seed import WHOIS_BYTES
from tests.helpers import raw_http, refused_by_reason
from tests.integration.cluster import loopback_config

UNKNOWN_KIND = b"\xff" * WHOIS_BYTES  # refused as malformed by the first byte
RMEM_MAX = Path("/proc/sys/net/core/rmem_max")


def rmem_max() -> int:
    return int(RMEM_MAX.read_text()) if RMEM_MAX.exists() else 0


needs_linux = pytest.mark.skipif(not RMEM_MAX.exists(), reason="reads Linux's /proc/net/udp and net.core.rmem_max")


def burst(port: int, count: int) -> None:
    """`count` datagrams to 127.0.0.1:`port`, sent without yielding to trio (the node cannot read meanwhile)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for _ in range(count):
            s.sendto(UNKNOWN_KIND, ("127.0.0.1", port))


async def scrape(node: NodeHandle) -> tuple[float, float]:
    """(datagrams refused as malformed at the SWIM layer, homing_swim_receive_drops_total) from the node's /metrics."""
    text = (await raw_http(node.ports["metrics"], b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"))
    body = text.decode()
    found = re.search(r"^homing_swim_receive_drops_total (\S+)$", body, re.M)
    assert found, "no homing_swim_receive_drops_total in /metrics"
    return refused_by_reason(body, "swim")["malformed"], float(found.group(1))


async def settled(node: NodeHandle, sent: int) -> tuple[float, float]:
    """Scrape until every datagram sent is accounted for (read and refused, or dropped by the kernel); at most 10 s."""
    with trio.move_on_after(10):
        while sum(counts := await scrape(node)) < sent:
            await trio.sleep(0.05)
    return counts


@needs_linux
def test_the_swim_socket_asks_for_2_mib_and_gets_what_the_kernel_allows() -> None:
    sock = bind_udp("127.0.0.1", 0, key="node.swim")
    try:
        assert receive_buffer(sock) == min(UDP_RECEIVE_BUFFER, rmem_max())
        assert udp_drops(sock) == 0
    finally:
        sock.close()


@needs_linux
def test_udp_drops_is_the_kernels_count_for_that_socket() -> None:
    small = bind_udp("127.0.0.1", 0, key="test", rcvbuf=4096)  # the kernel's floor: a few datagrams
    other = bind_udp("127.0.0.1", 0, key="test")
    try:
        burst(small.getsockname()[1], 100)
        small.setblocking(False)
        kept = 0
        while True:
            try:
                small.recv(2048)
            except BlockingIOError:
                break
            kept += 1
        assert 0 < kept < 100
        assert udp_drops(small) == 100 - kept
        assert udp_drops(other) == 0
    finally:
        small.close()
        other.close()
    assert udp_drops(small) is None  # a closed socket (a scrape during shutdown) has no count, and no error


@needs_linux
async def test_a_stalled_node_loses_none_of_a_burst_and_counts_what_overflows(tmp_path: Path) -> None:
    """1,000 datagrams while the node cannot read: Linux's default buffer (208 KiB) keeps 92 of them and drops the
    rest; 2 MiB keeps all. Then 4,000 more: past what 2 MiB holds (1,820), and every one the node did not read is
    in homing_swim_receive_drops_total, so read + dropped = sent."""
    if rmem_max() < UDP_RECEIVE_BUFFER:
        pytest.skip(f"net.core.rmem_max is {rmem_max()}, below {UDP_RECEIVE_BUFFER}: the kernel caps the buffer")
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            node: NodeHandle = await nursery.start(run_node, loopback_config(tmp_path / "n0"), Identity.generate())
            burst(node.ports["swim"], 1_000)
            read, dropped = await settled(node, 1_000)
            assert (read, dropped) == (1_000, 0), f"of 1,000 datagrams the node read {read:.0f}, {dropped:.0f} dropped"
            burst(node.ports["swim"], 4_000)
            read, dropped = await settled(node, 5_000)
            assert dropped > 0 and read + dropped == 5_000, (read, dropped)
            assert dropped == udp_drops(node.udp)
            node.request_shutdown()


@needs_linux
async def test_a_node_capped_below_its_buffer_says_so_before_started(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The kernel's cap is net.core.rmem_max, which a test cannot lower for one process; asking for more than it
    allows meets the same cap. The node logs swim_receive_buffer_small with what it got, and still serves."""
    monkeypatch.setattr(service, "UDP_RECEIVE_BUFFER", 2 * rmem_max())
    caplog.set_level(logging.INFO)
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            node: NodeHandle = await nursery.start(run_node, loopback_config(tmp_path / "n0"), Identity.generate())
            node.request_shutdown()
    # the lines as the node writes them (node/app/log.py), in order
    lines = [StructuredFormatter().format(r) for r in caplog.records if r.name == "homing.node"]
    small = [i for i, line in enumerate(lines) if " event=swim_receive_buffer_small " in line]
    started = [i for i, line in enumerate(lines) if " event=started " in line]
    assert small and started and small[0] < started[0], lines
    assert f" bytes={rmem_max()} " in lines[small[0]] and "net.core.rmem_max" in lines[small[0]], lines[small[0]]
