"""`homing node init|run|status` (docs/operations.md)."""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from pathlib import Path
from typing import Any

import trio

from node.app import gcpolicy
from node.app.config import FLAGS, NodeConfig, default_data_dir, load_config, render_toml
from node.app.log import get_logger, setup_logging
from node.client.files import ensure_writable_dir, load_or_create_key, lock_dir, write_atomic
from node.protocol.errors import ConfigError
from node.protocol.settings import format_hostport, parse_hostport

KEY_FILE = "node.key"
CONFIG_FILE = "homing-node.toml"


def register(sub: Any) -> None:
    node = sub.add_parser("node", help="run and manage a homing node")
    node.set_defaults(help_parser=node)
    nsub = node.add_subparsers(dest="node_command", metavar="COMMAND", parser_class=type(node))

    p = nsub.add_parser("init", help="create the node identity key and a commented homing-node.toml")
    p.add_argument("--data-dir", type=Path, help="where to put node.key and homing-node.toml (default: user data dir)")
    p.set_defaults(func=cmd_init)

    p = nsub.add_parser("run", help="run a node (with no arguments: a single node on loopback)")
    p.add_argument("--config", type=Path, help="TOML config file (default: DATA_DIR/homing-node.toml if present)")
    p.add_argument("--data-dir", type=Path, help="identity, ports.json and state (default: user data dir)")
    p.add_argument("--ws", metavar="H:P", help="client WebSocket listen address (default 127.0.0.1:7400)")
    p.add_argument("--swim", metavar="H:P", help="SWIM UDP listen address (default 127.0.0.1:7401)")
    p.add_argument("--peer", metavar="H:P", help="peer-link TCP listen address (default 127.0.0.1:7402)")
    p.add_argument("--metrics", metavar="H:P", help="metrics/health listen address (default 127.0.0.1:7403)")
    p.add_argument("--join", metavar="H:P", action="append", default=[], help="SWIM seed address (repeatable)")
    p.add_argument("--bootstrap", metavar="URL", action="append", default=[], help="registry URL (repeatable)")
    p.add_argument("--trust", metavar="KEY", action="append", default=[], help="trusted registry key (repeatable)")
    p.add_argument("--allow", metavar="ID", action="append", default=[], help="node id to admit (repeatable)")
    p.add_argument("--open", action="store_true", default=None, help="admit any node (private test clusters only)")
    p.add_argument("--public-url", metavar="URL", help="client URL to advertise (e.g. wss://host/v1/client)")
    p.add_argument(
        "--advertise-host",
        metavar="HOST",
        help="address other nodes use to reach this node's SWIM and peer ports (needed when binding 0.0.0.0 or ::)",
    )
    p.add_argument("--preset", choices=["lan", "local"], default="lan", help="SWIM timing preset (default lan)")
    p.add_argument("--log-json", action="store_true", default=None, help="log JSON lines instead of key=value")
    p.add_argument("--log-level", choices=["debug", "info", "warning", "error"], help="log level (default info)")
    p.set_defaults(func=cmd_run)

    p = nsub.add_parser(
        "rotate-key",
        help="replace node.key with a new key and a statement signed by the old one; the registry moves the "
        "approval to the new key at the next registration (stop the node first, start it again after)",
    )
    p.add_argument("--data-dir", type=Path, help="the node's data dir (default: user data dir)")
    p.set_defaults(func=cmd_rotate_key)

    p = nsub.add_parser("status", help="show the federation as a running node sees it")
    p.add_argument(
        "--metrics", metavar="H:P", help="the node's metrics address (default: from --data-dir, else 127.0.0.1:7403)"
    )
    p.add_argument(
        "--data-dir",
        type=Path,
        help="the node's data dir: the metrics address comes from its homing-node.toml ([node] metrics) "
        "and the bound port from its ports.json",
    )
    p.add_argument("--json", action="store_true", help="print the raw /v1/members (or /v1/clients) JSON")
    p.add_argument(
        "--clients",
        action="store_true",
        help="show client connections per address range (IPv4 /24, IPv6 /48; no client ids) instead of members",
    )
    p.set_defaults(func=cmd_status)


DATA_DIR_KEY = "node.data_dir, --data-dir"


def cmd_init(args: argparse.Namespace) -> int:
    data_dir: Path = args.data_dir or default_data_dir()
    ensure_writable_dir(data_dir, key=DATA_DIR_KEY)
    identity, created = load_or_create_key(data_dir / KEY_FILE)
    config_path = data_dir / CONFIG_FILE
    if not config_path.exists():
        config = load_config(None, {"node": {"data_dir": str(data_dir.resolve())}})
        header = (
            "# homing node configuration. Every setting is shown with its default; flags override this file.\n"
            "# Reference: docs/configuration.md\n"
        )
        # whole or not at all: a disk that filled up mid-write left a cut config that every later init kept
        write_atomic(config_path, render_toml(config, header=header).encode())
        print(f"wrote {config_path}")
    else:
        print(f"kept existing {config_path}")
    print(f"{'created' if created else 'kept existing'} identity key {data_dir / KEY_FILE} (mode 0600; back it up)")
    print(f"node id: {identity.id_text}")
    return 0


def cmd_rotate_key(args: argparse.Namespace) -> int:
    from node.app.keyrotation import NODE_ROTATIONS_NAME, rotate_key_file

    data_dir: Path = args.data_dir or default_data_dir()
    old, new, _ = rotate_key_file(data_dir / KEY_FILE, data_dir / NODE_ROTATIONS_NAME, time.time())
    print(f"old node key kept as {data_dir / KEY_FILE}.retired-{old.id_text[:8]}: delete it once the registry moved")
    print("the approval (`homing bootstrap nodes audit` shows key_rotated)")
    print(f"statement in {data_dir / NODE_ROTATIONS_NAME}")
    print(f"new node id: {new.id_text}")
    return 0


def build_run_config(args: argparse.Namespace) -> NodeConfig:
    """defaults < TOML file < flags (docs/operations.md)."""
    data_dir: Path = args.data_dir or default_data_dir()
    config_path: Path | None = args.config
    if config_path is None and (data_dir / CONFIG_FILE).exists():
        config_path = data_dir / CONFIG_FILE
    node: dict[str, Any] = {}
    fed: dict[str, Any] = {}
    for flag in ("ws", "swim", "peer", "metrics"):
        value = getattr(args, flag)
        if value is not None:
            try:
                parse_hostport(value, key=f"--{flag}")
            except ConfigError as exc:
                raise ConfigError(f"--{flag}", exc.reason) from exc
            node[flag] = value
    if args.data_dir is not None:
        node["data_dir"] = str(args.data_dir)
    if args.public_url:
        node["public_url"] = args.public_url
    if args.advertise_host:
        node["advertise_host"] = args.advertise_host
    if args.log_json is not None:
        node["log_json"] = True
    if args.log_level:
        node["log_level"] = args.log_level
    for flag in ("join", "bootstrap", "trust", "allow"):
        if getattr(args, flag):
            fed[flag] = list(getattr(args, flag))
    if args.open:
        fed["open"] = True
    overrides: dict[str, dict[str, Any]] = {}
    if node:
        overrides["node"] = node
    if fed:
        overrides["federation"] = fed
    try:
        config = load_config(config_path, overrides, preset=args.preset)
    except ConfigError as exc:
        raise ConfigError(FLAGS.get(exc.key, exc.key), exc.reason) from exc
    if not config.node.data_dir:
        config = load_config(
            config_path, {**overrides, "node": {**node, "data_dir": str(data_dir)}}, preset=args.preset
        )
    return config


def cmd_run(args: argparse.Namespace) -> int:
    config = build_run_config(args)
    ensure_writable_dir(config.data_path, key=DATA_DIR_KEY)
    lock_dir(config.data_path, what="homing node")  # held until the process ends
    identity, _ = load_or_create_key(config.data_path / KEY_FILE)
    setup_logging(config.node.log_level, json=config.node.log_json)
    open_files = raise_fd_limit(config.clients.connections_max)
    log = get_logger("node")
    for event, fields in capacity_warnings(config, open_files):
        log.warning(event, **fields)
    return trio.run(_run_until_signal, config, identity)


FDS_BESIDES_CLIENTS = 1024  # peer links, listeners, files, the push sender's connections


def raise_fd_limit(clients_max: int) -> int:
    """Raise the soft limit on open files toward `[clients] connections_max` + a margin (at most the hard limit):
    the common soft default of 1,024 would refuse clients long before connections_max (docs/performance.md "One
    node at scale"; deploy/systemd sets LimitNOFILE). Returns the soft limit now in force (-1: unlimited)."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = clients_max + FDS_BESIDES_CLIENTS
    if soft != resource.RLIM_INFINITY and soft < want:
        target = want if hard == resource.RLIM_INFINITY else min(want, hard)
        if target > soft:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
    return -1 if soft == resource.RLIM_INFINITY else int(soft)


def capacity_warnings(config: NodeConfig, open_files: int) -> list[tuple[str, dict[str, object]]]:
    """What would keep this node from holding `[clients] connections_max` phones, as (event, fields) to log at
    start (docs/operations.md, "How many phones one node holds"):

    1. The open-file limit (`open_files`, after `raise_fd_limit`; -1 is unlimited): each phone holds one file
       descriptor, and FDS_BESIDES_CLIENTS are kept for the rest. Below it, phones are refused early, and a
       neighbour's reconnect storm meets "too many open files".
    2. Other nodes' share for this node's leases: an owner keeps at most `[relay] leases_per_home_max` leases for
       the clients of one home (node/protocol/relay/owner.py), and in a federation of at most `[relay] replicas`
       nodes every node owns every client. With more clients than that share, the owners (at that default) refuse
       the rest of the leases, and calls from other nodes to those clients wait in the mailbox until they expire
       (tests/relay/test_authority.py).
    """
    out: list[tuple[str, dict[str, object]]] = []
    clients_max = config.clients.connections_max
    if open_files >= 0 and open_files - FDS_BESIDES_CLIENTS < clients_max:
        out.append(("open_file_limit_low", {
            "open_files": open_files, "clients_held_at_most": max(0, open_files - FDS_BESIDES_CLIENTS),
            "connections_max": clients_max,
            "fix": f"raise the hard limit (LimitNOFILE, ulimit -Hn) to {clients_max + FDS_BESIDES_CLIENTS}",
        }))  # fmt: skip
    share = config.relay.leases_per_home_max
    if clients_max > share:
        out.append(("connections_max_above_lease_share", {
            "connections_max": clients_max, "leases_per_home_max": share,
            "effect": "in a small federation, the owners keep leases for at most leases_per_home_max of this "
                      "node's clients; calls from other nodes to the rest wait in the mailbox until they expire",
            "fix": "keep connections_max at or below leases_per_home_max, or raise leases_per_home_max on every node",
        }))  # fmt: skip
    return out


async def _run_until_signal(config: NodeConfig, identity: Any) -> int:
    from node.app.service import run_node

    log = get_logger("node")
    async with trio.open_nursery() as nursery:
        # caught from before the first socket is bound: a SIGTERM that arrives while the node starts (ports.json is
        # written, `systemctl stop` right after `start`) waits here until the start is done and then leaves cleanly;
        # before, it found no handler yet and killed the process without a leave. The first signal closes the
        # receiver, so a second one during the leave stops the process at once, as before. SIGHUP (the terminal or
        # ssh session of a node run by hand went away) leaves cleanly too: its default action killed the node with no
        # leave, so the others waited out the suspicion timeout and its clients had no goaway.
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
            handle = await nursery.start(run_node, config, identity)
            # the process's garbage collector, here where the process is the node's (not for nodes run inside tests
            # or the demo): node/app/gcpolicy.py
            gcpolicy.serving()
            # the full id once, at start, so an operator can hand it to a registry admin (later lines show a prefix)
            log.info("ready", node_id=identity.id_text, **dict(handle.ports), data_dir=str(config.data_path))
            async for signum in signals:
                log.info("signal", signal=signal.Signals(signum).name, action="leaving the federation")
                gcpolicy.leaving()
                handle.request_shutdown()
                break
    return 0


def status_target(data_dir: Path) -> str:
    """The metrics address of the node whose data dir is `data_dir`: the host from its homing-node.toml
    (`[node] metrics`; a wildcard becomes loopback) and the port it really bound, from its ports.json.
    A directory without a node key is a ConfigError: before, a mistyped path asked the default port and the error
    read "is the node running?"."""
    try:
        (data_dir / KEY_FILE).stat()
    except (FileNotFoundError, NotADirectoryError):
        raise ConfigError("--data-dir", f"{data_dir} is not a node's data dir (no {KEY_FILE} there)") from None
    except OSError as exc:  # the service's data dir is 0700: another user cannot look inside
        raise ConfigError(
            "--data-dir",
            f"cannot look in {data_dir}: {exc.strerror or exc}; run as the node's user (sudo -u homing ...) or give "
            "its metrics address with --metrics HOST:PORT",
        ) from exc
    toml_path = data_dir / "homing-node.toml"
    config = load_config(toml_path if toml_path.exists() else None)
    host, port = parse_hostport(config.node.metrics, key="node.metrics")
    host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)
    try:
        port = int(json.loads((data_dir / "ports.json").read_text())["metrics"])
    except FileNotFoundError:
        pass  # not running (or never ran) there: try the configured port
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConfigError("--data-dir", f"cannot read {data_dir / 'ports.json'}: {exc}") from exc
    return format_hostport(host, port)


def cmd_status(args: argparse.Namespace) -> int:
    import urllib.error  # here, not at the top: urllib.request brings http.client and email, which `run` never uses
    import urllib.request

    target = args.metrics
    source = "--metrics"
    if target is None and args.data_dir is not None:
        target, source = status_target(args.data_dir), f"--data-dir {args.data_dir}"
    elif target is None:
        target, source = "127.0.0.1:7403", "the default"
    host, port = parse_hostport(target, key="--metrics")
    url = f"http://{format_hostport(host, port)}/v1/{'clients' if args.clients else 'members'}"
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            data = json.loads(resp.read())
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        print(
            f"homing: cannot reach the node's metrics endpoint at {url} (from {source}): {reason}; "
            "is the node running? give its metrics address with --metrics HOST:PORT, or its data dir with --data-dir",
            file=sys.stderr,
        )
        return 1
    if args.json:
        print(json.dumps(data, indent=2))
        return 0
    print(format_ranges(data) if args.clients else format_status(data))
    return 0


def format_ranges(data: dict[str, Any]) -> str:
    """`node status --clients`: connections per address range, largest first."""
    rows = [("RANGE", "CONNECTIONS")] + [(str(r.get("prefix")), str(r.get("connections"))) for r in data["ranges"]]
    width = max(len(r[0]) for r in rows)
    lines = [f"{a.ljust(width)}  {b}" for a, b in rows]
    shown = len(data["ranges"])
    lines.append(
        f"\n{data.get('connections', 0)} connection(s) from {data.get('ranges_total', shown)} range(s)"
        + (f" ({shown} largest shown)" if shown < data.get("ranges_total", shown) else "")
    )
    return "\n".join(lines)


def format_registrations(regs: Any) -> list[str]:
    """One line per registry: the registration state and the last accepted heartbeat."""
    if not isinstance(regs, list) or not regs:
        return ["registrations: none (no --bootstrap registry)"]
    lines = []
    for r in regs:
        last = r.get("last_success")
        when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(last)) if isinstance(last, int) else "never"
        why = f" ({r.get('reason')})" if r.get("reason") else ""
        lines.append(f"registry {r.get('registry')}: {r.get('state')}{why}; last successful heartbeat {when}")
    return lines


def format_status(data: dict[str, Any]) -> str:
    members = data.get("members", [])
    rows = [("ID", "ADDRESS", "STATE", "INCARNATION")]
    for m in members:
        me = " (self)" if m.get("id") == data.get("self") else ""
        rows.append((str(m.get("id")) + me, str(m.get("address")), str(m.get("state")), str(m.get("incarnation"))))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    lines = ["  ".join(cell.ljust(widths[i]) for i, cell in enumerate(r)).rstrip() for r in rows]
    counts: dict[str, int] = {}
    for m in members:
        counts[str(m.get("state"))] = counts.get(str(m.get("state")), 0) + 1
    summary = ", ".join(f"{n} {state}" for state, n in sorted(counts.items()))
    lines.append("")
    lines.append(f"members: {len(members)} ({summary}); clients connected to this node: {data.get('clients', 0)}")
    lines.append(format_turn(data.get("turn")))
    lines += format_registrations(data.get("registrations"))
    return "\n".join(lines)


def format_turn(turn: Any) -> str:
    """One line about `[turn]`: configured or not, the URLs, when the shared secret last changed."""
    if not isinstance(turn, dict):
        return "turn: (not reported by this node)"
    urls = ", ".join(str(u) for u in turn.get("urls", [])) or "no URLs"
    if not turn.get("configured"):
        return f"turn: not configured (clients get STUN only: {urls})"
    changed = turn.get("secret_changed")
    when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(changed)) if isinstance(changed, int) else "?"
    realm = f" realm {turn.get('realm')}" if turn.get("realm") else ""
    return f"turn: configured{realm}, credentials valid {turn.get('ttl_s')} s, secret last changed {when}; {urls}"
