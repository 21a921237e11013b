"""Bootstrap registry configuration: defaults < command-line flags. Every field has a unit and a reason."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import attrs
from attrs import validators as v

from bootstrap.registry import Policy
from node.protocol.errors import ConfigError
from node.protocol.forwarded import parse_networks
from node.protocol.httplimits import HttpLimits
from node.protocol.settings import parse_hostport

KEY_NAME = "registry.key"
ROTATIONS_NAME = "key-rotations.msgpack"  # the key rotation statements (docs/bootstrap.md)
PORTS_NAME = "ports.json"


def default_data_dir() -> Path:
    """$XDG_DATA_HOME/homing-bootstrap, else ~/.local/share/homing-bootstrap."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "homing-bootstrap"


def _networks(inst: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    parse_networks(value, key="--trusted-proxy")


def _hostport(inst: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    parse_hostport(value, key=f"--{attribute.name}")


# Registry HTTP limits: registrations are small (< 1 KiB) and a node heartbeats about once a minute, so a
# client IP (one NAT may hide several nodes and many discovering clients) gets a generous read rate; writes
# have their own, stricter bucket (`write_rate_per_ip_per_s`).
REGISTRY_HTTP_LIMITS = HttpLimits(body_bytes_max=8 * 1024, rate_per_ip_per_s=20.0, rate_per_ip_burst=60)


@attrs.frozen(kw_only=True, slots=True)
class BootstrapConfig:
    # Holds registry.key, registry.sqlite3 and ports.json.
    data_dir: Path = attrs.field(factory=default_data_dir, converter=Path)
    # Listen address. Loopback by default: put it behind a TLS proxy, or give --tls-cert/--tls-key and 0.0.0.0.
    listen: str = attrs.field(default="127.0.0.1:7480", validator=_hostport)
    # Registration approval, lease and `ts` rules (see registry.Policy).
    policy: Policy = attrs.field(factory=Policy)
    # PEM certificate chain and key for HTTPS; both or neither.
    tls_cert: Path | None = None
    tls_key: Path | None = None
    # Seconds between a list's `issued` and `expires`; clients refuse an expired list. A cached list is
    # re-signed after half of this, so a client always gets at least half of it.
    list_lifetime_s: int = attrs.field(default=3600, validator=v.ge(60))
    # Registrations and leaves per second from one IP (token bucket) and the burst; more get 429.
    write_rate_per_ip_per_s: float = attrs.field(default=2.0, validator=v.gt(0))
    write_burst: int = attrs.field(default=20, validator=v.ge(1))
    # Known node ids at most (rows in the database); a new id beyond it takes the place of the pending (never
    # approved) row seen longest ago, and gets 503 only when every row is approved, banned or withheld.
    nodes_max: int = attrs.field(default=10_000, validator=v.ge(1))
    # Seconds between sweeps that delete forgotten rows (removed nodes past the replay window, stale pending).
    prune_interval_s: float = attrs.field(default=600.0, validator=v.gt(0))
    # Seconds a pending (never approved) node's row is kept after its last registration.
    pending_keep_s: int = attrs.field(default=86_400, validator=v.ge(3600))
    # Seconds an approved node's row is kept after its lease ended or it left; then it is deleted (and must be
    # approved again if it comes back). Banned rows are never pruned.
    expired_keep_s: int = attrs.field(default=30 * 86_400, validator=v.ge(3600))
    # Addresses of reverse proxies (IPs or CIDR networks) whose X-Forwarded-For is believed: the client is the
    # rightmost address in it that is not a trusted proxy (docs/operations.md). Empty: the socket's peer.
    trusted_proxies: tuple[str, ...] = attrs.field(default=(), converter=tuple, validator=_networks)
    http: HttpLimits = attrs.field(default=REGISTRY_HTTP_LIMITS)
    # Bridges (docs/discovery.md, "Bridges"): cards in one answer of GET /v1/bridges, the seconds for which one
    # network (/16 IPv4, /48 IPv6) keeps getting the same ones, and how often one network may ask (token bucket:
    # per second and burst; more get 429). Networks remembered for that limit (least recently used forgotten).
    bridges_per_answer: int = attrs.field(default=3, validator=[v.ge(1), v.le(16)])
    bridge_period_s: int = attrs.field(default=86_400, validator=v.ge(60))
    bridge_rate_per_range_per_s: float = attrs.field(default=1 / 60, validator=v.gt(0))
    bridge_burst: int = attrs.field(default=10, validator=v.ge(1))
    bridge_ranges_max: int = attrs.field(default=100_000, validator=v.ge(1))
    # Seconds between the registry's own checks of every node's client endpoint (a real handshake proving the
    # node's id; two failures in a row take a node out of the list), seconds one check may take, checks at once.
    health_interval_s: float = attrs.field(default=300.0, validator=v.ge(0.5))
    health_timeout_s: float = attrs.field(default=5.0, validator=v.gt(0))
    health_concurrent_max: int = attrs.field(default=16, validator=v.ge(1))

    def __attrs_post_init__(self) -> None:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ConfigError("--tls-cert", "--tls-cert and --tls-key go together")

    @property
    def key_path(self) -> Path:
        return self.data_dir / KEY_NAME

    @property
    def ports_path(self) -> Path:
        return self.data_dir / PORTS_NAME
