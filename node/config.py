"""Node configuration: defaults < TOML file < command-line flags.

Every field has a unit in its name where it has one, a default, and a reason (the comment above it); the
config reference in docs/configuration.md is generated from these comments and a test keeps it in sync.
`load_config` turns a bad key or value into ConfigError naming the key, which the CLI prints and exits 2.
"""

from __future__ import annotations

import math
import os
import re
import tomllib
from pathlib import Path
from typing import Any

import attrs
from attrs import validators as v

from node.errors import ConfigError
from node.identity import parse_id
from node.swim.config import LAN, LOCAL, SwimConfig

_pos: Any = v.gt(0)


def default_data_dir() -> Path:
    """The user's data dir: $XDG_DATA_HOME/homing, else ~/.local/share/homing."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "homing"


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
    # Client WebSocket listen address (CONTRACT §1: 7400/tcp). Port 0 picks a free port.
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
    # Registry public keys whose signed node lists this node accepts (admission, CONTRACT §3).
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
    # Seconds an envelope for an offline client waits in its mailbox (CONTRACT §2: `[relay] mailbox_ttl`).
    mailbox_ttl: float = attrs.field(default=60.0, validator=_pos)
    # Envelopes one offline client id may have waiting; more are rejected as rate_limited.
    mailbox_per_id_max: int = attrs.field(default=64, validator=v.ge(1))
    # Envelopes all mailboxes on this node may hold together (memory bound: at most ~64 KiB each).
    mailbox_total_max: int = attrs.field(default=20_000, validator=v.ge(1))
    # Rendezvous owners per client id (CONTRACT §3: R = 3).
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


@attrs.frozen(kw_only=True, slots=True)
class ClientsSection:
    # Seconds a client has to finish the handshake (CONTRACT §2: 10 s).
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


@attrs.frozen(kw_only=True, slots=True)
class NodeConfig:
    node: NodeSection = NodeSection()
    federation: FederationSection = FederationSection()
    swim: SwimConfig = LAN
    relay: RelaySection = RelaySection()
    clients: ClientsSection = ClientsSection()

    @property
    def data_path(self) -> Path:
        return Path(self.node.data_dir) if self.node.data_dir else default_data_dir()

    @property
    def advertised_url(self) -> str:
        if self.node.public_url:
            return self.node.public_url
        host, port = parse_hostport(self.node.ws)
        return f"ws://{format_hostport(host, port)}/v1/client"


SECTIONS: dict[str, type[Any]] = {
    "node": NodeSection,
    "federation": FederationSection,
    "swim": SwimConfig,
    "relay": RelaySection,
    "clients": ClientsSection,
}
PRESETS: dict[str, dict[str, Any]] = {"lan": {"swim": LAN}, "local": {"swim": LOCAL}}


def _coerce(section: str, name: str, value: Any, default: Any) -> Any:
    key = f"{section}.{name}"
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ConfigError(key, f"expected true or false, got {value!r}")
        return value
    if isinstance(default, int):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(key, f"expected an integer, got {value!r}")
        return value
    if isinstance(default, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(key, f"expected a number, got {value!r}")
        number = float(value) if isinstance(value, float) or abs(value) < 2**63 else math.inf
        if not math.isfinite(number):
            raise ConfigError(key, f"expected a finite number, got {str(value)[:40]}")
        return number
    if isinstance(default, str):
        if not isinstance(value, str):
            raise ConfigError(key, f"expected a string, got {value!r}")
        return value
    if isinstance(default, tuple):
        if not isinstance(value, (list, tuple)) or not all(isinstance(x, str) for x in value):
            raise ConfigError(key, f"expected a list of strings, got {value!r}")
        return tuple(value)
    raise ConfigError(key, "unsupported setting type")  # pragma: no cover - a bug in a section class


def build_config(
    file_values: dict[str, Any] | None = None,
    overrides: dict[str, dict[str, Any]] | None = None,
    *,
    preset: str = "lan",
) -> NodeConfig:
    """Merge defaults < preset < file values < overrides, validating every key and value."""
    merged: dict[str, dict[str, Any]] = {}
    for layer in (file_values or {}, overrides or {}):
        for section, values in layer.items():
            if section not in SECTIONS:
                raise ConfigError(section, f"unknown section [{section}]")
            if not isinstance(values, dict):
                raise ConfigError(section, "must be a table")
            merged.setdefault(section, {}).update(values)
    base = NodeConfig(**PRESETS.get(preset, {}))
    built: dict[str, Any] = {}
    for section, cls in SECTIONS.items():
        current = getattr(base, section)
        values = merged.get(section, {})
        fields = {f.name: f for f in attrs.fields(cls)}
        kwargs: dict[str, Any] = {}
        for name, value in values.items():
            if name not in fields:
                raise ConfigError(f"{section}.{name}", "unknown setting")
            kwargs[name] = _coerce(section, name, value, getattr(current, name))
        try:
            built[section] = attrs.evolve(current, **kwargs)
        except ConfigError as exc:
            raise ConfigError(f"{section}.{exc.key}", exc.reason) from exc
        except (ValueError, TypeError) as exc:
            raise ConfigError(_bad_key(section, exc), _first_line(exc)) from exc
    return NodeConfig(**built)


def _bad_key(section: str, exc: BaseException) -> str:
    match = re.match(r"'(\w+)'", str(exc))
    return f"{section}.{match.group(1)}" if match else section


def _first_line(exc: BaseException) -> str:
    text = str(exc)
    # attrs validators say "'name' must be > 0: -1"; keep it on one line.
    return text.splitlines()[0] if text else type(exc).__name__


def load_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as f:
            return tomllib.load(f)
    except FileNotFoundError as exc:
        raise ConfigError(str(path), "config file not found") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(str(path), f"not valid TOML: {exc}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(str(path), f"not valid TOML: not UTF-8 (byte {exc.start})") from exc
    except RecursionError as exc:
        raise ConfigError(str(path), "not valid TOML: nested too deeply") from exc
    except OSError as exc:
        raise ConfigError(str(path), f"cannot read the config file: {exc.strerror or exc}") from exc


def load_config(
    path: Path | None, overrides: dict[str, dict[str, Any]] | None = None, *, preset: str = "lan"
) -> NodeConfig:
    return build_config(load_toml(path) if path else None, overrides, preset=preset)


def reference_rows() -> list[tuple[str, str, str]]:
    """(key, default, reason) for every setting, read from the comments in this module and swim/config.py."""
    import inspect

    rows: list[tuple[str, str, str]] = []
    for section, cls in SECTIONS.items():
        comments = _field_comments(inspect.getsource(cls))
        default_obj = getattr(NodeConfig(), section)
        for f in attrs.fields(cls):
            default = getattr(default_obj, f.name)
            rows.append((f"{section}.{f.name}", _toml_value(default), comments.get(f.name, "")))
    return rows


def _field_comments(source: str) -> dict[str, str]:
    out: dict[str, str] = {}
    pending: list[str] = []
    for raw in source.splitlines():
        line = raw.strip()
        if line.startswith("#"):
            pending.append(line.lstrip("#").strip())
        elif ":" in line and not line.startswith(("def ", "class ", "@", "return")):
            name = line.split(":", 1)[0].strip()
            if name.isidentifier():
                out.setdefault(name, " ".join(pending))
            pending = []
        else:
            pending = []
    # a comment covering two fields (e.g. rate_per_s and burst) applies to the second as well
    last = ""
    for name in list(out):
        if out[name]:
            last = out[name]
        else:
            out[name] = last
    return out


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, tuple):
        return "[" + ", ".join(f'"{x}"' for x in value) + "]"
    return f'"{value}"'


def render_toml(config: NodeConfig, *, header: str = "") -> str:
    """A commented TOML file with every setting (used by `homing node init`)."""
    import inspect

    lines = [header] if header else []
    for section, cls in SECTIONS.items():
        comments = _field_comments(inspect.getsource(cls))
        lines.append(f"[{section}]")
        current = getattr(config, section)
        for f in attrs.fields(cls):
            if comments.get(f.name):
                lines.append(f"# {comments[f.name]}")
            lines.append(f"{f.name} = {_toml_value(getattr(current, f.name))}")
        lines.append("")
    return "\n".join(lines)
