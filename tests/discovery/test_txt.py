"""The TXT format of node.protocol.txt: round trips, chunking rules, strict decoding, padding buckets, size ceiling."""

from __future__ import annotations

import base64
import random
import zlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from node.protocol import txt
from node.protocol.errors import LocalProtocolError, RemoteProtocolError, TooLarge
from node.protocol.identity import Identity
from node.protocol.nodelist import open_node_list
from tests.discovery.lists import NOW, entries, signed_list

REGISTRY = Identity.from_seed(b"r" * 32)


def wire_bytes(records: list[list[bytes]]) -> int:
    """Bytes these records take in a DNS answer: 12 per RR (compressed owner) plus string lengths."""
    return sum(12 + sum(1 + len(s) for s in r) for r in records)


@settings(max_examples=30, deadline=None)
@given(count=st.integers(0, 120), seed=st.integers(0, 2**32))
def test_round_trip_in_any_record_order(count: int, seed: int) -> None:
    doc = signed_list(REGISTRY, entries(count))
    records = txt.encode_txt(doc)
    random.Random(seed).shuffle(records)
    assert txt.decode_txt(records) == doc
    opened = open_node_list(txt.decode_txt(records), {REGISTRY.id}, now=NOW)
    assert len(opened.nodes) == count


def test_strings_respect_dns_limits_and_carry_the_header() -> None:
    records = txt.encode_txt(signed_list(REGISTRY, entries(200)))
    assert len(records) > 1
    for i, record in enumerate(records):
        assert all(1 <= len(s) <= 255 for s in record)
        joined = b"".join(record)
        assert joined.startswith(f"hm1/{i}/{len(records)}/".encode())
        assert len(joined) <= txt.CHUNK_DATA_MAX_CHARS + 32


def test_two_hundred_nodes_fit_one_dns_response_with_room() -> None:
    records = txt.encode_txt(signed_list(REGISTRY, entries(200)))
    assert wire_bytes(records) < 30_000
    records = txt.encode_txt(signed_list(REGISTRY, entries(500)))
    assert wire_bytes(records) < 65_000


def test_too_many_nodes_is_a_clear_local_error() -> None:
    with pytest.raises(LocalProtocolError, match="one DNS response"):
        txt.encode_txt(signed_list(REGISTRY, entries(1200)))


def test_padding_hides_the_exact_list_size() -> None:
    sizes = {wire_bytes(txt.encode_txt(signed_list(REGISTRY, entries(n)))) for n in range(0, 6)}
    assert len(sizes) == 1
    payload = txt.build_payload(signed_list(REGISTRY, entries(3)))
    assert len(payload) in txt.PAD_BUCKETS_BYTES


def test_other_txt_records_at_the_name_are_ignored() -> None:
    doc = signed_list(REGISTRY, entries(3))
    records = [[b"v=spf1 -all"], *txt.encode_txt(doc), [b"google-site-verification=abc"]]
    assert txt.decode_txt(records) == doc


def _multi() -> list[list[bytes]]:
    records = txt.encode_txt(signed_list(REGISTRY, entries(120)))
    assert len(records) >= 3
    return records


def test_missing_chunk_is_named() -> None:
    records = _multi()
    with pytest.raises(RemoteProtocolError, match=r"chunk\(s\) \[1\] of"):
        txt.decode_txt(records[:1] + records[2:])


def test_duplicate_chunk_is_refused() -> None:
    records = _multi()
    with pytest.raises(RemoteProtocolError, match="appears twice"):
        txt.decode_txt([*records, records[1]])


def test_tampered_chunk_fails_the_digest() -> None:
    records = _multi()
    joined = bytearray(b"".join(records[1]))
    joined[-5] = ord("A") if joined[-5] != ord("A") else ord("B")
    records[1] = [bytes(joined[i : i + 255]) for i in range(0, len(joined), 255)]
    with pytest.raises(RemoteProtocolError, match="digest"):
        txt.decode_txt(records)


def test_chunks_of_two_lists_are_not_mixed() -> None:
    a, b = _multi(), txt.encode_txt(signed_list(REGISTRY, entries(121)))
    with pytest.raises(RemoteProtocolError, match="mixed"):
        txt.decode_txt([a[0], *b[1:]])


@pytest.mark.parametrize(
    "record",
    [
        b"hm1/",
        b"hm1/0/1/short/AAAA",
        b"hm1/00/1/AAAAAAAAAAA/AAAA",
        b"hm1/1/1/AAAAAAAAAAA/AAAA",
        b"hm1/0/99/AAAAAAAAAAA/A=",
    ],
)
def test_malformed_headers_are_refused(record: bytes) -> None:
    with pytest.raises(RemoteProtocolError):
        txt.decode_txt([[record]])


def test_no_records_is_an_error() -> None:
    with pytest.raises(RemoteProtocolError, match="no homing TXT"):
        txt.decode_txt([[b"unrelated"]])


def _records_for_payload(payload: bytes) -> list[list[bytes]]:
    text = base64.urlsafe_b64encode(payload).rstrip(b"=").decode()
    return [[f"hm1/0/1/{txt.digest(payload)}/{text}".encode()[i : i + 255] for i in range(0, 11 + 20 + len(text), 255)]]


def test_a_deflate_bomb_is_refused_without_inflating_it() -> None:
    packer = zlib.compressobj(9, wbits=-15)
    bomb = packer.compress(bytes(txt.DOCUMENT_MAX_BYTES * 4)) + packer.flush()
    payload = bytes([1, 1]) + len(bomb).to_bytes(4, "big") + bomb
    with pytest.raises(TooLarge):
        txt.decode_txt(_records_for_payload(payload))


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (bytes([2, 0, 0, 0, 0, 1, 0]), "format version"),
        (bytes([1, 7, 0, 0, 0, 1, 0]), "codec"),
        (bytes([1, 0, 0, 0, 0, 9, 0]), "shorter than its length"),
        (bytes([1, 0, 0, 0, 0, 0, 5]), "padding is not zero"),
        (bytes([1, 1, 0, 0, 0, 2, 0xFF, 0xFF]), "inflate|DEFLATE"),
    ],
)
def test_bad_payloads_are_refused(payload: bytes, reason: str) -> None:
    with pytest.raises(RemoteProtocolError, match=reason):
        txt.decode_txt(_records_for_payload(payload))


def test_zone_lines_quote_each_string() -> None:
    records = txt.encode_txt(signed_list(REGISTRY, entries(2)))
    lines = txt.zone_lines("_homing.example.org", records, ttl=60)
    assert len(lines) == len(records)
    assert lines[0].startswith('_homing.example.org. 60 IN TXT "hm1/0/1/')
    assert lines[0].count('"') == 2 * len(records[0])
