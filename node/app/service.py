"""The composition root: `run_node` opens the nursery and starts every driver of one node.

Order at start: bind the SWIM and peer sockets, start the peer links, the relay and the client server (so the
client port, and with it our public URL and signed card, is known), build the SWIM core with the peer port
and public URL in its member meta, start SWIM, the peer listener (which also hands out our card) and the
operations endpoint, write `ports.json`, then join seeds and register with registries.

Order at graceful stop (docs/operations.md): stop accepting clients and send `goaway` (with other nodes' cards, fetched
from them over the peer link),
hand leases and mailboxes to their next owners, broadcast the SWIM leave, deregister from registries, return;
all within `[node] shutdown_s`.
"""

from __future__ import annotations

import functools
import os
import random
import socket
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs
import trio

from node.app.config import NodeConfig, setting_name
from node.app.listrefresh import JOIN_RETRY_MAX_S, JOIN_RETRY_MIN_S, KnockRefresh, RegistryEtags, next_wake_s
from node.app.log import Logger, get_logger
from node.app.metrics import NodeMetrics
from node.app.ops import OPS_LIMITS, ops_router
from node.app.turn import TurnService
from node.app.vapid import load_or_create_vapid_scalar
from node.client.files import write_atomic, write_json_atomic
from node.net.clients import ClientServer
from node.net.httpserver import serve_http
from node.net.listen import UDP_RECEIVE_BUFFER, bind_udp, open_listeners, receive_buffer, udp_drops
from node.net.peerconn import fetch_card, serve_peers
from node.net.peers import PeerLinks
from node.net.push import PushSender
from node.net.relay import RelayDriver
from node.net.sockio import Flusher
from node.net.udp import SwimDriver
from node.protocol.admission import Admission
from node.protocol.errors import ConfigError
from node.protocol.identity import Identity, id_text, parse_id, short_id
from node.protocol.nodelist import make_card
from node.protocol.peerlink import PeerLimits
from node.protocol.refusals import Layer, Refusal
from node.protocol.relay.core import RelayCore
from node.protocol.settings import format_hostport, parse_hostport
from node.protocol.swim.members import LIVE
from node.protocol.swim.protocol import MemberChanged, Swim
from node.protocol.swim.records import RecordVerifier
from node.protocol.wire.seed import Meta, encode_meta, member_listed
from node.protocol.wire.swim import INCARNATION_MAX

if TYPE_CHECKING:
    from node.app.registration import RegistrationStatus
    from node.app.registry import TsClock  # imports httpx2: only nodes with --bootstrap load it (issue #17)
    from node.client.discovery.model import SignedList

# SWIM/driver vocabulary -> the metric label tables of node/app/metrics.py
PROBE_LABELS = {"ok": "ack", "indirect_ok": "indirect_ack", "failed": "failed"}


EPOCH_FILE = "swim-epoch"
EPOCH_MAX = INCARNATION_MAX // 2  # what `Swim` takes as a boot incarnation: room for refutations above it


def next_epoch_ms(data_dir: Path, log: Logger) -> int:
    """A boot epoch that never goes back, even if the wall clock does: the SWIM sealing epoch (peers refuse older
    epochs) and the first SWIM incarnation (records of an older boot, or replays of them, are refused).

    A file that does not hold a number homing writes (damaged, or edited) starts from the wall clock, as a missing
    one does, with a warning. A number too large to start from (no incarnation would be left above it) is a
    ConfigError naming the file: before, it ended the start in a traceback (`boot incarnation out of range`)."""
    path = data_dir / EPOCH_FILE
    try:
        with path.open("rb") as f:
            text = f.read(64).decode("ascii", "replace").strip()  # homing writes at most 17 digits and a newline
    except FileNotFoundError:
        text = "0"
    last = int(text) if text.isascii() and text.isdigit() else -1
    if last >= EPOCH_MAX:  # the next epoch, last + 1, must still be one `Swim` takes
        raise ConfigError(
            str(path),
            f"holds {text[:40]!r}: no boot epoch is left after it (the largest is {EPOCH_MAX}), and homing does not "
            "write such a number: delete the file and start again (the node then starts from the wall clock, "
            'docs/swim.md "Boot epochs and replays")',
        )
    if last < 0:
        log.warning("swim_epoch_damaged", path=str(path), content=text[:40], using="wall clock")
        last = 0
    epoch = max(int(time.time() * 1000), last + 1)
    write_atomic(path, f"{epoch}\n".encode())  # fsync'd: an epoch that went back after a crash would be refused
    return epoch


class _ClientMetrics:
    """Adapts the client server's metric hooks to NodeMetrics."""

    def __init__(self, metrics: NodeMetrics) -> None:
        self.metrics = metrics

    def clients_connected(self, count: int) -> None:
        self.metrics.clients_connected.set(count)

    def client_refused(self, reason: Refusal) -> None:
        self.metrics.packet_refused(Layer.CLIENT, reason)


@attrs.define
class NodeHandle:
    """What a running node exposes to its caller (the CLI, tests, the demo)."""

    identity: Identity
    config: NodeConfig
    ports: dict[str, int]
    swim: Swim
    driver: SwimDriver
    udp: socket.socket  # the SWIM socket (its kernel drop count is a metric)
    links: PeerLinks
    relay: RelayDriver
    clients: ClientServer
    pusher: PushSender | None  # push wake-up; None when [push] enabled = false
    admission: Admission
    metrics: NodeMetrics
    card: str  # our own referral URI (docs/discovery.md)
    log: Logger
    turn: TurnService
    serving: bool = True
    shutdown_requested: trio.Event = attrs.field(factory=trio.Event)
    _registry_ts: TsClock | None = None  # made on first use (`registry_ts`)
    knock: KnockRefresh = attrs.field(factory=KnockRefresh)  # unadmitted ids knocking -> re-read the registries
    registrations: RegistrationStatus | None = None  # set when [federation] bootstrap names registries

    @property
    def registry_ts(self) -> TsClock:
        """The `ts` clock of our registry documents (strictly increasing across register and deregister)."""
        if self._registry_ts is None:
            from node.app.registry import TsClock

            self._registry_ts = TsClock(time.time)
        return self._registry_ts

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
        self.metrics.set_peer_time(self.links.handled_s, self.links.throttled_s)
        self.relay.refresh_metrics()
        self.metrics.push_subscriptions.set(len(self.relay.core.push.held))
        drops = udp_drops(self.udp)
        if drops is not None:
            self.metrics.set_swim_drops(drops)

    def members_document(self) -> dict[str, Any]:
        """GET /v1/members (docs/operations.md), plus this node's client count for `homing node status`."""
        return {
            "self": id_text(self.identity.id),
            "members": self.members(),
            "clients": len(self.relay.sessions),
            "turn": self.turn.status(),
            "registrations": self.registrations.document() if self.registrations else [],
        }

    def members(self) -> list[dict[str, Any]]:
        return [
            {
                "id": id_text(m.id),
                "address": format_hostport(m.addr[0], m.addr[1]),
                "state": m.state.value,
                "incarnation": m.incarnation,
            }
            for m in sorted(self.swim.members(), key=lambda m: m.id)
        ]

    def live_ids(self) -> list[bytes]:
        return [m.id for m in self.swim.members() if m.state in LIVE]

    def on_registry_list(self) -> bool:
        """Whether our own id is on a trusted registry list, as of the registry follower's last read."""
        return self.identity.id in self.admission.registry_listed

    async def referrals(self, timeout_s: float = 1.0) -> list[str]:
        """Signed cards of up to `[node] goaway_referrals_max` other alive nodes (for `goaway`), over the peer link.
        Bridges (member meta `listed` false) are never named: a goaway reaches strangers too (docs/discovery.md)."""
        others = [
            m.id for m in self.swim.members()
            if m.id != self.identity.id and m.state.value == "alive" and member_listed(m.meta)
        ]  # fmt: skip
        cards: list[str] = []

        async def one(member: bytes) -> None:
            addr = self.driver.peer_address(member)
            if addr is not None:
                card = await fetch_card(addr, self.identity, member, self.admission.admits, timeout_s=timeout_s)
                if card:
                    cards.append(card)

        async with trio.open_nursery() as nursery:
            for member in others[: self.config.node.goaway_referrals_max]:
                nursery.start_soon(one, member)
        return cards


async def run_node(
    config: NodeConfig,
    identity: Identity,
    *,
    task_status: trio.TaskStatus[NodeHandle] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run one node until `handle.request_shutdown()`; then leave gracefully and return."""
    data_dir = config.data_path
    data_dir.mkdir(parents=True, exist_ok=True)
    swim_host, swim_port = parse_hostport(config.node.swim, key="node.swim")
    peer_host, peer_port = parse_hostport(config.node.peer, key="node.peer")
    ws_host, ws_port = parse_hostport(config.node.ws, key="node.ws")
    udp = bind_udp(swim_host, swim_port, key=setting_name("node.swim"), rcvbuf=UDP_RECEIVE_BUFFER)
    peer_listeners = await open_listeners(peer_host, peer_port, key=setting_name("node.peer"))
    ws_listeners = await open_listeners(ws_host, ws_port, key=setting_name("node.ws"), backlog=4096)
    ports = {
        "ws": ws_listeners[0].socket.getsockname()[1],
        "swim": udp.getsockname()[1],
        "peer": peer_listeners[0].socket.getsockname()[1],
        "metrics": 0,
    }
    async with trio.open_nursery() as nursery:
        handle = await _start(nursery, config, identity, udp, Listeners(peer=peer_listeners, ws=ws_listeners), ports)
        task_status.started(handle)
        await handle.shutdown_requested.wait()
        with trio.move_on_after(config.node.shutdown_s) as budget:
            await _leave(handle)
        if budget.cancelled_caught:
            handle.log.warning("left", clean=False, reason="shutdown_s ran out before every step finished")
        nursery.cancel_scope.cancel()


async def _start(
    nursery: trio.Nursery,
    config: NodeConfig,
    identity: Identity,
    udp: socket.socket,
    listeners: Listeners,
    ports: dict[str, int],
) -> NodeHandle:
    """Wire the node's parts, each given the ports it reports to (no forward references: every socket is bound
    before this runs, so SWIM's member meta knows every port, and peer links learn addresses from SWIM)."""
    metrics = NodeMetrics()
    log = get_logger("node", node=short_id(identity.id))
    rng = random.Random(int.from_bytes(os.urandom(8), "big"))
    admission = Admission(
        self_id=identity.id, open_=config.federation.open, allow=[parse_id(a) for a in config.federation.allow]
    )
    knock = KnockRefresh()
    refused = _refusal_hook(metrics, knock)
    driver = _start_swim(config, identity, udp, admission, ports, rng, log)
    # one flusher writes, once per scheduler batch, what clients and peer links queued in it (node/net/sockio.py)
    flusher = Flusher()
    await nursery.start(flusher.run)
    peer_limits = PeerLimits(**attrs.asdict(config.peers), queue_max=config.relay.peer_queue_max)
    links = PeerLinks(
        identity,
        admit=admission.admits,
        address_of=driver.peer_address,
        on_refused=functools.partial(refused, Layer.PEER),
        limits=peer_limits,
        flusher=flusher,
    )
    relay = RelayDriver(
        core=RelayCore(
            node_id=identity.id,
            config=config.relay,
            rng=rng,
            now=trio.current_time(),
            sign=identity.sign,
            push=config.push,
        ),
        links=links,
        metrics=metrics,
    )
    pusher = _start_push(config, relay, metrics)
    if pusher is not None:
        await nursery.start(pusher.run)
    await nursery.start(links.run, relay)
    await nursery.start(relay.run)

    turn = TurnService(config.turn, now=trio.current_time, log=log)
    card_url = config.advertised_url(ports["ws"])

    def card() -> str:
        # signed afresh when asked (docs/discovery.md: cards expire); a plain ws:// URL is the operator's choice
        return make_card(identity, ws=card_url, ts=int(time.time()), allow_plain_ws=True)

    clients = ClientServer(
        identity=identity,
        config=config.clients,
        relay=relay,
        metrics=_ClientMetrics(metrics),
        flusher=flusher,
        ice=turn,
        card=card,
    )
    await nursery.start(functools.partial(clients.serve, listeners=listeners.ws))

    handle = NodeHandle(
        identity=identity,
        config=config,
        ports=ports,
        swim=driver.core,
        driver=driver,
        udp=udp,
        links=links,
        relay=relay,
        clients=clients,
        pusher=pusher,
        admission=admission,
        metrics=metrics,
        card=card(),
        log=log,
        knock=knock,
        turn=turn,
    )
    _hook_metrics_and_events(handle)
    await nursery.start(driver.run)
    nursery.start_soon(
        functools.partial(
            serve_peers,
            listeners.peer,
            identity=identity,
            admit=admission.admits,
            on_link=links.accept,
            on_sync=driver.on_sync,
            card=card,
            limits=peer_limits,
            on_refused=functools.partial(refused, Layer.PEER),
            member_host=driver.member_host,
        )
    )
    router = ops_router(
        metrics=metrics, members=handle.members_document, healthy=handle.healthy, refresh=handle.refresh_gauges,
        per_address=clients.connections_per_address,
    )  # fmt: skip
    metrics_host, metrics_port = parse_hostport(config.node.metrics, key="node.metrics")
    ports["metrics"] = await nursery.start(
        functools.partial(
            serve_http,
            router,
            metrics_host,
            metrics_port,
            limits=OPS_LIMITS,
            on_refused=functools.partial(metrics.packet_refused, Layer.HTTP),
            key=setting_name("node.metrics"),
        )
    )
    write_json_atomic(config.data_path / "ports.json", ports)
    if (granted := receive_buffer(udp)) < UDP_RECEIVE_BUFFER:
        log.warning(
            "swim_receive_buffer_small",
            bytes=granted,
            wanted=UDP_RECEIVE_BUFFER,
            fix=f"sysctl -w net.core.rmem_max={UDP_RECEIVE_BUFFER} (docs/operations.md, 7c)",
        )
    log.info("started", **dict(ports), url=config.advertised_url(ports["ws"]), admission=admission.describe())
    _start_federation(nursery, handle)
    return handle


def _refusal_hook(metrics: NodeMetrics, knock: KnockRefresh) -> Callable[[Layer, Refusal], None]:
    """Count every refusal; an unadmitted id may be a node the registry listed since our last read: knock."""

    def refused(layer: Layer, reason: Refusal) -> None:
        metrics.packet_refused(layer, reason)
        if reason is Refusal.UNADMITTED:
            knock.knock()

    return refused


def _start_push(config: NodeConfig, relay: RelayDriver, metrics: NodeMetrics) -> PushSender | None:
    """The push sender with the node's VAPID key (data dir `vapid.key`, 0600), docs/operations.md "Push wake-up"."""
    if not config.push.enabled:
        return None
    pusher = PushSender(
        config=config.push,
        vapid_scalar=load_or_create_vapid_scalar(config.data_path / "vapid.key"),
        on_result=metrics.push_result,
        on_gone=relay.push_gone,
    )
    relay.pusher = pusher
    return pusher


@attrs.frozen
class Listeners:
    """The TCP listeners bound before anything is advertised (port 0 resolved)."""

    peer: list[trio.SocketListener]
    ws: list[trio.SocketListener]


def _start_swim(
    config: NodeConfig,
    identity: Identity,
    udp: socket.socket,
    admission: Admission,
    ports: dict[str, int],
    rng: random.Random,
    log: Logger,
) -> SwimDriver:
    swim_host, _ = parse_hostport(config.node.swim)
    advertise = config.node.advertise_host
    meta = encode_meta(Meta(
        peer_port=ports["peer"], host=advertise, url=config.advertised_url(ports["ws"]), listed=config.node.listed
    ))  # fmt: skip
    epoch_ms = next_epoch_ms(config.data_path, log)
    core = Swim(
        self_id=identity.id,
        addr=(advertise or swim_host, ports["swim"]),
        meta=meta,
        config=config.swim,
        rng=rng,
        now=trio.current_time(),
        admit=admission.admits,
        sign=identity.sign,
        verifier=RecordVerifier(),
        incarnation=epoch_ms,  # the boot epoch: this boot's records supersede every earlier one's (docs/swim.md)
    )
    return SwimDriver(identity=identity, core=core, sock=udp, epoch_ms=epoch_ms, admit=admission.admits)


def _hook_metrics_and_events(handle: NodeHandle) -> None:
    metrics, log = handle.metrics, handle.log

    def on_change(ch: MemberChanged) -> None:
        state = ch.member.state.value
        metrics.member_changed(state)
        previous = ch.previous.value if ch.previous else "none"
        log.info("member_" + state, member=ch.member.id, inc=ch.member.incarnation, previous=previous)
        if state in ("dead", "left"):
            handle.links.drop_peer(ch.member.id)
        handle.relay.members_changed(handle.live_ids())

    handle.driver.on_probe = lambda result: metrics.swim_probe(PROBE_LABELS.get(result, result))
    handle.driver.on_refused = _refusal_hook(metrics, handle.knock)
    handle.driver.on_change = on_change
    handle.relay.members_changed(handle.live_ids())


def _start_federation(nursery: trio.Nursery, handle: NodeHandle) -> None:
    config = handle.config
    if config.federation.join:
        seeds = [parse_hostport(s, key="federation.join") for s in config.federation.join]
        nursery.start_soon(_join_forever, handle.driver, seeds, handle)
    fed = config.federation
    if fed.bootstrap or (fed.doh and fed.dns_names):
        nursery.start_soon(_follow_registries, handle)
    if not fed.bootstrap:
        return
    from node.app.keyrotation import NODE_ROTATIONS_NAME, own_rotation
    from node.app.registration import RegistrationStatus
    from node.app.registry import register_forever  # lazy: httpx2

    hb = config.federation.heartbeat_s
    handle.registrations = RegistrationStatus(fed.bootstrap, handle.metrics.registry)
    swim_host, _ = parse_hostport(config.node.swim)
    peer_host, _ = parse_hostport(config.node.peer)
    advertise = config.node.advertise_host
    nursery.start_soon(
        functools.partial(
            register_forever,
            handle.identity,
            config.federation.bootstrap,
            ws=config.advertised_url(handle.ports["ws"]),
            swim=format_hostport(advertise or swim_host, handle.ports["swim"]),
            peer=format_hostport(advertise or peer_host, handle.ports["peer"]),
            ttl_s=int(3 * hb),
            heartbeat_s=hb,
            ts_clock=handle.registry_ts,
            trust=frozenset(parse_id(k) for k in config.federation.trust),
            listed=config.node.listed,
            on_result=handle.registrations.on_result,
            rot=own_rotation(config.data_path / NODE_ROTATIONS_NAME, handle.identity.id, handle.log),
            peers=lambda: sum(1 for i in handle.live_ids() if i != handle.identity.id),
            listed_now=handle.on_registry_list,
        )
    )


async def _join_forever(driver: SwimDriver, seeds: list[tuple[str, int]], handle: NodeHandle) -> None:
    """Resolve seeds until at least one answers, with capped backoff (seeds may start after us)."""
    backoff = 0.2
    while not handle.shutdown_requested.is_set():
        found = await driver.join(seeds)
        if found:
            return
        await trio.sleep(backoff)
        backoff = min(backoff * 2, 10.0)


async def _follow_registries(handle: NodeHandle) -> None:
    """Find the signed node lists through the discovery chain (registries, and DoH TXT records when configured, so
    a blocked registry does not keep a node out): admit the nodes listed under a `--trust` key, and take seeds from
    them while we have joined no one (no `--join`). A full read every heartbeat, sooner while failing; between
    them conditional re-reads and join retries by the rules of node/app/listrefresh.py."""
    from node.client.discovery import DiscoveryConfig, discover  # lazy: httpx2 and dnspython (issue #17)

    config, log = handle.config, handle.log
    trusted = frozenset(parse_id(k) for k in config.federation.trust)
    if not trusted:
        log.warning("registry_lists_unused", reason="no --trust key: registry lists cannot be verified")
        return
    chain = DiscoveryConfig(
        trust=trusted,
        registries=tuple(config.federation.bootstrap),
        doh=tuple(config.federation.doh),
        names=tuple(config.federation.dns_names),
        race=False,
        deadline_s=5.0,  # a black-holed source must not delay the sources that answer
    )
    backoff = 1.0
    follower = _Follower(handle, trusted, RegistryEtags(timeout_s=5.0), started=trio.current_time())
    try:
        while True:
            result = await discover(chain)
            for error in result.errors:
                log.warning("seed_source_failed", error=error[:200])
            _offer_lists(handle, result.lists, "heartbeat")
            follower.learn(result.lists)
            if not result.lists:  # no source answered with a list: read again sooner (a knock, too, ends the wait)
                await handle.knock.wait(backoff)
                backoff = min(backoff * 2, 30.0)
                continue
            backoff = 1.0
            await follower.until_next_full_read(min(config.federation.heartbeat_s, 60.0))
    finally:
        await follower.etags.aclose()


def _offer_lists(handle: NodeHandle, lists: Sequence[SignedList], why: str) -> bool:
    """Offer verified lists to admission (newest list per registry key only, across refreshes too: docs/discovery.md
    "Newest list per registry"); True when the admitted set changed (then SWIM is told at once). A list admits its
    `nodes` and its bridge ids (`members`, docs/discovery.md "Bridges"); only `nodes` are ever join seeds."""
    for lst in lists:
        ids = [*(c.id for c in lst.candidates), *lst.members]
        if not handle.admission.offer_list(lst.signer, issued=lst.issued, expires=lst.expires, ids=ids):
            handle.log.info("registry_list_older_ignored", source=lst.where[:200], issued=lst.issued)
    if not handle.admission.refresh(time.time()):
        return False
    handle.swim.set_admit(handle.admission.admits)
    handle.driver.poke()
    handle.log.info("registry_list_applied", nodes=len(handle.admission.registry_listed), why=why)
    return True


@attrs.define
class _Follower:
    """The registry follower between two full reads (rules 1-4 of node/app/listrefresh.py): conditional re-reads
    on a knock and while we are pending, and join attempts while we are alone."""

    handle: NodeHandle
    trusted: frozenset[bytes]
    etags: RegistryEtags
    started: float  # trio time the node started: rule 3 polls for an hour from it
    held: dict[bytes, SignedList] = attrs.field(factory=dict)  # signer -> the newest list of it read, unexpired
    seeds: dict[bytes, str] = attrs.field(factory=dict)  # listed id -> SWIM address, from the lists held
    join_retry_s: float = JOIN_RETRY_MIN_S

    def learn(self, lists: Sequence[SignedList]) -> None:
        """Hold the newest list of each signer (an older one is ignored, an expired one dropped) and tell the peer
        port the hosts the held lists name: a node the registry removed or banned is charged to the strangers'
        budget again once a newer list without it is read (a conditional re-read answered 304 adds no list and
        keeps what is held)."""
        for lst in lists:
            held = self.held.get(lst.signer)
            if held is None or lst.issued >= held.issued:
                self.held[lst.signer] = lst
        now = time.time()
        self.held = {k: v for k, v in self.held.items() if now <= v.expires}
        self.seeds = {c.id: c.swim for lst in self.held.values() for c in lst.candidates if c.verified and c.swim}
        own = self.handle.identity.id
        listed = (_seed_address(a) for i, a in self.seeds.items() if i != own)
        self.handle.driver.set_listed_hosts(t[0] for t in listed if t is not None)

    def _admitted_seeds(self) -> list[str]:
        """The SWIM addresses of the listed nodes other than us that we admit now."""
        handle = self.handle
        return [a for i, a in self.seeds.items() if i != handle.identity.id and handle.admission.admits(i)]

    def _alone(self) -> bool:
        """Joined no one, no `--join` (that has its own retries), and the lists name a node we admit."""
        handle = self.handle
        if handle.config.federation.join or any(m.id != handle.identity.id for m in handle.swim.members()):
            return False
        return bool(self._admitted_seeds())

    async def _join(self) -> None:
        targets = [_seed_address(a) for a in self._admitted_seeds()]
        await self.handle.driver.join([t for t in targets if t is not None])

    async def until_next_full_read(self, heartbeat_s: float) -> None:
        handle = self.handle
        registries = tuple(handle.config.federation.bootstrap)
        heartbeat_at = trio.current_time() + heartbeat_s
        join_at = trio.current_time()  # rule 4: at once after a full read
        while (now := trio.current_time()) < heartbeat_at:
            alone = self._alone()
            if not alone:
                self.join_retry_s = JOIN_RETRY_MIN_S
            elif now >= join_at:
                await self._join()
                join_at = trio.current_time() + self.join_retry_s
                self.join_retry_s = min(2 * self.join_retry_s, JOIN_RETRY_MAX_S)
                continue
            pending = bool(registries) and not handle.on_registry_list()
            wake = next_wake_s(now, heartbeat_at=heartbeat_at, pending_since=self.started if pending else None,
                               join_at=join_at if alone else None)  # fmt: skip
            knocked = await handle.knock.wait(wake)
            if not registries:
                if knocked:
                    return  # rule 2 with no registry to re-read alone: a full read (DoH)
                continue
            if not (knocked or pending):
                continue  # a join attempt is due (rule 4), or the heartbeat (rule 1)
            lists = await self.etags.fetch_lists(registries, self.trusted)
            self.learn(lists)
            if _offer_lists(handle, lists, "knock" if knocked else "pending"):
                join_at = trio.current_time()  # rule 4: what we admit changed, try now, then from 1 s again
                self.join_retry_s = JOIN_RETRY_MIN_S


def _seed_address(text: str) -> tuple[str, int] | None:
    try:
        return parse_hostport(text)
    except ConfigError:
        return None


async def _leave(handle: NodeHandle) -> None:
    """Graceful leave (docs/operations.md): goaway, hand-off, SWIM leave, deregistration; each step logged."""
    log = handle.log
    handle.serving = False
    start = trio.current_time()
    log.info("leaving", clients=len(handle.relay.sessions))
    handle.relay.begin_leave()  # its clients' re-homing elsewhere must not cost it a lease check each
    # referrals only for clients to go to: without clients, fetching cards only delays the SWIM leave (#17)
    referrals = await handle.referrals() if handle.clients.sessions else []
    with trio.move_on_after(2.0) as goaway_scope:
        await handle.clients.shutdown(referrals)
    log.info("goaway_sent", referrals=len(referrals), complete=not goaway_scope.cancelled_caught)
    handle.relay.handoff_all()
    with trio.move_on_after(1.5) as handoff_scope:
        while handle.links.pending_frames():
            await trio.sleep(0.02)
    log.info("handoff_done", complete=not handoff_scope.cancelled_caught)
    handle.swim.leave(trio.current_time())
    handle.driver.poke()
    log.info("swim_leave_sent")
    async with trio.open_nursery() as nursery:
        if handle.config.federation.bootstrap:
            nursery.start_soon(_deregister_logged, handle)
        # memberlist waits for the leave broadcast to go out; a few gossip rounds let the others hear it
        await trio.sleep(max(3 * handle.config.swim.gossip_interval_s, 2 * handle.config.swim.probe_interval_s))
    log.info("left", clean=True, seconds=round(trio.current_time() - start, 3))


async def _deregister_logged(handle: NodeHandle) -> None:
    from node.app.registry import deregister  # lazy: httpx2

    results = await deregister(handle.identity, handle.config.federation.bootstrap, 3.0, ts_clock=handle.registry_ts)
    for result in results:
        handle.log.info("deregistered", registry=result.url, http=result.http_status, reason=result.reason or "")
