"""Helpers for the registry tests: a registry data dir, an in-process registry on a real socket, documents."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import attrs
import httpx2
import msgpack
import trio

from bootstrap.app import run_bootstrap
from bootstrap.config import BootstrapConfig
from bootstrap.registry import Policy
from bootstrap.service import load_identity
from bootstrap.store import Store
from node.protocol.identity import Identity, encode_document
from node.protocol.nodelist import build_leave, build_registration

MSGPACK = "application/msgpack"
LAST_REGISTRY_KEY = [bytes(32)]  # registrations name their registry (docs/bootstrap.md)


def init_registry(data_dir: Path) -> Identity:
    """What `homing bootstrap init` does: a key and an empty database."""
    data_dir.mkdir(parents=True, exist_ok=True)
    identity, _ = load_identity(BootstrapConfig(data_dir=data_dir), create=True)
    Store.open(data_dir, create=True).close()
    LAST_REGISTRY_KEY[0] = identity.id
    return identity


def make_config(data_dir: Path, **kw: Any) -> BootstrapConfig:
    policy = kw.pop("policy", Policy(approval="auto"))
    return BootstrapConfig(data_dir=data_dir, listen="127.0.0.1:0", policy=policy, **kw)


@asynccontextmanager
async def running_registry(
    config: BootstrapConfig, *, wall_clock: Callable[[], float] = time.time
) -> AsyncIterator[str]:
    """Run the registry in this trio run on a free loopback port; yields its base URL."""
    async with trio.open_nursery() as nursery:
        port = await nursery.start(
            lambda task_status: run_bootstrap(config, wall_clock=wall_clock, task_status=task_status)
        )
        try:
            yield f"http://127.0.0.1:{port}"
        finally:
            nursery.cancel_scope.cancel()


def registration(
    node: Identity, *, ts: int | None = None, ttl: int = 180, port: int = 7400, reg: bytes | None = None
) -> bytes:
    """A registration for the registry whose key is `reg` (default: the one `init_registry` made last)."""
    doc = build_registration(
        node,
        ws=f"ws://127.0.0.1:{port}/v1/client",
        swim=f"127.0.0.1:{port + 1}",
        peer=f"127.0.0.1:{port + 2}",
        ts=int(time.time()) if ts is None else ts,
        ttl=ttl,
        reg=reg if reg is not None else LAST_REGISTRY_KEY[0],
    )
    return encode_document(doc)


def leave(node: Identity, *, ts: int) -> bytes:
    return encode_document(build_leave(node, ts=ts))


async def post(client: httpx2.AsyncClient, base: str, body: bytes, **headers: str) -> tuple[int, dict[str, Any]]:
    resp = await client.post(f"{base}/v1/nodes", content=body, headers={"Content-Type": MSGPACK, **headers})
    return resp.status_code, decode(resp)


def decode(resp: httpx2.Response) -> dict[str, Any]:
    if resp.headers.get("content-type", "").startswith("application/json"):
        out: dict[str, Any] = json.loads(resp.content)
        return out
    obj = msgpack.unpackb(resp.content, raw=False) if resp.content else {}
    assert isinstance(obj, dict)
    return obj


def evolve_http(config: BootstrapConfig, **kw: Any) -> BootstrapConfig:
    return attrs.evolve(config, http=attrs.evolve(config.http, **kw))
