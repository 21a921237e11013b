"""`homing discover`, `homing card`, `homing qr` (client-side discovery, docs/discovery.md).

`homing discover` exits 0 when at least one node was found (listed), 1 when none, 2 for bad usage.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any, TextIO

import segno
import trio

from node.app.config import build_config, default_data_dir, load_toml
from node.client.discovery import DiscoveryConfig, DiscoveryResult, discover, load_cache, parse_entry
from node.client.discovery.sources import txt_query
from node.client.files import load_or_create_key
from node.protocol.errors import ConfigError
from node.protocol.identity import parse_id, short_id
from node.protocol.nodelist import CARD_LIFETIME_DEFAULT_S, make_card
from node.protocol.numerals import decimal

CACHE_FILE_NAME = "discovery-cache.json"


def _trust(values: list[str]) -> frozenset[bytes]:
    keys = set()
    for text in values:
        try:
            keys.add(parse_id(text))
        except ValueError as exc:
            raise ConfigError("--trust", f"{text[:60]!r} is not a registry key: {exc}") from exc
    return frozenset(keys)


def config_from_args(args: argparse.Namespace) -> DiscoveryConfig:
    """Validate the flags of `homing discover` into a DiscoveryConfig (ConfigError names the bad flag)."""
    if bool(args.doh) != bool(args.name):
        raise ConfigError("--doh" if not args.doh else "--name", "--doh URL and --name NAME go together")
    for url in args.registry:
        if not url.startswith(("https://", "http://")):
            raise ConfigError("--registry", f"{url!r} is not an http(s) URL")
    for url in args.doh:
        if not url.startswith("https://"):
            raise ConfigError("--doh", f"{url!r} is not an https:// DoH URL")
    for name in args.name:
        txt_query(name)
    if args.ca and not Path(args.ca).is_file():
        raise ConfigError("--ca", f"{args.ca} is not a file")
    cache = None if args.no_cache else Path(args.cache) if args.cache else default_data_dir() / CACHE_FILE_NAME
    return DiscoveryConfig(
        trust=_trust(args.trust), registries=tuple(args.registry), doh=tuple(args.doh), names=tuple(args.name),
        cache=cache, extra=tuple(parse_entry(uri, now=time.time()) for uri in args.add), ca_file=args.ca or None,
        deadline_s=args.deadline, want=args.want, bridges=args.bridges,
    )  # fmt: skip


class Progress:
    """One progress line on stderr while sources are pending (rewritten in place on a terminal)."""

    def __init__(self, out: TextIO) -> None:
        self.out, self.tty, self.last = out, out.isatty(), ""

    def __call__(self, pending: list[str], proven: int) -> None:
        line = f"discovering: {proven} node(s) proven; waiting for {len(pending)} source(s)" if pending else ""
        if line == self.last:
            return
        self.last = line
        if self.tty:
            self.out.write("\r\033[K" + line)
        elif line:
            self.out.write(line + "\n")
        self.out.flush()

    def close(self) -> None:
        if self.tty and self.last:
            self.out.write("\r\033[K")
            self.out.flush()


def render_table(result: DiscoveryResult) -> str:
    rows = [("NODE", "WS", "SOURCE", "VERIFIED", "HANDSHAKE MS")]
    for f in result.nodes:
        ms = "-" if f.handshake_ms is None else f"{f.handshake_ms:.1f}"
        rows.append((short_id(f.id) + "…", f.ws, str(f.source), "yes" if f.verified else "no", ms))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows)


GIVE_A_SOURCE = (
    "give a source: --registry URL (with --trust KEY), --doh URL --name NAME, or --add URI "
    "(a homing://node/… referral card or wss://HOST:PORT#ID); docs/discovery.md"
)


def _cache_status(cache: Path | None) -> tuple[str, bool]:
    """What the cache held, and whether it held any node."""
    if cache is None:
        return "cache: off (--no-cache)", False
    if not cache.exists():
        return f"cache {cache}: absent (it is written once a discovery reaches a node)", False
    cached, problems = load_cache(cache)
    if problems and not cached:
        return f"cache {cache}: unusable (see above)", False
    if not cached:
        return f"cache {cache}: empty", False
    return f"cache {cache}: {len(cached)} node(s), none answered", True


def source_report(cfg: DiscoveryConfig) -> list[str]:
    """Said when no node was found: each kind of source, what it gave, and the flag that adds one."""
    queries = len(cfg.doh) * len(cfg.names)
    lines = [
        f"registry: {len(cfg.registries)} tried, no node from them (see above)" if cfg.registries
        else "registry: none given (--registry URL)",
        f"DNS TXT over DoH: {queries} query(ies) tried, no node from them (see above)" if queries
        else "DNS TXT over DoH: none given (--doh URL --name NAME)",
        f"referral cards and manual entries: {len(cfg.extra)} tried, none answered" if cfg.extra
        else "referral cards and manual entries: none given (--add URI)",
    ]  # fmt: skip
    cache_line, cache_had_nodes = _cache_status(cfg.cache)
    lines.append(cache_line)
    if not (cfg.registries or queries or cfg.extra or cache_had_nodes):
        lines.append(GIVE_A_SOURCE)
    return lines


def cmd_discover(args: argparse.Namespace) -> int:
    cfg = config_from_args(args)
    progress = None if args.json else Progress(sys.stderr)
    try:
        result = trio.run(lambda: discover(cfg, progress=progress))
    finally:
        if progress is not None:
            progress.close()
    problems = [*result.errors, *([] if result.nodes else source_report(cfg))]
    if args.json:
        print(json.dumps({**result.to_json(), "errors": problems}, indent=None))
    else:
        print(render_table(result) if result.nodes else "no node found")
        for line in problems:
            print(f"homing discover: {line}", file=sys.stderr)
    return 0 if result.nodes else 1


def card_url(data_dir: Path) -> str:
    """`[node] public_url` of D/homing-node.toml, else ws://127.0.0.1:<ports.json ws> + `[clients] path`, else the
    configured ws address. On a bridge (`listed = false`) this is the bridge card clients share."""
    toml_path = data_dir / "homing-node.toml"
    file_values: dict[str, Any] = load_toml(toml_path) if toml_path.exists() else {}
    config = build_config(file_values)
    if config.node.public_url:
        return config.node.public_url
    try:
        ports = json.loads((data_dir / "ports.json").read_text())
        port = int(ports["ws"])
    except FileNotFoundError:
        return config.advertised_url()
    except (ValueError, KeyError, TypeError) as exc:
        raise ConfigError(str(data_dir / "ports.json"), "has no usable `ws` port") from exc
    return f"ws://127.0.0.1:{port}{config.clients.path}"


def cmd_card(args: argparse.Namespace) -> int:
    data_dir = Path(args.data_dir) if args.data_dir else default_data_dir()
    identity, _ = load_or_create_key(data_dir / "node.key", create=False)
    url = args.url or card_url(data_dir)
    if not url.startswith(("ws://", "wss://")):
        raise ConfigError("--url", f"{url!r} is not a ws:// or wss:// URL")
    now = int(time.time())
    exp = now + _at_least_one(args.expires, "--expires")
    try:
        print(make_card(identity, ws=url, ts=now, exp=exp, allow_plain_ws=args.allow_plain_ws))
    except ValueError as exc:
        raise ConfigError("--url", f"{exc}; pass --allow-plain-ws if this card is only for a private network") from exc
    return 0


def _at_least_one(value: int, flag: str) -> int:
    if value < 1:
        raise ConfigError(flag, f"must be at least 1 second, got {value}")
    return value


def cmd_qr(args: argparse.Namespace) -> int:
    parse_entry(
        args.uri, now=time.time(), flag="URI"
    )  # refuse a typo'd or forged card before printing it for others to scan
    code = segno.make(args.uri, error="m")
    if args.png:
        try:
            code.save(args.png, kind="png", scale=8, border=4)
        except OSError as exc:
            raise ConfigError("--png", f"cannot write {args.png}: {exc.strerror}") from exc
        print(f"wrote {args.png}")
    else:
        code.terminal(out=sys.stdout, compact=True)
    return 0


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds, got {text!r}") from None
    if not 0 < value <= 300:
        raise argparse.ArgumentTypeError("must be in (0, 300] seconds")
    return value


def _count(text: str) -> int:
    count = decimal(text)
    if count is None or not 1 <= count <= 1000:
        raise argparse.ArgumentTypeError(f"expected a count 1..1000, got {text!r}")
    return count


def register(sub: Any) -> None:
    p = sub.add_parser("discover", help="find and verify nodes through every discovery channel (docs/discovery.md)")
    p.add_argument("--trust", action="append", default=[], metavar="KEY", help="trusted registry public key")
    p.add_argument("--registry", action="append", default=[], metavar="URL", help="registry base URL")
    p.add_argument("--doh", action="append", default=[], metavar="URL", help="DoH resolver URL (…/dns-query)")
    p.add_argument("--name", action="append", default=[], metavar="NAME", help="TXT name, e.g. _homing.example.org")
    p.add_argument(
        "--cache",
        default="",
        metavar="FILE",
        help=f"the file of nodes that proved their id before (default: {default_data_dir() / CACHE_FILE_NAME}, "
        "i.e. $XDG_DATA_HOME/homing or ~/.local/share/homing)",
    )
    p.add_argument("--no-cache", action="store_true", help="neither read nor write a cache")
    p.add_argument("--bridges", action="store_true", help="also ask each --registry for bridges (GET /v1/bridges)")
    p.add_argument("--add", action="append", default=[], metavar="URI", help="homing://node/… or wss://HOST:PORT#ID")
    p.add_argument("--ca", default="", metavar="FILE", help="extra CA for DoH and registry HTTPS")
    p.add_argument("--json", action="store_true", help="print JSON for scripts")
    p.add_argument("--deadline", type=_positive, default=8.0, metavar="S", help="overall deadline (default 8 s)")
    p.add_argument("--want", type=_count, default=None, metavar="N", help="stop once N nodes proved their id")
    p.set_defaults(func=cmd_discover)

    p = sub.add_parser("card", help="print this node's signed referral URI")
    p.add_argument("--data-dir", default="", metavar="D", help="node data dir (default: the user's data dir)")
    p.add_argument("--url", default="", metavar="WS_URL", help="public client URL to put in the card")
    p.add_argument(
        "--expires",
        type=int,
        default=CARD_LIFETIME_DEFAULT_S,
        metavar="S",
        help=f"seconds the card stays valid (default {CARD_LIFETIME_DEFAULT_S}, 30 days); readers refuse it after",
    )
    p.add_argument(
        "--allow-plain-ws",
        action="store_true",
        help="allow a ws:// URL to a public host (by default only wss://, or ws:// to a loopback/private address)",
    )
    p.set_defaults(func=cmd_card)

    p = sub.add_parser("qr", help="show a referral URI as a QR code")
    p.add_argument("uri", metavar="URI")
    p.add_argument("--png", default="", metavar="FILE", help="write a PNG instead of printing to the terminal")
    p.set_defaults(func=cmd_qr)
