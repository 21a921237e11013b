"""Who the client is behind trusted reverse proxies (`X-Forwarded-For`), pure.

Theory: a proxy appends the address it received the connection from to `X-Forwarded-For`, so the header reads
`client, proxy1, proxy2` and the socket's peer is the last proxy. Only hops added by proxies we trust are true;
anything to their left may be written by the client itself. So, starting at the socket's peer and walking the
header right to left, the client is the first address that is not a trusted proxy ("rightmost untrusted hop").
A peer that is not a trusted proxy is the client, whatever its header says. A hop that is not an IP address
stops the walk at the last trusted hop (that proxy is then the client: a broken proxy chain is not believed).
Per-address limits are keyed by `node.protocol.ratelimit.address_key` of the result.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence

from node.protocol.errors import ConfigError

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
FORWARDED_HOPS_MAX = 32  # hops of one header considered; a longer chain is cut on its left


def parse_networks(texts: Iterable[str], *, key: str) -> tuple[Network, ...]:
    """IP addresses or CIDR networks; raises ConfigError naming `key` for anything else."""
    out = []
    for text in texts:
        try:
            out.append(ipaddress.ip_network(text.strip(), strict=False))
        except ValueError as exc:
            raise ConfigError(key, f"{text!r} is not an IP address or network: {exc}") from exc
    return tuple(out)


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    text = text.strip()
    if text.startswith("[") and "]" in text:  # "[v6]:port"
        text = text[1 : text.index("]")]
    elif text.count(":") == 1:  # "v4:port"
        text = text.partition(":")[0]
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def _trusted(ip: ipaddress.IPv4Address | ipaddress.IPv6Address, proxies: Sequence[Network]) -> bool:
    return any(ip.version == net.version and ip in net for net in proxies)


def is_trusted_proxy(peer: str, proxies: Sequence[Network]) -> bool:
    ip = _ip(peer)
    return ip is not None and _trusted(ip, proxies)


def rightmost_untrusted(forwarded_for: str, proxies: Sequence[Network]) -> tuple[str | None, str | None]:
    """Walk `X-Forwarded-For` right to left: (the first hop that is not a trusted proxy, or None when the walk ends
    on trusted hops or an unreadable one; the last trusted hop seen, or None)."""
    last: str | None = None
    hops = [h for h in forwarded_for.split(",") if h.strip()][-FORWARDED_HOPS_MAX:]
    for hop in reversed(hops):
        ip = _ip(hop)
        if ip is None:
            return None, last
        if not _trusted(ip, proxies):
            return str(ip), last
        last = str(ip)
    return None, last


def client_address(peer: str, forwarded_for: str | None, proxies: Sequence[Network]) -> str:
    """The client's address for a request from socket peer `peer` carrying `X-Forwarded-For: forwarded_for`."""
    current = _ip(peer)
    if current is None or not proxies or not _trusted(current, proxies) or not forwarded_for:
        return peer
    client, last_trusted = rightmost_untrusted(forwarded_for, proxies)
    return client or last_trusted or str(current)
