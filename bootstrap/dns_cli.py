"""`homing bootstrap export-txt` and `homing bootstrap publish-dns`: the signed node list in DNS (docs/discovery.md).

`export-txt` prints zone-file lines for an operator to paste into any DNS provider; `publish-dns` replaces the TXT
RRset at NAME on an authoritative server by RFC 2136 dynamic update signed with TSIG (one atomic RRset swap, over
TCP since a large list exceeds UDP sizes), then reads the RRset back from that server and checks that it decodes to
the document just published. The record format is `node.protocol.txt`'s (docs/discovery.md, "TXT format").

The list comes from the registry's data dir (`bootstrap.service.current_signed_list`), or with `--from-file` from a
saved `GET /v1/nodes` answer (msgpack), so the DNS publisher need not run on the registry host.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import dns.exception  # these come with bootstrap.tsig_key anyway; the rest of dnspython is imported where used
import dns.name
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.tsig

from bootstrap.tsig_key import TSIG_ALGORITHMS, TsigKey, load_tsig_key
from bootstrap.tsig_key import parse_tsig_key as parse_tsig_key
from node.protocol.errors import ConfigError, HomingError, RemoteProtocolError
from node.protocol.identity import decode_document
from node.protocol.settings import parse_hostport
from node.protocol.txt import TTL_DEFAULT_S, decode_txt, encode_txt, zone_lines

if TYPE_CHECKING:  # building and sending DNS messages (a fifth of a second to import) only where it is done
    import dns.rrset

LIST_FILE_MAX_BYTES = 512 * 1024
DNS_TIMEOUT_S = 10.0
TTL_MAX_S = 86_400


def txt_rrset(name: dns.name.Name, doc: dict[str, bytes], ttl: int) -> dns.rrset.RRset:
    import dns.rdtypes.ANY.TXT
    import dns.rrset

    rrset = dns.rrset.RRset(name, dns.rdataclass.IN, dns.rdatatype.TXT)
    for record in encode_txt(doc):
        rrset.add(dns.rdtypes.ANY.TXT.TXT(dns.rdataclass.IN, dns.rdatatype.TXT, record), ttl)
    return rrset


def _names(name: str, zone: str) -> tuple[dns.name.Name, dns.name.Name]:
    try:
        owner, origin = dns.name.from_text(name), dns.name.from_text(zone)
    except dns.exception.DNSException as exc:
        raise ConfigError("--name", f"not a domain name: {exc}") from exc
    if not owner.is_subdomain(origin):
        raise ConfigError("--name", f"{owner} is not inside zone {origin}")
    return owner, origin


def publish_dns(
    doc: dict[str, bytes],
    *,
    name: str,
    zone: str,
    server: str,
    key: TsigKey,
    ttl: int = TTL_DEFAULT_S,
    timeout_s: float = DNS_TIMEOUT_S,
) -> int:
    """Replace the TXT RRset at `name` with `doc`'s records and read it back. Returns the number of records.

    Raises HomingError with the server's answer (NOTAUTH, REFUSED, a bad TSIG signature...) when it refuses.
    """
    import dns.query
    import dns.update

    owner, origin = _names(name, zone)
    host, port = parse_hostport(server, key="--server")
    rrset = txt_rrset(owner, doc, ttl)
    update = dns.update.UpdateMessage(origin, keyring=key.keyring(), keyalgorithm=TSIG_ALGORITHMS[key.algorithm])
    update.replace(owner, rrset)
    try:
        answer = dns.query.tcp(update, host, port=port, timeout=timeout_s)
    except dns.tsig.PeerError as exc:
        raise HomingError(f"{server} refused the TSIG key {key.name!r}: {type(exc).__name__}") from exc
    except (OSError, dns.exception.DNSException) as exc:
        raise HomingError(f"update to {server} failed: {exc or type(exc).__name__}") from exc
    if answer.rcode() != dns.rcode.NOERROR:
        raise HomingError(f"{server} refused the update: {dns.rcode.to_text(answer.rcode())}")
    read_back(owner, host, port, doc, timeout_s=timeout_s)
    return len(rrset)


def read_back(owner: dns.name.Name, host: str, port: int, doc: dict[str, bytes], *, timeout_s: float) -> None:
    """Query the authoritative server for the RRset just written and check it decodes to `doc`."""
    import dns.message
    import dns.query

    query = dns.message.make_query(owner, dns.rdatatype.TXT)
    try:
        answer = dns.query.tcp(query, host, port=port, timeout=timeout_s)
    except (OSError, dns.exception.DNSException) as exc:
        raise HomingError(f"read-back from {host}:{port} failed: {exc or type(exc).__name__}") from exc
    rrset = answer.get_rrset(answer.answer, owner, dns.rdataclass.IN, dns.rdatatype.TXT)
    if rrset is None:
        raise HomingError(f"read-back: {host}:{port} has no TXT records at {owner} after the update")
    try:
        got = decode_txt([list(r.strings) for r in rrset])
    except RemoteProtocolError as exc:
        raise HomingError(f"read-back: the records at {owner} do not decode: {exc}") from exc
    if got != doc:
        raise HomingError(f"read-back: {owner} holds a different list than the one just published")


# --- command line --------------------------------------------------------------------------------------------


def _load_list(args: argparse.Namespace) -> dict[str, bytes]:
    if args.from_file:
        path = Path(args.from_file)
        try:
            data = path.read_bytes()[: LIST_FILE_MAX_BYTES + 1]
        except OSError as exc:
            raise ConfigError("--from-file", f"cannot read {path}: {exc.strerror}") from exc
        try:
            doc = decode_document(data)
        except RemoteProtocolError as exc:
            raise ConfigError("--from-file", f"{path} is not a signed node list: {exc}") from exc
        return {k: doc[k] for k in ("body", "key", "sig") if isinstance(doc.get(k), bytes)}
    from bootstrap.service import current_signed_list  # here: it imports trio, which `--from-file` does not need

    data_dir = Path(args.data_dir) if args.data_dir else _default_bootstrap_dir()
    result: dict[str, bytes] = current_signed_list(data_dir, time.time())
    return result


def _default_bootstrap_dir() -> Path:
    from node.app.config import default_data_dir

    return default_data_dir() / "bootstrap"


def _ttl(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds, got {text!r}") from None
    if not 0 <= value <= TTL_MAX_S:
        raise argparse.ArgumentTypeError(f"must be 0..{TTL_MAX_S}")
    return value


def cmd_export_txt(args: argparse.Namespace) -> int:
    _names(args.name, ".")
    doc = _load_list(args)
    for line in zone_lines(args.name, encode_txt(doc), ttl=args.ttl):
        print(line)
    return 0


def cmd_publish_dns(args: argparse.Namespace) -> int:
    key = load_tsig_key(Path(args.tsig_key))
    parse_hostport(args.server, key="--server")
    _names(args.name, args.zone)
    doc = _load_list(args)
    count = publish_dns(doc, name=args.name, zone=args.zone, server=args.server, key=key, ttl=args.ttl)
    print(f"published {count} TXT record(s) at {args.name} via {args.server}; read back and verified", file=sys.stdout)
    return 0


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--name", required=True, help="full domain name of the RRset, e.g. _homing.example.org")
    p.add_argument("--data-dir", default="", help="registry data dir (default: the user's data dir)")
    p.add_argument("--from-file", default="", help="publish this saved GET /v1/nodes answer (msgpack) instead")
    p.add_argument("--ttl", type=_ttl, default=TTL_DEFAULT_S, help=f"record TTL in seconds (default {TTL_DEFAULT_S})")


def register(bootstrap_sub: Any) -> None:
    """Add `export-txt` and `publish-dns` to the `homing bootstrap` subparsers."""
    p = bootstrap_sub.add_parser("export-txt", help="print the signed node list as DNS TXT zone-file lines")
    _common(p)
    p.set_defaults(func=cmd_export_txt)
    p = bootstrap_sub.add_parser("publish-dns", help="push the signed node list to DNS by RFC 2136 update with TSIG")
    _common(p)
    p.add_argument("--zone", required=True, help="the zone to update, e.g. example.org")
    p.add_argument("--server", required=True, help="authoritative server HOST:PORT that accepts updates")
    p.add_argument("--tsig-key", required=True, help="TSIG key file (keymgr -t output or a BIND key block)")
    p.set_defaults(func=cmd_publish_dns)
