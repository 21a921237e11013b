"""Discovery's data and pure rules: candidates, results, entry parsing, merging and ranking (no I/O).

A *candidate* is a (node id, ws URL) pair from some source, with whether its origin is authenticated (`verified`,
docs/discovery.md). The same node often comes from several sources; `CandidateBook` merges them (an authenticated origin
wins, then the source rank below) and hands candidates to the racer in the order a client should try them:
entries the user gave (referral, manual), then nodes that worked before (cache, newest success first), then list
entries in an order shuffled by the injected `random.Random`, so clients spread over volunteers' nodes. A cached node
no verified list named (`listed` false: learned from a referral or a manual entry on an earlier run) is held back
while the racer says so (`pop_next(hold=True)`, docs/discovery.md "Racing and ranking"), and ranks after the other
proven nodes in the result, so one hostile link cannot keep a client on its node once trusted lists are readable.
"""

from __future__ import annotations

import enum
import random
import time
from typing import Any
from urllib.parse import urlsplit

import attrs

from node.protocol.errors import ConfigError, RemoteProtocolError
from node.protocol.identity import id_text, parse_id, short_id
from node.protocol.nodelist import CARD_PREFIX, URL_MAX, NodeEntry, parse_card

CLIENT_PATH = "/v1/client"


class Source(enum.StrEnum):
    REGISTRY = "registry"
    DOH = "doh"
    CACHE = "cache"
    REFERRAL = "referral"
    MANUAL = "manual"


# Which label a node keeps when several sources name it (lower wins), and the order attempts are made in.
SOURCE_RANK = {Source.REFERRAL: 0, Source.MANUAL: 1, Source.CACHE: 2, Source.REGISTRY: 3, Source.DOH: 4}


@attrs.frozen(kw_only=True, slots=True)
class Candidate:
    id: bytes
    ws: str
    source: Source
    verified: bool  # the origin is authenticated: trusted list or the node's own card
    last_success: float | None = None  # unix seconds of the last proven handshake (cache)
    # A list signed by a trusted registry key names this (id, ws): in this run, or for a cached entry, in the last
    # run that read such a list (docs/discovery.md "Cache"). False for referral and manual entries until a list does.
    listed: bool = False
    swim: str = ""  # from a node list: addresses nodes use as SWIM seeds
    peer: str = ""

    @property
    def key(self) -> tuple[bytes, str]:
        return (self.id, self.ws)

    def label(self) -> str:
        return f"node {short_id(self.id)} at {self.ws}"


@attrs.frozen(kw_only=True, slots=True)
class Found:
    """One row of the result (docs/discovery.md `--json` field for field, plus list addresses for seed use)."""

    id: bytes
    ws: str
    source: Source
    verified: bool
    handshake_ms: float | None
    last_success: float | None = None
    swim: str = ""
    peer: str = ""

    def to_json(self) -> dict[str, Any]:
        ms = None if self.handshake_ms is None else round(self.handshake_ms, 1)
        return {"id": id_text(self.id), "ws": self.ws, "source": str(self.source), "verified": self.verified,
                "handshake_ms": ms}  # fmt: skip


@attrs.frozen(kw_only=True, slots=True)
class SignedList:
    """A node list that verified, as one source gave it (docs/discovery.md "Newest list per registry")."""

    signer: bytes  # the registry key that signed it
    issued: int
    expires: int
    where: str  # the source, for messages
    candidates: tuple[Candidate, ...]
    rotations: tuple[bytes, ...] = ()  # key rotation statements the source served with it (docs/discovery.md)
    members: tuple[bytes, ...] = ()  # bridge ids: federation members to admit, never candidates for clients


class NewestLists:
    """The newest list per signer seen in one run (pure): an older list from a signer is refused, a newer one
    replaces the one held, never merged with it."""

    def __init__(self) -> None:
        self.by_signer: dict[bytes, SignedList] = {}

    def offer(self, lst: SignedList) -> tuple[bool, SignedList | None]:
        """(taken, the list it replaced). A list with the same `issued` as the one held is taken (it adds the
        same rows from another source) and replaces nothing."""
        held = self.by_signer.get(lst.signer)
        if held is not None and lst.issued < held.issued:
            return False, None
        if held is not None and lst.issued == held.issued:
            return True, None
        self.by_signer[lst.signer] = lst
        return True, held

    def current_keys(self) -> set[tuple[bytes, str]]:
        return {c.key for lst in self.by_signer.values() for c in lst.candidates}


@attrs.frozen(kw_only=True, slots=True)
class DiscoveryResult:
    nodes: tuple[Found, ...]
    errors: tuple[str, ...]
    lists: tuple[SignedList, ...] = ()  # the newest verified list per signer

    @property
    def proven(self) -> tuple[Found, ...]:
        """Nodes that proved their id in a handshake, fastest first."""
        return tuple(f for f in self.nodes if f.handshake_ms is not None)

    def to_json(self) -> dict[str, Any]:
        return {"nodes": [f.to_json() for f in self.nodes], "errors": list(self.errors)}


def candidates_from_list(entries: tuple[NodeEntry, ...], source: Source, *, verified: bool) -> list[Candidate]:
    return [Candidate(id=e.id, ws=e.ws, source=source, verified=verified, listed=verified, swim=e.swim, peer=e.peer)
            for e in entries]  # fmt: skip


def unlisted_cache(cand: Candidate) -> bool:
    """A node only the cache names, that no trusted list named (docs/discovery.md "Racing and ranking")."""
    return cand.source == Source.CACHE and not cand.listed


def parse_entry(text: str, *, now: float | None = None, flag: str = "--add", allow_plain_ws: bool = False) -> Candidate:
    """A referral URI (`homing://node/…`, verified by the card's own signature, refused after its `exp` or when it
    is plain ws:// to a public host unless `allow_plain_ws`) or a manual entry (`wss://host:port[/path]#<node id>`,
    `ws://` too; the path defaults to /v1/client). `now`: unix seconds (default: the clock). Raises ConfigError."""
    if text.startswith(CARD_PREFIX):
        try:
            card = parse_card(text, now=time.time() if now is None else now, allow_plain_ws=allow_plain_ws)
        except RemoteProtocolError as exc:
            raise ConfigError(flag, f"referral card rejected: {exc}") from exc
        return Candidate(id=card.id, ws=card.ws, source=Source.REFERRAL, verified=True)
    if not text.startswith(("ws://", "wss://")):
        raise ConfigError(flag, f"expected homing://node/…, wss://HOST:PORT#ID or ws://HOST:PORT#ID, got {text[:60]!r}")
    url, _, fragment = text.partition("#")
    if not fragment:
        raise ConfigError(flag, f"{url} needs the node id to pin: {url}#<node id>")
    try:
        node_id = parse_id(fragment)
    except ValueError as exc:
        raise ConfigError(flag, f"{fragment[:60]!r} is not a node id: {exc}") from exc
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError as exc:
        raise ConfigError(flag, f"{url}: {exc}") from exc
    if not parts.hostname or parts.query or len(url) > URL_MAX:
        raise ConfigError(flag, f"{url} is not a WebSocket URL of a node")
    ws = url if parts.path not in ("", "/") else url.rstrip("/") + CLIENT_PATH
    return Candidate(id=node_id, ws=ws, source=Source.MANUAL, verified=False)


class CandidateBook:
    """Every candidate seen, merged by (id, ws), and the queue of those not yet tried (pure)."""

    def __init__(self, rng: random.Random) -> None:
        self._rng = rng
        self._all: dict[tuple[bytes, str], Candidate] = {}
        self._order: dict[tuple[bytes, str], tuple[int, float, float]] = {}
        self._tried: set[tuple[bytes, str]] = set()

    def add(self, cand: Candidate) -> bool:
        """Merge `cand`; True when it is a node not seen before."""
        old = self._all.get(cand.key)
        if old is None:
            self._all[cand.key] = cand
            self._order[cand.key] = (SOURCE_RANK[cand.source], -(cand.last_success or 0.0), self._rng.random())
            return True
        self._all[cand.key] = _merge(old, cand)
        return False

    def get(self, key: tuple[bytes, str]) -> Candidate:
        return self._all[key]

    def pending(self, *, hold: bool = False) -> int:
        """Candidates not tried yet; with `hold`, not counting unlisted cached ones."""
        if not hold:
            return len(self._all) - len(self._tried)
        return sum(1 for k, c in self._all.items() if k not in self._tried and not unlisted_cache(c))

    def pop_next(self, *, hold: bool = False) -> Candidate | None:
        """The best untried candidate; with `hold`, never an unlisted cached one."""
        keys = [k for k, c in self._all.items() if k not in self._tried and not (hold and unlisted_cache(c))]
        if not keys:
            return None
        best = min(keys, key=lambda k: self._order[k])
        self._tried.add(best)
        return self._all[best]

    def all(self) -> list[Candidate]:
        return list(self._all.values())

    def drop(self, key: tuple[bytes, str]) -> None:
        """Forget a candidate (its list was superseded); an attempt in flight finishes but is not reported."""
        self._all.pop(key, None)
        self._order.pop(key, None)
        self._tried.add(key)


def _merge(old: Candidate, new: Candidate) -> Candidate:
    best = min((old, new), key=lambda c: (not c.verified, SOURCE_RANK[c.source]))
    last = max((c.last_success for c in (old, new) if c.last_success is not None), default=None)
    return attrs.evolve(
        best,
        verified=old.verified or new.verified,
        listed=old.listed or new.listed,
        last_success=last,
        swim=best.swim or old.swim or new.swim,
        peer=best.peer or old.peer or new.peer,
    )


def build_result(
    candidates: list[Candidate],
    proofs: dict[tuple[bytes, str], float],
    failed: set[tuple[bytes, str]],
    errors: list[str],
    *,
    demote_unlisted: bool = False,
) -> DiscoveryResult:
    """Rows for every candidate that did not fail its handshake, ranked: proven nodes by handshake time (a recent
    success breaks ties), then untried ones (cache first by last success, then by source). With `demote_unlisted`
    (the run had trusted lists to read), proven cached nodes no trusted list named come after the other proven
    nodes: a node a link once gave is a fallback, not the first choice (docs/discovery.md "Racing and ranking")."""
    rows = []
    demoted: set[tuple[bytes, str]] = set()
    for c in candidates:
        if c.key in failed:
            continue
        ms = proofs.get(c.key)
        # a manual or cached entry is authenticated only by the node proving the pinned id (docs/discovery.md)
        verified = c.verified or (ms is not None and c.source in (Source.MANUAL, Source.CACHE))
        if demote_unlisted and unlisted_cache(c):
            demoted.add(c.key)
        rows.append(Found(id=c.id, ws=c.ws, source=c.source, verified=verified, handshake_ms=ms,
                          last_success=c.last_success, swim=c.swim, peer=c.peer))  # fmt: skip

    def rank(f: Found) -> tuple[int, int, float, float, int]:
        tried = 0 if f.handshake_ms is not None else 1
        later = 1 if (f.id, f.ws) in demoted else 0
        return (tried, later, f.handshake_ms or 0.0, -(f.last_success or 0.0), SOURCE_RANK[f.source])

    return DiscoveryResult(nodes=tuple(sorted(rows, key=rank)), errors=tuple(errors))
