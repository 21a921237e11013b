"""Node-to-node encryption and authentication (pure: no I/O, no clock, no global randomness).

Two mechanisms, both between Ed25519 node keys converted to X25519 (pynacl):

1. **Sealed datagrams** (SWIM over UDP). Layout:
   `version(1) | sender id(32) | epoch(8) | counter(8) | XSalsa20-Poly1305 box(ciphertext + 16-byte tag)`.
   The 24-byte nonce is `epoch | counter | direction | 7 zero bytes`, `direction` 0x01 when the sender's id is
   below the recipient's (bytewise), else 0x02: the two nodes share one box key, so without it a datagram sent
   back to its sender with the other id in the header opened as the other's (a reflection), and two nodes that
   started in the same millisecond sealed under the same nonces. `epoch` is chosen by the sender at start (milliseconds
   of wall time, injected) and never goes back; `counter` increases per packet. The receiver keeps, per sender,
   the highest epoch and a 64-packet sliding window of counters: a replayed, reordered-beyond-window or
   old-epoch packet is refused and changes nothing. Only the two key holders can build or open a box, so a
   forged packet fails authentication.

2. **Peer-link sessions** (TCP): the Noise handshake `Noise_IK_25519_ChaChaPoly_BLAKE2b` (node/protocol/noise.py)
   between the nodes' static keys (Ed25519 converted to X25519), then Noise transport frames. See `LinkHandshake`
   and `LinkSession` below and docs/protocol.md, "Peer links".
"""

from __future__ import annotations

import struct

import attrs
import nacl.exceptions
import nacl.public

from node.protocol import noise
from node.protocol.errors import BadSignature, LocalProtocolError, RemoteProtocolError, Replayed, TooLarge
from node.protocol.identity import ID_BYTES, Identity, curve25519_public
from node.protocol.wire import DatagramKind

SEALED_VERSION = DatagramKind.SEALED  # the datagram's first byte says what follows
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

    def keyed(self, peer: bytes) -> bool:
        """Has this sealer computed a shared key with `peer` (one X25519 operation) and still holds it?"""
        return peer in self._boxes

    def seal(self, peer: bytes, plaintext: bytes) -> bytes:
        self._counter += 1
        head = struct.pack(">BQQ", SEALED_VERSION, self._epoch, self._counter)
        nonce = head[1:] + _direction(self._identity.id, peer)
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
        nonce = packet[1 + ID_BYTES : SEALED_HEADER] + _direction(sender, self._identity.id)
        try:
            plaintext = self._box(sender).decrypt(packet[SEALED_HEADER:], nonce)
        except (nacl.exceptions.CryptoError, nacl.exceptions.ValueError) as exc:
            raise BadSignature("datagram failed authentication") from exc
        if window is None:
            if len(self._windows) >= self._peers_max:
                self._windows.pop(next(iter(self._windows)))
            window = self._windows[sender] = _ReplayWindow()
        else:  # least recently used goes first: made-up senders cannot evict a member that keeps sending
            del self._windows[sender]
            self._windows[sender] = window
        window.accept(epoch, counter)
        return bytes(sender), bytes(plaintext)


def _direction(sender: bytes, recipient: bytes) -> bytes:
    """The last 8 bytes of a sealed datagram's nonce: which of the two directions between these nodes it goes."""
    return (b"\x01" if sender < recipient else b"\x02") + bytes(7)


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
#
# Handshake (Noise IK; the dialler always knows the id, hence the static key, of the node it dials):
#   initiator -> responder: LINK_MAGIC | u16 length | msg1   (e, es, s, ss; payload: the initiator's Ed25519 id)
#   responder -> initiator:               u16 length | msg2   (e, ee, se; empty payload)
# The prologue binds the protocol label and version, so a node of another link version cannot complete it.
# The initiator's Ed25519 id in msg1 must convert to the static key msg1 carries (X25519 keys do not say which
# Ed25519 key they came from). The responder checks admission on that id before it answers, and treats the
# initiator as authenticated only once a transport frame from it decrypts: msg1 alone proves nothing to a
# responder whose own key was stolen (key-compromise impersonation), the transport keys need DH(s_i, e_r).
#
# Transport frame: `header(4) | ChaChaPoly ciphertext`, header = u32 big-endian, bit 31 "the sender rekeyed before
# this frame", bits 0..30 the ciphertext length; the header is the AEAD's associated data. Nonces are the Noise
# CipherState's counters (one per direction), so a replayed, reordered, dropped or altered frame fails to decrypt.
# Rekeying (Noise REKEY) is decided by the sender (every `rekey_frames_max` frames or `rekey_interval_s` seconds)
# and flagged in the header, so both sides rekey at the same frame.

LINK_MAGIC = b"HML2"
LINK_PROLOGUE = b"homing peer link 2"
LINK_PATTERN = "IK"
LINK_HANDSHAKE_MAX_BYTES = 512  # msg1 is 128 bytes, msg2 48: anything longer is refused before it is read
LINK_FRAME_HEADER_BYTES = 4
_REKEY_FLAG = 0x8000_0000
_LENGTH_MASK = 0x7FFF_FFFF


@attrs.frozen(kw_only=True, slots=True)
class RekeyPolicy:
    """When a sender rekeys its direction of a link (both bounds; the first reached wins)."""

    frames_max: int = attrs.field(default=1 << 16, validator=attrs.validators.ge(1))
    interval_s: float = attrs.field(default=600.0, validator=attrs.validators.gt(0))


DEFAULT_REKEY = RekeyPolicy()


class LinkHandshake:
    """One side of the peer-link handshake (sans-IO). `random_bytes` is the I/O layer's CSPRNG (os.urandom):
    the ephemeral private key comes from it and never leaves this object.

    Initiator: `start()` -> bytes to send; `finish(msg2, now)` -> LinkSession.
    Responder: `read_hello(msg1)` -> the peer's verified-to-match id (check admission now); `answer(now)` ->
    (bytes to send, LinkSession).
    """

    __slots__ = ("_hs", "_identity", "_peer_id", "_rekey")

    def __init__(
        self,
        identity: Identity,
        *,
        random_bytes: noise.RandomBytes,
        expected_id: bytes | None = None,
        rekey: RekeyPolicy = DEFAULT_REKEY,
    ) -> None:
        self._identity = identity
        self._rekey = rekey
        self._peer_id = expected_id
        rs = None
        if expected_id is not None:
            if expected_id == identity.id:
                raise LocalProtocolError("a peer link to ourselves")
            rs = curve25519_public(expected_id)
        self._hs = noise.HandshakeState(
            pattern=LINK_PATTERN,
            initiator=expected_id is not None,
            random_bytes=random_bytes,
            prologue=LINK_PROLOGUE,
            s=noise.ed25519_to_x25519_keypair(identity.seed),
            rs=rs,
        )

    @property
    def peer_id(self) -> bytes | None:
        return self._peer_id

    @property
    def handshake_hash(self) -> bytes:
        return self._hs.handshake_hash

    def start(self) -> bytes:
        msg1 = self._hs.write_message(self._identity.id)
        return LINK_MAGIC + struct.pack(">H", len(msg1)) + msg1

    def read_hello(self, msg1: bytes) -> bytes:
        """The initiator's id from msg1 (without magic and length). Raises RemoteProtocolError."""
        try:
            payload = self._hs.read_message(msg1)
        except noise.NoiseError as exc:  # a bad tag or key: not made with the keys it claims
            raise BadSignature(f"peer-link hello: {exc}") from exc
        if len(payload) != ID_BYTES:
            raise RemoteProtocolError("peer-link hello does not carry a node id")
        if payload == self._identity.id:
            raise RemoteProtocolError("peer-link hello from ourselves")
        if curve25519_public(payload) != self._hs.remote_static:  # RemoteProtocolError for a non-key
            raise BadSignature("peer-link hello: the node id does not match the static key")
        self._peer_id = bytes(payload)
        return self._peer_id

    def answer(self, now: float) -> tuple[bytes, LinkSession]:
        msg2 = self._hs.write_message(b"")
        return struct.pack(">H", len(msg2)) + msg2, self._session(now)

    def finish(self, msg2: bytes, now: float) -> LinkSession:
        try:
            payload = self._hs.read_message(msg2)
        except noise.NoiseError as exc:
            raise BadSignature(f"peer-link answer: {exc}") from exc
        if payload:
            raise RemoteProtocolError("peer-link answer carries an unexpected payload")
        return self._session(now)

    def _session(self, now: float) -> LinkSession:
        send, recv = self._hs.split()
        return LinkSession(send, recv, rekey=self._rekey, now=now)


def handshake_length(head: bytes) -> int:
    """The length of a handshake message from its 2-byte prefix. Raises TooLarge."""
    (n,) = struct.unpack(">H", head)
    if n > LINK_HANDSHAKE_MAX_BYTES:
        raise TooLarge(f"peer-link handshake message of {n} bytes")
    return int(n)


class LinkSession:
    """The two Noise CipherStates of a link: seals frames in one direction and opens them in the other."""

    __slots__ = ("_recv", "_rekey", "_send", "_sent_since_rekey", "_since_s", "rekeys_received", "rekeys_sent")

    def __init__(self, send: noise.CipherState, recv: noise.CipherState, *, rekey: RekeyPolicy, now: float) -> None:
        self._send, self._recv = send, recv
        self._rekey = rekey
        self._sent_since_rekey = 0
        self._since_s = now
        self.rekeys_sent = 0
        self.rekeys_received = 0

    def seal(self, plaintext: bytes, now: float) -> bytes:
        """One whole frame (header and ciphertext) holding `plaintext`."""
        flag = 0
        if self._sent_since_rekey >= self._rekey.frames_max or now - self._since_s >= self._rekey.interval_s:
            self._send.rekey()
            self._sent_since_rekey, self._since_s = 0, now
            self.rekeys_sent += 1
            flag = _REKEY_FLAG
        self._sent_since_rekey += 1
        header = struct.pack(">I", flag | (len(plaintext) + noise.TAG_BYTES))
        return header + self._send.encrypt_with_ad(header, plaintext)

    @staticmethod
    def frame_length(header: bytes, max_bytes: int) -> int:
        """The ciphertext length a frame header announces. Raises TooLarge over `max_bytes` of plaintext."""
        (word,) = struct.unpack(">I", header)
        n = int(word & _LENGTH_MASK)
        if n > max_bytes + noise.TAG_BYTES:
            raise TooLarge(f"peer frame of {n} bytes exceeds {max_bytes}")
        if n < noise.TAG_BYTES:
            raise RemoteProtocolError("peer frame shorter than its tag")
        return n

    def open(self, header: bytes, ciphertext: bytes) -> bytes:
        """The plaintext of one frame. Raises BadSignature (and changes nothing) when it does not authenticate."""
        rekeyed = header[0] & 0x80
        cipher = self._recv
        if rekeyed:
            cipher = cipher.copy()
            cipher.rekey()
        try:
            plaintext = cipher.decrypt_with_ad(header, ciphertext)
        except noise.NoiseError as exc:
            raise BadSignature("peer-link frame failed authentication") from exc
        if rekeyed:
            self._recv = cipher
            self.rekeys_received += 1
        return plaintext
