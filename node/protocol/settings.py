"""Settings sections as pure data: every field with its unit, default, validator and reason (the comment above it).

The node application (`node.app.config`) composes them into `NodeConfig` and reads them from TOML and flags; the
cores and drivers take only the section they need, so nothing below the application imports file or OS code.
docs/configuration.md is generated from the comments here.
"""

from __future__ import annotations

from typing import Any

import attrs
from attrs import validators as v

from node.protocol.errors import ConfigError
from node.protocol.identity import parse_id

_pos: Any = v.gt(0)


def parse_hostport(text: str, *, key: str = "address") -> tuple[str, int]:
    """Parse `HOST:PORT` or `[V6]:PORT`; port 0 means pick a free one."""
    if not isinstance(text, str) or ":" not in text:
        raise ConfigError(key, f"expected HOST:PORT, got {text!r}")
    host, _, port_s = text.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not host or not port_s.isdigit() or not 0 <= int(port_s) <= 65535:
        raise ConfigError(key, f"expected HOST:PORT with a port 0..65535, got {text!r}")
    return host, int(port_s)


def format_hostport(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _hostport(inst: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    parse_hostport(value, key=attribute.name)


def _hostports(inst: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    for item in value:
        parse_hostport(item, key=attribute.name)


def _ids(inst: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    for item in value:
        try:
            parse_id(item)
        except ValueError as exc:
            raise ConfigError(attribute.name, f"{item!r} is not an id: {exc}") from exc


def _urls(inst: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    for item in value:
        if not (isinstance(item, str) and item.startswith(("http://", "https://"))):
            raise ConfigError(attribute.name, f"{item!r} is not an http(s) URL")


@attrs.frozen(kw_only=True, slots=True)
class NodeSection:
    # Where the node keeps its identity key and ports.json. Default: the user's data dir.
    data_dir: str = ""
    # Client WebSocket listen address (docs/operations.md: 7400/tcp). Port 0 picks a free port.
    ws: str = attrs.field(default="127.0.0.1:7400", validator=_hostport)
    # SWIM listen address (7401/udp).
    swim: str = attrs.field(default="127.0.0.1:7401", validator=_hostport)
    # Node-to-node peer link listen address (7402/tcp): push-pull sync and relay.
    peer: str = attrs.field(default="127.0.0.1:7402", validator=_hostport)
    # Metrics, /healthz and /v1/members (7403/tcp). Keep it on loopback or a private network.
    metrics: str = attrs.field(default="127.0.0.1:7403", validator=_hostport)
    # Host other nodes should use to reach our SWIM and peer ports, when listening on 0.0.0.0/::.
    advertise_host: str = ""
    # The client URL the node advertises (registry, cards, goaway), e.g. wss://sig.example.org/v1/client.
    # Default: derived from `ws` as ws://HOST:PORT/v1/client.
    public_url: str = ""
    # Log level: debug, info, warning, error.
    log_level: str = attrs.field(default="info", validator=v.in_(["debug", "info", "warning", "error"]))
    # Log lines as JSON instead of key=value.
    log_json: bool = False


@attrs.frozen(kw_only=True, slots=True)
class FederationSection:
    # SWIM seed addresses (HOST:PORT of other nodes' SWIM ports) to join at start.
    join: tuple[str, ...] = attrs.field(default=(), converter=tuple, validator=_hostports)
    # Registry URLs to register with and to find seeds from.
    bootstrap: tuple[str, ...] = attrs.field(default=(), converter=tuple, validator=_urls)
    # Registry public keys whose signed node lists this node accepts (admission, docs/protocol.md).
    trust: tuple[str, ...] = attrs.field(default=(), converter=tuple, validator=_ids)
    # DoH resolver URLs (https://…/dns-query) and TXT names where the signed node list is also published
    # (`homing bootstrap publish-dns`): seeds and admission keep working when every registry is blocked.
    doh: tuple[str, ...] = attrs.field(default=(), converter=tuple, validator=_urls)
    dns_names: tuple[str, ...] = attrs.field(default=(), converter=tuple)
    # Node ids always admitted as members, besides those in a trusted registry list.
    allow: tuple[str, ...] = attrs.field(default=(), converter=tuple, validator=_ids)
    # Admit any node that holds a key: only for private test clusters.
    open: bool = False
    # Seconds between registry heartbeats; the registration TTL is three times this.
    heartbeat_s: float = attrs.field(default=60.0, validator=_pos)


@attrs.frozen(kw_only=True, slots=True)
class RelaySection:
    # Seconds an envelope for an offline client waits in its mailbox (docs/client-protocol.md: `[relay] mailbox_ttl`).
    mailbox_ttl: float = attrs.field(default=60.0, validator=_pos)
    # Envelopes one offline client id may have waiting; more are rejected as rate_limited.
    mailbox_per_id_max: int = attrs.field(default=64, validator=v.ge(1))
    # Envelopes all mailboxes on this node may hold together (memory bound: at most ~64 KiB each).
    mailbox_total_max: int = attrs.field(default=20_000, validator=v.ge(1))
    # Rendezvous owners per client id (docs/protocol.md: R = 3).
    replicas: int = attrs.field(default=3, validator=v.ge(1))
    # Seconds a home lease lasts at the owners; the home node renews it at a third of this.
    lease_ttl_s: float = attrs.field(default=30.0, validator=_pos)
    # Seconds a sender's node caches "id is homed on node H" after asking an owner.
    lookup_cache_s: float = attrs.field(default=2.0, validator=v.ge(0))
    # Seconds to wait for a peer-link answer (lookup, forward) before trying the next owner.
    peer_timeout_s: float = attrs.field(default=2.0, validator=_pos)
    # Frames queued to one peer before the link counts as stuck and is reset.
    peer_queue_max: int = attrs.field(default=4096, validator=v.ge(1))
    # Envelopes this node relays at once while waiting for their terminal receipt; more are rate_limited.
    pending_max: int = attrs.field(default=50_000, validator=v.ge(1))
    # Routing attempts (lookup + forward) for one envelope before it goes to the mailbox instead.
    attempts_max: int = attrs.field(default=3, validator=v.ge(1))
    # Leases (client id, home node) this node holds as a rendezvous owner (about 100 B each).
    leases_max: int = attrs.field(default=200_000, validator=v.ge(1))
    # Lookup answers cached at a sender's node (the oldest is forgotten first).
    lookup_cache_max: int = attrs.field(default=10_000, validator=v.ge(1))
    # Recently delivered envelope ids a home node remembers to drop the replicas' repeats.
    seen_max: int = attrs.field(default=100_000, validator=v.ge(1))
    # Seconds a client's home claim (its signed hello, docs/protocol.md "Relay authority") stays valid. It bounds how
    # long a node a client has left can still claim to be its home; a connection is closed (1001) a lease period
    # before its claim ages out, so its client reconnects and signs a fresh one (a few reconnects a day).
    claim_age_max_s: float = attrs.field(default=43_200.0, validator=v.ge(600))
    # Seconds a claim's time may lie in the future: the clock difference tolerated between two nodes.
    claim_skew_s: float = attrs.field(default=300.0, validator=v.ge(0))
    # Verified claims remembered (about 200 B each), so renewals and envelopes are not re-verified.
    claim_cache_max: int = attrs.field(default=100_000, validator=v.ge(1))
    # Leases this node holds, as an owner, for clients of one home node: one hostile member fills at most this
    # share of `leases_max` (twice the default clients.connections_max, so an honest home always fits).
    leases_per_home_max: int = attrs.field(default=20_000, validator=v.ge(1))
    # MAILBOX_PUT / HANDOFF frames one peer may send per second (token bucket) and its burst.
    puts_per_peer_per_s: float = attrs.field(default=2_000.0, validator=_pos)
    puts_per_peer_burst: int = attrs.field(default=10_000, validator=v.ge(1))
    # Body bytes all mailboxes on this node may hold together (with mailbox_total_max: the mailbox memory bound).
    mailbox_bytes_max: int = attrs.field(default=64 * 1024 * 1024, validator=v.ge(64 * 1024))
    # Mailbox entries and body bytes from one origin node: one hostile member takes at most this share.
    mailbox_per_origin_max: int = attrs.field(default=5_000, validator=v.ge(1))
    mailbox_bytes_per_origin_max: int = attrs.field(default=16 * 1024 * 1024, validator=v.ge(64 * 1024))
    # Mailbox entries from one sender id (any origin): a key cannot fill every mailbox it can name.
    mailbox_per_sender_max: int = attrs.field(default=256, validator=v.ge(1))
    # Envelopes awaiting their receipt at this node per sender id and per source address (/32 IPv4, /64 IPv6):
    # fresh keys from one address share the address's budget.
    pending_per_id_max: int = attrs.field(default=1_000, validator=v.ge(1))
    pending_per_address_max: int = attrs.field(default=2_000, validator=v.ge(1))
    # Envelopes from one source address that this node keeps in the mailbox path at once, and their body bytes: what
    # one address can make the owners store (the rest is rejected as rate_limited).
    mailbox_per_address_max: int = attrs.field(default=500, validator=v.ge(1))
    mailbox_bytes_per_address_max: int = attrs.field(default=4 * 1024 * 1024, validator=v.ge(64 * 1024))


@attrs.frozen(kw_only=True, slots=True)
class ClientsSection:
    # Seconds a client has to finish the handshake (docs/client-protocol.md: 10 s).
    handshake_timeout_s: float = attrs.field(default=10.0, validator=_pos)
    # Client connections this node accepts in total (ulimit -n is the hard ceiling).
    connections_max: int = attrs.field(default=10_000, validator=v.ge(1))
    # Client connections from one IP address (a NAT may hide many users).
    connections_per_ip_max: int = attrs.field(default=256, validator=v.ge(1))
    # Envelopes per second one connection may send (token bucket), and its burst.
    rate_per_s: float = attrs.field(default=20.0, validator=_pos)
    burst: int = attrs.field(default=60, validator=v.ge(1))
    # call_ice gets its own bucket: a call setup sends dozens of candidates at once.
    ice_rate_per_s: float = attrs.field(default=50.0, validator=_pos)
    ice_burst: int = attrs.field(default=200, validator=v.ge(1))
    # Messages queued to one client; a client that stops reading is disconnected when it is full.
    send_queue_max: int = attrs.field(default=256, validator=v.ge(1))
    # Bytes queued to one client (a 64 KiB body is ~88 KiB as JSON): bounds a slow reader's memory.
    send_queue_bytes_max: int = attrs.field(default=1024 * 1024, validator=v.ge(256 * 1024))
    # Seconds of silence from a client after which the node sends a WebSocket ping (browsers answer it
    # automatically), so a live client never reaches idle_timeout_s; a dead one is found within it.
    ping_interval_s: float = attrs.field(default=30.0, validator=_pos)
    # Seconds without any frame from a client before it is closed (clients ping to stay alive).
    idle_timeout_s: float = attrs.field(default=120.0, validator=_pos)
    # Refused frames (bad, oversized, rate-limited) in a row before the connection is closed with 4429.
    abuse_strikes_max: int = attrs.field(default=20, validator=v.ge(1))


