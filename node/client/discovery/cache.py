"""The cache of nodes that worked: what a client starts from when every other channel is blocked.

File format (JSON, mode 0600, written atomically: a temporary file in the same directory, fsync, rename):
`{"v": 1, "nodes": [{"id": <id text>, "ws": <url>, "last_success": <unix seconds>}…], "rotations": [<b64u>…]}`, at
most `CACHE_NODES_MAX` entries, newest success first. Nodes that proved their id in a handshake are written, and so
are bridges learned from a signed card (a referral or a registry's GET /v1/bridges) that were not tried yet:
`"last_success": 0, "source": "referral"`, after every proven node (docs/discovery.md, "Bridges": the day the listed
nodes are blocked, the cache still names a bridge). `rotations` (optional) holds the registry key rotation statements
this reader has seen, first seen first, at most `CHAIN_MAX` (docs/discovery.md "Registry key rotation").
`"listed": true` marks an entry that a list signed by a trusted registry key named with the same id and ws, in the
last run that read such a list; an entry without it (a referral or manual entry, a bridge, or any entry written before
the field existed) is held back while trusted lists may still answer (docs/discovery.md "Racing and ranking"): a
missing field reads as unlisted, so a node a hostile link planted before cannot keep its rank by its age. A damaged
or oversized file is reported and ignored (it is rewritten on the next success), never fatal.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from node.client.discovery.model import Candidate, Found, Source
from node.client.files import write_atomic
from node.protocol.identity import b64u_decode, b64u_encode, id_text, parse_id
from node.protocol.nodelist import URL_MAX
from node.protocol.rotation import CHAIN_MAX, STATEMENT_BYTES_MAX

CACHE_VERSION = 1
CACHE_NODES_MAX = 64
CACHE_FILE_MAX_BYTES = 256 * 1024
LAST_SUCCESS_MAX = 2**40  # unix seconds (year ~36,000): a larger or non-finite value marks a damaged entry


def load_cache(path: Path) -> tuple[list[Candidate], list[str]]:
    """Candidates from the cache file (source `cache`), and reasons for anything skipped."""
    try:
        with path.open("rb") as f:
            data = f.read(CACHE_FILE_MAX_BYTES + 1)
    except FileNotFoundError:
        return [], []
    except OSError as exc:
        return [], [f"cache {path}: cannot read: {exc.strerror}"]
    if len(data) > CACHE_FILE_MAX_BYTES:
        return [], [f"cache {path}: larger than {CACHE_FILE_MAX_BYTES} bytes, ignored"]
    try:
        doc = json.loads(data)
    except (ValueError, RecursionError):  # JSONDecodeError, UnicodeDecodeError, a 4,300-digit int, deep nesting
        return [], [f"cache {path}: not valid JSON, ignored"]
    if not isinstance(doc, dict) or doc.get("v") != CACHE_VERSION or not isinstance(doc.get("nodes"), list):
        return [], [f"cache {path}: not a version {CACHE_VERSION} homing cache, ignored"]
    out: list[Candidate] = []
    errors: list[str] = []
    for item in doc["nodes"][:CACHE_NODES_MAX]:
        cand = _entry(item)
        if cand is None:
            errors.append(f"cache {path}: skipped a malformed entry")
        else:
            out.append(cand)
    return out, errors


def _entry(item: Any) -> Candidate | None:
    if not isinstance(item, dict):
        return None
    ws, last, text = item.get("ws"), item.get("last_success"), item.get("id")
    if not isinstance(ws, str) or not ws.startswith(("ws://", "wss://")) or len(ws) > URL_MAX:
        return None
    if isinstance(last, bool) or not isinstance(last, (int, float)) or not isinstance(text, str):
        return None
    if not 0 <= last <= LAST_SUCCESS_MAX:  # also refuses NaN and Infinity (JSON allows them; int() would raise)
        return None
    try:
        node_id = parse_id(text)
    except ValueError:
        return None
    listed = item.get("listed") is True  # anything else, or nothing (older files), is unlisted: the safe reading
    return Candidate(id=node_id, ws=ws, source=Source.CACHE, verified=False, last_success=float(last), listed=listed)


def merge_cache(
    previous: Iterable[Candidate],
    proven: Iterable[Found],
    now: float,
    *,
    learned: Iterable[Candidate] = (),
    named: set[tuple[bytes, str]] | None = None,
) -> list[dict[str, Any]]:
    """The entries to write: proven nodes with `last_success = now`, then older entries, newest first, then
    `learned` bridges (card-verified, not proven yet) with `last_success` 0; at most CACHE_NODES_MAX.

    `named`: the (id, ws) rows of the trusted lists this run read, or None when it read none; an entry is written
    `listed` when they name it, or (None) when it was listed before."""
    previous = list(previous)
    was_listed = {c.key for c in previous if c.listed}
    rows: dict[tuple[bytes, str], float] = {}
    for c in learned:
        if c.verified:
            rows[(c.id, c.ws)] = 0.0
    for c in previous:
        if c.last_success is not None:
            rows[(c.id, c.ws)] = max(c.last_success, rows.get((c.id, c.ws), 0.0))
    for f in proven:
        if f.handshake_ms is not None:
            rows[(f.id, f.ws)] = now
    ordered = sorted(rows.items(), key=lambda kv: -kv[1])[:CACHE_NODES_MAX]
    listed = was_listed if named is None else named
    return [
        {"id": id_text(k[0]), "ws": k[1], "last_success": int(v), **({} if v else {"source": "referral"}),
         **({"listed": True} if k in listed else {})}
        for k, v in ordered
    ]  # fmt: skip


def load_rotations(path: Path) -> tuple[bytes, ...]:
    """The rotation statements kept in the cache (unverified here: readers verify each one); none on any problem."""
    try:
        with path.open("rb") as f:
            doc = json.loads(f.read(CACHE_FILE_MAX_BYTES + 1))
        items = doc.get("rotations", []) if isinstance(doc, dict) else []
        out = [b64u_decode(i) for i in items[:CHAIN_MAX] if isinstance(i, str) and len(i) <= 2 * STATEMENT_BYTES_MAX]
    except (OSError, ValueError, RecursionError, TypeError, AttributeError):
        return ()
    return tuple(out)


def save_cache(path: Path, entries: list[dict[str, Any]], rotations: Iterable[bytes] = ()) -> None:
    """Write the cache atomically with mode 0600 (it says which nodes this user talks to)."""
    doc: dict[str, Any] = {"v": CACHE_VERSION, "nodes": entries}
    kept = list(dict.fromkeys(rotations))[:CHAIN_MAX]
    if kept:
        doc["rotations"] = [b64u_encode(r) for r in kept]
    data = json.dumps(doc, indent=1).encode()
    write_atomic(path, data, mode=0o600)
