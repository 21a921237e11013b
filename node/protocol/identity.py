"""Identities and signed documents.

An id is an Ed25519 public key: 32 raw bytes on the wire, 43 characters of unpadded base64url in text.
A signed document is `{"body": <msgpack bytes>, "key": <signer id>, "sig": <sig>}` with the Ed25519 signature
over `b"homing/v1/" + PURPOSE + body` (docs/bootstrap.md). The body stays as the signer's exact bytes, so no
canonical encoding is needed: verify the bytes, then decode them.

Pure module: no I/O (key files are `node.client.files`).
"""

from __future__ import annotations

import base64
from typing import Any

import msgpack
import nacl.exceptions
import nacl.signing

from node.protocol.errors import BadSignature, RemoteProtocolError

ID_BYTES = 32
SIG_BYTES = 64
ID_TEXT_CHARS = 43
SIGN_PREFIX = b"homing/v1/"
CLIENT_AUTH_PREFIX = b"homing/v1/client-auth"
NODE_AUTH_PREFIX = b"homing/v1/node-auth"

# Purposes of signed documents (docs/bootstrap.md and docs/discovery.md).
NODE_LIST = "node-list"
NODE_REGISTER = "node-register"
NODE_LEAVE = "node-leave"
NODE_CARD = "node-card"
BRIDGE_LIST = "bridge-list"

SIGNED_DOC_MAX_BYTES = 256 * 1024


def b64u_encode(data: bytes) -> str:
    """Unpadded base64url, the text form of bytes everywhere in homing."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64u_decode(text: str) -> bytes:
    """Inverse of b64u_encode; accepts padded input too. Raises ValueError on bad input."""
    if not isinstance(text, str):
        raise ValueError("expected a base64url string")
    stripped = text.strip().rstrip("=")
    if any(c not in _B64U_ALPHABET for c in stripped) or len(stripped) % 4 == 1:
        raise ValueError("not unpadded base64url")
    return base64.urlsafe_b64decode(stripped + "=" * (-len(stripped) % 4))


_B64U_ALPHABET = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


def id_text(node_id: bytes) -> str:
    """The 43-character text form of an id."""
    if len(node_id) != ID_BYTES:
        raise ValueError(f"an id is {ID_BYTES} bytes, got {len(node_id)}")
    return b64u_encode(node_id)


def short_id(node_id: bytes) -> str:
    """A short prefix for logs at info level (never log a full client id there)."""
    return b64u_encode(node_id)[:8]


def parse_id(text: str) -> bytes:
    """Parse the text form of an id. Raises ValueError with a readable reason."""
    if not isinstance(text, str) or len(text) != ID_TEXT_CHARS:
        raise ValueError(f"an id is {ID_TEXT_CHARS} base64url characters")
    raw = b64u_decode(text)
    if len(raw) != ID_BYTES:
        raise ValueError("an id decodes to 32 bytes")
    return raw


class Identity:
    """An Ed25519 key pair. `id` is the public key (32 bytes)."""

    __slots__ = ("_signing", "id")

    def __init__(self, signing_key: nacl.signing.SigningKey) -> None:
        self._signing = signing_key
        self.id: bytes = bytes(signing_key.verify_key)

    @classmethod
    def generate(cls) -> Identity:
        return cls(nacl.signing.SigningKey.generate())

    @classmethod
    def from_seed(cls, seed: bytes) -> Identity:
        return cls(nacl.signing.SigningKey(seed))

    @property
    def seed(self) -> bytes:
        return bytes(self._signing)

    @property
    def id_text(self) -> str:
        return id_text(self.id)

    def sign(self, message: bytes) -> bytes:
        return bytes(self._signing.sign(message).signature)

    def curve25519_private(self) -> bytes:
        """The X25519 private key derived from this Ed25519 key (for node-to-node boxes)."""
        return bytes(self._signing.to_curve25519_private_key())


def verify_signature(signer: bytes, message: bytes, sig: bytes) -> bool:
    """True when `sig` is `signer`'s Ed25519 signature over `message`."""
    if len(signer) != ID_BYTES or len(sig) != SIG_BYTES:
        return False
    try:
        nacl.signing.VerifyKey(signer).verify(message, sig)
    except (nacl.exceptions.BadSignatureError, nacl.exceptions.ValueError, ValueError, TypeError):
        return False
    return True


def curve25519_public(node_id: bytes) -> bytes:
    """The X25519 public key of an Ed25519 id. Raises RemoteProtocolError for a point that is not a key."""
    try:
        return bytes(nacl.signing.VerifyKey(node_id).to_curve25519_public_key())
    except (nacl.exceptions.RuntimeError, nacl.exceptions.ValueError, ValueError, TypeError) as exc:
        raise RemoteProtocolError("id is not a valid Ed25519 key") from exc


# --- signed documents ---------------------------------------------------------------------------------


def sign_document(identity: Identity, purpose: str, body: dict[str, Any]) -> dict[str, bytes]:
    """Sign `body` (encoded with msgpack) for `purpose`."""
    body_bytes: bytes = msgpack.packb(body, use_bin_type=True)
    sig = identity.sign(SIGN_PREFIX + purpose.encode("ascii") + body_bytes)
    return {"body": body_bytes, "key": identity.id, "sig": sig}


def open_document(
    doc: object, purpose: str, trusted: frozenset[bytes] | set[bytes] | None = None
) -> tuple[dict[str, Any], bytes]:
    """Verify a signed document and return (body, signer id).

    `trusted=None` accepts any signer (the caller then checks that the signer is who it should be, as for a
    node's own registration); otherwise the signer must be one of `trusted`. Raises BadSignature for a bad or
    untrusted signature and RemoteProtocolError for a malformed document.
    """
    if not isinstance(doc, dict):
        raise RemoteProtocolError("signed document is not a map")
    body, key, sig = doc.get("body"), doc.get("key"), doc.get("sig")
    if not isinstance(body, bytes) or not isinstance(key, bytes) or not isinstance(sig, bytes):
        raise RemoteProtocolError("signed document needs bytes body, key and sig")
    if len(body) > SIGNED_DOC_MAX_BYTES:
        raise RemoteProtocolError("signed document body too large", code="too_large")
    if len(key) != ID_BYTES or len(sig) != SIG_BYTES:
        raise RemoteProtocolError("signed document key or sig has the wrong length")
    if trusted is not None and key not in trusted:
        raise BadSignature("signed by a key that is not trusted")
    if not verify_signature(key, SIGN_PREFIX + purpose.encode("ascii") + body, sig):
        raise BadSignature(f"{purpose} signature does not verify")
    try:
        decoded = msgpack.unpackb(body, raw=False, strict_map_key=True, max_bin_len=SIGNED_DOC_MAX_BYTES)
    except Exception as exc:  # msgpack raises several unrelated types on bad input
        raise RemoteProtocolError("signed document body is not msgpack") from exc
    if not isinstance(decoded, dict):
        raise RemoteProtocolError("signed document body is not a map")
    return decoded, key


def encode_document(doc: dict[str, bytes]) -> bytes:
    return bytes(msgpack.packb(doc, use_bin_type=True))


def decode_document(data: bytes) -> dict[str, Any]:
    """Parse the msgpack form of a signed document (not yet verified)."""
    if len(data) > SIGNED_DOC_MAX_BYTES + 256:
        raise RemoteProtocolError("signed document too large", code="too_large")
    try:
        doc = msgpack.unpackb(data, raw=False, strict_map_key=True)
    except Exception as exc:
        raise RemoteProtocolError("signed document is not msgpack") from exc
    if not isinstance(doc, dict):
        raise RemoteProtocolError("signed document is not a map")
    return doc


def document_to_json(doc: dict[str, bytes]) -> dict[str, str]:
    """JSON form (docs/bootstrap.md): bytes as unpadded base64url strings."""
    return {k: b64u_encode(v) for k, v in doc.items()}


def document_from_json(obj: object) -> dict[str, bytes]:
    if not isinstance(obj, dict):
        raise RemoteProtocolError("signed document is not an object")
    out: dict[str, bytes] = {}
    for k in ("body", "key", "sig"):
        v = obj.get(k)
        if not isinstance(v, str):
            raise RemoteProtocolError(f"signed document field {k} missing")
        try:
            out[k] = b64u_decode(v)
        except ValueError as exc:
            raise RemoteProtocolError(f"signed document field {k} is not base64url") from exc
    return out


# --- client handshake messages (docs/client-protocol.md) ------------------------------------------------------------


def client_auth_message(node_id: bytes, node_nonce: bytes) -> bytes:
    return CLIENT_AUTH_PREFIX + node_id + node_nonce


def node_auth_message(client_id: bytes, client_nonce: bytes) -> bytes:
    return NODE_AUTH_PREFIX + client_id + client_nonce
