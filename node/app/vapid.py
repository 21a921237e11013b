"""The node's VAPID key for push wake-up (docs/operations.md, "Push wake-up"): a P-256 scalar in DATA_DIR/vapid.key.

Read (or created) at start as its scalar only: the key object, and with it `cryptography`, is made on first use
(node/net/push.py `PushSender.vapid_key`), so a node that never meets a subscription never loads it (issue #17).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from node.client.files import create_private_file, read_private_file
from node.protocol.errors import ConfigError
from node.protocol.identity import b64u_decode, b64u_encode
from node.protocol.webpush import check_scalar, new_scalar, private_key_from_scalar

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric import ec


def load_or_create_vapid_scalar(path: Path) -> bytes:
    """The node's VAPID key as its 32-byte scalar (base64url text in `path`, mode 0600), created on first use."""
    if path.exists():
        try:
            text = read_private_file(path, what="key file").decode("ascii")
            return check_scalar(b64u_decode(text.strip()))
        except (ValueError, UnicodeDecodeError) as exc:
            raise ConfigError(str(path), "not a VAPID key file") from exc
    scalar = new_scalar(os.urandom)
    create_private_file(path, (b64u_encode(scalar) + "\n").encode("ascii"))
    return scalar


def load_or_create_vapid_key(path: Path) -> ec.EllipticCurvePrivateKey:
    """The node's VAPID key (a P-256 scalar, base64url text, mode 0600), created on first use."""
    return private_key_from_scalar(load_or_create_vapid_scalar(path))
