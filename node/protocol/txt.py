"""The signed node list as DNS TXT records, and back (pure; docs/discovery.md specifies it byte for byte).

Rules:
- The RRset at NAME carries the very signed document `GET /v1/nodes` serves (msgpack `{"body","key","sig"}`),
  so a client verifies it exactly as it verifies a registry answer. Nothing here checks signatures: that is
  `node.protocol.nodelist.open_node_list`'s job, after `decode_txt` has reassembled the bytes.
- Decoding is strict: every malformed, missing, duplicate or oversized piece raises RemoteProtocolError with a
  reason, and TXT records that do not start with our tag are ignored (NAME may hold other TXT data).

Theory of operation, encoding (decoding is the inverse, checking each step):
1. payload  = `01` (format) + codec byte (`00` none, `01` raw DEFLATE, RFC 1951) + uint32 big-endian length L
              + L bytes of the (deflated) msgpack document + zero bytes up to the next size bucket
              (`PAD_BUCKETS_BYTES`), so the response size tells an observer only the bucket, not the list size.
2. text     = base64url(payload) without padding; digest = base64url(SHA-256(payload)[:8]) (11 characters).
3. chunks   = text cut into pieces of at most `CHUNK_DATA_MAX_CHARS`; chunk i of n becomes one TXT record whose
              character-strings, concatenated, read `hm1/<i>/<n>/<digest>/<piece>` (i, n in decimal without
              leading zeros). The record's text is cut into character-strings of at most 255 bytes, as DNS
              requires (RFC 1035 §3.3.14); a reader concatenates them (as for SPF, RFC 7208 §3.3).
A reader collects the records that start with `hm1/`, checks that all name the same n and digest and that each
index 0..n-1 occurs exactly once, joins the pieces in index order, checks the digest, and unpacks the payload.
"""

from __future__ import annotations

import base64
import hashlib
import re
import zlib
from collections.abc import Iterable, Sequence
from typing import Any, Final

from node.protocol.errors import LocalProtocolError, RemoteProtocolError, TooLarge
from node.protocol.identity import SIGNED_DOC_MAX_BYTES, decode_document, encode_document

TAG: Final = "hm1"
FORMAT_VERSION: Final = 1
CODEC_NONE: Final = 0
CODEC_DEFLATE: Final = 1
PAYLOAD_HEADER_BYTES: Final = 6
STRING_MAX_BYTES: Final = 255  # one DNS character-string
CHUNK_DATA_MAX_CHARS: Final = 1800  # base64 characters per record: fits DNS providers' 2,048-character fields
CHUNKS_MAX: Final = 64
DIGEST_CHARS: Final = 11
# Payload sizes a list is padded to. The largest keeps the whole DoH answer under the 65,535-byte DNS message
# limit (base64 costs 4/3, each record about 35 bytes of header and string lengths on the wire).
PAD_BUCKETS_BYTES: Final = (1024, 2048, 3072, 4096, 6144, 8192, 12288, 16384, 24576, 32768, 40960, 45056)
PAYLOAD_MAX_BYTES: Final = PAD_BUCKETS_BYTES[-1]
DOCUMENT_MAX_BYTES: Final = SIGNED_DOC_MAX_BYTES + 256  # after decompression
TTL_DEFAULT_S: Final = 300

_CHUNK_RE = re.compile(r"hm1/(0|[1-9][0-9]{0,2})/([1-9][0-9]{0,2})/([A-Za-z0-9_-]{11})/([A-Za-z0-9_-]+)\Z")


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    if len(text) % 4 == 1:
        raise RemoteProtocolError("TXT chunks do not join to valid base64url")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def digest(payload: bytes) -> str:
    return _b64(hashlib.sha256(payload).digest()[:8])


def bucket_for(size: int) -> int:
    """The padded payload size for `size` bytes of header and document."""
    for bucket in PAD_BUCKETS_BYTES:
        if size <= bucket:
            return bucket
    raise LocalProtocolError(
        f"node list needs {size} bytes, more than the {PAYLOAD_MAX_BYTES} one DNS response can carry"
    )


def build_payload(doc: dict[str, bytes]) -> bytes:
    """Step 1: the padded payload of a signed document (deflated when that is smaller)."""
    raw = encode_document(doc)
    packer = zlib.compressobj(level=9, wbits=-15)
    deflated = packer.compress(raw) + packer.flush()
    codec, data = (CODEC_DEFLATE, deflated) if len(deflated) < len(raw) else (CODEC_NONE, raw)
    head = bytes([FORMAT_VERSION, codec]) + len(data).to_bytes(4, "big") + data
    return head + bytes(bucket_for(len(head)) - len(head))


def encode_txt(doc: dict[str, bytes]) -> list[list[bytes]]:
    """A signed node list as TXT records: a list of records, each a list of character-strings (<= 255 bytes)."""
    payload = build_payload(doc)
    text, tag = _b64(payload), digest(payload)
    pieces = [text[i : i + CHUNK_DATA_MAX_CHARS] for i in range(0, len(text), CHUNK_DATA_MAX_CHARS)]
    records = []
    for index, piece in enumerate(pieces):
        record = f"{TAG}/{index}/{len(pieces)}/{tag}/{piece}".encode("ascii")
        records.append([record[i : i + STRING_MAX_BYTES] for i in range(0, len(record), STRING_MAX_BYTES)])
    return records


def zone_lines(name: str, records: Sequence[Sequence[bytes]], *, ttl: int = TTL_DEFAULT_S) -> list[str]:
    """Zone-file lines (RFC 1035 master file format) for `records` at `name`."""
    owner = name if name.endswith(".") else name + "."
    lines = []
    for record in records:
        strings = " ".join('"' + s.decode("ascii") + '"' for s in record)
        lines.append(f"{owner} {ttl} IN TXT {strings}")
    return lines


def _parse_chunks(records: Iterable[Sequence[bytes]]) -> tuple[int, str, dict[int, str]]:
    total, tag, pieces = 0, "", {}
    for record in records:
        if len(record) > 0 and not record[0].startswith(b"hm1/"):
            continue  # another TXT record at the same name
        joined = b"".join(record)
        if not joined.startswith(b"hm1/"):
            continue
        if len(joined) > CHUNK_DATA_MAX_CHARS + 32:
            raise TooLarge("TXT chunk longer than the format allows")
        match = _CHUNK_RE.match(joined.decode("ascii", errors="replace"))
        if match is None:
            raise RemoteProtocolError("malformed TXT chunk header (expected hm1/<i>/<n>/<digest>/<data>)")
        index, count, chunk_tag, piece = int(match[1]), int(match[2]), match[3], match[4]
        if count > CHUNKS_MAX or index >= count:
            raise RemoteProtocolError(f"TXT chunk {index}/{count} is out of range (at most {CHUNKS_MAX} chunks)")
        if total and (count != total or chunk_tag != tag):
            raise RemoteProtocolError("TXT chunks of different lists are mixed at this name")
        if index in pieces:
            raise RemoteProtocolError(f"TXT chunk {index} of {count} appears twice")
        total, tag, pieces[index] = count, chunk_tag, piece
    if not total:
        raise RemoteProtocolError("no homing TXT records (hm1/...) at this name")
    missing = [i for i in range(total) if i not in pieces]
    if missing:
        raise RemoteProtocolError(f"TXT chunk(s) {missing[:8]} of {total} missing")
    return total, tag, pieces


def decode_payload(payload: bytes) -> bytes:
    """Step 1 reversed: the msgpack signed document inside a payload."""
    if len(payload) < PAYLOAD_HEADER_BYTES or payload[0] != FORMAT_VERSION:
        raise RemoteProtocolError("TXT payload has an unknown format version")
    codec, length = payload[1], int.from_bytes(payload[2:6], "big")
    end = PAYLOAD_HEADER_BYTES + length
    if end > len(payload):
        raise RemoteProtocolError("TXT payload is shorter than its length field")
    if any(payload[end:]):
        raise RemoteProtocolError("TXT payload padding is not zero")
    data = payload[PAYLOAD_HEADER_BYTES:end]
    if codec == CODEC_NONE:
        return data
    if codec != CODEC_DEFLATE:
        raise RemoteProtocolError(f"TXT payload codec {codec} unknown")
    inflater = zlib.decompressobj(wbits=-15)
    try:
        out = inflater.decompress(data, DOCUMENT_MAX_BYTES + 1)
    except zlib.error as exc:
        raise RemoteProtocolError("TXT payload does not inflate") from exc
    if len(out) > DOCUMENT_MAX_BYTES or inflater.unconsumed_tail:
        raise TooLarge("TXT payload inflates beyond the document size limit")
    if not inflater.eof or inflater.unused_data:
        raise RemoteProtocolError("TXT payload is not exactly one DEFLATE stream")
    return out


def decode_txt(records: Iterable[Sequence[bytes]]) -> dict[str, Any]:
    """Reassemble the signed document from the TXT records at NAME (not verified: use open_node_list)."""
    total, tag, pieces = _parse_chunks(records)
    text = "".join(pieces[i] for i in range(total))
    if len(text) > (PAYLOAD_MAX_BYTES * 4 + 2) // 3:
        raise TooLarge("TXT payload larger than the format allows")
    payload = _unb64(text)
    if digest(payload) != tag:
        raise RemoteProtocolError("TXT chunks do not match their digest (tampered or mixed records)")
    return decode_document(decode_payload(payload))
