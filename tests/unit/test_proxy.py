"""PROXY protocol v2 parsing and X-Forwarded-For resolution (node/protocol/proxy.py), pure."""

from __future__ import annotations

import struct

import pytest

from node.protocol.proxy import (
    PROXY_V2_BYTES_MAX,
    PROXY_V2_SIGNATURE,
    ProxyHeader,
    ProxyHeaderError,
    TrustedProxies,
    parse_proxy_v2,
    proxy_v2_header,
)


def header(ver_cmd: int, fam: int, body: bytes) -> bytes:
    return PROXY_V2_SIGNATURE + bytes((ver_cmd, fam)) + struct.pack("!H", len(body)) + body


def test_tcp4_and_tcp6_headers_name_the_source_and_leave_the_rest() -> None:
    h4 = proxy_v2_header("192.0.2.1", 1234, "127.0.0.1", 7400)
    assert parse_proxy_v2(h4 + b"GET /") == ProxyHeader(address="192.0.2.1", size=len(h4))
    h6 = proxy_v2_header("2001:db8::1", 1234, "::1", 7400)
    assert parse_proxy_v2(h6) == ProxyHeader(address="2001:db8::1", size=16 + 36)
    tlv = header(0x21, 0x11, h4[16:] + b"\x04\x00\x01x")  # a TLV after the addresses is skipped
    assert parse_proxy_v2(tlv) == ProxyHeader(address="192.0.2.1", size=len(tlv))


def test_partial_headers_ask_for_more_bytes() -> None:
    h4 = proxy_v2_header("192.0.2.1", 1234, "127.0.0.1", 7400)
    for n in (0, 1, 11, 15, len(h4) - 1):
        assert parse_proxy_v2(h4[:n]) is None


def test_local_and_unspec_keep_the_proxy_address() -> None:
    assert parse_proxy_v2(header(0x20, 0x00, b"")) == ProxyHeader(address=None, size=16)
    assert parse_proxy_v2(header(0x21, 0x00, b"")) == ProxyHeader(address=None, size=16)


@pytest.mark.parametrize(
    "data",
    [
        b"GET / HTTP/1.1\r\n\r\n",  # not a PROXY header at all
        b"PROXY TCP4 192.0.2.1 127.0.0.1 1 2\r\n",  # v1 (text) is not accepted
        header(0x11, 0x11, b"\x00" * 12),  # version 1 in the binary form
        header(0x22, 0x11, b"\x00" * 12),  # command 2
        header(0x21, 0x11, b"\x00" * 8),  # too short for TCP4
        header(0x21, 0x21, b"\x00" * 20),  # too short for TCP6
        header(0x21, 0x12, b"\x00" * 12),  # UDP over IPv4
        header(0x21, 0x31, b"\x00" * 216),  # AF_UNIX
        PROXY_V2_SIGNATURE + b"\x21\x11\xff\xff",  # a 64 KiB declared length is refused before it is read
    ],
)
def test_anything_else_is_refused(data: bytes) -> None:
    with pytest.raises(ProxyHeaderError) as info:
        parse_proxy_v2(data)
    assert info.value.refusal.value == "malformed"


def test_the_declared_length_is_capped() -> None:
    ok = header(0x21, 0x11, b"\x00" * (PROXY_V2_BYTES_MAX - 16))
    assert parse_proxy_v2(ok) is not None
    with pytest.raises(ProxyHeaderError):
        parse_proxy_v2(header(0x21, 0x11, b"\x00" * (PROXY_V2_BYTES_MAX - 15)))


def test_trusted_proxies_match_addresses_and_networks() -> None:
    proxies = TrustedProxies(["127.0.0.1", "10.0.0.0/8", "fd00::/8"])
    assert proxies.trusts("127.0.0.1") and proxies.trusts("10.9.8.7") and proxies.trusts("fd12::1")
    assert proxies.trusts("::ffff:10.1.2.3")  # an IPv4-mapped address is its IPv4
    assert not proxies.trusts("127.0.0.2") and not proxies.trusts("?") and not TrustedProxies([]).trusts("1.2.3.4")


def test_forwarded_for_takes_the_rightmost_untrusted_hop() -> None:
    proxies = TrustedProxies(["127.0.0.1", "10.0.0.0/8"])
    assert proxies.forwarded_for(["198.51.100.1, 203.0.113.9", "10.1.1.1"]) == "203.0.113.9"
    assert proxies.forwarded_for([" 2001:db8::1 "]) == "2001:db8::1"
    assert proxies.forwarded_for(["10.0.0.1, 127.0.0.1"]) is None  # only proxies: keep the peer address
    assert proxies.forwarded_for(["203.0.113.9, unknown"]) is None  # unreadable where the proxy wrote
    assert proxies.forwarded_for(["garbage, 203.0.113.9"]) == "203.0.113.9"  # the client's part is never read
    assert proxies.forwarded_for([]) is None
    long_chain = ", ".join(["10.0.0.1"] * 40)
    assert proxies.forwarded_for([f"203.0.113.9, {long_chain}"]) is None  # at most FORWARDED_HOPS_MAX hops are read
