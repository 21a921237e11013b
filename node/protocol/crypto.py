"""Node-to-node encryption and authentication (pure: no I/O, no clock, no global randomness).

Two mechanisms, both between Ed25519 node keys converted to X25519 (pynacl):

1. **Sealed datagrams** (SWIM over UDP). Layout:
   `version(1) | sender id(32) | epoch(8) | counter(8) | XSalsa20-Poly1305 box(ciphertext + 16-byte tag)`.
   The 24-byte nonce is `epoch | counter | 8 zero bytes`. `epoch` is chosen by the sender at start (milliseconds
   of wall time, injected) and never goes back; `counter` increases per packet. The receiver keeps, per sender,
   the highest epoch and a 64-packet sliding window of counters: a replayed, reordered-beyond-window or
   old-epoch packet is refused and changes nothing. Only the two key holders can build or open a box, so a
   forged packet fails authentication.

2. **Peer-link sessions** (TCP). Each side sends `hello = id(32) | ephemeral X25519 public key(32) | random(32)`.
   Both derive `k = blake2b(DH(static, static) | DH(eph, eph) | transcript)` split into two directional keys;
   frames are SecretBox-sealed with a counter nonce per direction. Only holders of both static keys derive `k`
   (mutual authentication); the ephemeral DH gives forward secrecy; fresh randoms per connection make a
   recorded connection useless to replay.
"""

from __future__ import annotations

import hashlib
import struct

import attrs
import nacl.bindings
import nacl.exceptions
import nacl.public
import nacl.secret

from node.protocol.errors import BadSignature, RemoteProtocolError, Replayed
from node.protocol.identity import ID_BYTES, Identity, curve25519_public

SEALED_VERSION = 1
SEALED_HEADER = 1 + ID_BYTES + 8 + 8
SEALED_OVERHEAD = SEALED_HEADER + 16
REPLAY_WINDOW = 64


class DatagramSealer:
    """Seals and opens datagrams for one local identity. Keeps per-peer shared keys and replay windows."""

    def __init__(self, identity: Identity, epoch_ms: int, *, peers_max: int = 100_000) -> None:
        self._identity = identity
        self._priv = nacl.public.PrivateKey(identity.curve25519_private())
        self._epoch = epoch_ms
        self._counter = 0
        self._boxes: dict[bytes, nacl.public.Box] = {}
        self._windows: dict[bytes, _ReplayWindow] = {}
        self._peers_max = peers_max

    def _box(self, peer: bytes) -> nacl.public.Box:
        box = self._boxes.get(peer)
        if box is None:
            if len(self._boxes) >= self._peers_max:
                self._boxes.pop(next(iter(self._boxes)))
            box = nacl.public.Box(self._priv, nacl.public.PublicKey(curve25519_public(peer)))
            self._boxes[peer] = box
        return box

    def seal(self, peer: bytes, plaintext: bytes) -> bytes:
        self._counter += 1
        head = struct.pack(">BQQ", SEALED_VERSION, self._epoch, self._counter)
        nonce = head[1:] + bytes(8)
        ct = self._box(peer).encrypt(plaintext, nonce).ciphertext
        return head[:1] + self._identity.id + head[1:] + bytes(ct)

    def open(self, packet: bytes) -> tuple[bytes, bytes]:
        """Return (sender id, plaintext). Raises RemoteProtocolError (Replayed for a replay)."""
        if len(packet) < SEALED_OVERHEAD:
            raise RemoteProtocolError("sealed datagram truncated")
        if packet[0] != SEALED_VERSION:
            raise RemoteProtocolError(f"sealed datagram version {packet[0]} unsupported")
        sender = packet[1 : 1 + ID_BYTES]
        if sender == self._identity.id:
            raise RemoteProtocolError("datagram claims to be from ourselves")
        epoch, counter = struct.unpack(">QQ", packet[1 + ID_BYTES : SEALED_HEADER])
        window = self._windows.get(sender)
        if window is not None and not window.acceptable(epoch, counter):
            raise Replayed("datagram replayed or too old")
        nonce = packet[1 + ID_BYTES : SEALED_HEADER] + bytes(8)
        try:
            plaintext = self._box(sender).decrypt(packet[SEALED_HEADER:], nonce)
        except (nacl.exceptions.CryptoError, nacl.exceptions.ValueError) as exc:
            raise BadSignature("datagram failed authentication") from exc
        if window is None:
            if len(self._windows) >= self._peers_max:
                self._windows.pop(next(iter(self._windows)))
            window = self._windows[sender] = _ReplayWindow()
        window.accept(epoch, counter)
        return bytes(sender), bytes(plaintext)


@attrs.define(slots=True)
class _ReplayWindow:
    epoch: int = -1
    top: int = 0
    bits: int = 0  # bit i set: counter (top - i) seen

    def acceptable(self, epoch: int, counter: int) -> bool:
        if epoch != self.epoch:
            return epoch > self.epoch
        if counter > self.top:
            return True
        offset = self.top - counter
        return offset < REPLAY_WINDOW and not (self.bits >> offset) & 1

    def accept(self, epoch: int, counter: int) -> None:
        if epoch != self.epoch:
            self.epoch, self.top, self.bits = epoch, counter, 1
            return
        if counter > self.top:
            shift = counter - self.top
            self.bits = ((self.bits << shift) | 1) & ((1 << REPLAY_WINDOW) - 1) if shift < REPLAY_WINDOW else 1
            self.top = counter
        else:
            self.bits |= 1 << (self.top - counter)


# --- peer-link sessions ---------------------------------------------------------------------------------

LINK_HELLO_BYTES = ID_BYTES + 32 + 32


@attrs.define(slots=True)
class LinkHandshake:
    """One side of the peer-link handshake. `hello()` is sent; `finish(their_hello)` yields a LinkSession."""

    identity: Identity
    random32: bytes
    _eph: nacl.public.PrivateKey = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        self._eph = nacl.public.PrivateKey(hashlib.blake2b(self.random32, person=b"homing-eph").digest()[:32])

    def hello(self) -> bytes:
        return self.identity.id + bytes(self._eph.public_key) + self.random32

    def finish(self, their_hello: bytes, *, initiator: bool) -> tuple[bytes, LinkSession]:
        """Return (peer id, session). Raises RemoteProtocolError on a malformed hello."""
        if len(their_hello) != LINK_HELLO_BYTES:
            raise RemoteProtocolError("peer-link hello has the wrong length")
        peer_id = their_hello[:ID_BYTES]
        if peer_id == self.identity.id:
            raise RemoteProtocolError("peer-link hello from ourselves")
        their_eph = their_hello[ID_BYTES : ID_BYTES + 32]
        static_priv = self.identity.curve25519_private()
        try:
            ss = nacl.bindings.crypto_scalarmult(static_priv, curve25519_public(peer_id))
            ee = nacl.bindings.crypto_scalarmult(bytes(self._eph), their_eph)
        except (nacl.exceptions.CryptoError, nacl.exceptions.RuntimeError, ValueError) as exc:
            raise RemoteProtocolError("peer-link key agreement failed") from exc
        mine = self.hello()
        transcript = mine + their_hello if initiator else their_hello + mine
        okm = hashlib.blake2b(ss + ee + transcript, digest_size=64, person=b"homing-link-v1").digest()
        k_init, k_resp = okm[:32], okm[32:]
        send, recv = (k_init, k_resp) if initiator else (k_resp, k_init)
        return bytes(peer_id), LinkSession(nacl.secret.SecretBox(send), nacl.secret.SecretBox(recv))


class LinkSession:
    """Seals frames in one direction and opens them in the other, each with a strictly increasing counter."""

    __slots__ = ("_recv", "_recv_counter", "_send", "_send_counter")

    def __init__(self, send: nacl.secret.SecretBox, recv: nacl.secret.SecretBox) -> None:
        self._send, self._recv = send, recv
        self._send_counter = 0
        self._recv_counter = 0

    def seal(self, plaintext: bytes) -> bytes:
        self._send_counter += 1
        nonce = self._send_counter.to_bytes(24, "big")
        return bytes(self._send.encrypt(plaintext, nonce).ciphertext)

    def open(self, ciphertext: bytes) -> bytes:
        self._recv_counter += 1
        nonce = self._recv_counter.to_bytes(24, "big")
        try:
            return bytes(self._recv.decrypt(ciphertext, nonce))
        except (nacl.exceptions.CryptoError, nacl.exceptions.ValueError) as exc:
            raise BadSignature("peer-link frame failed authentication") from exc
