"""Every decoder of untrusted input, as a fuzz target with its documented exceptions and valid seeds.

A `Target` turns raw fuzz bytes into its decoder's input (`run`). `run` lets through only the exception types
the decoder documents (`allowed`); anything else escapes and is a bug. Where a signature would stop a random
input before the interesting parsing, the first input byte selects a mode that signs the rest with a fixed test
key, so the parser behind the signature check is fuzzed too (the key is a test constant, trusted by the target).

Keys, clocks and values here are fixed (seeded), so a crash found by atheris reproduces from its input alone.
"""

from __future__ import annotations

import contextlib
import json
import tempfile
from collections.abc import Callable, Iterator
from functools import cache
from pathlib import Path
from typing import Any

import attrs
import httpx2

from bootstrap.registry import Policy, decide_leave, decide_registration
from bootstrap.server import _parse_doc
from node.app.config import build_config, load_toml, parse_hostport
from node.app.registry import _result
from node.client.discovery.cache import load_cache, merge_cache
from node.client.discovery.model import parse_entry
from node.net.decoy import DecoySite, answer
from node.net.httpserver import Request
from node.protocol.crypto import (
    LINK_FRAME_HEADER_BYTES,
    LINK_MAGIC,
    DatagramSealer,
    LinkHandshake,
    LinkSession,
    RekeyPolicy,
)
from node.protocol.decoy import body_bytes, parse_head
from node.protocol.errors import ConfigError, RemoteProtocolError
from node.protocol.identity import (
    NODE_CARD,
    NODE_LEAVE,
    NODE_LIST,
    NODE_REGISTER,
    Identity,
    b64u_decode,
    b64u_encode,
    decode_document,
    document_from_json,
    document_to_json,
    encode_document,
    open_document,
    parse_id,
    sign_document,
)
from node.protocol.nodelist import (
    CARD_PREFIX,
    NodeEntry,
    build_leave,
    build_node_list,
    build_registration,
    make_card,
    open_leave,
    open_node_list,
    open_registration,
    parse_card,
)
from node.protocol.noise import CipherState
from node.protocol.relay.claims import HomeClaim
from node.protocol.swim.messages import Ack, Gossip, MemberInfo, MemberState, Nack, Ping, PingReq, PushPullState, Update
from node.protocol.txt import build_payload, decode_txt, digest, encode_txt
from node.protocol.wire import Limits, packb, require_map, unpack_all
from node.protocol.wire.client import (
    ClientFrameError,
    Deliver,
    Envelope,
    Error,
    ErrorCode,
    GoAway,
    Hello,
    Kind,
    Reason,
    Receipt,
    Status,
    decode_client_frame,
    encode_client_message,
)
from node.protocol.wire.peer import (
    EnvelopeResult,
    Lease,
    LookupReply,
    MailboxPut,
    MailboxTake,
    PeerEnvelope,
    ReceiptStatus,
    RelayReceipt,
    ResultStatus,
    decode_peer,
    encode_peer,
    peer_from_map,
)
from node.protocol.wire.seed import Meta, decode_meta, decode_whois, decode_whois_reply, encode_meta, encode_whois
from node.protocol.wire.seed import encode_whois_reply as _encode_whois_reply
from node.protocol.wire.swim import decode_datagram, decode_push_pull, encode_datagram, encode_push_pull

# Fixed test keys (never used outside tests): a registry, two nodes, a client.
REGISTRY = Identity.from_seed(bytes([1]) * 32)
NODE_A = Identity.from_seed(bytes([2]) * 32)
NODE_B = Identity.from_seed(bytes([3]) * 32)
CLIENT = Identity.from_seed(bytes([4]) * 32)
NOW = 1_750_000_000  # unix seconds the document checks run at
ASKER, WHOIS_NONCE = NODE_A.id, bytes(range(16))
LINK_KEY = bytes(range(32))

# Modes selected by the first input byte of targets that have more than one.
RAW, SIGNED = 0, 1


@attrs.frozen(kw_only=True, slots=True)
class Target:
    name: str
    fn: Callable[[bytes], object]
    allowed: tuple[type[BaseException], ...]
    seeds: Callable[[], list[bytes]]
    doc: str

    def run(self, data: bytes) -> None:
        """Feed one input; documented exceptions are swallowed, anything else propagates."""
        with contextlib.suppress(self.allowed):
            self.fn(data)


def _mode(data: bytes, modes: int) -> tuple[int, bytes]:
    return (data[0] % modes, data[1:]) if data else (0, b"")


def _text(data: bytes) -> str:
    return data.decode("utf-8", errors="replace")


# --- SWIM, crypto, seed ----------------------------------------------------------------------------------


def _member(i: int, state: MemberState = MemberState.ALIVE) -> MemberInfo:
    return MemberInfo(
        id=bytes([i]) * 32, addr=(f"10.0.0.{i}", 7401), meta=encode_meta(Meta(peer_port=7402)), incarnation=i,
        state=state, sig=bytes([i]) * 64,  # seeds only: the decoders check the form, the core the signature
    )  # fmt: skip


def _swim_messages() -> list[Any]:
    # a suspect/dead update is a claim: no address or meta on the wire, its accuser's signature or (to its
    # subject) none (node/protocol/wire/swim.py)
    claim = MemberInfo(id=bytes([6]) * 32, addr=("", 0), meta=b"", incarnation=6, state=MemberState.SUSPECT)
    signed = Update(member=claim.with_state(MemberState.DEAD), by=bytes([7]) * 32, sig=bytes([7]) * 64)
    ups = (Update(member=_member(5)), Update(member=claim, by=bytes([7]) * 32), signed)
    return [
        Ping(seq=1, updates=ups), Ack(seq=2), Nack(seq=3, updates=ups[:1]), Gossip(updates=ups),
        PingReq(seq=4, target=bytes([8]) * 32, target_addr=("127.0.0.1", 7401), nack=True, updates=ups),
    ]  # fmt: skip


def _swim_seeds() -> list[bytes]:
    return [encode_datagram(m) for m in _swim_messages()]


def _push_pull_seeds() -> list[bytes]:
    state = PushPullState(members=tuple(_member(i, s) for i, s in zip(range(1, 5), MemberState, strict=True)))
    return [encode_push_pull(state), encode_push_pull(state, reply=True), encode_push_pull(PushPullState())]


def _open_sealed(data: bytes) -> object:
    sealer = DatagramSealer(NODE_B, epoch_ms=1)
    _sender, plain = sealer.open(data)
    return decode_datagram(plain)


def _sealed_seeds() -> list[bytes]:
    sealer = DatagramSealer(NODE_A, epoch_ms=5)
    return [sealer.seal(NODE_B.id, d) for d in _swim_seeds()]


def _link_session() -> LinkSession:
    return LinkSession(CipherState(LINK_KEY), CipherState(LINK_KEY), rekey=RekeyPolicy(), now=0.0)


def _peer_link(data: bytes) -> object:
    mode, rest = _mode(data, 3)
    if mode == 0:  # what a link's reader does with one sealed frame: a batch of relay frames
        session = _link_session()
        head, body = rest[:LINK_FRAME_HEADER_BYTES], rest[LINK_FRAME_HEADER_BYTES:]
        if len(head) < LINK_FRAME_HEADER_BYTES or len(body) != LinkSession.frame_length(head, Limits.PEER_FRAME_MAX):
            raise RemoteProtocolError("truncated frame")
        batch = unpack_all(session.open(head, body), max_bytes=Limits.PEER_FRAME_MAX)
        return [peer_from_map(require_map(m, "peer frame")) for m in batch]
    if mode == 1:
        return LinkHandshake(NODE_B, random_bytes=lambda n: bytes(n)).read_hello(rest)
    return decode_peer(rest)


def _peer_messages() -> list[Any]:
    env = PeerEnvelope(
        eid=bytes(16), origin=NODE_A.id, to=CLIENT.id, sender=bytes([9]) * 32, kind=Kind.CALL_OFFER, call=b"c",
        body=b"opaque", claim_nonce=bytes(32), claim_sig=bytes(64),
    )  # fmt: skip
    mail = PeerEnvelope(**{**attrs.asdict(env, recurse=False), "expires_ms": 1, "origin_sig": bytes(64)})
    claim = HomeClaim(client=CLIENT.id, home=NODE_A.id, nonce=bytes(32), sig=bytes(64))
    return [
        env, EnvelopeResult(eid=bytes(16), status=ResultStatus.NOT_HERE),
        Lease(home=NODE_A.id, claims=(claim,), ttl_ms=30_000), LookupReply(id=CLIENT.id, homes=(NODE_A.id,)),
        MailboxPut(env=mail, ttl_ms=60_000), MailboxTake(eids=(bytes(16),)),
        RelayReceipt(eid=bytes(16), status=ReceiptStatus.EXPIRED),
    ]  # fmt: skip


def _peer_seeds() -> list[bytes]:
    frames = [encode_peer(m) for m in _peer_messages()]
    batches = [*frames, b"".join(frames)]  # one frame alone, and all of them sealed as one batch
    sealed = [b"\x00" + _link_session().seal(b, 0.0) for b in batches]
    start = LinkHandshake(NODE_A, random_bytes=lambda n: bytes(range(n)), expected_id=NODE_B.id).start()
    hello = b"\x01" + start[len(LINK_MAGIC) + 2 :]
    return [*sealed, hello, *(b"\x02" + f for f in frames)]


def _seed(data: bytes) -> object:
    mode, rest = _mode(data, 3)
    if mode == 0:
        return decode_whois(rest)
    if mode == 1:
        return decode_whois_reply(rest, asker=ASKER, nonce=WHOIS_NONCE)
    return decode_meta(rest)


def _seed_seeds() -> list[bytes]:
    meta = encode_meta(Meta(peer_port=7402, host="10.0.0.1", url="wss://10.0.0.1/v1/client"))
    return [
        b"\x00" + encode_whois(ASKER, WHOIS_NONCE),
        b"\x01" + _encode_whois_reply(NODE_B, ASKER, WHOIS_NONCE, meta),
        b"\x02" + meta,
    ]


# --- client frames ---------------------------------------------------------------------------------------


def _client(data: bytes) -> object:
    mode, rest = _mode(data, 4)
    frame: bytes | str = _text(rest) if mode & 1 else rest
    return decode_client_frame(frame, from_node=bool(mode & 2))


def _client_seeds() -> list[bytes]:
    to_node = [
        Envelope(kind=Kind.CALL_ICE, to=CLIENT.id, call=b"call-1", body=b"sdp", ref=7),
        Hello(id=CLIENT.id, nonce=bytes(32), sig=bytes(64)),
    ]
    to_client = [
        Deliver(kind=Kind.CALL_ANSWER, sender=CLIENT.id, call=b"c", body=b"", eid=bytes(16)),
        Receipt(ref=3, status=Status.REJECTED, reason=Reason.TOO_LARGE), Error(code=ErrorCode.UNKNOWN_TYPE, ref=1),
        GoAway(nodes=(make_card(NODE_A, ws="wss://a.example/v1/client", ts=NOW),)),
    ]  # fmt: skip
    out = []
    for flag, msgs in ((0, to_node), (2, to_client)):
        for m in msgs:
            out.append(bytes([flag]) + bytes(encode_client_message(m, json=False)))  # type: ignore[arg-type]
            out.append(bytes([flag | 1]) + str(encode_client_message(m, json=True)).encode())
    return out


# --- signed documents, node lists, cards, TXT ------------------------------------------------------------

_PURPOSES = (NODE_LIST, NODE_REGISTER, NODE_LEAVE, NODE_CARD)


def _documents(data: bytes) -> object:
    mode, rest = _mode(data, 2)
    if mode == RAW:
        doc = decode_document(rest)
    else:
        try:
            obj = json.loads(rest)
        except (ValueError, RecursionError):
            return None  # not JSON: the caller's parser refuses it before document_from_json
        doc = document_from_json(obj)
    for purpose in _PURPOSES:
        with contextlib.suppress(RemoteProtocolError):
            open_document(doc, purpose, None)
    return doc


def _document_seeds() -> list[bytes]:
    docs = [_list_doc(), build_registration(NODE_A, ws="ws://a/v1/client", swim="a:1", peer="a:2",
                                           ts=NOW, ttl=60, reg=NODE_A.id)]  # fmt: skip
    return [b"\x00" + encode_document(d) for d in docs] + [b"\x01" + json.dumps(document_to_json(d)).encode()
                                                           for d in docs]  # fmt: skip


def _list_doc() -> dict[str, bytes]:
    entry = NodeEntry(id=NODE_A.id, ws="wss://a.example/v1/client", swim="a.example:7401", peer="a.example:7402",
                      seen=NOW)  # fmt: skip
    return build_node_list(REGISTRY, [entry], issued=NOW - 10, expires=NOW + 600)


def _card_doc() -> dict[str, bytes]:
    return sign_document(NODE_A, NODE_CARD, {"id": NODE_A.id, "ws": "wss://a.example/v1/client", "ts": NOW,
                                                "exp": NOW + 3600})  # fmt: skip


def _signed_doc(mode: int, rest: bytes, signer: Identity, purpose: str) -> dict[str, Any]:
    if mode == RAW:
        return decode_document(rest)
    sig = signer.sign(b"homing/v1/" + purpose.encode() + rest)
    return {"body": rest, "key": signer.id, "sig": sig}


def _node_docs(data: bytes) -> object:
    mode, rest = _mode(data, 6)
    kind, signed = divmod(mode, 2)
    if kind == 0:
        return open_node_list(_signed_doc(signed, rest, REGISTRY, NODE_LIST), {REGISTRY.id}, now=NOW)
    if kind == 1:
        reg = open_registration(_signed_doc(signed, rest, NODE_A, NODE_REGISTER))
        return decide_registration(reg, None, now=NOW, policy=Policy(), registry_key=NODE_A.id)
    node_id, ts = open_leave(_signed_doc(signed, rest, NODE_A, NODE_LEAVE))
    return node_id, ts


def _node_doc_seeds() -> list[bytes]:
    reg = build_registration(NODE_A, ws="wss://a.example/v1/client", swim="a:7401", peer="a:7402", ts=NOW, ttl=180,
                         reg=NODE_A.id)  # fmt: skip
    docs = [_list_doc(), reg, build_leave(NODE_A, ts=NOW)]
    out = []
    for kind, doc in enumerate(docs):
        out.append(bytes([2 * kind + RAW]) + encode_document(doc))
        out.append(bytes([2 * kind + SIGNED]) + doc["body"])
    return out


def _card(data: bytes) -> object:
    mode, rest = _mode(data, 2)
    if mode == RAW:
        return parse_card(_text(rest), now=NOW)
    doc = _signed_doc(SIGNED, rest, NODE_A, NODE_CARD)
    return parse_card(CARD_PREFIX + b64u_encode(encode_document(doc)), now=NOW)


def _card_seeds() -> list[bytes]:
    return [b"\x00" + make_card(NODE_A, ws="wss://a.example/v1/client", ts=NOW).encode(), b"\x01" + _card_doc()["body"]]


def _txt(data: bytes) -> object:
    mode, rest = _mode(data, 2)
    if mode == RAW:  # records separated by \n, character-strings within a record by \t
        records = [rec.split(b"\t") for rec in rest.split(b"\n")]
    else:  # `rest` is a payload: chunk it correctly, so the payload decoder behind the digest is reached
        text, tag = b64u_encode(rest), digest(rest)
        pieces = [text[i : i + 1800] for i in range(0, len(text), 1800)] or [""]
        records = [[f"hm1/{i}/{len(pieces)}/{tag}/{p}".encode()] for i, p in enumerate(pieces)]
    doc = decode_txt(records)
    return open_node_list(doc, {REGISTRY.id}, now=NOW)


def _txt_seeds() -> list[bytes]:
    raw = b"\n".join(b"\t".join(rec) for rec in encode_txt(_list_doc()))
    return [b"\x00" + raw, b"\x01" + build_payload(_list_doc())]


# --- config, entries, cache, registry --------------------------------------------------------------------


@contextlib.contextmanager
def _as_file(name: str, data: bytes) -> Iterator[Path]:
    """`data` as a file of a fresh temporary directory, removed after the call (a libFuzzer process ends without
    Python's exit handlers, so a directory made once per process would be left behind)."""
    with tempfile.TemporaryDirectory(prefix="homing-fuzz-") as scratch:
        path = Path(scratch) / name
        path.write_bytes(data)
        yield path


def _config(data: bytes) -> object:
    with _as_file("homing-node.toml", data) as path:
        return build_config(load_toml(path))


def _config_seeds() -> list[bytes]:
    from node.app.config import NodeConfig, render_toml

    return [
        render_toml(NodeConfig()).encode(),
        b'[node]\nws = "[::1]:0"\n[federation]\nopen = true\njoin = ["127.0.0.1:7401"]\n[relay]\nmailbox_ttl = 5\n',
    ]


def _entry(data: bytes) -> object:
    mode, rest = _mode(data, 4)
    text = _text(rest)
    if mode == 0:
        return parse_entry(text, now=NOW)
    if mode == 1:
        return parse_hostport(text)
    if mode == 2:
        try:
            return parse_id(text)
        except ValueError:
            return None  # documented
    try:
        return b64u_decode(text)
    except ValueError:
        return None


def _entry_seeds() -> list[bytes]:
    return [
        b"\x00wss://sig.example.org:443#" + NODE_A.id_text.encode(),
        b"\x00" + make_card(NODE_A, ws="ws://10.0.0.1:7400/v1/client", ts=NOW).encode(),
        b"\x01[::1]:7401", b"\x02" + NODE_A.id_text.encode(), b"\x03" + b64u_encode(b"\xff" * 20).encode(),
    ]  # fmt: skip


def _decoy_head(data: bytes) -> object:
    head = parse_head(data + b"\r\n\r\n")
    return answer(DecoySite(root=None, port=8080), head, float(NOW)), body_bytes(head)


def _decoy_seeds() -> list[bytes]:
    return [b"GET / HTTP/1.1\r\nHost: a.example:8443", b"HEAD /blog HTTP/1.0",
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nConnection: keep-alive",
            b"GET /%2e%2e/x HTTP/1.1\r\nHost: [::1]:80\r\nTransfer-Encoding: chunked"]  # fmt: skip


def _cache(data: bytes) -> object:
    with _as_file("cache.json", data) as path:
        cands, _errors = load_cache(path)
    return merge_cache(cands, [], float(NOW))


def _cache_seeds() -> list[bytes]:
    entry = {"id": NODE_A.id_text, "ws": "wss://a.example/v1/client", "last_success": NOW}
    listed = {**entry, "ws": "wss://b.example/v1/client", "listed": True}  # docs/discovery.md "Cache"
    return [json.dumps({"v": 1, "nodes": [entry]}).encode(), json.dumps({"v": 1, "nodes": [entry, listed]}).encode()]


def _registry_request(data: bytes) -> object:
    mode, rest = _mode(data, 4)
    ctype = "application/json" if mode & 1 else "application/msgpack"
    request = Request(method="POST", path="/v1/nodes", query="", headers={"content-type": ctype}, body=rest,
                      client_ip="127.0.0.1")  # fmt: skip
    doc = _parse_doc(request)
    if mode & 2:
        node_id, ts = open_leave(doc)
        return decide_leave(node_id, ts, None, now=NOW, policy=Policy())
    reg = open_registration(doc)
    return decide_registration(reg, None, now=NOW, policy=Policy(), registry_key=NODE_A.id)


def _registry_seeds() -> list[bytes]:
    reg = build_registration(NODE_A, ws="wss://a.example/v1/client", swim="a:7401", peer="a:7402", ts=NOW, ttl=180,
                         reg=NODE_A.id)  # fmt: skip
    leave = build_leave(NODE_A, ts=NOW)
    return [
        b"\x00" + encode_document(reg), b"\x01" + json.dumps(document_to_json(reg)).encode(),
        b"\x02" + encode_document(leave), b"\x03" + json.dumps(document_to_json(leave)).encode(),
    ]  # fmt: skip


def _registry_answer(data: bytes) -> object:
    """What a registry answers a node (node/app/registry.py): status, Retry-After, content type, body."""
    status = 200 + (data[0] if data else 0) % 400
    retry, _, body = data[1:].partition(b"\n")
    retry = bytes(b for b in retry[:64] if 0x20 <= b < 0x7F or b >= 0x80)  # what an HTTP header line may carry
    headers = [(b"retry-after", retry), (b"content-type", b"application/msgpack")]
    return _result("https://registry.example", httpx2.Response(status, headers=headers, content=body), body)


def _registry_answer_seeds() -> list[bytes]:
    return [b"\x00\n" + packb({"status": "approved", "ttl": 180}), b"\xe5" + b"30\n" + packb({"reason": "slow down"})]


TARGETS: tuple[Target, ...] = (
    Target(name="swim_datagram", fn=decode_datagram, allowed=(RemoteProtocolError,), seeds=cache(_swim_seeds),
           doc="node.protocol.wire.swim.decode_datagram"),
    Target(name="swim_push_pull", fn=decode_push_pull, allowed=(RemoteProtocolError,), seeds=cache(_push_pull_seeds),
           doc="node.protocol.wire.swim.decode_push_pull"),
    Target(name="sealed_datagram", fn=_open_sealed, allowed=(RemoteProtocolError,), seeds=cache(_sealed_seeds),
           doc="node.protocol.crypto.DatagramSealer.open, then decode_datagram"),
    Target(name="peer_link", fn=_peer_link, allowed=(RemoteProtocolError,), seeds=cache(_peer_seeds),
           doc="LinkSession.open + decode_peer, LinkHandshake.finish, decode_peer"),
    Target(name="seed", fn=_seed, allowed=(RemoteProtocolError,), seeds=cache(_seed_seeds),
           doc="node.protocol.wire.seed decode_whois, decode_whois_reply, decode_meta"),
    Target(name="client_frame", fn=_client, allowed=(ClientFrameError,), seeds=cache(_client_seeds),
           doc="node.protocol.wire.client.decode_client_frame (msgpack and JSON, both directions)"),
    Target(name="signed_document", fn=_documents, allowed=(RemoteProtocolError,), seeds=cache(_document_seeds),
           doc="decode_document, document_from_json, open_document"),
    Target(name="node_docs", fn=_node_docs, allowed=(RemoteProtocolError,), seeds=cache(_node_doc_seeds),
           doc="open_node_list, open_registration + decide_registration, open_leave"),
    Target(name="card", fn=_card, allowed=(RemoteProtocolError,), seeds=cache(_card_seeds),
           doc="node.protocol.nodelist.parse_card"),
    Target(name="txt", fn=_txt, allowed=(RemoteProtocolError,), seeds=cache(_txt_seeds),
           doc="node.protocol.txt.decode_txt, then open_node_list"),
    Target(name="config_toml", fn=_config, allowed=(ConfigError,), seeds=cache(_config_seeds),
           doc="node.app.config.load_toml + build_config"),
    Target(name="entry", fn=_entry, allowed=(ConfigError,), seeds=cache(_entry_seeds),
           doc="parse_entry, parse_hostport (ConfigError); parse_id, b64u_decode (ValueError)"),
    Target(name="decoy_head", fn=_decoy_head, allowed=(), seeds=cache(_decoy_seeds),
           doc="node.protocol.decoy parse_head, body_bytes and the decoy's answer: never raises"),
    Target(name="cache", fn=_cache, allowed=(), seeds=cache(_cache_seeds),
           doc="node.client.discovery.cache load_cache + merge_cache: never raises"),
    Target(name="registry_request", fn=_registry_request, allowed=(RemoteProtocolError,), seeds=cache(_registry_seeds),
           doc="bootstrap.server request parsing + open_registration/open_leave + the registry's decision"),
    Target(name="registry_answer", fn=_registry_answer, allowed=(), seeds=cache(_registry_answer_seeds),
           doc="node.app.registry reading a registry's answer: never raises"),
)  # fmt: skip
BY_NAME = {t.name: t for t in TARGETS}
