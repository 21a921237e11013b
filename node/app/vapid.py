"""The node's VAPID key for push wake-up (docs/operations.md, "Push wake-up"): a P-256 scalar in DATA_DIR/vapid.key."""

from __future__ import annotations

import os
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import ec

from node.client.files import create_private_file, read_private_file
from node.protocol.errors import ConfigError
from node.protocol.identity import b64u_decode, b64u_encode
from node.protocol.webpush import new_private_key, private_key_from_scalar, scalar_of


def load_or_create_vapid_key(path: Path) -> ec.EllipticCurvePrivateKey:
    """The node's VAPID key (a P-256 scalar, base64url text, mode 0600), created on first use."""
    if path.exists():
        try:
            text = read_private_file(path, what="key file").decode("ascii")
            return private_key_from_scalar(b64u_decode(text.strip()))
        except (ValueError, UnicodeDecodeError) as exc:
            raise ConfigError(str(path), "not a VAPID key file") from exc
    key = new_private_key(os.urandom)
    create_private_file(path, (b64u_encode(scalar_of(key)) + "\n").encode("ascii"))
    return key
