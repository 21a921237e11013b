"""`homing bootstrap init|run|nodes ...` (docs/operations.md); `export-txt` and `publish-dns` come from `dns_cli`."""

from __future__ import annotations

import argparse
import json
import logging
import os
import pwd
import signal
import sqlite3
import sys
import time
from pathlib import Path
from typing import Any

import attrs

from bootstrap import backup, bridges_cli, dns_cli
from bootstrap.config import BootstrapConfig, default_data_dir
from bootstrap.registry import Policy, federated
from bootstrap.store import DB_NAME, Store
from node.app.log import setup_logging
from node.client.files import ensure_writable_dir, lock_dir
from node.protocol.errors import ConfigError
from node.protocol.httplimits import HttpLimits
from node.protocol.identity import id_text, parse_id

log = logging.getLogger("homing.bootstrap")


def register(sub: Any) -> None:
    p = sub.add_parser("bootstrap", help="run and administer a bootstrap registry")
    p.set_defaults(help_parser=p)
    bsub = p.add_subparsers(dest="bootstrap_command", metavar="COMMAND", parser_class=type(p))

    init = bsub.add_parser("init", help="create the registry signing key and database; print the public key")
    _data_dir_arg(init)
    init.set_defaults(func=cmd_init)

    rot = bsub.add_parser(
        "rotate-key",
        help="replace the registry key: a new key, a statement signed by the old key and countersigned by the new "
        "one that nodes and clients follow (docs/bootstrap.md); a running service switches at once",
    )
    _data_dir_arg(rot)
    rot.add_argument(
        "--compromised",
        action="store_true",
        help="the old key was stolen: readers stop trusting it at once instead of after the 30-day grace period",
    )
    rot.set_defaults(func=cmd_rotate_key)

    run = bsub.add_parser("run", help="run the registry HTTP service")
    _data_dir_arg(run)
    run.add_argument(
        "--listen",
        default="127.0.0.1:7480",
        metavar="H:P",
        help="listen address (default 127.0.0.1:7480; port 0 picks one)",
    )
    run.add_argument(
        "--approval",
        default="manual",
        choices=["auto", "manual"],
        help="wait for an admin to approve each new node, or approve every node at once (default manual)",
    )
    run.add_argument(
        "--trusted-proxy",
        action="append",
        default=[],
        metavar="IP[/LEN]",
        help="a reverse proxy whose X-Forwarded-For is believed for per-address limits (repeatable)",
    )
    run.add_argument("--tls-cert", type=Path, metavar="FILE", help="PEM certificate chain, to serve HTTPS")
    run.add_argument("--tls-key", type=Path, metavar="FILE", help="PEM private key for --tls-cert")
    run.add_argument(
        "--list-lifetime", type=int, default=3600, metavar="S", help="seconds a signed list stays valid (default 3600)"
    )
    run.add_argument(
        "--write-rate",
        type=float,
        default=2.0,
        metavar="PER_S",
        help="registrations per second per IP (default 2, burst 20)",
    )
    run.add_argument(
        "--read-rate",
        type=float,
        default=20.0,
        metavar="PER_S",
        help="requests per second per IP (default 20, burst 3x)",
    )
    run.add_argument("--log-json", action="store_true", help="log JSON lines instead of key=value")
    run.add_argument("--health-interval", type=float, default=300.0, metavar="S",
                     help="seconds between the registry's own checks of every node's client endpoint (default 300)")
    run.add_argument("--bridge-period", type=int, default=86_400, metavar="S",
                     help="seconds one network keeps getting the same bridges from GET /v1/bridges (default 86400)")
    run.add_argument("--bridges-per-answer", type=int, default=3, metavar="N",
                     help="bridge cards in one answer of GET /v1/bridges (default 3)")
    run.add_argument(
        "--log-level", choices=["debug", "info", "warning", "error"], default="info", help="log level (default info)"
    )
    run.set_defaults(func=cmd_run)

    nodes = bsub.add_parser("nodes", help="list, approve, ban or remove nodes (acts on the running service at once)")
    nodes.set_defaults(help_parser=nodes)
    nsub = nodes.add_subparsers(dest="nodes_command", metavar="ACTION", parser_class=type(p))
    lst = nsub.add_parser("list", help="every known node with its state")
    _data_dir_arg(lst)
    lst.add_argument("--json", action="store_true", help="JSON output for scripts")
    lst.set_defaults(func=cmd_list)
    audit = nsub.add_parser("audit", help="who approved, banned or removed which node, and when (newest last)")
    _data_dir_arg(audit)
    audit.add_argument("--limit", type=int, default=100, metavar="N", help="the newest N entries (default 100)")
    audit.set_defaults(func=cmd_audit)
    for action, text in (
        ("approve", "approve a node (also lifts a ban); an id not yet seen is pre-approved"),
        ("ban", "ban a node: unlisted at once, its registrations refused with 403"),
        ("remove", "forget a node's registration, approval and ban (it may register again)"),
    ):
        a = nsub.add_parser(action, help=text)
        a.add_argument("id", metavar="ID", help="node id (43 base64url characters)")
        _data_dir_arg(a)
        a.set_defaults(func=cmd_admin, action=action)

    bridges_cli.register(bsub, _data_dir_arg, cmd_bridges)
    dns_cli.register(bsub)
    backup.register(bsub)


def _data_dir_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--data-dir", type=Path, default=None, metavar="D", help=f"data directory (default {default_data_dir()})"
    )


def _config(args: argparse.Namespace, **kw: Any) -> BootstrapConfig:
    data_dir = args.data_dir if args.data_dir is not None else default_data_dir()
    return BootstrapConfig(data_dir=data_dir, **kw)


def cmd_init(args: argparse.Namespace) -> int:
    from bootstrap.service import load_identity  # here: it imports trio, which the admin commands do not need

    config = _config(args)
    ensure_writable_dir(config.data_dir, key="--data-dir", mode=0o700)
    identity, created = load_identity(config, create=True)
    Store.open(config.data_dir, create=True).close()
    what = "created" if created else "already exists:"
    print(f"registry key {what} {config.key_path}")
    print(f"database {config.data_dir / 'registry.sqlite3'}")
    print(f"registry public key (give it to nodes and clients as --trust): {identity.id_text}")
    return 0


def cmd_rotate_key(args: argparse.Namespace) -> int:
    from bootstrap.config import ROTATIONS_NAME
    from node.app.keyrotation import rotate_key_file

    config = _config(args)
    store = _open_store(args)
    try:
        old, new, _ = rotate_key_file(
            config.key_path, config.data_dir / ROTATIONS_NAME, time.time(), compromised=args.compromised
        )
        store.bump(time.time(), who=_admin_user(), action="rotate_key", subject=new.id)
    finally:
        store.close()
    print(f"old registry key {old.id_text} kept as {config.key_path}.retired-{old.id_text[:8]} (move it offline)")
    print(f"statement appended to {config.data_dir / ROTATIONS_NAME}")
    print(f"new registry public key (nodes and clients follow the statement; give it to new ones as --trust): "
          f"{new.id_text}")  # fmt: skip
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    import trio  # here: the admin commands need neither trio nor the service (docs/bootstrap.md)

    from bootstrap.app import run_bootstrap
    from bootstrap.service import load_identity
    from node.protocol.settings import format_hostport, parse_hostport

    http = attrs.evolve(
        BootstrapConfig().http,
        rate_per_ip_per_s=_positive(args.read_rate, "--read-rate"),
        rate_per_ip_burst=max(1, int(args.read_rate * 3)),
    )
    assert isinstance(http, HttpLimits)
    config = _config(
        args,
        listen=args.listen,
        policy=Policy(approval=args.approval),
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
        list_lifetime_s=_at_least(args.list_lifetime, 60, "--list-lifetime"),
        write_rate_per_ip_per_s=_positive(args.write_rate, "--write-rate"),
        http=http,
        trusted_proxies=tuple(args.trusted_proxy),
        health_interval_s=_at_least_f(args.health_interval, 0.5, "--health-interval"),
        bridge_period_s=_at_least(args.bridge_period, 60, "--bridge-period"),
        bridges_per_answer=_at_least(min(args.bridges_per_answer, 16), 1, "--bridges-per-answer"),
    )
    if not config.key_path.exists():
        raise ConfigError("--data-dir", f"no registry key in {config.data_dir} (run `homing bootstrap init` first)")
    ensure_writable_dir(config.data_dir, key="--data-dir")  # the database writes its journal beside itself
    lock_dir(config.data_dir, what="homing registry")  # one service per data dir; admin commands need no lock
    setup_logging(args.log_level, json=args.log_json)
    host, _ = parse_hostport(config.listen, key="--listen")
    scheme = "https" if config.tls_cert else "http"
    identity, _ = load_identity(config, create=False)

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            # caught before the port is bound: a SIGTERM right after ports.json is written stops the registry as a
            # later one does (node/cli/node.py `_run_until_signal`), instead of finding no handler yet; SIGHUP (a
            # closed terminal) stops it cleanly as well
            with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
                port = await nursery.start(lambda task_status: run_bootstrap(config, task_status=task_status))
                print(
                    f"homing bootstrap: serving {scheme}://{format_hostport(host, port)} port={port} "
                    f"approval={config.policy.approval} key={identity.id_text}",
                    flush=True,
                )
                async for signum in signals:
                    print(f"homing bootstrap: {signal.Signals(signum).name}, stopping", file=sys.stderr, flush=True)
                    nursery.cancel_scope.cancel()
                    break

    trio.run(main)  # a port that cannot be opened raises ListenError: one line, exit 1 (node/cli/__init__.py)
    return 0


def _positive(value: float, flag: str) -> float:
    if not value > 0:
        raise ConfigError(flag, f"must be > 0, got {value}")
    return value


def _at_least(value: int, lo: int, flag: str) -> int:
    if value < lo:
        raise ConfigError(flag, f"must be at least {lo}, got {value}")
    return value


def _at_least_f(value: float, lo: float, flag: str) -> float:
    if not value >= lo:
        raise ConfigError(flag, f"must be at least {lo}")
    return value


def _ago(seen: int | None, now: float) -> str:
    return "-" if seen is None else f"{max(0, int(now - seen))}s ago"


def _admin_user() -> str:
    """Who runs an admin command, for the audit trail: the OS user."""
    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        return f"uid {os.geteuid()}"


def _open_store(args: argparse.Namespace) -> Store:
    """The registry database for an admin command, or a ConfigError that says where we looked and what to do."""
    config = _config(args)
    path = config.data_dir / DB_NAME
    where = "--data-dir" if args.data_dir is not None else "the default --data-dir"
    try:
        present = path.exists()
    except PermissionError:
        raise ConfigError(str(path), _no_permission()) from None
    if not present:
        hint = (
            "check the path" if args.data_dir is not None else "pass --data-dir with the running registry's directory"
        )
        raise ConfigError("--data-dir", f"no registry database at {path} ({where}); {hint}")
    try:
        return Store.open(config.data_dir)
    except (PermissionError, sqlite3.Error):
        raise ConfigError(str(path), _no_permission()) from None


def _no_permission() -> str:
    return f"permission denied for user {_admin_user()}; run as the registry's user (e.g. sudo -u homing ...)"


def cmd_list(args: argparse.Namespace) -> int:
    store = _open_store(args)
    try:
        records = store.all_known()
    finally:
        store.close()
    now = time.time()
    listed_total = sum(1 for r in records if r.listed(now))
    if args.json:
        out = [
            {
                "id": id_text(r.id),
                "state": r.state(now),
                "ws": r.ws,
                "swim": r.swim,
                "peer": r.peer,
                "seen": r.seen,
                "last_heartbeat": r.seen,
                "ttl": r.ttl,
                "first_seen": r.first_seen,
                "peers": r.peers,
                "federated": federated(r, listed_total, now),
                "bridge": r.bridge,
                "passed": r.passed,
                "fails": r.fails,
            }
            for r in records
        ]
        print(json.dumps({"nodes": out}, indent=2))
        return 0
    print(f"{'ID':<43}  {'STATE':<8}  {'HEARTBEAT':>10}  {'CHECKED':>10}  WS")
    lonely = 0
    for r in records:
        checked = _ago(r.passed, now)
        note = ""
        if federated(r, listed_total, now) is False:
            lonely += 1
            note = "  NOT FEDERATED (sees no other member; check its --trust key and ports)"
        print(f"{id_text(r.id):<43}  {r.state(now):<8}  {_ago(r.seen, now):>10}  {checked:>10}  {r.ws or '-'}{note}")
    print(f"{len(records)} node(s)" + (f", {lonely} listed but not federated" if lonely else ""))
    return 0


def cmd_bridges(args: argparse.Namespace) -> int:
    store = _open_store(args)
    try:
        return bridges_cli.run(args, store, _admin_user())
    finally:
        store.close()


def cmd_audit(args: argparse.Namespace) -> int:
    store = _open_store(args)
    try:
        entries = store.audit(limit=max(1, args.limit))
    finally:
        store.close()
    for e in entries:
        when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(e.at))
        print(f"{when}  {e.who:<16}  {e.action:<13}  {id_text(e.node)}")
    return 0


def cmd_admin(args: argparse.Namespace) -> int:
    try:
        node_id = parse_id(args.id)
    except ValueError as exc:
        raise ConfigError("ID", f"{args.id!r} is not a node id: {exc}") from exc
    store = _open_store(args)
    who, now = _admin_user(), time.time()
    try:
        if args.action == "approve":
            store.set_approved(node_id, now, who=who)
        elif args.action == "ban":
            store.set_banned(node_id, now, who=who)
        elif not store.remove(node_id, now, who=who):
            print(f"homing bootstrap: no node {args.id} in the registry", file=sys.stderr)
            return 1
    except sqlite3.Error as exc:
        hint = f" ({_no_permission()})" if "readonly" in str(exc) else ""
        print(f"homing bootstrap: database error, nothing changed: {exc}{hint}", file=sys.stderr)
        return 1
    finally:
        store.close()
    done = {"approve": "approved", "ban": "banned", "remove": "removed"}[args.action]
    log.info("event=admin_%s node=%s who=%s", args.action, args.id, who)
    print(f"{done} {args.id}")
    return 0
