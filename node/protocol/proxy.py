"""Who is the client behind a trusted proxy: PROXY protocol v2 headers and X-Forwarded-For, parsed strictly (pure).

Rules
1. Only a connection whose own address is in `trusted_proxies` may name another address; from anyone else a
   PROXY header is just bytes that are not HTTP, and X-Forwarded-For is ignored (docs/operations.md, "Behind a
   proxy").
2. PROXY v2 (the binary header of the HAProxy PROXY protocol spec, section 2.2): the 12-byte signature, version 2,
   command LOCAL (a health check: the connection is the proxy's own) or PROXY, families TCP over IPv4 or IPv6
   (UNSPEC is taken as LOCAL). The declared length is capped at `PROXY_V2_BYTES_MAX`; anything else is refused
   with a `ProxyHeaderError` (a RemoteProtocolError, refusal MALFORMED). TLVs are skipped unread.
3. X-Forwarded-For: the rightmost address that is not a trusted proxy is the client (entries to its left were
   written by the client itself and prove nothing). A list that cannot be read yields None: the driver then
   keeps the proxy's own address, so a broken proxy configuration limits the proxy, never opens the node.
"""

from __future__ import annotations

import ipaddress
import struct
from collections.abc import Iterable, Sequence
from typing import Final

import attrs

from node.protocol.errors import RemoteProtocolError
from node.protocol.forwarded import Network, is_trusted_proxy, parse_networks, rightmost_untrusted
from node.protocol.refusals import Refusal

PROXY_V2_SIGNATURE: Final = b"\r\n\r\n\x00\r\nQUIT\n"
PROXY_V2_FIXED_BYTES: Final = 16  # signature, version/command, family/protocol, length
PROXY_V2_BYTES_MAX: Final = 16 + 512  # addresses (36 bytes for TCP6) and the TLVs a proxy adds; more is refused



class ProxyHeaderError(RemoteProtocolError):
    """A PROXY header that is not one this node accepts."""

    refusal = Refusal.MALFORMED


@attrs.frozen(kw_only=True, slots=True)
class ProxyHeader:
    """A complete PROXY v2 header: the client's address (None for LOCAL) and how many bytes it took."""

    address: str | None
    size: int


def parse_proxy_v2(buf: bytes) -> ProxyHeader | None:
    """The header at the start of `buf`, or None while more bytes are needed. Raises ProxyHeaderError."""
    have = min(len(buf), len(PROXY_V2_SIGNATURE))
    if buf[:have] != PROXY_V2_SIGNATURE[:have]:
        raise ProxyHeaderError("not a PROXY protocol v2 header")
    if len(buf) < PROXY_V2_FIXED_BYTES:
        return None
    ver_cmd, fam, length = buf[12], buf[13], struct.unpack_from("!H", buf, 14)[0]
    if ver_cmd >> 4 != 2 or ver_cmd & 0x0F > 1:
        raise ProxyHeaderError(f"PROXY header version/command {ver_cmd:#04x} is not v2 LOCAL/PROXY")
    size = PROXY_V2_FIXED_BYTES + length
    if size > PROXY_V2_BYTES_MAX:
        raise ProxyHeaderError(f"PROXY header of {size} bytes exceeds {PROXY_V2_BYTES_MAX}")
    if len(buf) < size:
        return None
    if ver_cmd & 0x0F == 0 or fam == 0x00:  # LOCAL, or UNSPEC: the proxy's own connection
        return ProxyHeader(address=None, size=size)
    body = buf[PROXY_V2_FIXED_BYTES:size]
    if fam == 0x11:  # TCP over IPv4: src addr, dst addr, src port, dst port
        if length < 12:
            raise ProxyHeaderError("PROXY header too short for TCP over IPv4")
        return ProxyHeader(address=str(ipaddress.IPv4Address(body[:4])), size=size)
    if fam == 0x21:  # TCP over IPv6
        if length < 36:
            raise ProxyHeaderError("PROXY header too short for TCP over IPv6")
        return ProxyHeader(address=str(ipaddress.IPv6Address(body[:16])), size=size)
    raise ProxyHeaderError(f"PROXY header family {fam:#04x} is not TCP over IPv4/IPv6")


def proxy_v2_header(address: str, port: int, dest: str, dest_port: int) -> bytes:
    """A PROXY v2 PROXY/TCP header (what nginx and HAProxy send); for tests and tools."""
    src, dst = ipaddress.ip_address(address), ipaddress.ip_address(dest)
    if src.version != dst.version:
        raise ValueError("source and destination must be the same address family")
    fam = 0x11 if src.version == 4 else 0x21
    body = src.packed + dst.packed + struct.pack("!HH", port, dest_port)
    return PROXY_V2_SIGNATURE + bytes((0x21, fam)) + struct.pack("!H", len(body)) + body


class TrustedProxies:
    """The `trusted_proxies` setting: networks whose connections may name the client's address
    (the walk itself is node/protocol/forwarded.py's, shared with the registry)."""

    def __init__(self, networks: Iterable[str]) -> None:
        self.networks: tuple[Network, ...] = parse_networks(networks, key="clients.trusted_proxies")

    def __bool__(self) -> bool:
        return bool(self.networks)

    def trusts(self, address: str) -> bool:
        return bool(self.networks) and is_trusted_proxy(address, self.networks)

    def forwarded_for(self, values: Sequence[str]) -> str | None:
        """The client named by X-Forwarded-For header values (in header order), or None when none is usable
        (only trusted hops, or an unreadable hop where a trusted proxy wrote): the caller keeps the peer's address."""
        client, _ = rightmost_untrusted(", ".join(values), self.networks)
        return client
