"""The network sources of discovery: registries (`GET /v1/nodes`, and `GET /v1/bridges` for a few bridges' cards,
docs/discovery.md "Bridges") and DNS-over-HTTPS TXT lookups.

Both share one `httpx2.AsyncClient(http2=True)` per discovery run, so queries to one resolver or registry reuse a
connection. Every answer is read with a byte limit before parsing (a hostile or broken server cannot make us buffer
more than one signed list or one DNS message). DoH is RFC 8484 POST of a query padded per RFC 8467 (128-byte blocks),
built and parsed with dnspython; we send it ourselves rather than through `dns.asyncquery.https` only to bound the
response size. Each function returns the candidates of a list that verified, or raises HomingError with a reason
that names the source; the caller turns that into a line of `errors`.
"""

from __future__ import annotations

import ssl

import attrs
import dns.exception
import dns.message
import dns.name
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import httpx2

from node.client.discovery.model import Candidate, SignedList, Source, candidates_from_list
from node.protocol.bridges import open_bridge_list
from node.protocol.errors import ConfigError, Expired, HomingError, RemoteProtocolError
from node.protocol.identity import SIGNED_DOC_MAX_BYTES, decode_document
from node.protocol.nodelist import open_node_list
from node.protocol.numerals import decimal
from node.protocol.rotation import decode_rotation, follow, pack_chain, unpack_chain
from node.protocol.txt import decode_txt

REGISTRY_ANSWER_MAX_BYTES = SIGNED_DOC_MAX_BYTES + 1024
DNS_MESSAGE_MAX_BYTES = 65_535
DOH_PAD_BLOCK_BYTES = 128  # RFC 8467 recommended query padding block


def ssl_context(ca_file: str | None) -> ssl.SSLContext:
    """The system trust store (which honours SSL_CERT_FILE / SSL_CERT_DIR) plus `--ca FILE` when given."""
    ctx = ssl.create_default_context()
    if ca_file:
        try:
            ctx.load_verify_locations(cafile=ca_file)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError("--ca", f"cannot load CA file {ca_file}: {exc}") from exc
    return ctx


def http_client(ctx: ssl.SSLContext, timeout_s: float) -> httpx2.AsyncClient:
    limits = httpx2.Limits(max_connections=32, max_keepalive_connections=8)
    return httpx2.AsyncClient(http2=True, verify=ctx, timeout=timeout_s, limits=limits, follow_redirects=False)


def registry_url(base: str) -> str:
    """`https://host[:port]` or a URL that already ends in /v1/nodes."""
    return base if base.rstrip("/").endswith("/v1/nodes") else base.rstrip("/") + "/v1/nodes"


async def _read_limited(response: httpx2.Response, limit: int, what: str) -> bytes:
    declared = response.headers.get("content-length")
    if declared is not None and (decimal(declared) or 0) > limit:
        raise RemoteProtocolError(f"{what} answer of {declared} bytes exceeds {limit}", code="too_large")
    chunks, size = [], 0
    async for chunk in response.aiter_bytes():
        size += len(chunk)
        if size > limit:
            raise RemoteProtocolError(f"{what} answer exceeds {limit} bytes", code="too_large")
        chunks.append(chunk)
    return b"".join(chunks)


def open_list(doc: object, trust: frozenset[bytes], now: float, source: Source, where: str) -> SignedList:
    """Verify a signed node list. With `--trust` keys only their signatures count (verified rows); with none, the
    list must still carry a valid self-consistent signature and be current, and its rows are unverified."""
    if trust:
        trusted = trust
    elif isinstance(doc, dict) and isinstance(doc.get("key"), bytes):
        trusted = frozenset([doc["key"]])
    else:
        trusted = frozenset()
    try:
        node_list = open_node_list(doc, trusted, now=now)
    except Expired as exc:
        raise HomingError(f"{where}: list discarded: {exc}") from exc
    except RemoteProtocolError as exc:
        raise HomingError(f"{where}: list discarded: {exc}") from exc
    return SignedList(
        signer=node_list.signer,
        issued=node_list.issued,
        expires=node_list.expires,
        where=where,
        candidates=tuple(candidates_from_list(node_list.nodes, source, verified=bool(trust))),
        members=node_list.members if trust else (),  # admission needs a trusted signer
    )


def followed(trust: frozenset[bytes], served: list[bytes], pinned: tuple[bytes, ...], now: float) -> frozenset[bytes]:
    """`trust` after the key rotation statements a reader knows (`pinned`, kept in its cache) and a source served
    (docs/discovery.md "Registry key rotation"); with no trust keys there is nothing to follow."""
    if not trust:
        return trust
    known = []
    for raw in pinned:
        try:
            known.append(decode_rotation(raw, now=now))
        except RemoteProtocolError:
            continue
    fresh, _ = unpack_chain(pack_chain(served), now=now)
    return follow(trust, fresh, now, pinned=known)


async def _get_capped(client: httpx2.AsyncClient, url: str, where: str) -> bytes:
    """GET a registry document as msgpack, streamed and cut at REGISTRY_ANSWER_MAX_BYTES; HomingError otherwise."""
    try:
        async with client.stream("GET", url, headers={"accept": "application/msgpack"}) as response:
            if response.status_code != 200:
                raise HomingError(f"{where}: HTTP {response.status_code}")
            return await _read_limited(response, REGISTRY_ANSWER_MAX_BYTES, where)
    except httpx2.HTTPError as exc:
        raise HomingError(f"{where}: {_http_reason(exc)}") from exc
    except RemoteProtocolError as exc:
        raise HomingError(f"{where}: {exc}") from exc


async def fetch_registry(
    client: httpx2.AsyncClient, base: str, trust: frozenset[bytes], now: float, pinned: tuple[bytes, ...] = ()
) -> SignedList:
    url = registry_url(base)
    where = f"registry {url}"
    body = await _get_capped(client, url, where)
    try:
        doc = decode_document(body)
    except RemoteProtocolError as exc:
        raise HomingError(f"{where}: list discarded: {exc}") from exc
    _, served = unpack_chain(doc.get("rot"), now=now)
    signed = open_list(doc, followed(trust, served, pinned, now), now, Source.REGISTRY, where)
    return attrs.evolve(signed, rotations=tuple(served))


def bridges_url(base: str) -> str:
    return base.rstrip("/").removesuffix("/v1/nodes") + "/v1/bridges"


async def fetch_bridges(
    client: httpx2.AsyncClient, base: str, trust: frozenset[bytes], now: float
) -> list[Candidate]:
    """The bridges a registry hands this network (GET /v1/bridges): each card signed by its own node (so the
    binding of id and URL is verified whoever signed the list), the list signed by a `--trust` key when given."""
    url = bridges_url(base)
    where = f"bridges {url}"
    body = await _get_capped(client, url, where)
    try:
        doc = decode_document(body)
        key = doc.get("key")
        trusted = trust or (frozenset([key]) if isinstance(key, bytes) else frozenset())
        bridges = open_bridge_list(doc, trusted, now=now)
    except RemoteProtocolError as exc:  # Expired and BadSignature too
        raise HomingError(f"{where}: list discarded: {exc}") from exc
    return [Candidate(id=c.id, ws=c.ws, source=Source.REFERRAL, verified=True) for c in bridges.cards]


def txt_query(name: str) -> dns.message.Message:
    try:
        qname = dns.name.from_text(name)
    except dns.exception.DNSException as exc:
        raise ConfigError("--name", f"{name!r} is not a domain name: {exc}") from exc
    query = dns.message.make_query(qname, dns.rdatatype.TXT, use_edns=0, pad=DOH_PAD_BLOCK_BYTES)
    query.id = 0  # RFC 8484 §4.1: 0 makes the request cacheable and carries nothing
    return query


def txt_records(answer: dns.message.Message, name: str) -> list[list[bytes]]:
    """TXT strings at `name` in a response (following a CNAME chain the resolver included)."""
    target = dns.name.from_text(name)
    for _ in range(8):
        rrset = answer.get_rrset(answer.answer, target, dns.rdataclass.IN, dns.rdatatype.TXT)
        if rrset is not None:
            return [list(rd.strings) for rd in rrset]
        cname = answer.get_rrset(answer.answer, target, dns.rdataclass.IN, dns.rdatatype.CNAME)
        if cname is None:
            break
        target = cname[0].target
    raise RemoteProtocolError("no TXT records in the answer")


async def fetch_doh(
    client: httpx2.AsyncClient, resolver: str, name: str, trust: frozenset[bytes], now: float
) -> SignedList:
    where = f"doh {resolver} {name}"
    query = txt_query(name)
    wire = query.to_wire()
    headers = {"accept": "application/dns-message", "content-type": "application/dns-message"}
    try:
        async with client.stream("POST", resolver, headers=headers, content=wire) as response:
            if response.status_code != 200:
                raise HomingError(f"{where}: HTTP {response.status_code}")
            body = await _read_limited(response, DNS_MESSAGE_MAX_BYTES, where)
    except httpx2.HTTPError as exc:
        raise HomingError(f"{where}: {_http_reason(exc)}") from exc
    except RemoteProtocolError as exc:
        raise HomingError(f"{where}: {exc}") from exc
    try:
        answer = dns.message.from_wire(body)
    except dns.exception.DNSException as exc:
        raise HomingError(f"{where}: not a DNS message: {type(exc).__name__}") from exc
    if answer.rcode() != dns.rcode.NOERROR:
        raise HomingError(f"{where}: {dns.rcode.to_text(answer.rcode())}")
    try:
        doc = decode_txt(txt_records(answer, name))
    except RemoteProtocolError as exc:
        raise HomingError(f"{where}: list discarded: {exc}") from exc
    return open_list(doc, trust, now, Source.DOH, where)


def _http_reason(exc: httpx2.HTTPError) -> str:
    cause: BaseException | None = exc
    for _ in range(8):  # the TLS error sits a few causes down, under the transport's own wrappers
        if cause is None:
            break
        if isinstance(cause, ssl.SSLCertVerificationError) or "CERTIFICATE_VERIFY_FAILED" in str(cause):
            return "TLS certificate not trusted (use --ca FILE or SSL_CERT_FILE for a private CA)"
        cause = cause.__cause__ or cause.__context__
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text and text != type(exc).__name__ else type(exc).__name__
