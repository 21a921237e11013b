"""The discovery chain as one trio call: every source at once, candidates raced as they arrive, one deadline.

Theory of operation:
- Each source (every registry, each DoH resolver and name, the cache, the `--add` entries) is a task. A source
  that answers adds its candidates to the `CandidateBook`; one that fails or is refused adds a line to `errors`; one
  still pending at the deadline is cancelled and reported as such. No source waits for another.
- The racer starts a handshake with the best untried candidate, then another each `stagger_s` (or at once when an
  attempt fails), at most `parallel_max` at a time and `attempts_max` in all (happy eyeballs, RFC 8305 style).
  A node that proves its pinned id gets its handshake time; one that cannot is dropped and reported.
- A cached node that no trusted list named (`listed` false in the cache: it came from a referral card or a manual
  entry on an earlier run) is held back while trusted lists may still answer: until every trusted list source has
  answered or failed and every other candidate was tried, or `unlisted_hold_s` after the start, whichever comes
  first; then it is next (docs/discovery.md "Racing and ranking"). So one hostile link does not keep a client on its
  node when the lists are readable, and a bridge or a referral node is still reached when they are blocked.
- The run ends at the first of: `want` nodes proven; `settle_s` after the first proof (a slow or black-holed source
  then no longer holds the answer back); every source done and every attempt over; `deadline_s`.
"""

from __future__ import annotations

import random
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import attrs
import trio

from node.client.discovery.cache import load_cache, load_rotations, merge_cache, save_cache
from node.client.discovery.handshake import HandshakeFn, default_handshake
from node.client.discovery.model import (
    Candidate,
    CandidateBook,
    DiscoveryResult,
    NewestLists,
    SignedList,
    Source,
    build_result,
)
from node.client.discovery.sources import (
    fetch_bridges,
    fetch_doh,
    fetch_registry,
    followed,
    http_client,
    ssl_context,
)
from node.protocol.errors import HomingError, StorageError
from node.protocol.identity import Identity

ProgressFn = Callable[[list[str], int], None]


@attrs.frozen(kw_only=True, slots=True)
class DiscoveryConfig:
    # Registry public keys whose signed lists count as verified (--trust).
    trust: frozenset[bytes] = frozenset()
    # Registry base URLs (GET <url>/v1/nodes).
    registries: tuple[str, ...] = ()
    # Also ask each registry for a few bridges (GET <url>/v1/bridges, docs/discovery.md "Bridges"); they are
    # raced like referrals and kept in the cache even when not tried, for the day the listed nodes are blocked.
    bridges: bool = False
    # DoH resolver URLs (https://…/dns-query) and TXT names; every resolver is asked for every name.
    doh: tuple[str, ...] = ()
    names: tuple[str, ...] = ()
    # The cache of nodes that worked; None: no cache.
    cache: Path | None = None
    # Referral cards and manual entries, already parsed (model.parse_entry).
    extra: tuple[Candidate, ...] = ()
    # Extra CA file for DoH and registry HTTPS (and wss://); SSL_CERT_FILE is honoured anyway.
    ca_file: str | None = None
    # Seconds the whole discovery may take, whatever hangs.
    deadline_s: float = attrs.field(default=8.0, validator=attrs.validators.gt(0))
    # Seconds between two handshake attempts (the next starts at once when one fails).
    stagger_s: float = attrs.field(default=0.25, validator=attrs.validators.ge(0))
    # Seconds one handshake may take.
    handshake_timeout_s: float = attrs.field(default=4.0, validator=attrs.validators.gt(0))
    # Handshakes in flight at once, and in all (the rest of a long list is listed untried).
    parallel_max: int = attrs.field(default=8, validator=attrs.validators.ge(1))
    attempts_max: int = attrs.field(default=24, validator=attrs.validators.ge(0))
    # Stop after this many nodes proved their id (None: try up to attempts_max).
    want: int | None = None
    # Seconds to keep waiting for slower sources after the first node proved its id.
    settle_s: float = attrs.field(default=1.0, validator=attrs.validators.ge(0))
    # Race candidates at all (False: only gather and verify lists, e.g. for a node's SWIM seeds).
    race: bool = True
    # Seconds a cached node no trusted list named waits for trusted lists at most (docs/discovery.md "Racing and
    # ranking"): long enough for a list and one handshake on most networks (a list and its node's handshake took
    # 0.03-0.3 s in docs/performance.md's runs), short enough that a client whose lists are black-holed (a censor
    # drops them) still reaches its cached bridge or referral node within the 2 s discovery target.
    unlisted_hold_s: float = attrs.field(default=1.0, validator=attrs.validators.ge(0))
    # Registry key rotation statements already followed (encoded; the cache keeps them too): they extend `trust` and
    # win over a conflicting statement a source serves (docs/discovery.md "Registry key rotation").
    rotations: tuple[bytes, ...] = ()


class _Run:
    def __init__(self, cfg: DiscoveryConfig, handshake: HandshakeFn, identity: Identity, rng: random.Random,
                 progress: ProgressFn | None) -> None:  # fmt: skip
        self.cfg, self.handshake, self.identity, self.progress = cfg, handshake, identity, progress
        self.book = CandidateBook(rng)
        self.errors: list[str] = []
        self.pending: dict[str, None] = {}
        self.proofs: dict[tuple[bytes, str], float] = {}
        self.failed: set[tuple[bytes, str]] = set()
        self.running = 0
        self.attempts = 0
        self.first_proof_at: float | None = None
        self.changed = trio.Event()
        self.newest = NewestLists()
        self.other_keys: set[tuple[bytes, str]] = set()  # candidates from the cache and --add, not from lists
        self.list_labels: set[str] = set()  # the sources of lists signed by a trusted key, that unlisted nodes wait for
        self.started_at = 0.0

    def hold(self) -> bool:
        """Hold unlisted cached nodes back (docs/discovery.md "Racing and ranking")? While a trusted list source is
        pending or another candidate is untried or in flight, for at most `unlisted_hold_s` after the start."""
        if not self.list_labels or trio.current_time() >= self.started_at + self.cfg.unlisted_hold_s:
            return False
        lists_pending = any(label in self.pending for label in self.list_labels)
        return lists_pending or self.running > 0 or self.book.pending(hold=True) > 0

    def add_list(self, lst: SignedList) -> None:
        """Keep only the newest list per signer (docs/discovery.md): an older one is reported and ignored; rows
        only a superseded list gave are dropped."""
        taken, replaced = self.newest.offer(lst)
        if not taken:
            held = self.newest.by_signer[lst.signer]
            self.errors.append(f"{lst.where}: list issued {lst.issued} is older than one issued {held.issued} "
                               f"by the same registry key ({held.where}); ignored")  # fmt: skip
            self._notify()
            return
        if replaced is not None:
            keep = self.newest.current_keys() | self.other_keys
            for c in replaced.candidates:
                if c.key not in keep:
                    self.book.drop(c.key)
        self.add(list(lst.candidates))

    def _notify(self) -> None:
        self.changed.set()
        self.changed = trio.Event()
        if self.progress is not None:
            self.progress(list(self.pending), len(self.proofs))

    def add(self, candidates: list[Candidate]) -> None:
        for c in candidates:
            self.book.add(c)
        self._notify()

    def start_source(self, nursery: trio.Nursery, label: str,
                     fetch: Callable[..., Awaitable[SignedList | list[Candidate]]], *args: object,
                     trusted_list: bool = False) -> None:  # fmt: skip
        if trusted_list:
            self.list_labels.add(label)
        self.pending[label] = None  # before the task runs, so the watcher never sees a not-yet-started source as done
        nursery.start_soon(self.source, label, fetch, *args)

    async def source(
        self, label: str, fetch: Callable[..., Awaitable[SignedList | list[Candidate]]], *args: object
    ) -> None:
        try:
            found = await fetch(*args)
        except HomingError as exc:
            self.errors.append(str(exc))
        except Exception as exc:  # a source's bug or an unwrapped library error must not end the run
            self.errors.append(f"{label}: failed: {type(exc).__name__}: {exc}"[:300])
        else:
            if isinstance(found, SignedList):
                self.add_list(found)
            else:
                self.other_keys |= {c.key for c in found}  # bridges: no list supersedes them
                self.add(found)
        # a source cancelled at the end stays in `pending`, to be reported
        self.pending.pop(label, None)
        self._notify()

    def can_start(self) -> bool:
        return (self.cfg.race and self.book.pending(hold=self.hold()) > 0 and self.running < self.cfg.parallel_max
                and self.attempts < self.cfg.attempts_max)  # fmt: skip

    def finished(self) -> bool:
        if self.cfg.want is not None and len(self.proofs) >= self.cfg.want:
            return True
        if self.first_proof_at is not None and trio.current_time() >= self.first_proof_at + self.cfg.settle_s:
            return True
        return not self.pending and not self.running and not self.can_start()

    async def racer(self, nursery: trio.Nursery) -> None:
        while True:
            while not self.can_start():
                # held nodes become eligible at the end of the hold, which no event announces
                wake = self.started_at + self.cfg.unlisted_hold_s if self.hold() else float("inf")
                with trio.move_on_at(wake):
                    await self.changed.wait()
            cand = self.book.pop_next(hold=self.hold())
            assert cand is not None
            self.running += 1
            self.attempts += 1
            failed = trio.Event()
            nursery.start_soon(self.attempt, cand, failed)
            with trio.move_on_after(self.cfg.stagger_s):
                await failed.wait()

    async def attempt(self, cand: Candidate, failed: trio.Event) -> None:
        try:
            node_id, ms = await self.handshake(cand.ws, self.identity, cand.id, self.cfg.handshake_timeout_s)
            if node_id != cand.id:
                raise HomingError("node proved a different id than the one it was listed with")
        except Exception as exc:  # whatever a node does wrong, it is skipped and reported, never fatal
            self.failed.add(cand.key)
            self.errors.append(f"{cand.label()} ({self.book.get(cand.key).source}): skipped: {exc}")
            failed.set()
        else:
            self.proofs[cand.key] = ms
            if self.first_proof_at is None:
                self.first_proof_at = trio.current_time()
        finally:
            self.running -= 1
            self._notify()

    async def watcher(self, cancel: trio.CancelScope) -> None:
        while not self.finished():
            timeout = float("inf")
            if self.first_proof_at is not None:
                timeout = max(0.0, self.first_proof_at + self.cfg.settle_s - trio.current_time())
            with trio.move_on_after(timeout):
                await self.changed.wait()
        cancel.cancel()


async def discover(
    cfg: DiscoveryConfig,
    *,
    handshake: HandshakeFn | None = None,
    identity: Identity | None = None,
    rng: random.Random | None = None,
    wall_clock: Callable[[], float] = time.time,
    progress: ProgressFn | None = None,
) -> DiscoveryResult:
    """Run the whole chain (see the module docstring) and return every node found, ranked, with the errors.

    Never raises for a source or a node that fails (those are `errors` lines); raises ConfigError for a bad
    `ca_file` or DoH name. Writes the cache (when configured) with every node that proved its id.
    """
    ctx = ssl_context(cfg.ca_file)
    run = _Run(cfg, handshake or default_handshake(ctx), identity or Identity.generate(), rng or random.Random(),
               progress)  # fmt: skip
    now = wall_clock()
    cached, cache_errors = load_cache(cfg.cache) if cfg.cache else ([], [])
    run.errors.extend(cache_errors)
    run.other_keys = {c.key for c in (*cfg.extra, *cached)}
    run.add([*cfg.extra, *cached])
    run.started_at = trio.current_time()
    pinned = (*cfg.rotations, *(load_rotations(cfg.cache) if cfg.cache else ()))
    doh_trust = followed(cfg.trust, [], pinned, now)
    async with http_client(ctx, cfg.deadline_s) as client:
        with trio.move_on_after(cfg.deadline_s) as deadline:
            async with trio.open_nursery() as nursery:
                for url in cfg.registries:
                    run.start_source(nursery, f"registry {url}", fetch_registry, client, url, cfg.trust, now, pinned,
                                     trusted_list=bool(cfg.trust))  # fmt: skip
                    if cfg.bridges:
                        run.start_source(nursery, f"bridges {url}", fetch_bridges, client, url, doh_trust, now)
                for resolver in cfg.doh:
                    for name in cfg.names:
                        label = f"doh {resolver} {name}"
                        run.start_source(nursery, label, fetch_doh, client, resolver, name, doh_trust, now,
                                         trusted_list=bool(doh_trust))  # fmt: skip
                nursery.start_soon(run.racer, nursery)
                nursery.start_soon(run.watcher, nursery.cancel_scope)
        reason = f"no answer within the {cfg.deadline_s:g} s deadline" if deadline.cancelled_caught else (
            "no answer yet when discovery finished; not waited for")  # fmt: skip
        run.errors.extend(f"{label}: {reason}" for label in run.pending)
    result = build_result(run.book.all(), run.proofs, run.failed, run.errors, demote_unlisted=bool(run.list_labels))
    result = attrs.evolve(result, lists=tuple(run.newest.by_signer.values()))
    rotations = (*pinned, *(r for lst in result.lists for r in lst.rotations))
    # bridge cards (from referrals or a distributor) not refuted in this run are kept for the day they are needed
    learned = [c for c in run.book.all() if c.source == Source.REFERRAL and c.key not in run.failed]
    if cfg.cache is not None and (result.proven or learned or len(set(rotations)) > len(set(pinned))):
        try:
            # the rows of the trusted lists read in this run say which cached nodes are listed (none read: flags kept)
            named = run.newest.current_keys() if cfg.trust and run.newest.by_signer else None
            entries = merge_cache(cached, result.proven, wall_clock(), learned=learned, named=named)
            save_cache(cfg.cache, entries, rotations)
        except StorageError as exc:  # a full disk costs the cache, not the result
            result = attrs.evolve(result, errors=(*result.errors, f"cache not written: {exc}"))
    return result
