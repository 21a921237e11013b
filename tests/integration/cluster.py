"""An in-process federation of real nodes for integration tests (real sockets on 127.0.0.1)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import trio

from node.app.config import NodeConfig, build_config
from node.app.service import NodeHandle, run_node
from node.protocol.identity import Identity
from node.protocol.wire.client import ClientMessage, Receipt
from tests.helpers import refused_by_reason


def loopback_config(
    data_dir: Path, *, join: list[str] | None = None, open_: bool = True, **sections: dict[str, Any]
) -> NodeConfig:
    """Every port free, SWIM's fast `local` preset; an open federation unless `open_=False`."""
    values: dict[str, dict[str, Any]] = {
        "node": {
            "data_dir": str(data_dir),
            "ws": "127.0.0.1:0",
            "swim": "127.0.0.1:0",
            "peer": "127.0.0.1:0",
            "metrics": "127.0.0.1:0",
        },
        "federation": {"open": open_, "join": join or []},
    }
    for name, extra in sections.items():
        values.setdefault(name, {}).update(extra)
    return build_config(values, preset="local")


def url(h: NodeHandle) -> str:
    return f"ws://127.0.0.1:{h.ports['ws']}/v1/client"


@asynccontextmanager
async def federation(tmp: Path, n: int, **sections: dict[str, Any]) -> AsyncIterator[list[NodeHandle]]:
    """Start `n` open nodes joined through the first; yield once everyone sees everyone alive."""
    async with trio.open_nursery() as nursery:
        first: NodeHandle = await nursery.start(run_node, loopback_config(tmp / "n0", **sections), Identity.generate())
        seed = f"127.0.0.1:{first.ports['swim']}"
        handles = [first]
        for i in range(1, n):
            cfg = loopback_config(tmp / f"n{i}", join=[seed], **sections)
            handles.append(await nursery.start(run_node, cfg, Identity.generate()))
        everyone = {h.identity.id for h in handles}
        with trio.fail_after(15):
            while not all({m.id for m in h.swim.members() if m.state.value == "alive"} == everyone for h in handles):
                await trio.sleep(0.05)
        try:
            yield handles
        finally:
            for h in handles:
                h.request_shutdown()


async def next_matching(conn: Any, pred: Callable[[ClientMessage], bool], timeout: float = 10) -> ClientMessage:
    """The next message on `conn` for which `pred` holds (others are skipped), within `timeout` seconds."""
    with trio.fail_after(timeout):
        while True:
            msg = await conn.receive()
            if pred(msg):
                return msg


async def terminal_receipt(conn: Any, ref: int, timeout: float = 10) -> Receipt:
    msg = await next_matching(
        conn, lambda m: isinstance(m, Receipt) and m.ref == ref and m.status.value != "queued", timeout
    )
    assert isinstance(msg, Receipt)
    return msg


def refused_count(h: NodeHandle, layer: str, reason: str | None = None) -> float:
    """homing_packets_refused_total for one layer (and one reason, or all of them), read from /metrics text."""
    counts = refused_by_reason(h.metrics.render().decode(), layer)
    return counts.get(reason, 0.0) if reason else sum(counts.values())


async def until(pred: Callable[[], bool], timeout: float = 5.0) -> None:
    """Poll `pred` until it holds, within `timeout` seconds."""
    with trio.fail_after(timeout):
        while not pred():
            await trio.sleep(0.02)
