"""The Noise Protocol Framework (revision 34), for `Noise_<PATTERN>_25519_ChaChaPoly_BLAKE2b` only.

Pure and sans-IO: no sockets, no clock, no global randomness. The one source of randomness, the ephemeral private
key, comes from a `random_bytes(n)` callable that the caller injects (the I/O layer passes `nacl.utils.random` or
`os.urandom`; tests pass fixed bytes).

Rules
- Exactly the objects of the spec (https://noiseprotocol.org/noise.html, rev 34, sections 5 and 12):
  CipherState, SymmetricState and HandshakeState, with their spec names in snake case. No PSK modifiers,
  no fallback; the handshake patterns are the fifteen fundamental ones of sections 7.4 and 7.5, as tables (PATTERNS).
- Primitives from libsodium (pynacl bindings), so any libsodium client computes the same bytes:
  DH is X25519 (`crypto_scalarmult`; an all-zero result, i.e. a low-order public key, is refused);
  ENCRYPT is ChaCha20-Poly1305 IETF with the 96-bit nonce `4 zero bytes || 64-bit little-endian counter`;
  HASH is BLAKE2b-512 (`crypto_generichash`, no key); HMAC is RFC 2104 over BLAKE2b with a 128-byte block
  (not BLAKE2b's keyed mode) and HKDF is the spec's section 4.3 (the same bytes as RFC 5869 with salt = ck and
  no info).
- A message is at most 65535 bytes (MAX_MESSAGE_BYTES); longer input is refused before any state changes.
- Errors: input from the peer that fails (bad length, bad tag, low-order key) raises `NoiseError`
  (a RemoteProtocolError) and changes no state: `read_message` and `CipherState.decrypt_with_ad` are
  all-or-nothing, so a forged message injected by a relay does not kill the session and the genuine one still reads.
  Misuse by the caller (writing out of turn, a missing key, an exhausted nonce) raises LocalProtocolError.

Theory of operation
A HandshakeState runs one pattern as a list of message patterns, alternating initiator -> responder, starting with
the initiator. `write_message(payload)` returns the next message when it is our turn; `read_message(message)`
returns the peer's payload when it is theirs. Each token mixes a public key or a DH result into the
SymmetricState (chaining key `ck` and handshake hash `h`); payloads are encrypted as soon as a DH has happened.
When the last message pattern is done, `split()` returns two CipherStates `(send, receive)` oriented for this side
(the spec's c1 is initiator->responder, c2 the other way). A CipherState encrypts with an implicit counter nonce;
`set_nonce` lets a transport with explicit sequence numbers pick the nonce (spec section 5.1).
`handshake_hash` (spec GetHandshakeHash) identifies the session and may serve as a channel binding.

API (everything else is private):
    PATTERNS, HandshakePattern, Keypair, generate_keypair(random_bytes), keypair_from_private(private),
    protocol_name(pattern), CipherState, SymmetricState, HandshakeState (.copy() for one message 1 answered
    several times), NoiseError, MAX_MESSAGE_BYTES,
    DH_BYTES, HASH_BYTES, KEY_BYTES, TAG_BYTES, ed25519_to_x25519_keypair(seed)
"""

from __future__ import annotations

import functools
import hashlib
import hmac
from collections.abc import Callable

import attrs
import nacl.bindings as sodium
import nacl.exceptions

from node.protocol.errors import LocalProtocolError, RemoteProtocolError

DH_BYTES = 32
HASH_BYTES = 64
BLOCK_BYTES = 128
KEY_BYTES = 32
TAG_BYTES = 16
MAX_MESSAGE_BYTES = 65535
MAX_NONCE = 2**64 - 1  # reserved by the spec: never used to encrypt (REKEY uses it)
SUITE = "25519_ChaChaPoly_BLAKE2b"

RandomBytes = Callable[[int], bytes]


class NoiseError(RemoteProtocolError):
    """A Noise message from the peer is malformed or does not authenticate. No state changed."""


# --- primitives (spec section 4) ---------------------------------------------------------------------------


def _hash(data: bytes) -> bytes:
    """BLAKE2b with a 64-byte digest, unkeyed (the spec's HASH for BLAKE2b)."""
    return hashlib.blake2b(data, digest_size=HASH_BYTES).digest()


def _hmac(key: bytes, data: bytes) -> bytes:
    """HMAC-BLAKE2b (RFC 2104): H((K ^ opad) || H((K ^ ipad) || data)), K zero-padded to the 128-byte block.
    The standard library's `hmac` does exactly this for BLAKE2b-512 (block 128 bytes), in C: a handshake spent
    a fifth of its time in a Python loop doing the padding (docs/security.md, "peer port")."""
    return hmac.digest(key, data, "blake2b")


def _hkdf(chaining_key: bytes, ikm: bytes, outputs: int) -> tuple[bytes, ...]:
    """The spec's HKDF (section 4.3): 2 or 3 outputs of HASH_BYTES each."""
    temp_key = _hmac(chaining_key, ikm)
    out1 = _hmac(temp_key, b"\x01")
    out2 = _hmac(temp_key, out1 + b"\x02")
    if outputs == 2:
        return out1, out2
    return out1, out2, _hmac(temp_key, out2 + b"\x03")


def _nonce(n: int) -> bytes:
    return b"\x00\x00\x00\x00" + n.to_bytes(8, "little")


def _encrypt(key: bytes, n: int, ad: bytes, plaintext: bytes) -> bytes:
    return bytes(sodium.crypto_aead_chacha20poly1305_ietf_encrypt(plaintext, ad, _nonce(n), key))


def _decrypt(key: bytes, n: int, ad: bytes, ciphertext: bytes) -> bytes:
    try:
        return bytes(sodium.crypto_aead_chacha20poly1305_ietf_decrypt(ciphertext, ad, _nonce(n), key))
    except (nacl.exceptions.CryptoError, ValueError, TypeError) as exc:
        raise NoiseError("Noise ciphertext does not authenticate") from exc


def _dh(private: bytes, public: bytes) -> bytes:
    if len(public) != DH_BYTES:
        raise NoiseError("X25519 public key must be 32 bytes")
    try:
        return bytes(sodium.crypto_scalarmult(private, public))
    except (nacl.exceptions.RuntimeError, nacl.exceptions.CryptoError, RuntimeError) as exc:
        raise NoiseError("X25519 public key has low order (all-zero shared secret)") from exc


@attrs.frozen(kw_only=True, slots=True)
class Keypair:
    """An X25519 key pair (raw 32-byte keys). The repr hides the private key."""

    private: bytes = attrs.field(repr=False, validator=attrs.validators.instance_of(bytes))
    public: bytes = attrs.field(validator=attrs.validators.instance_of(bytes))

    @private.validator
    def _check_private(self, _attr: object, value: bytes) -> None:
        if len(value) != DH_BYTES:
            raise ValueError("an X25519 private key is 32 bytes")


def keypair_from_private(private: bytes) -> Keypair:
    """The X25519 key pair of a 32-byte private key (clamped by X25519 itself, as libsodium does)."""
    return Keypair(private=bytes(private), public=bytes(sodium.crypto_scalarmult_base(bytes(private))))


def generate_keypair(random_bytes: RandomBytes) -> Keypair:
    """GENERATE_KEYPAIR: 32 bytes from the injected source are the private key."""
    private = random_bytes(DH_BYTES)
    if not isinstance(private, bytes) or len(private) != DH_BYTES:
        raise LocalProtocolError("random_bytes(32) must return 32 bytes")
    return keypair_from_private(private)


@functools.lru_cache(maxsize=8)  # a node converts its own key once, not on every handshake
def ed25519_to_x25519_keypair(seed: bytes) -> Keypair:
    """The X25519 static key pair of an Ed25519 identity, from its 32-byte seed (crypto_sign_ed25519_sk_to_curve25519).

    The public half equals `crypto_sign_ed25519_pk_to_curve25519(id)` (node.identity.curve25519_public).
    """
    _pk, sk = sodium.crypto_sign_seed_keypair(seed)
    return keypair_from_private(bytes(sodium.crypto_sign_ed25519_sk_to_curve25519(sk)))


# --- CipherState (spec section 5.1) -------------------------------------------------------------------------


class CipherState:
    """A key `k` (or none) and a 64-bit nonce `n`. Without a key, encryption is the identity (as in the spec)."""

    __slots__ = ("_k", "n")

    def __init__(self, key: bytes | None = None, *, nonce: int = 0) -> None:
        if key is not None and len(key) != KEY_BYTES:
            raise LocalProtocolError("a ChaChaPoly key is 32 bytes")
        self._k = key
        self.n = nonce

    def has_key(self) -> bool:
        return self._k is not None

    def set_nonce(self, nonce: int) -> None:
        if not 0 <= nonce < MAX_NONCE:
            raise LocalProtocolError("nonce out of range")
        self.n = nonce

    def encrypt_with_ad(self, ad: bytes, plaintext: bytes) -> bytes:
        if self._k is None:
            return bytes(plaintext)
        if self.n >= MAX_NONCE:
            raise LocalProtocolError("nonce exhausted: rekey or start a new session")
        out = _encrypt(self._k, self.n, ad, plaintext)
        self.n += 1
        return out

    def decrypt_with_ad(self, ad: bytes, ciphertext: bytes) -> bytes:
        """Decrypt and advance the nonce; on failure raise NoiseError and leave the nonce as it was."""
        if self._k is None:
            return bytes(ciphertext)
        if self.n >= MAX_NONCE:
            raise LocalProtocolError("nonce exhausted: rekey or start a new session")
        if len(ciphertext) < TAG_BYTES:
            raise NoiseError("Noise ciphertext shorter than its tag")
        out = _decrypt(self._k, self.n, ad, ciphertext)
        self.n += 1
        return out

    def rekey(self) -> None:
        """REKEY: k = first 32 bytes of ENCRYPT(k, 2^64-1, empty ad, 32 zero bytes). The nonce is kept."""
        if self._k is None:
            raise LocalProtocolError("rekey without a key")
        self._k = _encrypt(self._k, MAX_NONCE, b"", bytes(KEY_BYTES))[:KEY_BYTES]

    def copy(self) -> CipherState:
        return CipherState(self._k, nonce=self.n)


# --- SymmetricState (spec section 5.2) ------------------------------------------------------------------------


class SymmetricState:
    """Chaining key `ck`, handshake hash `h` and the handshake CipherState."""

    __slots__ = ("cipher", "ck", "h")

    def __init__(self, protocol_name: bytes) -> None:
        self.h = protocol_name.ljust(HASH_BYTES, b"\x00") if len(protocol_name) <= HASH_BYTES else _hash(protocol_name)
        self.ck = self.h
        self.cipher = CipherState()

    def mix_key(self, ikm: bytes) -> None:
        self.ck, temp_k = _hkdf(self.ck, ikm, 2)
        self.cipher = CipherState(temp_k[:KEY_BYTES])

    def mix_hash(self, data: bytes) -> None:
        self.h = _hash(self.h + data)

    def mix_key_and_hash(self, ikm: bytes) -> None:
        self.ck, temp_h, temp_k = _hkdf(self.ck, ikm, 3)
        self.mix_hash(temp_h)
        self.cipher = CipherState(temp_k[:KEY_BYTES])

    def get_handshake_hash(self) -> bytes:
        return self.h

    def encrypt_and_hash(self, plaintext: bytes) -> bytes:
        ciphertext = self.cipher.encrypt_with_ad(self.h, plaintext)
        self.mix_hash(ciphertext)
        return ciphertext

    def decrypt_and_hash(self, ciphertext: bytes) -> bytes:
        plaintext = self.cipher.decrypt_with_ad(self.h, ciphertext)
        self.mix_hash(ciphertext)
        return plaintext

    def split(self) -> tuple[CipherState, CipherState]:
        """(c1, c2): c1 encrypts initiator -> responder, c2 responder -> initiator."""
        k1, k2 = _hkdf(self.ck, b"", 2)
        return CipherState(k1[:KEY_BYTES]), CipherState(k2[:KEY_BYTES])

    def copy(self) -> SymmetricState:
        out = SymmetricState.__new__(SymmetricState)
        out.ck, out.h, out.cipher = self.ck, self.h, self.cipher.copy()
        return out


# --- handshake patterns (spec sections 7.4 and 7.5) -----------------------------------------------------------


@attrs.frozen(kw_only=True, slots=True)
class HandshakePattern:
    """A pattern as tables: pre-messages (tokens "e"/"s") and messages (tuples of tokens), initiator first."""

    name: str
    initiator_pre: tuple[str, ...] = ()
    responder_pre: tuple[str, ...] = ()
    messages: tuple[tuple[str, ...], ...]

    @property
    def one_way(self) -> bool:
        return len(self.messages) == 1


def _tokens(text: str) -> tuple[str, ...]:
    return tuple(t.strip() for t in text.split(",") if t.strip())


def _p(name: str, pre_i: str, pre_r: str, *messages: str) -> HandshakePattern:
    return HandshakePattern(
        name=name, initiator_pre=_tokens(pre_i), responder_pre=_tokens(pre_r), messages=tuple(map(_tokens, messages))
    )


PATTERNS: dict[str, HandshakePattern] = {
    p.name: p
    for p in (
        # one-way (7.4): the initiator sends one message, the responder never answers
        _p("N", "", "s", "e, es"),
        _p("K", "s", "s", "e, es, ss"),
        _p("X", "", "s", "e, es, s, ss"),
        # interactive (7.5)
        _p("NN", "", "", "e", "e, ee"),
        _p("NK", "", "s", "e, es", "e, ee"),
        _p("NX", "", "", "e", "e, ee, s, es"),
        _p("KN", "s", "", "e", "e, ee, se"),
        _p("KK", "s", "s", "e, es, ss", "e, ee, se"),
        _p("KX", "s", "", "e", "e, ee, se, s, es"),
        _p("XN", "", "", "e", "e, ee", "s, se"),
        _p("XK", "", "s", "e, es", "e, ee", "s, se"),
        _p("XX", "", "", "e", "e, ee, s, es", "s, se"),
        _p("IN", "", "", "e, s", "e, ee, se"),
        _p("IK", "", "s", "e, es, s, ss", "e, ee, se"),
        _p("IX", "", "", "e, s", "e, ee, se, s, es"),
    )
}


def protocol_name(pattern: str) -> bytes:
    """b"Noise_<PATTERN>_25519_ChaChaPoly_BLAKE2b"."""
    return f"Noise_{pattern}_{SUITE}".encode("ascii")


# --- HandshakeState (spec section 5.3) ------------------------------------------------------------------------


class HandshakeState:
    """One handshake. Give it the keys its pattern needs: `s` (our static) when we send or pre-share `s`,
    `rs` when the peer's static is pre-shared (a "K" or the responder of "NK"/"XK"/"IK"...).

    `random_bytes(n)` is called once, for our ephemeral, when an "e" token is written.
    """

    __slots__ = ("_e", "_index", "_initiator", "_pattern", "_random", "_re", "_rs", "_s", "_split", "_ss")

    def __init__(
        self,
        *,
        pattern: str | HandshakePattern,
        initiator: bool,
        random_bytes: RandomBytes,
        prologue: bytes = b"",
        s: Keypair | None = None,
        rs: bytes | None = None,
    ) -> None:
        pat = PATTERNS[pattern] if isinstance(pattern, str) else pattern
        self._pattern = pat
        self._initiator = initiator
        self._random = random_bytes
        self._s, self._rs = s, rs
        self._e: Keypair | None = None
        self._re: bytes | None = None
        self._index = 0
        self._split: tuple[CipherState, CipherState] | None = None
        self._ss = SymmetricState(protocol_name(pat.name))
        self._ss.mix_hash(prologue)
        for owner_is_initiator, tokens in ((True, pat.initiator_pre), (False, pat.responder_pre)):
            for token in tokens:
                self._ss.mix_hash(self._pre_key(token, mine=owner_is_initiator == initiator))

    def _pre_key(self, token: str, *, mine: bool) -> bytes:
        if token == "s":
            key = (self._s.public if self._s else None) if mine else self._rs
        else:  # "e" in a pre-message: not used by the fundamental patterns
            raise LocalProtocolError("ephemeral pre-messages are not supported")
        if key is None:
            raise LocalProtocolError(f"pattern {self._pattern.name} needs {'s' if mine else 'rs'} before it starts")
        return key

    # -- state ---------------------------------------------------------------------------------------------------

    @property
    def pattern(self) -> HandshakePattern:
        return self._pattern

    @property
    def initiator(self) -> bool:
        return self._initiator

    @property
    def complete(self) -> bool:
        """True once every message pattern has been written or read (split() is then available)."""
        return self._split is not None

    @property
    def my_turn(self) -> bool:
        """True when the next step is write_message (False when complete)."""
        if self.complete:
            return False
        return (self._index % 2 == 0) == self._initiator

    @property
    def handshake_hash(self) -> bytes:
        """GetHandshakeHash (64 bytes); final once complete."""
        return self._ss.get_handshake_hash()

    @property
    def remote_static(self) -> bytes | None:
        return self._rs

    @property
    def remote_ephemeral(self) -> bytes | None:
        return self._re

    def copy(self) -> HandshakeState:
        """An independent copy (same keys and transcript so far). A caller whose offer reaches several devices
        of one callee copies its state after message 1, once per answer, so each answer becomes its own session."""
        out = HandshakeState.__new__(HandshakeState)
        out._pattern, out._initiator, out._random = self._pattern, self._initiator, self._random
        out._s, out._rs, out._e, out._re, out._index = self._s, self._rs, self._e, self._re, self._index
        out._ss = self._ss.copy()
        out._split = None if self._split is None else (self._split[0].copy(), self._split[1].copy())
        return out

    def split(self) -> tuple[CipherState, CipherState]:
        """(send, receive) CipherStates for this side. Only when complete. One-way patterns: use `send` only."""
        if self._split is None:
            raise LocalProtocolError("handshake not complete")
        c1, c2 = self._split
        return (c1, c2) if self._initiator else (c2, c1)

    # -- messages ------------------------------------------------------------------------------------------------

    def write_message(self, payload: bytes = b"") -> bytes:
        if not self.my_turn:
            raise LocalProtocolError("not our turn to write a handshake message")
        out = bytearray()
        for token in self._pattern.messages[self._index]:
            if token == "e":
                self._e = generate_keypair(self._random)
                out += self._e.public
                self._ss.mix_hash(self._e.public)
            elif token == "s":
                if self._s is None:
                    raise LocalProtocolError("pattern sends s but no static key was given")
                out += self._ss.encrypt_and_hash(self._s.public)
            else:
                self._ss.mix_key(self._token_dh(token))
        out += self._ss.encrypt_and_hash(payload)
        if len(out) > MAX_MESSAGE_BYTES:
            raise LocalProtocolError(f"Noise message over {MAX_MESSAGE_BYTES} bytes")
        self._advance()
        return bytes(out)

    def read_message(self, message: bytes) -> bytes:
        """The peer's payload. All or nothing: on NoiseError no state has changed."""
        if self.complete or self.my_turn:
            raise LocalProtocolError("not the peer's turn to send a handshake message")
        if len(message) > MAX_MESSAGE_BYTES:
            raise NoiseError(f"Noise message over {MAX_MESSAGE_BYTES} bytes")
        saved = (self._ss.copy(), self._re, self._rs)
        try:
            return self._read_tokens(memoryview(message))
        except NoiseError:
            self._ss, self._re, self._rs = saved
            raise

    def _read_tokens(self, msg: memoryview) -> bytes:
        pos = 0
        for token in self._pattern.messages[self._index]:
            if token == "e":
                if len(msg) - pos < DH_BYTES:
                    raise NoiseError("Noise message truncated (e)")
                self._re = bytes(msg[pos : pos + DH_BYTES])
                pos += DH_BYTES
                self._ss.mix_hash(self._re)
            elif token == "s":
                size = DH_BYTES + (TAG_BYTES if self._ss.cipher.has_key() else 0)
                if len(msg) - pos < size:
                    raise NoiseError("Noise message truncated (s)")
                self._rs = self._ss.decrypt_and_hash(bytes(msg[pos : pos + size]))
                pos += size
            else:
                self._ss.mix_key(self._token_dh(token))
        if self._ss.cipher.has_key() and len(msg) - pos < TAG_BYTES:
            raise NoiseError("Noise message truncated (payload tag)")
        payload = self._ss.decrypt_and_hash(bytes(msg[pos:]))
        self._advance()
        return payload

    def _token_dh(self, token: str) -> bytes:
        # "es": initiator's ephemeral with responder's static, computed by each side with what it holds.
        local_kind, remote_kind = token[0], token[1]
        if not self._initiator:
            local_kind, remote_kind = remote_kind, local_kind
        local = self._e if local_kind == "e" else self._s
        remote = self._re if remote_kind == "e" else self._rs
        if local is None or remote is None:
            raise LocalProtocolError(f"token {token} needs a key that is missing")
        return _dh(local.private, remote)

    def _advance(self) -> None:
        self._index += 1
        if self._index == len(self._pattern.messages):
            self._split = self._ss.split()
