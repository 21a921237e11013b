"""A thief holding node A's static key cannot pose as another member B to A (key-compromise impersonation),
and a live link that sees a replayed, reordered or altered frame closes, changes nothing, and comes back.

Real `PeerLinks` nodes on 127.0.0.1. The thief speaks whichever handshake the build under test speaks (the
pre-Noise `HML1` one, where A's key alone gave the session key, or Noise IK), with the strongest forgery it has.
"""

from __future__ import annotations

import hashlib
import os
import struct

import msgpack
import nacl.bindings
import nacl.public
import nacl.secret
import trio

from node.protocol import crypto
from node.protocol.identity import Identity, curve25519_public
from tests.integration.test_peer_links import WAIT_S, Book, start_node


async def _read(stream: trio.SocketStream, n: int) -> bytes:
    out = b""
    while len(out) < n:
        chunk = await stream.receive_some(n - len(out))
        if not chunk:
            break
        out += chunk
    return out


async def _thief_hml1(stream: trio.SocketStream, stolen: Identity, claimed: bytes) -> None:
    random32 = os.urandom(32)
    eph = nacl.public.PrivateKey(hashlib.blake2b(random32, person=b"homing-eph").digest()[:32])
    mine = claimed + bytes(eph.public_key) + random32
    await stream.send_all(b"HML1" + mine)
    theirs = (await _read(stream, 100))[4:]
    ss = nacl.bindings.crypto_scalarmult(stolen.curve25519_private(), curve25519_public(claimed))
    ee = nacl.bindings.crypto_scalarmult(bytes(eph), theirs[32:64])
    okm = hashlib.blake2b(ss + ee + mine + theirs, digest_size=64, person=b"homing-link-v1").digest()
    box = nacl.secret.SecretBox(okm[:32])
    for counter, obj in enumerate(({"k": 2}, {"t": 99, "n": "forged"}), start=1):
        ct = box.encrypt(msgpack.packb(obj), counter.to_bytes(24, "big")).ciphertext
        await stream.send_all(struct.pack(">I", len(ct)) + ct)


async def _thief_noise(stream: trio.SocketStream, stolen: Identity, claimed: bytes) -> None:
    from node.protocol import noise

    responder = noise.ed25519_to_x25519_keypair(stolen.seed)
    claimed_x = curve25519_public(claimed)
    ss = noise.SymmetricState(noise.protocol_name("IK"))
    ss.mix_hash(crypto.LINK_PROLOGUE)
    ss.mix_hash(responder.public)
    e = noise.generate_keypair(os.urandom)
    ss.mix_hash(e.public)
    ss.mix_key(noise._dh(e.private, responder.public))  # es: A's key computes it too
    msg1 = e.public + ss.encrypt_and_hash(claimed_x)
    ss.mix_key(noise._dh(responder.private, claimed_x))  # ss = DH(s_A, s_B): A's key computes it
    msg1 += ss.encrypt_and_hash(claimed)
    await stream.send_all(crypto.LINK_MAGIC + struct.pack(">H", len(msg1)) + msg1)
    head = await _read(stream, 2)
    msg2 = await _read(stream, struct.unpack(">H", head)[0]) if len(head) == 2 else b""
    # ee it can compute; se = DH(s_B, e_A) it cannot: its best guess leaves se out
    if len(msg2) >= 32:
        ss.mix_hash(msg2[:32])
        ss.mix_key(noise._dh(e.private, msg2[:32]))
    k1, _ = noise._hkdf(ss.ck, b"", 2)
    session = crypto.LinkSession(
        noise.CipherState(k1[:32]), noise.CipherState(k1[:32]), rekey=crypto.RekeyPolicy(), now=0.0
    )
    for obj in ({"t": 34, "v": 2}, {"t": 99, "n": "forged"}):
        await stream.send_all(session.seal(msgpack.packb(obj), 0.0))


async def test_a_stolen_static_key_of_a_does_not_let_the_thief_pose_as_b_to_a() -> None:
    book: Book = {}
    admitted: set[bytes] = set()
    victim_b = Identity.generate()
    admitted.add(victim_b.id)  # B is a member A would link with
    async with trio.open_nursery() as nursery:
        a = await start_node(nursery, book, admitted)
        stream = await trio.open_tcp_stream(*a.address)
        thief = _thief_noise if hasattr(crypto, "LINK_MAGIC") else _thief_hml1
        closed = False
        with trio.move_on_after(WAIT_S / 4):
            try:
                await thief(stream, a.identity, victim_b.id)  # the thief holds A's key, claims B
                while await stream.receive_some(4096):
                    pass
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass
            closed = True
        await trio.sleep(0.2)
        assert a.frames_from(victim_b.id) == [], "A acted on frames from a thief posing as B"
        assert closed, "A kept the thief's connection open"
        assert a.links.link_count == 0
        await stream.aclose()
        nursery.cancel_scope.cancel()
