"""The composition root: `run_node` opens the nursery and starts every driver of one node.

Order at start: bind every socket (so port 0 resolves), write `ports.json`, start SWIM, the peer listener and
links, the client server and the operations endpoint, then join seeds and register with registries.
Order at graceful stop (CONTRACT §5): stop accepting clients and send `goaway`, hand leases and mailboxes to their
next owners, broadcast the SWIM leave, deregister from registries, exit; all within `shutdown_budget_s`.
"""

from __future__ import annotations

import functools
import json
import os
import random
import socket
import time
from pathlib import Path
from typing import Any

import attrs
import trio

from node.admission import Admission
from node.config import NodeConfig, format_hostport, parse_hostport
from node.errors import ConfigError, RemoteProtocolError, TransportError
from node.httpserver import serve_http
from node.identity import Identity, id_text, parse_id, short_id
from node.log import get_logger
from node.metrics import NodeMetrics
from node.nodelist import NodeList
from node.ops import OPS_LIMITS, ops_router
from node.peers import PeerLimits, PeerLinks, serve_peers
from node.registry_client import TsClock, deregister, fetch_node_list, make_client, register_forever
from node.swim.protocol import MemberChanged, Swim
from node.udp import SwimDriver
from node.wire.seed import Meta, encode_meta

# SWIM/driver vocabulary -> the metric label tables of node/metrics.py
PROBE_LABELS = {"ok": "ack", "indirect_ok": "indirect_ack", "failed": "failed"}
REFUSED_LABELS = {
    "not_admitted": "unadmitted",
    "seed_not_admitted": "unadmitted",
    "push_pull_failed": "malformed",
    "timeout_or_broken": "malformed",
    "too_large": "oversized",
    "connections_max": "rate_limited",
}
SHUTDOWN_BUDGET_S = 8.0  # CONTRACT §5: exit within 10 s of SIGTERM; keep 2 s of margin


def write_json_atomic(path: Path, obj: Any, mode: int = 0o644) -> None:
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w") as f:
        json.dump(obj, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def next_epoch_ms(data_dir: Path) -> int:
    """A SWIM sealing epoch that never goes back, even if the wall clock does (peers refuse older epochs)."""
    path = data_dir / "swim-epoch"
    try:
        last = int(path.read_text().strip())
    except (FileNotFoundError, ValueError):
        last = 0
    epoch = max(int(time.time() * 1000), last + 1)
    path.write_text(f"{epoch}\n")
    return epoch


def bind_udp(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    sock.bind((host, port))
    return sock


@attrs.define
class NodeHandle:
    """What a running node exposes to its caller (the CLI, tests, the demo)."""

    identity: Identity
    config: NodeConfig
    ports: dict[str, int]
    swim: Swim
    driver: SwimDriver
    links: PeerLinks
    admission: Admission
    metrics: NodeMetrics
    serving: bool = True
    registry_ts: TsClock = attrs.field(factory=lambda: TsClock(time.time))
    shutdown_requested: trio.Event = attrs.field(factory=trio.Event)
    extras: dict[str, Any] = attrs.field(factory=dict)

    def request_shutdown(self) -> None:
        self.shutdown_requested.set()

    def healthy(self) -> bool:
        return self.serving and not self.shutdown_requested.is_set()

    def refresh_gauges(self) -> None:
        counts: dict[str, int] = {}
        for m in self.swim.members():
            counts[m.state.value] = counts.get(m.state.value, 0) + 1
        self.metrics.set_members(counts)
        self.metrics.peer_links.set(self.links.link_count)

    def members_document(self) -> dict[str, Any]:
        """GET /v1/members (CONTRACT §5), plus this node's client count for `homing node status`."""
        return {"self": id_text(self.identity.id), "members": self.members(), "clients": self.client_count()}

    def client_count(self) -> int:
        counter = self.extras.get("client_count")
        return int(counter()) if callable(counter) else 0

    def members(self) -> list[dict[str, Any]]:
        out = []
        for m in sorted(self.swim.members(), key=lambda m: m.id):
            out.append(
                {
                    "id": id_text(m.id),
                    "address": format_hostport(m.addr[0], m.addr[1]),
                    "state": m.state.value,
                    "incarnation": m.incarnation,
                }
            )
        return out


async def run_node(
    config: NodeConfig,
    identity: Identity,
    *,
    log: Any = None,
    task_status: trio.TaskStatus[NodeHandle] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run one node until `handle.request_shutdown()`; then leave gracefully and return."""
    data_dir = config.data_path
    data_dir.mkdir(parents=True, exist_ok=True)
    swim_host, swim_port = parse_hostport(config.node.swim, key="node.swim")
    peer_host, peer_port = parse_hostport(config.node.peer, key="node.peer")
    udp = bind_udp(swim_host, swim_port)
    swim_port = udp.getsockname()[1]
    admission = Admission(
        self_id=identity.id, open_=config.federation.open, allow=[parse_id(a) for a in config.federation.allow]
    )

    peer_listeners = await trio.open_tcp_listeners(peer_port, host=peer_host)
    peer_port = peer_listeners[0].socket.getsockname()[1]
    advertise = config.node.advertise_host
    meta = encode_meta(Meta(peer_port=peer_port, public_url=config.advertised_url, host=advertise))
    core = Swim(
        self_id=identity.id,
        addr=(advertise or swim_host, swim_port),
        meta=meta,
        config=config.swim,
        rng=random.Random(int.from_bytes(os.urandom(8), "big")),
        now=trio.current_time(),
        admit=admission.admits,
    )
    driver = SwimDriver(
        identity=identity, core=core, sock=udp, epoch_ms=next_epoch_ms(data_dir), admit=admission.admits
    )
    links = PeerLinks(
        identity,
        admit=admission.admits,
        address_of=driver.peer_address,
        on_message=lambda peer, msg: None,
        on_unreachable=lambda peer: None,
        limits=PeerLimits(queue_max=config.relay.peer_queue_max),
    )

    metrics = NodeMetrics()
    log = get_logger("node", node=short_id(identity.id))
    driver.on_probe = lambda result: metrics.swim_probe(PROBE_LABELS.get(result, result))

    def refused(layer: str, reason: str) -> None:
        metrics.packet_refused(layer, REFUSED_LABELS.get(reason, reason))

    driver.on_refused = refused
    metrics_host, metrics_port = parse_hostport(config.node.metrics, key="node.metrics")

    async with trio.open_nursery() as nursery:
        await nursery.start(links.run)
        await nursery.start(driver.run)
        nursery.start_soon(
            functools.partial(
                serve_peers,
                peer_listeners,
                identity=identity,
                admit=admission.admits,
                on_link=links.accept,
                on_sync=driver.on_sync,
                on_refused=functools.partial(refused, "peer"),
            )
        )
        ports = {"ws": 0, "swim": swim_port, "peer": peer_port, "metrics": 0}
        handle = NodeHandle(
            identity=identity,
            config=config,
            ports=ports,
            swim=core,
            driver=driver,
            links=links,
            admission=admission,
            metrics=metrics,
        )
        router = ops_router(
            metrics=metrics, members=handle.members_document, healthy=handle.healthy, refresh=handle.refresh_gauges
        )
        ports["metrics"] = await nursery.start(
            functools.partial(serve_http, router, metrics_host, metrics_port, limits=OPS_LIMITS)
        )

        def on_change(ch: MemberChanged) -> None:
            state = ch.member.state.value
            metrics.member_changed(state)
            log.info(
                "member_" + state,
                member=ch.member.id,
                inc=ch.member.incarnation,
                previous=ch.previous.value if ch.previous else "none",
            )
            if state in ("dead", "left"):
                links.drop_peer(ch.member.id)
            for listener in handle.extras.get("member_listeners", []):
                listener(ch)

        driver.on_change = on_change
        write_json_atomic(data_dir / "ports.json", ports)
        log.info("started", **{k: v for k, v in ports.items()}, admission=admission.describe())
        if config.federation.join:
            seeds = [parse_hostport(s, key="federation.join") for s in config.federation.join]
            nursery.start_soon(_join_forever, driver, seeds, handle)
        if config.federation.bootstrap:
            hb = config.federation.heartbeat_s
            nursery.start_soon(
                functools.partial(
                    register_forever,
                    identity,
                    config.federation.bootstrap,
                    ws=config.advertised_url,
                    swim=format_hostport(advertise or swim_host, swim_port),
                    peer=format_hostport(advertise or peer_host, peer_port),
                    ttl_s=int(3 * hb),
                    heartbeat_s=hb,
                    ts_clock=handle.registry_ts,
                )
            )
            nursery.start_soon(_follow_registries, handle, log)
        task_status.started(handle)
        await handle.shutdown_requested.wait()
        with trio.move_on_after(SHUTDOWN_BUDGET_S):
            await _leave(handle)
        nursery.cancel_scope.cancel()


async def _join_forever(driver: SwimDriver, seeds: list[tuple[str, int]], handle: NodeHandle) -> None:
    """Resolve seeds until at least one answers, with capped backoff (seeds may start after us)."""
    backoff = 0.2
    while not handle.shutdown_requested.is_set():
        found = await driver.join(seeds)
        if found:
            return
        await trio.sleep(backoff)
        backoff = min(backoff * 2, 10.0)


async def _follow_registries(handle: NodeHandle, log: Any) -> None:
    """Fetch the signed node lists of our registries: admit the nodes they list (with `--trust`), and take seeds
    from them while we have joined no one (no `--join`). Refreshes every heartbeat, sooner while failing."""
    config = handle.config
    trusted = frozenset(parse_id(k) for k in config.federation.trust)
    if not trusted:
        log.warning("registry_lists_unused", reason="no --trust key: registry lists cannot be verified")
        return
    backoff = 1.0
    async with make_client(timeout_s=10.0) as client:
        while True:
            lists: list[NodeList] = []
            with trio.move_on_after(15):
                async with trio.open_nursery() as nursery:
                    for url in config.federation.bootstrap:
                        nursery.start_soon(_fetch_into, lists, client, url, trusted, log)
            if lists:
                entries = [e for nl in lists for e in nl.nodes]
                if handle.admission.update_registry_list(e.id for e in entries):
                    handle.swim.set_admit(handle.admission.admits)
                    handle.driver.poke()
                    log.info("registry_list_applied", nodes=len(entries), lists=len(lists))
                alone = all(m.id == handle.identity.id for m in handle.swim.members())
                if alone and not config.federation.join:
                    seeds = [_seed_address(e.swim) for e in entries if e.id != handle.identity.id]
                    await handle.driver.join([s for s in seeds if s is not None])
                backoff = 1.0
                await trio.sleep(min(config.federation.heartbeat_s, 60.0))
            else:
                await trio.sleep(backoff)
                backoff = min(backoff * 2, 30.0)


async def _fetch_into(lists: list[NodeList], client: Any, url: str, trusted: frozenset[bytes], log: Any) -> None:
    try:
        lists.append(await fetch_node_list(client, url, trusted, now=time.time()))
    except (RemoteProtocolError, TransportError) as exc:
        log.warning("registry_list_failed", registry=url, error=str(exc)[:200])


def _seed_address(text: str) -> tuple[str, int] | None:
    try:
        return parse_hostport(text)
    except ConfigError:
        return None


async def _leave(handle: NodeHandle) -> None:
    """Graceful leave: announce LEFT, give the announcement time to be gossiped, deregister from registries."""
    now = trio.current_time()
    handle.swim.leave(now)
    handle.driver.poke()
    # memberlist waits for the leave broadcast to go out; a few gossip rounds are enough for the others to hear it
    async with trio.open_nursery() as nursery:
        if handle.config.federation.bootstrap:
            nursery.start_soon(
                functools.partial(
                    deregister, handle.identity, handle.config.federation.bootstrap, 3.0, ts_clock=handle.registry_ts
                )
            )
        await trio.sleep(max(3 * handle.config.swim.gossip_interval_s, 2 * handle.config.swim.probe_interval_s))
