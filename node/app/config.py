"""Node configuration: defaults < TOML file < command-line flags.

Every field has a unit in its name where it has one, a default, and a reason (the comment above it); the
config reference in docs/configuration.md is generated from these comments and a test keeps it in sync.
`load_config` turns a bad key or value into ConfigError naming the key, which the CLI prints and exits 2.
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path
from typing import Any

import attrs

from node.protocol.errors import ConfigError
from node.protocol.settings import (
    ClientsSection,
    FederationSection,
    NodeSection,
    PeersSection,
    PushSection,
    RelaySection,
    TurnSection,
    format_hostport,
    parse_hostport,
)
from node.protocol.swim.config import LAN, LOCAL, SwimConfig

# The addresses `homing node run` also takes as a flag: a config error names the flag, a listen error both
# (node/cli/node.py, node/app/service.py).
FLAGS = {
    "node.ws": "--ws",
    "node.swim": "--swim",
    "node.peer": "--peer",
    "node.metrics": "--metrics",
}


def setting_name(key: str) -> str:
    """`key` as an error names it: "node.ws, --ws" where a flag sets it too, else the key alone."""
    flag = FLAGS.get(key)
    return f"{key}, {flag}" if flag else key


def default_data_dir() -> Path:
    """The user's data dir: $XDG_DATA_HOME/homing, else ~/.local/share/homing."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "homing"


@attrs.frozen(kw_only=True, slots=True)
class NodeConfig:
    node: NodeSection = attrs.field(factory=NodeSection)
    federation: FederationSection = attrs.field(factory=FederationSection)
    swim: SwimConfig = LAN
    relay: RelaySection = attrs.field(factory=RelaySection)
    clients: ClientsSection = attrs.field(factory=ClientsSection)
    push: PushSection = attrs.field(factory=PushSection)
    turn: TurnSection = attrs.field(factory=TurnSection)
    peers: PeersSection = attrs.field(factory=PeersSection)

    def __attrs_post_init__(self) -> None:
        if not self.node.listed and not self.node.public_url:
            raise ConfigError(
                "node.listed", "a bridge (listed = false) needs its own public_url (docs/discovery.md, Bridges)"
            )

    @property
    def data_path(self) -> Path:
        return Path(self.node.data_dir) if self.node.data_dir else default_data_dir()

    def advertised_url(self, ws_port: int | None = None) -> str:
        """The client URL this node advertises (registry, cards, goaway): `[node] public_url`, else
        ws://HOST:PORT + `[clients] path` from `advertise_host` (or the `ws` host) and `ws_port` (or the configured
        port: pass the bound port when `ws` used port 0)."""
        if self.node.public_url:
            return self.node.public_url
        host, port = parse_hostport(self.node.ws)
        host = self.node.advertise_host or host
        return f"ws://{format_hostport(host, port if ws_port is None else ws_port)}{self.clients.path}"


SECTIONS: dict[str, type[Any]] = {
    "node": NodeSection,
    "federation": FederationSection,
    "swim": SwimConfig,
    "relay": RelaySection,
    "clients": ClientsSection,
    "push": PushSection,
    "turn": TurnSection,
    "peers": PeersSection,
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
    import tomllib  # here: a node started with flags alone reads no TOML (tomllib compiles its regexes, ~5 ms)

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
    """(key, default, reason) for every setting, from the comments in node/protocol/settings.py and swim/config.py."""
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
    # every field has its own comment (docs/configuration.md; tests/ops/test_docs.py checks): none is copied
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
