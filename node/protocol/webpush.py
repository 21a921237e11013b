"""Web Push, pure: subscription checks, RFC 8291 (aes128gcm) message encryption, RFC 8292 VAPID tokens.

Used by the push sender (node/net/push.py) and by the client protocol decoder; docs/client-protocol.md
("Push wake-up") and docs/operations.md ("Push wake-up") describe what goes on the wire.

Rules
- No I/O, no clock, no global randomness: the wall-clock time of a VAPID token and the random bytes of a message
  (the salt and the ephemeral key) are passed in, so a message is reproducible from its inputs.
- The cryptographic primitives come from `cryptography` (ECDH P-256, HKDF steps as HMAC-SHA-256, AES-128-GCM,
  ECDSA P-256/SHA-256); this module only arranges them as RFC 8291 and RFC 7515/8292 say. `cryptography` is imported
  by the functions that use it, on first use: it adds ~7 MiB to a process, and a node loads it only when a client
  registers a subscription or a push is sent (issue #17). The VAPID key's scalar is made and checked without it.
- The payload never says who calls: a push is only a wake-up (`WAKE_PAYLOAD`); the offer itself waits in the
  mailbox and reaches the app when it connects.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import struct
from collections.abc import Callable
from typing import TYPE_CHECKING, Final
from urllib.parse import urlsplit

import attrs

from node.protocol.identity import b64u_encode

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric import ec

ENDPOINT_BYTES_MAX: Final = 1000
P256_POINT_BYTES: Final = 65  # uncompressed: 0x04 || X || Y
AUTH_BYTES: Final = 16
SALT_BYTES: Final = 16
RECORD_SIZE: Final = 4096
VAPID_TOKEN_S: Final = 12 * 3600  # RFC 8292 §2: at most 24 h; 12 h leaves room for clock skew
WAKE_PAYLOAD: Final = b'{"t":"wake","v":1}'
_P256_ORDER: Final = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551

RandomBytes = Callable[[int], bytes]


class BadSubscription(ValueError):
    """A push subscription field that cannot be used (the client gets `bad_request`)."""


@attrs.frozen(kw_only=True, slots=True)
class Subscription:
    """A Web Push subscription (the browser's PushSubscription, or a UnifiedPush endpoint with its keys)."""

    endpoint: str
    p256dh: bytes  # the user agent's P-256 public key, uncompressed
    auth: bytes  # the 16-byte authentication secret


def check_endpoint(endpoint: str) -> tuple[str, int]:
    """(host, port) of an acceptable endpoint URL: https, at most 1000 bytes, a host, no user info or fragment."""
    if not isinstance(endpoint, str) or len(endpoint.encode("utf-8", "replace")) > ENDPOINT_BYTES_MAX:
        raise BadSubscription(f"endpoint must be a URL of at most {ENDPOINT_BYTES_MAX} bytes")
    if not endpoint.isascii() or any(c <= " " or c == "\x7f" for c in endpoint):
        raise BadSubscription("endpoint must be printable ASCII")
    try:
        parts = urlsplit(endpoint)
        port = parts.port or 443
    except ValueError as exc:
        raise BadSubscription(f"endpoint is not a URL: {exc}") from None
    if parts.scheme != "https":
        raise BadSubscription("endpoint must be an https:// URL")
    if not parts.hostname or parts.username is not None or parts.password is not None or parts.fragment:
        raise BadSubscription("endpoint must name a host, without user info or fragment")
    return parts.hostname, port


def check_p256dh(key: bytes) -> ec.EllipticCurvePublicKey:
    from cryptography.hazmat.primitives.asymmetric import ec

    if len(key) != P256_POINT_BYTES or key[0] != 4:
        raise BadSubscription("p256dh must be a 65-byte uncompressed P-256 point")
    try:
        return ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), key)
    except ValueError:
        raise BadSubscription("p256dh is not a point on P-256") from None


def check_subscription(sub: Subscription) -> None:
    check_endpoint(sub.endpoint)
    check_p256dh(sub.p256dh)
    if len(sub.auth) != AUTH_BYTES:
        raise BadSubscription(f"auth must be {AUTH_BYTES} bytes")


def public_point(key: ec.EllipticCurvePrivateKey) -> bytes:
    """The uncompressed public point (the browser's applicationServerKey form)."""
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    return key.public_key().public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)


def check_scalar(scalar: bytes) -> bytes:
    """`scalar` if it is a P-256 private key (32 bytes, 0 < value < n), else ValueError (needs no `cryptography`)."""
    if len(scalar) != 32:
        raise ValueError("a P-256 private key is 32 bytes")
    if not 0 < int.from_bytes(scalar, "big") < _P256_ORDER:
        raise ValueError("not a P-256 private key")
    return scalar


def private_key_from_scalar(scalar: bytes) -> ec.EllipticCurvePrivateKey:
    from cryptography.hazmat.primitives.asymmetric import ec

    return ec.derive_private_key(int.from_bytes(check_scalar(scalar), "big"), ec.SECP256R1())


def new_scalar(random_bytes: RandomBytes) -> bytes:
    """A P-256 private key's scalar from injected randomness (48 bytes reduced mod n: a bias below 2^-128)."""
    value = int.from_bytes(random_bytes(48), "big") % (_P256_ORDER - 1) + 1
    return value.to_bytes(32, "big")


def new_private_key(random_bytes: RandomBytes) -> ec.EllipticCurvePrivateKey:
    """A P-256 key from injected randomness (`new_scalar`)."""
    return private_key_from_scalar(new_scalar(random_bytes))


def scalar_of(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_numbers().private_value.to_bytes(32, "big")


def _hmac(key: bytes, data: bytes) -> bytes:
    return hmac.new(key, data, hashlib.sha256).digest()


def encrypt(sub: Subscription, plaintext: bytes, random_bytes: RandomBytes) -> bytes:
    """The RFC 8291 message body (Content-Encoding: aes128gcm, one record) of `plaintext` for `sub`."""
    from cryptography.exceptions import InvalidKey
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    ua_key = check_p256dh(sub.p256dh)
    if len(plaintext) + 1 + 16 > RECORD_SIZE:
        raise ValueError("a push payload fits one record")
    as_key = new_private_key(random_bytes)
    as_public = public_point(as_key)
    try:
        ecdh = as_key.exchange(ec.ECDH(), ua_key)
    except (ValueError, InvalidKey):  # pragma: no cover - a checked point always agrees
        raise BadSubscription("p256dh cannot agree a key") from None
    # RFC 8291 §3.3-3.4: IKM from the ECDH secret and the auth secret, then RFC 8188's key and nonce
    prk_key = _hmac(sub.auth, ecdh)
    ikm = _hmac(prk_key, b"WebPush: info\x00" + sub.p256dh + as_public + b"\x01")
    salt = random_bytes(SALT_BYTES)
    prk = _hmac(salt, ikm)
    cek = _hmac(prk, b"Content-Encoding: aes128gcm\x00\x01")[:16]
    nonce = _hmac(prk, b"Content-Encoding: nonce\x00\x01")[:12]
    record = AESGCM(cek).encrypt(nonce, plaintext + b"\x02", None)  # 0x02: the last (only) record
    return salt + struct.pack("!IB", RECORD_SIZE, len(as_public)) + as_public + record


def audience(endpoint: str) -> str:
    """The VAPID `aud`: the endpoint's origin (scheme, host, and a port other than 443)."""
    parts = urlsplit(endpoint)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    port = parts.port
    return f"https://{host}" + (f":{port}" if port not in (None, 443) else "")


def vapid_header(key: ec.EllipticCurvePrivateKey, endpoint: str, *, unix_now: int, subject: str = "") -> str:
    """The `Authorization` header value (RFC 8292 §3): `vapid t=<ES256 JWT>, k=<public key>`."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

    header = b64u_encode(b'{"typ":"JWT","alg":"ES256"}')
    claims: dict[str, object] = {"aud": audience(endpoint), "exp": unix_now + VAPID_TOKEN_S}
    if subject:
        claims["sub"] = subject
    body = b64u_encode(json.dumps(claims, separators=(",", ":")).encode())
    signing_input = f"{header}.{body}".encode()
    r, s = decode_dss_signature(key.sign(signing_input, ec.ECDSA(hashes.SHA256())))
    token = f"{header}.{body}.{b64u_encode(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"
    return f"vapid t={token}, k={b64u_encode(public_point(key))}"
