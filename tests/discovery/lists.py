"""Signed node lists for discovery tests (built with the real nodelist module and a real registry key)."""

from __future__ import annotations

import hashlib

from node.protocol.identity import Identity
from node.protocol.nodelist import NodeEntry, build_node_list

NOW = 1_760_000_000


def fake_id(i: int) -> bytes:
    return hashlib.sha256(b"node-%d" % i).digest()


def entries(count: int, *, ws: str = "wss://sig{i}.volunteer{i}.example.org/v1/client") -> list[NodeEntry]:
    return [
        NodeEntry(
            id=fake_id(i),
            ws=ws.format(i=i),
            swim=f"198.51.{i // 250}.{i % 250}:7401",
            peer=f"198.51.{i // 250}.{i % 250}:7402",
            seen=NOW - i,
        )
        for i in range(count)
    ]


def signed_list(
    registry: Identity, nodes: list[NodeEntry], *, issued: int = NOW, expires: int = NOW + 3600
) -> dict[str, bytes]:
    return build_node_list(registry, nodes, issued=issued, expires=expires)
