"""node.protocol.noise against an independent implementation (the `noiseprotocol` package, built on `cryptography`)
and against hostile input: any flipped bit in any message is refused and changes no state."""

from __future__ import annotations

import ast
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import nacl.bindings
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from noise.connection import Keypair as TheirKeypair
from noise.connection import NoiseConnection

from node.errors import LocalProtocolError
from node.identity import Identity, curve25519_public
from node.protocol import noise
from node.protocol.noise import PATTERNS, CipherState, HandshakeState, NoiseError, keypair_from_private

# noiseprotocol warns when a test fixes its ephemeral keys, which is exactly what byte-identical interop needs.
pytestmark = pytest.mark.filterwarnings("ignore:One of ephemeral keypairs is already set")

INIT_S = keypair_from_private(bytes(range(1, 33)))
RESP_S = keypair_from_private(bytes(range(33, 65)))
INIT_E = bytes(range(65, 97))
RESP_E = bytes(range(97, 129))
PROLOGUE = b"homing test prologue"
PAYLOADS = [b"first payload", b"", b"third payload \x00\xff"]


def fixed(data: bytes) -> Callable[[int], bytes]:
    """A random_bytes that hands out `data` once (an ephemeral is drawn once per handshake)."""
    calls: list[int] = []

    def random_bytes(n: int) -> bytes:
        assert n == 32 and not calls, "one ephemeral per handshake"
        calls.append(n)
        return data

    return random_bytes


def needs(pattern: noise.HandshakePattern, initiator: bool) -> tuple[bool, bool]:
    """(needs our s, needs rs at start) for one side of a pattern."""
    all_tokens = {t for m in pattern.messages for t in m}
    own_pre = pattern.initiator_pre if initiator else pattern.responder_pre
    peer_pre = pattern.responder_pre if initiator else pattern.initiator_pre
    sends_s = any("s" in m for i, m in enumerate(pattern.messages) if (i % 2 == 0) == initiator)
    uses_s = "s" in own_pre or sends_s or "ss" in all_tokens or ("se" if initiator else "es") in all_tokens
    return uses_s, "s" in peer_pre


def ours(name: str, initiator: bool) -> HandshakeState:
    pat = PATTERNS[name]
    uses_s, has_rs = needs(pat, initiator)
    s = (INIT_S if initiator else RESP_S) if uses_s else None
    rs = (RESP_S if initiator else INIT_S).public if has_rs else None
    e = INIT_E if initiator else RESP_E
    return HandshakeState(pattern=name, initiator=initiator, prologue=PROLOGUE, s=s, rs=rs, random_bytes=fixed(e))


def theirs(name: str, initiator: bool) -> NoiseConnection:
    pat = PATTERNS[name]
    uses_s, has_rs = needs(pat, initiator)
    conn = NoiseConnection.from_name(noise.protocol_name(name))
    conn.set_as_initiator() if initiator else conn.set_as_responder()
    conn.set_prologue(PROLOGUE)
    if uses_s:
        conn.set_keypair_from_private_bytes(TheirKeypair.STATIC, (INIT_S if initiator else RESP_S).private)
    if has_rs:
        conn.set_keypair_from_public_bytes(TheirKeypair.REMOTE_STATIC, (RESP_S if initiator else INIT_S).public)
    conn.set_keypair_from_private_bytes(TheirKeypair.EPHEMERAL, INIT_E if initiator else RESP_E)
    conn.start_handshake()
    return conn


def run(name: str, initiator: object, responder: object) -> list[bytes]:
    """Run a handshake and two transport messages each way; return every message sent, in order."""
    pat = PATTERNS[name]
    sent: list[bytes] = []
    for i in range(len(pat.messages)):
        writer, reader = (initiator, responder) if i % 2 == 0 else (responder, initiator)
        payload = PAYLOADS[i]
        msg = bytes(writer.write_message(payload))  # type: ignore[attr-defined]
        assert bytes(reader.read_message(msg)) == payload  # type: ignore[attr-defined]
        sent.append(msg)
    directions = [(initiator, responder)] if pat.one_way else [(initiator, responder), (responder, initiator)]
    for writer, reader in directions:
        for text in (b"transport one", b"transport two"):
            ct = _encrypt(writer, text)
            assert _decrypt(reader, ct) == text
            sent.append(ct)
    assert _hash(initiator) == _hash(responder)
    sent.append(_hash(initiator))
    return sent


def _encrypt(side: object, text: bytes) -> bytes:
    if isinstance(side, HandshakeState):
        return side.split()[0].encrypt_with_ad(b"", text)
    return bytes(side.encrypt(text))  # type: ignore[attr-defined]


def _decrypt(side: object, ct: bytes) -> bytes:
    if isinstance(side, HandshakeState):
        return side.split()[1].decrypt_with_ad(b"", ct)
    return bytes(side.decrypt(ct))  # type: ignore[attr-defined]


def _hash(side: object) -> bytes:
    if isinstance(side, HandshakeState):
        return side.handshake_hash
    return bytes(side.get_handshake_hash())  # type: ignore[attr-defined]


@pytest.mark.parametrize("name", sorted(PATTERNS))
def test_interop_byte_identical_both_directions(name: str) -> None:
    reference = run(name, theirs(name, True), theirs(name, False))
    assert run(name, ours(name, True), ours(name, False)) == reference
    assert run(name, ours(name, True), theirs(name, False)) == reference
    assert run(name, theirs(name, True), ours(name, False)) == reference


def test_the_required_patterns_are_there() -> None:
    assert {"NN", "KK", "IK", "XX", "K"} <= set(PATTERNS)
    assert PATTERNS["IK"].responder_pre == ("s",) and PATTERNS["IK"].messages[0] == ("e", "es", "s", "ss")


def test_rekey_matches_reference() -> None:
    a, b = ours("XX", True), ours("XX", False)
    ta, tb = theirs("XX", True), theirs("XX", False)
    run("XX", a, b)
    run("XX", ta, tb)
    send, recv = a.split()[0], b.split()[1]
    send.rekey()
    ta.rekey_outbound_cipher()
    ct = send.encrypt_with_ad(b"", b"after rekey")
    assert ct == bytes(ta.encrypt(b"after rekey"))
    with pytest.raises(NoiseError):
        recv.decrypt_with_ad(b"", ct)  # the old key no longer opens it
    recv.rekey()
    assert recv.decrypt_with_ad(b"", ct) == b"after rekey"


def test_explicit_nonce_and_ad() -> None:
    key = bytes(range(32))
    c = CipherState(key)
    c.set_nonce(7)
    ct = c.encrypt_with_ad(b"header", b"body")
    nonce = b"\x00" * 4 + (7).to_bytes(8, "little")
    assert ct == nacl.bindings.crypto_aead_chacha20poly1305_ietf_encrypt(b"body", b"header", nonce, key)
    d = CipherState(key, nonce=7)
    with pytest.raises(NoiseError):
        d.decrypt_with_ad(b"other header", ct)
    assert d.n == 7  # a failed decryption does not advance the nonce
    assert d.decrypt_with_ad(b"header", ct) == b"body" and d.n == 8


def test_ed25519_identity_converts_like_identity_module() -> None:
    ident = Identity.from_seed(b"s" * 32)
    kp = noise.ed25519_to_x25519_keypair(ident.seed)
    assert kp.public == curve25519_public(ident.id)
    assert kp.private == ident.curve25519_private()


def test_low_order_public_key_refused() -> None:
    hs = HandshakeState(pattern="NN", initiator=False, random_bytes=fixed(RESP_E))
    hs.read_message(bytes(32))  # NN's first message has no DH yet: the all-zero point is only mixed into h
    with pytest.raises(NoiseError):
        hs.write_message(b"")  # ee with the all-zero point gives an all-zero secret


def test_out_of_turn_and_incomplete_use_are_local_errors() -> None:
    hs = ours("NN", True)
    with pytest.raises(LocalProtocolError):
        hs.read_message(b"x" * 32)
    with pytest.raises(LocalProtocolError):
        hs.split()
    with pytest.raises(LocalProtocolError):
        HandshakeState(pattern="KK", initiator=True, random_bytes=fixed(INIT_E))  # no s, no rs


def test_oversized_message_refused() -> None:
    hs = ours("NN", False)
    with pytest.raises(NoiseError):
        hs.read_message(bytes(noise.MAX_MESSAGE_BYTES + 1))


def _transcript(name: str) -> list[bytes]:
    return run(name, ours(name, True), ours(name, False))[: len(PATTERNS[name].messages)]


@settings(max_examples=200, deadline=None)
@given(name=st.sampled_from(["NN", "KK", "IK", "XX", "K"]), data=st.data())
def test_any_flipped_bit_in_a_handshake_message_is_refused(name: str, data: st.DataObject) -> None:
    """A message with an encrypted payload is refused at once, and the refusal changes nothing (the genuine message
    still reads). A message that carries no key yet (NN's and XX's first: a bare ephemeral) cannot be checked on
    arrival; the change is in the handshake hash, so the next message's payload is refused."""
    msgs = _transcript(name)
    index = data.draw(st.integers(0, len(msgs) - 1), label="message")
    bit = data.draw(st.integers(0, len(msgs[index]) * 8 - 1), label="bit")
    a, b = ours(name, True), ours(name, False)
    for i in range(index):
        writer, reader = (a, b) if i % 2 == 0 else (b, a)
        reader.read_message(writer.write_message(PAYLOADS[i]))
    writer, reader = (a, b) if index % 2 == 0 else (b, a)
    good = writer.write_message(PAYLOADS[index])
    bad = bytearray(good)
    bad[bit // 8] ^= 1 << (bit % 8)
    authenticated = any(t in ("es", "se", "ss", "ee") for m in PATTERNS[name].messages[: index + 1] for t in m)
    if authenticated:
        with pytest.raises(NoiseError):
            reader.read_message(bytes(bad))
        assert reader.read_message(good) == PAYLOADS[index]  # the refused message changed nothing
        return
    reader.read_message(bytes(bad))
    writer, reader = reader, writer
    with pytest.raises(NoiseError):
        reader.read_message(writer.write_message(PAYLOADS[index + 1]))


@settings(max_examples=100, deadline=None)
@given(text=st.binary(max_size=200), ad=st.binary(max_size=40), bit=st.integers(min_value=0), data=st.data())
def test_any_flipped_bit_in_a_transport_message_is_refused(
    text: bytes, ad: bytes, bit: int, data: st.DataObject
) -> None:
    a, b = ours("XX", True), ours("XX", False)
    run("XX", a, b)
    ct = a.split()[0].encrypt_with_ad(ad, text)
    bad = bytearray(ct)
    bit %= len(ct) * 8
    bad[bit // 8] ^= 1 << (bit % 8)
    recv = b.split()[1]
    with pytest.raises(NoiseError):
        recv.decrypt_with_ad(ad, bytes(bad))
    if ad:
        ad_bit = data.draw(st.integers(0, len(ad) * 8 - 1))
        bad_ad = bytearray(ad)
        bad_ad[ad_bit // 8] ^= 1 << (ad_bit % 8)
        with pytest.raises(NoiseError):
            recv.decrypt_with_ad(bytes(bad_ad), ct)
    assert recv.decrypt_with_ad(ad, ct) == text


def test_noise_module_is_sans_io() -> None:
    forbidden = {"trio", "socket", "time", "asyncio", "os", "threading", "subprocess", "random", "secrets"}
    path = Path(noise.__file__)
    for node_ in ast.walk(ast.parse(path.read_text())):
        if isinstance(node_, ast.Import):
            assert not {a.name.split(".")[0] for a in node_.names} & forbidden
        elif isinstance(node_, ast.ImportFrom):
            assert (node_.module or "").split(".")[0] not in forbidden


VECTORS = json.loads((Path(__file__).resolve().parent.parent / "vectors" / "noise_cacophony.json").read_text())


@pytest.mark.parametrize("vector", VECTORS["vectors"], ids=lambda v: v["protocol_name"])
def test_published_cacophony_vectors(vector: dict[str, Any]) -> None:
    """Known answers published with the cacophony implementation (tests/vectors/noise_cacophony.json says where)."""
    name = vector["protocol_name"].split("_")[1]
    pat = PATTERNS[name]

    def side(prefix: str, initiator: bool) -> HandshakeState:
        s = vector.get(f"{prefix}_static")
        rs = vector.get(f"{prefix}_remote_static")
        return HandshakeState(
            pattern=name,
            initiator=initiator,
            prologue=bytes.fromhex(vector[f"{prefix}_prologue"]),
            s=keypair_from_private(bytes.fromhex(s)) if s else None,
            rs=bytes.fromhex(rs) if rs else None,
            random_bytes=fixed(bytes.fromhex(vector.get(f"{prefix}_ephemeral", "00" * 32))),
        )

    init, resp = side("init", True), side("resp", False)
    for i, m in enumerate(vector["messages"]):
        from_init = pat.one_way or i % 2 == 0
        writer, reader = (init, resp) if from_init else (resp, init)
        payload, expected = bytes.fromhex(m["payload"]), bytes.fromhex(m["ciphertext"])
        if i < len(pat.messages):
            assert writer.write_message(payload) == expected
            assert reader.read_message(expected) == payload
        else:
            assert writer.split()[0].encrypt_with_ad(b"", payload) == expected
            assert reader.split()[1].decrypt_with_ad(b"", expected) == payload
        if i == len(pat.messages) - 1:
            assert init.handshake_hash == resp.handshake_hash == bytes.fromhex(vector["handshake_hash"])


def test_copy_lets_one_first_message_be_answered_twice() -> None:
    """A caller's offer reaches two devices of the callee; each answers with its own ephemeral."""
    caller = ours("KK", True)
    first = caller.write_message(b"offer")
    answers = []
    for e in (RESP_E, bytes(range(200, 232))):
        device = HandshakeState(
            pattern="KK", initiator=False, prologue=PROLOGUE, s=RESP_S, rs=INIT_S.public, random_bytes=fixed(e)
        )
        assert device.read_message(first) == b"offer"
        answers.append((device, device.write_message(b"answer")))
    sessions = []
    for device, answer in answers:
        mine = caller.copy()
        assert mine.read_message(answer) == b"answer" and mine.complete
        assert mine.handshake_hash == device.handshake_hash
        assert mine.split()[0].encrypt_with_ad(b"", b"x") == device.split()[1].encrypt_with_ad(b"", b"x")
        sessions.append(mine.handshake_hash)
    assert sessions[0] != sessions[1]
    assert not caller.complete  # the original is untouched
