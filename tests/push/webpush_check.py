"""Independent checks of what a push service receives: RFC 8291 decryption with `http_ece` (not our code) and
RFC 8292 VAPID token verification with `cryptography` primitives only (tests share these)."""

from __future__ import annotations

import base64
import json
from typing import Any

import http_ece
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat


def b64u(data: str) -> bytes:
    return base64.urlsafe_b64decode(data + "=" * (-len(data) % 4))


class UserAgent:
    """A subscriber (the phone): its P-256 key pair and auth secret."""

    def __init__(self, endpoint: str) -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.p256dh = self.key.public_key().public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)
        self.auth = bytes(range(16))
        self.endpoint = endpoint

    def decrypt(self, body: bytes) -> bytes:
        return bytes(http_ece.decrypt(body, private_key=self.key, auth_secret=self.auth, version="aes128gcm"))


def verify_vapid(header: str, *, audience: str, unix_now: float) -> tuple[bytes, dict[str, Any]]:
    """Check an `Authorization: vapid t=..., k=...` header; returns (the public key, the claims). Raises on failure."""
    assert header.startswith("vapid "), header
    params = dict(p.strip().split("=", 1) for p in header[len("vapid ") :].split(","))
    token, key = params["t"], b64u(params["k"])
    head_b64, claims_b64, sig_b64 = token.split(".")
    head = json.loads(b64u(head_b64))
    assert head == {"typ": "JWT", "alg": "ES256"}, head
    sig = b64u(sig_b64)
    assert len(sig) == 64
    der = encode_dss_signature(int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:], "big"))
    public = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), key)
    public.verify(der, f"{head_b64}.{claims_b64}".encode(), ec.ECDSA(hashes.SHA256()))  # raises InvalidSignature
    claims = json.loads(b64u(claims_b64))
    assert claims["aud"] == audience, claims
    assert unix_now < claims["exp"] <= unix_now + 24 * 3600, claims
    return key, claims
