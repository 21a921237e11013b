"""Forward secrecy of peer links: a recorded link stays unreadable to whoever later steals BOTH static keys.

A recording proxy on 127.0.0.1 sits between two real `PeerLinks` nodes and keeps every byte of the link in both
directions. The "attacker" then gets both nodes' Ed25519 seeds and tries every key it can compute from them and
from what went over the wire. Before the Noise handshake (the `HML1` scheme, whose "ephemeral" private key was a
hash of random bytes sent in clear) the attacker read every frame; now it must read none.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import os
import struct

import nacl.bindings
import nacl.exceptions
import nacl.secret
import trio

from node.protocol.identity import Identity, curve25519_public
from tests.integration.test_peer_links import WAIT_S, Book, start_node, wait_until

MARKER = b"who-calls-whom:"


async def _recording_proxy(
    target: tuple[str, int],
    records: list[tuple[bytearray, bytearray]],
    *,
    task_status: trio.TaskStatus[tuple[str, int]],
) -> None:
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")

    async def pump(src: trio.SocketStream, dst: trio.SocketStream, into: bytearray) -> None:
        try:
            while chunk := await src.receive_some(65536):
                into += chunk
                await dst.send_all(chunk)
            await dst.send_eof()
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass

    async def handle(client: trio.SocketStream) -> None:
        server = await trio.open_tcp_stream(*target)
        up, down = bytearray(), bytearray()
        records.append((up, down))
        async with server, trio.open_nursery() as nursery:
            nursery.start_soon(pump, client, server, up)
            nursery.start_soon(pump, server, client, down)

    task_status.started(listeners[0].socket.getsockname()[:2])
    await trio.serve_listeners(handle, listeners)


def _frames(data: bytes, start: int) -> list[bytes]:
    out, pos = [], start
    while pos + 4 <= len(data):
        (n,) = struct.unpack(">I", data[pos : pos + 4])
        n &= 0x7FFFFFFF
        out.append(data[pos + 4 : pos + 4 + n])
        pos += 4 + n
    return out


def _attack_hml1(up: bytes, down: bytes, a: Identity, b: Identity) -> list[bytes]:
    """The pre-Noise scheme: hello = id | eph public | random32, eph private = blake2b(random32)."""
    hello_i, hello_r = up[4:100], down[4:100]
    eph_i = hashlib.blake2b(hello_i[64:96], person=b"homing-eph").digest()[:32]
    ss = nacl.bindings.crypto_scalarmult(a.curve25519_private(), curve25519_public(b.id))
    ee = nacl.bindings.crypto_scalarmult(eph_i, hello_r[32:64])
    okm = hashlib.blake2b(ss + ee + hello_i + hello_r, digest_size=64, person=b"homing-link-v1").digest()
    got = []
    for key, data in ((okm[:32], up), (okm[32:], down)):
        box = nacl.secret.SecretBox(key)
        for counter, ct in enumerate(_frames(data, 100), start=1):
            with contextlib.suppress(nacl.exceptions.CryptoError):
                got.append(bytes(box.decrypt(ct, counter.to_bytes(24, "big"))))
    return got


def _attack_noise(up: bytes, down: bytes, a: Identity, b: Identity) -> list[bytes]:
    """Noise IK: the attacker can read message 1 with B's static key (it learns the initiator's id), but the
    transport keys also depend on DH(e_i, e_r), whose private halves never left the two processes. It tries every
    DH of a private key it holds with every public key seen, mixed into the chaining key after message 1."""
    from node.protocol import noise
    from node.protocol.crypto import LINK_MAGIC, LINK_PROLOGUE

    msg1_len = struct.unpack(">H", up[len(LINK_MAGIC) : len(LINK_MAGIC) + 2])[0]
    msg1 = up[len(LINK_MAGIC) + 2 : len(LINK_MAGIC) + 2 + msg1_len]
    msg2_len = struct.unpack(">H", down[:2])[0]
    msg2 = down[2 : 2 + msg2_len]
    sa, sb = noise.ed25519_to_x25519_keypair(a.seed), noise.ed25519_to_x25519_keypair(b.seed)
    responder = noise.HandshakeState(
        pattern="IK", initiator=False, random_bytes=os.urandom, prologue=LINK_PROLOGUE, s=sb
    )
    responder.read_message(msg1)  # works: IK hides the initiator only from those without B's key
    assert responder.remote_static == sa.public
    publics = [msg1[:32], msg2[:32], sa.public, sb.public]
    got = []
    up_frames = _frames(up, len(LINK_MAGIC) + 2 + msg1_len)
    down_frames = _frames(down, 2 + msg2_len)
    ck = responder._ss.ck
    for priv, pub in itertools.product((sa.private, sb.private), publics):
        try:
            shared = noise._dh(priv, pub)
        except noise.NoiseError:
            continue
        for mixes in ([shared], [shared, shared]):
            key = ck
            for m in mixes:
                key, _ = noise._hkdf(key, m, 2)
            k1, k2 = noise._hkdf(key, b"", 2)
            for k, frames in ((k1[:32], up_frames), (k2[:32], down_frames)):
                cs = noise.CipherState(k)
                for ct in frames[:3]:
                    with contextlib.suppress(noise.NoiseError):
                        got.append(cs.decrypt_with_ad(b"", ct))
    return got


async def test_a_recorded_link_stays_unreadable_with_both_static_keys() -> None:
    book: Book = {}
    admitted: set[bytes] = set()
    records: list[tuple[bytearray, bytearray]] = []
    async with trio.open_nursery() as nursery:
        a = await start_node(nursery, book, admitted)
        b = await start_node(nursery, book, admitted)
        book[b.id] = await nursery.start(_recording_proxy, book[b.id], records)
        for i in range(20):
            assert a.links.send(b.id, {"t": 99, "n": MARKER + b"a%d" % i})
        await wait_until(lambda: len(b.received) == 20, "20 frames at B")
        for i in range(20):
            assert b.links.send(a.id, {"t": 99, "n": MARKER + b"b%d" % i})
        await wait_until(lambda: len(a.received) == 20, "20 frames at A")
        with trio.fail_after(WAIT_S):
            while not records or len(records[0][1]) < 200:
                await trio.sleep(0.01)
        nursery.cancel_scope.cancel()
    ((up, down),) = records
    assert MARKER not in up and MARKER not in down  # nothing in clear
    attack = _attack_hml1 if bytes(up[:4]) == b"HML1" else _attack_noise
    recovered = attack(bytes(up), bytes(down), a.identity, b.identity)
    assert recovered == [], f"a holder of both static keys decrypted {len(recovered)} frames: {recovered[:2]!r}"
