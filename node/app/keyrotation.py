"""Rotating a key file (docs/security.md "Key rotation"): used by `homing bootstrap rotate-key` and
`homing node rotate-key`.

`rotate_key_file(path, statements_path, now)`:
1. loads the current key at `path` (OLD) and creates NEW;
2. keeps OLD next to it as `<name>.retired-<first 8 chars of OLD>` (mode 0600): move it offline afterwards;
3. appends the statement OLD -> NEW (node/protocol/rotation.py) to `statements_path` (msgpack array of encoded
   statements, the last `CHAIN_MAX` kept);
4. replaces `path` with NEW (written atomically, mode 0600).
A crash between 3 and 4 leaves a statement naming a key that is not yet in use: running the command again writes a
second statement for the same OLD, and readers keep the first one they saw, so rotate again from the key in use.
"""

from __future__ import annotations

from pathlib import Path

import msgpack

from node.app.log import Logger
from node.client.files import load_or_create_key, write_atomic
from node.protocol.errors import ConfigError, RemoteProtocolError
from node.protocol.identity import Identity, b64u_encode, id_text
from node.protocol.rotation import (
    CHAIN_MAX,
    STATEMENT_BYTES_MAX,
    build_rotation,
    decode_rotation,
    encode_rotation,
    pack_chain,
)

NODE_ROTATIONS_NAME = "node-key-rotations.msgpack"  # in a node's data dir, next to node.key


def load_statements(path: Path) -> list[bytes]:
    """The encoded statements in `path` (none when it is absent). A file that is not a msgpack array of them (too
    large, cut short, something else) raises ConfigError naming it: `rotate_key_file` then refuses to write over it
    (before, it wrote a new file holding only the new statement, and the ones before were lost); readers that can go
    on without it (`own_rotation`, the registry's service) log the error and serve none."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise ConfigError(str(path), f"cannot read the key rotation statements: {exc.strerror or exc}") from exc
    items: object = None
    if len(data) <= CHAIN_MAX * (STATEMENT_BYTES_MAX + 8):
        try:
            items = msgpack.unpackb(data, raw=False)
        except Exception:
            items = None
    if not isinstance(items, list):
        raise ConfigError(
            str(path),
            "damaged: not a list of key rotation statements; restore it from your backup (the statements are what "
            "lets clients and the registry follow your key to the new one), or move it aside to start a new list",
        )
    return [i for i in items if isinstance(i, bytes)]


def own_rotation(path: Path, key: bytes, log: Logger) -> bytes | None:
    """The newest statement in `path` naming `key` as NEW (a node sends it with its registrations), if any. A damaged
    file is logged (`key_rotations_damaged`, an error: the registry will take this key for a new node): none."""
    try:
        statements = load_statements(path)
    except ConfigError as exc:
        log.error("key_rotations_damaged", error=str(exc))
        return None
    for raw in reversed(statements):
        try:
            if decode_rotation(raw, now=float(2**53)).new == key:
                return raw
        except RemoteProtocolError:
            continue
    return None


def rotate_key_file(
    path: Path, statements_path: Path, now: float, *, compromised: bool = False
) -> tuple[Identity, Identity, bytes]:
    """Rotate the key at `path`; returns (old, new, the encoded statement). `compromised`: readers drop OLD at once."""
    old, _ = load_or_create_key(path, create=False)
    earlier = load_statements(statements_path)  # a damaged file stops the rotation here, before anything is written
    new = Identity.generate()
    retired = path.with_name(f"{path.name}.retired-{id_text(old.id)[:8]}")
    write_atomic(retired, b64u_encode(old.seed).encode("ascii") + b"\n", mode=0o600)
    statement = encode_rotation(build_rotation(old, new, issued=int(now), compromised=compromised))
    write_atomic(statements_path, pack_chain([*earlier, statement]), mode=0o644)
    write_atomic(path, b64u_encode(new.seed).encode("ascii") + b"\n", mode=0o600)
    return old, new, statement
