"""Settings sections as pure data: every field with its unit, default, validator and reason (the comment above it).

The node application (`node.app.config`) composes them into `NodeConfig` and reads them from TOML and flags; the
cores and drivers take only the section they need, so nothing below the application imports file or OS code.
docs/configuration.md is generated from the comments here.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from typing import Any

import attrs
from attrs import validators as v

from node.protocol.errors import ConfigError
from node.protocol.identity import parse_id
from node.protocol.numerals import decimal
from node.protocol.turn import URLS_MAX, check_url
from node.protocol.wire import Limits

_pos: Any = v.gt(0)


def _tuple(items: Iterable[str]) -> tuple[str, ...]:
    """The converter of list settings. A Python function, not `tuple`: attrs reads a converter's signature, and
    for a builtin that means tokenizing its text signature (tokenize's regexes: ~10 ms at every start)."""
    return tuple(items)


def parse_hostport(text: str, *, key: str = "address") -> tuple[str, int]:
    """Parse `HOST:PORT` or `[V6]:PORT`; port 0 means pick a free one."""
    if not isinstance(text, str) or ":" not in text:
        raise ConfigError(key, f"expected HOST:PORT, got {text!r}")
    host, _, port_s = text.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    port = decimal(port_s)
    if not host or port is None or not 0 <= port <= 65535:
        raise ConfigError(key, f"expected HOST:PORT with a port 0..65535, got {text!r}")
    return host, port


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


def _networks(inst: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    for item in value:
        try:
            ipaddress.ip_network(item, strict=False)
        except (TypeError, ValueError) as exc:
            raise ConfigError(attribute.name, f"{item!r} is not an address or CIDR network") from exc


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
    # Seconds a graceful stop (SIGTERM/SIGINT) may take for goaway, hand-off, leave and deregistration before the
    # node exits anyway; docs/operations.md promises an exit within 10 s, so keep a margin below that.
    shutdown_s: float = attrs.field(default=8.0, validator=[_pos, v.le(9.5)])
    # Other nodes' signed cards a shutting-down node lists in `goaway`, so its clients can move on.
    goaway_referrals_max: int = attrs.field(default=5, validator=[v.ge(0), v.le(32)])
    # false: a bridge (docs/discovery.md, "Bridges"). The node registers as unlisted, so the registry keeps it
    # out of the public list, DNS and export-txt and hands its card out only a few at a time (GET /v1/bridges);
    # other nodes leave it out of `goaway`. It still federates. Give it its own `public_url` (another host name
    # or address than any listed node's), or the censor who blocks the listed addresses blocks it too.
    listed: bool = True


@attrs.frozen(kw_only=True, slots=True)
class FederationSection:
    # SWIM seed addresses (HOST:PORT of other nodes' SWIM ports) to join at start.
    join: tuple[str, ...] = attrs.field(default=(), converter=_tuple, validator=_hostports)
    # Registry URLs to register with and to find seeds from.
    bootstrap: tuple[str, ...] = attrs.field(default=(), converter=_tuple, validator=_urls)
    # Registry public keys whose signed node lists this node accepts (admission, docs/protocol.md).
    trust: tuple[str, ...] = attrs.field(default=(), converter=_tuple, validator=_ids)
    # DNS-over-HTTPS resolver URLs (https://…/dns-query) the node asks for the signed node list published in DNS
    # (`homing bootstrap publish-dns`): seeds and admission keep working when every registry is blocked.
    doh: tuple[str, ...] = attrs.field(default=(), converter=_tuple, validator=_urls)
    # TXT record names holding the signed node list (e.g. _homing.example.org), looked up through the `doh`
    # resolvers; empty: no DNS fallback.
    dns_names: tuple[str, ...] = attrs.field(default=(), converter=_tuple)
    # Node ids always admitted as members, besides those in a trusted registry list.
    allow: tuple[str, ...] = attrs.field(default=(), converter=_tuple, validator=_ids)
    # Admit any node that holds a key: only for private test clusters.
    open: bool = False
    # Seconds between registry heartbeats; the registration TTL is three times this.
    heartbeat_s: float = attrs.field(default=60.0, validator=_pos)


def _not_over(other: str) -> Any:
    """A validator: the value is at most the field `other` of the same section."""

    def check(inst: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
        if value > getattr(inst, other):
            raise ValueError(f"'{attribute.name}' ({value}) must not exceed {other} ({getattr(inst, other)})")

    return check


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
    # Frames waiting to be written to one peer (queued, or not yet taken by its socket); one more is refused, and
    # the relay counts that peer as down for `peer_timeout_s` and routes around it.
    peer_queue_max: int = attrs.field(default=4096, validator=v.ge(1))
    # Envelopes this node relays at once while waiting for their terminal receipt; more are rate_limited.
    pending_max: int = attrs.field(default=50_000, validator=v.ge(1))
    # Routing attempts (lookup + forward) for one envelope before it goes to the mailbox instead.
    attempts_max: int = attrs.field(default=3, validator=v.ge(1))
    # Leases (client id, home node) this node holds as a rendezvous owner (about 100 B each).
    leases_max: int = attrs.field(default=200_000, validator=v.ge(1))
    # Lookup answers cached at a sender's node (the oldest is forgotten first).
    lookup_cache_max: int = attrs.field(default=10_000, validator=v.ge(1))
    # Recently delivered envelope ids a home node remembers to drop the replicas' repeats (this many in each of two
    # sets: envelopes forwarded by their origin, and mailbox pushes, remembered while their signature is taken).
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
    # Signature checks (home claims, origin signatures) one peer's frames may make this node run per second, on
    # average: an Ed25519 check costs 60-160 us, so one member takes at most this share of the CPU; over it, its
    # claims are refused unchecked (rate_limited). Checks the cache answers and lease renewals are free; an honest
    # node sends about one per client that connects to it (a node accepts ~1,000 handshakes a second).
    claim_checks_per_peer_per_s: float = attrs.field(default=1_000.0, validator=_pos)
    # Signature checks one peer may cause back to back before `claim_checks_per_peer_per_s` applies: a member that
    # joins or leaves moves the leases of every client of a home at once (twice `leases_per_home_max`).
    claim_checks_per_peer_burst: int = attrs.field(default=40_000, validator=v.ge(1))
    # MAILBOX_PUT / HANDOFF frames one peer may send per second, on average (token bucket refill rate).
    puts_per_peer_per_s: float = attrs.field(default=2_000.0, validator=_pos)
    # MAILBOX_PUT / HANDOFF frames one peer may send back to back before `puts_per_peer_per_s` applies.
    puts_per_peer_burst: int = attrs.field(default=10_000, validator=v.ge(1))
    # Body bytes all mailboxes on this node may hold together (with mailbox_total_max: the mailbox memory bound).
    mailbox_bytes_max: int = attrs.field(default=64 * 1024 * 1024, validator=v.ge(64 * 1024))
    # Mailbox entries from one origin node: one hostile member takes at most this share of `mailbox_total_max`.
    mailbox_per_origin_max: int = attrs.field(default=5_000, validator=v.ge(1))
    # Mailbox body bytes from one origin node: one hostile member takes at most this share of `mailbox_bytes_max`.
    mailbox_bytes_per_origin_max: int = attrs.field(default=16 * 1024 * 1024, validator=v.ge(64 * 1024))
    # Mailbox entries from one sender id (any origin): a key cannot fill every mailbox it can name.
    mailbox_per_sender_max: int = attrs.field(default=256, validator=v.ge(1))
    # Envelopes from one sender id awaiting their receipt at this node at once.
    pending_per_id_max: int = attrs.field(default=1_000, validator=v.ge(1))
    # Envelopes from one source address (/32 IPv4, /64 IPv6) awaiting their receipt at this node at once: fresh keys
    # from one address share the address's budget.
    pending_per_address_max: int = attrs.field(default=2_000, validator=v.ge(1))
    # Envelopes from one source address that this node keeps in the mailbox path at once: what one address can make
    # the owners store (the rest is rejected as rate_limited).
    mailbox_per_address_max: int = attrs.field(default=500, validator=v.ge(1))
    # Body bytes of the envelopes from one source address in the mailbox path at once (the rest is rate_limited).
    mailbox_bytes_per_address_max: int = attrs.field(default=4 * 1024 * 1024, validator=v.ge(64 * 1024))
    # Entries from one sender id in one recipient's mailbox, at each owner (at most `mailbox_per_id_max`): one key
    # cannot take a callee's whole mailbox and lock its other callers out; over it the put is refused like a full
    # mailbox (rate_limited). Room for one call to an offline callee: its offer, the candidates the caller trickles
    # (host, server-reflexive and relayed ones for each network: a handful, up to about twenty) and the end of
    # candidates; fewer would lose that call's last candidates, and the relayed ones come last. A call_hangup fits
    # one over this share and the two below, so such a call can still be cancelled. docs/protocol.md, "Budgets".
    # A share above `mailbox_per_id_max` is the whole mailbox (no error: lowering `mailbox_per_id_max` alone is fine).
    mailbox_per_sender_per_id_max: int = attrs.field(default=24, validator=v.ge(1))
    # Entries from one origin node in one recipient's mailbox, at each owner (at most `mailbox_per_id_max`): one
    # hostile member, or the clients of one node whatever their keys and addresses, take at most this share of it
    # (half by default: the rest stays for callers through other nodes).
    mailbox_per_origin_per_id_max: int = attrs.field(default=32, validator=v.ge(1))
    # Envelopes from one source address (/32 IPv4, /64 IPv6) to one recipient that this node keeps in the mailbox
    # path at once, until their terminal receipts: fresh sender ids minted at one address share it, so one address
    # takes at most this much of a callee's mailbox at the owners (the rest is rejected as rate_limited). Room for
    # one call, like `mailbox_per_sender_per_id_max`; callers behind one CGNAT address calling one callee share it.
    mailbox_per_address_per_id_max: int = attrs.field(default=24, validator=v.ge(1))


def _client_path(inst: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if not (isinstance(value, str) and value.startswith("/") and 1 < len(value) <= 256):
        raise ConfigError(attribute.name, "must start with / and be 2..256 characters")
    if any(c.isspace() or c in "?#%" or not c.isprintable() for c in value):
        raise ConfigError(attribute.name, "must not contain spaces, ?, #, % or control characters")


@attrs.frozen(kw_only=True, slots=True)
class ClientsSection:
    # The URL path of the client WebSocket endpoint. Make it secret (e.g. /k7Qd2xw9/ws) to resist probing
    # (docs/security.md, "Censorship"): it travels in the node's URL (public_url, cards, manual entries), and
    # every other request gets the decoy site's answer, so a prober that lacks it sees an ordinary web server.
    path: str = attrs.field(default="/v1/client", validator=_client_path)
    # A directory of static files served, the way nginx would, to every request that is not a WebSocket upgrade at
    # `path` (a plausible site at /; keep it small: files over 1 MiB are answered 404). Empty: an empty site (nginx's
    # 403 at /, 404 elsewhere).
    decoy_dir: str = ""
    # Seconds a client has to finish the handshake (docs/client-protocol.md: 10 s).
    handshake_timeout_s: float = attrs.field(default=10.0, validator=_pos)
    # Client connections this node accepts in total (ulimit -n is the hard ceiling).
    connections_max: int = attrs.field(default=10_000, validator=v.ge(1))
    # Client connections from one address: an IPv4 /32 or an IPv6 /64 (one host usually holds a whole /64),
    # after a trusted proxy's header is applied (`trusted_proxies`). A NAT may hide many users.
    connections_per_ip_max: int = attrs.field(default=256, validator=v.ge(1))
    # Handshakes in progress at once (upgrades accepted, not yet welcomed; all addresses) while the node has
    # finished few: the cap is this or what the node finishes in half of handshake_timeout_s at its measured rate,
    # whichever is larger (node/protocol/handshakes.py). Beyond it an upgrade is answered 503 with `Retry-After: 1`
    # before any crypto: under a reconnect storm on a starved CPU a node that started every handshake would finish
    # few in time and clients would retry (wasted work) (docs/client-protocol.md, "Reconnecting").
    handshakes_in_progress_min: int = attrs.field(default=512, validator=v.ge(1))
    # How many times that cap a node admits while its event loop is busy under 80 % of the time: then handshakes
    # in progress are mostly waiting for slow clients, not for the node, and refusing them only costs round trips
    # (node/protocol/handshakes.py). 1: the rate cap always binds.
    handshakes_headroom: int = attrs.field(default=4, validator=[v.ge(1), v.le(64)])
    # New WebSocket handshakes per second from one address (/32, /64), on average: one address cannot churn
    # thousands of fresh client keys through reconnects. Over it, the upgrade is refused with HTTP 429.
    handshakes_per_address_per_s: float = attrs.field(default=10.0, validator=_pos)
    # New WebSocket handshakes one address (/32, /64) may make back to back before the per-second rate applies.
    handshakes_per_address_burst: int = attrs.field(default=100, validator=v.ge(1))
    # New handshakes an address is charged, on top of the one it spent, when one of its connections is closed for
    # abuse (4429) or for an oversized frame (1009); the budget may go into debt (at most the burst), which
    # `handshakes_per_address_per_s` pays back. A new client id starts with full token buckets, so without the
    # charge a flooder reconnecting at once with a fresh key got a whole `burst` of envelopes relayed again, ~18
    # connections a second from one address, and held a node at 40 % of a core (tests/adversarial/test_flood.py).
    # 10 at the default rate: one abusive connection a second per address. 0: no charge.
    handshakes_abuse_cost: float = attrs.field(default=10.0, validator=v.ge(0))
    # Addresses whose handshake budgets are remembered (least recently used forgotten; ~200 B each). Must exceed
    # the addresses one attacker cycles through in burst/rate seconds for the budget to hold.
    handshake_addresses_max: int = attrs.field(default=65_536, validator=v.ge(1))
    # Envelopes per second one client id may send through this node, on average (token bucket refill rate). The
    # bucket is the id's, not a connection's: its connections here share it, and it outlives them (`rate_ids_max`).
    rate_per_s: float = attrs.field(default=20.0, validator=_pos)
    # Envelopes one client id may send back to back before `rate_per_s` applies.
    burst: int = attrs.field(default=60, validator=v.ge(1))
    # call_ice messages per second one client id may send, on average: call_ice gets its own bucket, because a
    # call setup sends dozens of candidates at once.
    ice_rate_per_s: float = attrs.field(default=50.0, validator=_pos)
    # call_ice messages one client id may send back to back before `ice_rate_per_s` applies.
    ice_burst: int = attrs.field(default=200, validator=v.ge(1))
    # Client ids whose token buckets (`rate_per_s`/`burst`, `ice_rate_per_s`/`ice_burst`) are kept after their last
    # connection ends, so that reconnecting starts from what the id left instead of a full burst (least recently
    # ended forgotten first; ~450 B each, key included). A kept bucket that has refilled is dropped (at the defaults
    # within 4 s of the end), so this only has to exceed the ids that end their connections within burst/rate
    # seconds: the default, a node's `connections_max`, is every client it holds reconnecting at once
    # (docs/security.md, "Malicious client").
    rate_ids_max: int = attrs.field(default=10_000, validator=v.ge(1))
    # Messages queued to one client; a client that stops reading is disconnected when it is full.
    send_queue_max: int = attrs.field(default=256, validator=v.ge(1))
    # Bytes queued to one client (a 64 KiB body is ~88 KiB as JSON): bounds a slow reader's memory.
    send_queue_bytes_max: int = attrs.field(default=1024 * 1024, validator=v.ge(256 * 1024))
    # Seconds of silence from a client after which the node sends a WebSocket ping (browsers answer it
    # automatically), so a live client never reaches idle_timeout_s; a dead one is found within it.
    ping_interval_s: float = attrs.field(default=30.0, validator=_pos)
    # Seconds without any frame from a client before it is closed (clients ping to stay alive).
    idle_timeout_s: float = attrs.field(default=120.0, validator=_pos)
    # Seconds between the keepalive task's rounds: every session whose ping or idle deadline passed is handled in
    # one round, so a ping goes out up to this much late, and the pongs of a round arrive together and are read in
    # few event-loop rounds (an idle phone's cost is mostly wake-ups, docs/performance.md). 0: exactly on time.
    keepalive_batch_s: float = attrs.field(default=0.5, validator=[v.ge(0.0), v.le(5.0)])
    # Refused frames (bad, oversized, rate-limited) in a row before the connection is closed with 4429.
    abuse_strikes_max: int = attrs.field(default=20, validator=v.ge(1))
    # WebSocket frames one client message may be split into (browsers send one); more closes with 1009. Empty
    # continuation frames count too, so a stream of them cannot grow memory or keep the node busy.
    message_fragments_max: int = attrs.field(default=64, validator=v.ge(1))
    # Seconds a client has to answer our close frame before the socket is closed anyway.
    close_timeout_s: float = attrs.field(default=2.0, validator=_pos)
    # Bytes a connection the node is closing may still send (read and discarded while the node waits for its
    # close frame); beyond them the connection ends at once, so a client closed for abuse that keeps flooding
    # cannot keep the node reading at full speed for close_timeout_s.
    closing_read_bytes_max: int = attrs.field(default=65_536, validator=v.ge(0))
    # Seconds `goaway` (node shutdown) waits for clients to close before it cuts them off.
    shutdown_timeout_s: float = attrs.field(default=3.0, validator=_pos)
    # Bytes of the HTTP upgrade request (request line and headers); more ends the connection.
    upgrade_request_bytes_max: int = attrs.field(default=8192, validator=v.ge(1024))
    # Bytes read from a client socket per wake-up: one read can carry many frames (throughput under load).
    read_bytes: int = attrs.field(default=65_536, validator=v.ge(4096))
    # Seconds (wall clock) a connection may spend on the frames of one read before the other connections get a
    # turn; the rest of the read is handled after them. A flooder's 64 KiB read of small envelopes is ~190 frames,
    # and handling them in one go held the event loop 5-17 ms, which every other client's messages waited
    # (tests/adversarial/test_flood.py). A client whose read takes less never yields; when the loop is crowded
    # (turns of 20 ms or more, e.g. a goaway storm) a busy connection's slice widens (node/net/slicing.py,
    # `widened_slice`). Relay throughput with and without: within run-to-run spread (bench/relay).
    handle_slice_s: float = attrs.field(default=0.001, validator=[v.gt(0.0), v.le(1.0)])
    # Connections over `connections_max` that still get a polite HTTP 429/503 (each for at most close_timeout_s);
    # beyond that a connection is closed without an answer, because under a flood even a refusal costs.
    refusing_max: int = attrs.field(default=256, validator=v.ge(0))
    # Addresses or networks (CIDR) of TLS proxies in front of the client port (docs/operations.md, "Behind a
    # proxy"). Only a connection from one of them may name the client's address, by a PROXY protocol v2 header
    # (`proxy_protocol = "v2"`) or else by X-Forwarded-For; the named address feeds the per-address limits.
    trusted_proxies: tuple[str, ...] = attrs.field(default=(), converter=_tuple, validator=_networks)
    # "off", or "v2": connections from `trusted_proxies` start with a PROXY protocol v2 header (HAProxy
    # `send-proxy-v2`, Caddy `proxy_protocol v2`, nginx's stream module); one without a valid header is closed.
    proxy_protocol: str = attrs.field(default="off", validator=v.in_(["off", "v2"]))
    # Seconds a trusted proxy has to send the whole PROXY v2 header.
    proxy_header_timeout_s: float = attrs.field(default=5.0, validator=_pos)


def _push_hosts(inst: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    for item in value:
        if not (isinstance(item, str) and item and "/" not in item and ":" not in item and item == item.lower()):
            raise ConfigError(attribute.name, f"{item!r} is not a lower-case host name")


def _test_loopback(inst: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value:
        host, _ = parse_hostport(value, key=attribute.name)
        if host not in ("127.0.0.1", "::1"):
            raise ConfigError(attribute.name, "only 127.0.0.1:PORT or [::1]:PORT")


# --- push (issue #14, docs/operations.md "Push wake-up"): additive, owned by the push engineer -----------
@attrs.frozen(kw_only=True, slots=True)
class PushSection:
    # Wake offline callees with Web Push / UnifiedPush (docs/operations.md, "Push wake-up").
    enabled: bool = True
    # Push service hosts this node may send to (exact names, e.g. fcm.googleapis.com,
    # updates.push.services.mozilla.com, ntfy.sh); empty: any host that resolves only to public addresses.
    allowed_hosts: tuple[str, ...] = attrs.field(default=(), converter=_tuple, validator=_push_hosts)
    # Seconds a registered subscription lives unless the client registers it again (clients do on every connect).
    subscription_ttl_s: float = attrs.field(default=7 * 86400.0, validator=_pos)
    # Subscriptions this node holds (as home and as rendezvous owner), about 1.3 KiB each; more are refused.
    subscriptions_max: int = attrs.field(default=100_000, validator=v.ge(1))
    # Subscriptions this node holds, as a rendezvous owner, for clients of one home node: a member can mint client
    # keys that sign claims naming it, so without a share one member filled `subscriptions_max` and every owner then
    # refused honest clients' subscriptions (their phones were never woken).
    subscriptions_per_home_max: int = attrs.field(default=25_000, validator=v.ge(1))
    # Subscriptions this node holds, as the home node, for clients connected from one address (IPv4 address, IPv6 /64):
    # client keys cost nothing, so without a share one address registering a fresh key on each of its handshakes
    # filled `subscriptions_max` in hours and the node refused its other clients' subscriptions for the 7 days of
    # the TTL. A carrier NAT that puts many of one node's phones behind one address needs this raised.
    subscriptions_per_address_max: int = attrs.field(default=1_000, validator=v.ge(1))
    # Pushes one callee id may receive per minute (a caller cannot make a phone ring all day).
    per_callee_per_minute_max: int = attrs.field(default=6, validator=v.ge(1))
    # Seconds the k-th rendezvous owner waits for the earlier owners to claim a push before it sends it itself.
    fallback_s: float = attrs.field(default=0.5, validator=_pos)
    # Seconds one push request may take (connect, TLS, request, response), per attempt.
    request_timeout_s: float = attrs.field(default=5.0, validator=_pos)
    # Attempts per push on 429/5xx/network errors, with exponential backoff from retry_backoff_s.
    attempts_max: int = attrs.field(default=3, validator=v.ge(1))
    # Seconds before the first retry of a failed push; each further retry waits twice as long.
    retry_backoff_s: float = attrs.field(default=0.5, validator=_pos)
    # Bytes of a push service's answer read (headers and body); more ends the request.
    response_bytes_max: int = attrs.field(default=16 * 1024, validator=v.ge(1024))
    # Pushes waiting for a sender; more fail as `queue_full` (counted in the push metrics).
    queue_max: int = attrs.field(default=1024, validator=v.ge(1))
    # Push requests in flight at once.
    concurrent_max: int = attrs.field(default=8, validator=v.ge(1))
    # The VAPID `sub` claim (mailto:you@example.org or an https URL); some push services require it.
    vapid_subject: str = ""
    # UNSAFE, tests only: this one 127.0.0.1:PORT may be a push endpoint despite the loopback rule.
    test_allow_loopback: str = attrs.field(default="", validator=_test_loopback)
    # UNSAFE, tests only: a PEM CA file trusted for push services besides the system store.
    test_ca_file: str = ""


def _ice_urls(inst: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if len(value) > URLS_MAX:
        raise ConfigError(attribute.name, f"at most {URLS_MAX} URLs")
    for item in value:
        check_url(item)


# The largest first frame of a peer connection (ciphertext): a PUSH_PULL of `Limits.PUSH_PULL_MAX` bytes of state,
# its map (node/net/peerconn.py reads it with 1 KiB of room) and the AEAD tag.
_FIRST_FRAME_MAX = Limits.PUSH_PULL_MAX + 1024 + 16


@attrs.frozen(kw_only=True, slots=True)
class TurnSection:
    # STUN/TURN server URLs handed to clients by `ice_servers` (docs/client-protocol.md), e.g. "stun:turn.example.org",
    # "turn:turn.example.org:3478?transport=udp", "turns:turn.example.org:443?transport=tcp".
    urls: tuple[str, ...] = attrs.field(default=(), converter=_tuple, validator=_ice_urls)
    # File holding the secret shared with coturn (`use-auth-secret`, `static-auth-secret`); mode 0600 or 0640,
    # re-read when it changes (rotation). Empty: no TURN credentials, clients get the stun: URLs only.
    secret_file: str = ""
    # Seconds a TURN credential stays valid (the expiry in its username); it cannot be revoked before that.
    ttl_s: int = attrs.field(default=3600, validator=[v.ge(60), v.le(86400)])
    # coturn's `realm` (informational: shown by `homing node status`; the credential does not contain it).
    realm: str = attrs.field(default="", validator=v.max_len(128))
    # `ice_servers` requests per second a connection, and an id, may make on average (token bucket refill rate).
    request_rate_per_s: float = attrs.field(default=0.2, validator=_pos)
    # `ice_servers` requests a connection, and an id, may make back to back before `request_rate_per_s` applies.
    request_burst: int = attrs.field(default=5, validator=v.ge(1))
    # Distinct client ids one address (/32 IPv4, /64 IPv6) gets TURN credentials for within `ttl_s`; an id it
    # already holds one for is not refused by this. coturn's `user-quota` (12) counts allocations per id, so the
    # key pairs one address makes could otherwise collect the 100 ids that fill its `total-quota` (1,200) within
    # seconds and shut everyone else out; with 10, one address adds at most 120 allocations per `ttl_s`. Raise it
    # for many clients behind one address (CGNAT, an office). docs/security.md, "TURN credentials and relayed calls".
    ids_per_address_max: int = attrs.field(default=10, validator=v.ge(1))


@attrs.frozen(kw_only=True, slots=True)
class PeersSection:
    # Seconds a connection to the peer port has to finish the Noise handshake and say what it is for; a
    # connection that has not authenticated by then is closed (idle or half-open connections cannot pile up).
    handshake_timeout_s: float = attrs.field(default=5.0, validator=_pos)
    # Seconds a peer-link read or write may stall (a one-shot answer, a retired link's last frames), and a link's
    # frames may be held for a retired link its peer named and has not handed over (docs/protocol.md "Peer links").
    io_timeout_s: float = attrs.field(default=10.0, validator=_pos)
    # Connections the peer port holds at once, authenticated or not (a federation has at most a few hundred nodes).
    connections_max: int = attrs.field(default=1024, validator=v.ge(1))
    # Connections still in their handshake from one address (/32 IPv4, /64 IPv6): one host cannot fill the port.
    preauth_per_address_max: int = attrs.field(default=8, validator=v.ge(1))
    # Connections from one address (/32, /64) in total: a node needs a few (its link, syncs, probes).
    connections_per_address_max: int = attrs.field(default=64, validator=v.ge(1))
    # Bytes (ciphertext, as announced in their headers) of the first frames that connections not yet authenticated
    # may hold at once, node-wide. A first frame is only authenticated once all of it has been read, and a PUSH_PULL
    # may be 6 MiB, so without a cap every address could make the node hold `preauth_per_address_max` of them
    # (50 MiB) while it sent them slowly, and many addresses added up. A frame's announced length is reserved before
    # its body is read and given back when the frame has been read or refused, or the connection ends; a frame that
    # does not fit closes its connection (`rate_limited`). Connections from addresses where no member is known (see
    # `stranger_handshakes_per_s`) share at most half of it, so strangers cannot starve members' syncs. A full sync
    # of a few hundred members is well under 1 MiB: 64 MiB is many at once, and little of a 1 GiB VPS.
    preauth_bytes_max: int = attrs.field(default=64 * 1024 * 1024, validator=v.ge(2 * _FIRST_FRAME_MAX))
    # Bytes of `preauth_bytes_max` one address (/32, /64) may hold at once: a few addresses cannot take all of it.
    # At least one largest first frame (a PUSH_PULL of 6 MiB, docs/protocol.md "Peer links"), so any sync fits.
    preauth_bytes_per_address_max: int = attrs.field(
        default=8 * 1024 * 1024, validator=[v.ge(_FIRST_FRAME_MAX), _not_over("preauth_bytes_max")]
    )
    # New connections one address (/32, /64) may open to the peer port per second, on average. Each one that
    # starts a handshake costs this node about 1.3 ms of CPU (two X25519 operations, the Noise hashes), before it
    # can know whether the key is admitted: unbounded, one host without a key took a node's whole core. A member
    # opens a few a minute (its link, SWIM syncs, TCP probes); over the rate a connection is closed unread. The
    # shipped firewall (deploy/firewall/homing-node.nft) drops SYNs per address over twice this rate and burst:
    # raise its numbers with these (docs/operations.md, "Firewall").
    handshakes_per_address_per_s: float = attrs.field(default=10.0, validator=_pos)
    # Connections one address may open back to back before `handshakes_per_address_per_s` applies: several nodes
    # behind one address (a test federation on 127.0.0.1) all dial a node that starts at once.
    handshakes_per_address_burst: int = attrs.field(default=200, validator=v.ge(1))
    # New connections per second, on average, that the whole peer port takes from addresses where no member of the
    # federation is known to be (node-wide: one budget for all such addresses together). The per-address pace
    # alone let many addresses add up: an IPv6 /48 holds 65,536 /64s. Connections from the host of a member, a
    # seed or a node the registry lists name are not charged, so a flood from elsewhere keeps neither members nor
    # approved newcomers out; an unlisted node (`--join` only) shares this budget with the flood and retries. Each
    # handshake costs ~0.45 ms of CPU here (bench/peer_handshakes.py): 50 a second is ~2 % of a core.
    stranger_handshakes_per_s: float = attrs.field(default=50.0, validator=_pos)
    # Connections from non-member addresses the peer port takes back to back before `stranger_handshakes_per_s`
    # applies: a federation that starts at once, before its members know each other, dials in a burst.
    stranger_handshakes_burst: int = attrs.field(default=400, validator=v.ge(1))
    # Seconds (wall clock) a peer link's reader may spend on the maps it has read before the other connections get
    # a turn (as `[clients] handle_slice_s`): one member's batches of relay frames cannot hold the event loop.
    # Longer than a client's: a link carries many clients' traffic, and a yield splits the batches both nodes
    # write per turn. Cross-node relay CPU per message in the same runs (bench/relay, 2026-12-03): +19 % at 5 ms
    # and 16 maps per call, +6 % at 1.0 s (no yields: the chunking alone, within spread), +1 % at 20 ms.
    handle_slice_s: float = attrs.field(default=0.02, validator=[v.gt(0.0), v.le(1.0)])
    # Seconds of the event loop's CPU per second (a share of one core) that decrypting, decoding and handling what
    # one peer link sends may take on average; a link that has spent its budget is not read until it refills, so
    # TCP backpressure slows the member (nothing it sent is lost, the link stays up). Measured as the node's thread
    # CPU time from each frame's arrival to the end of each call of `MAPS_PER_CALL` maps, the socket reads left out
    # (node/net/peers.py): frames that cost much to decrypt or decode and nothing to handle count too. Slices alone
    # shared turns, not CPU: a member that always had maps ready got a slice every turn, about all of a core
    # against idle tasks. Honest peaks, at 60-75 us per Ed25519 check, ~25 us of handling per relayed envelope (the
    # relay core's part of the 46 us same-node message, bench/relay) and 1.5-3 us to decrypt and decode it in a
    # batch: relaying 15,000 msg/s over one link is ~0.42 s/s; a goaway storm of 10,000 clients onto 2 survivors is
    # ~10,000 checks (0.75 s) in 5-7 s, ~0.15 s/s; both under 0.5, which leaves at least half of the loop to
    # everything else while one member floods.
    handle_cpu_per_s: float = attrs.field(default=0.5, validator=[v.gt(0.0), v.le(1.0)])
    # Seconds of a link's CPU (decrypting, decoding, handling) it may spend back to back before `handle_cpu_per_s`
    # applies (at least 1 ms). A member that joins or leaves moves every lease of a home at once: up to `[relay]
    # claim_checks_per_peer_burst` (40,000) checks at 75 us, 3.0 s; 5 s holds that whole burst unthrottled.
    handle_cpu_burst_s: float = attrs.field(default=5.0, validator=v.ge(0.001))
    # Seconds before the first redial of an unreachable peer; the wait doubles after each failure.
    backoff_min_s: float = attrs.field(default=0.1, validator=_pos)
    # Seconds the redial wait for an unreachable peer grows to at most.
    backoff_max_s: float = attrs.field(default=10.0, validator=_pos)
    # Frames after which a link's sender rekeys its direction (Noise REKEY), unless `rekey_interval_s` comes first,
    # so a key stolen from memory later opens at most that much of the past traffic.
    rekey_frames_max: int = attrs.field(default=65_536, validator=v.ge(1))
    # Seconds after which a link's sender rekeys its direction, unless `rekey_frames_max` comes first.
    rekey_interval_s: float = attrs.field(default=600.0, validator=_pos)
