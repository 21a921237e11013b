"""Refresh the registry list when an unadmitted node knocks (issue #17; docs/operations.md, step 4 of the VPS guide).

A node re-reads its registries' signed lists every heartbeat (`[federation] heartbeat_s`, up to 60 s). A node that
registered after our last read is refused as unadmitted until then, so two nodes started a second apart stayed apart
for a minute. Every SWIM or peer-link refusal of an unadmitted id now calls `KnockRefresh.knock()`; the registry
follower (service.py `_follow_registries`) then re-reads each registry at once, at most once per `interval_s`
(a stranger that keeps knocking costs one conditional GET per interval, answered 304 while nothing changed), with
`If-None-Match` and the registry's last `ETag`. The lists it reads are offered to admission like the heartbeat's
(newest list per registry key, docs/discovery.md): a stranger's knock can make us re-read, never admit it.

Between two full reads the follower wakes by these rules (`next_wake_s`, a pure function):

1. Heartbeat: a full read (DoH included) every `heartbeat_s`, at most 60 s.
2. Knock: an unadmitted id knocked (above): a conditional re-read at once, at most once per `interval_s` (2 s);
   the knocks of an interval make one re-read at its end (`KnockRefresh`).
3. Pending: while our own id is on no trusted registry list (an admin has not approved us yet) and for the first
   `PENDING_POLL_FOR_S` (1 h) after the node starts, a conditional re-read every `PENDING_POLL_S` (2 s), answered
   304 while nothing changed: an approval is seen within 2 s, not a heartbeat later. A node pending longer than
   that polls every heartbeat: a node nobody approves must not cost the registry a request every 2 s forever.
4. Alone: while we have joined no one and the lists name admitted nodes, join them again after 1, 2, 4 ... 30 s
   (`JOIN_RETRY_MIN_S`..`JOIN_RETRY_MAX_S`), and at once, the wait back at 1 s, when a re-read changed what we
   admit. A member whose list is older than ours refuses our first attempt and re-reads on that knock (rule 2);
   without a retry we would stay alone until the next heartbeat.

Before these rules a node whose first reads found an empty list slept 1, 2, 4, 8, 16 s between reads without
listening for knocks, and two nodes approved a few seconds after they started stayed apart for 30 s (a fresh CI run of
tests/ops/test_key_rotation.py); tests/integration/test_admission_race.py has that race.

httpx2 is imported only when a refresh runs (a node without `--bootstrap` never imports it).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import attrs
import trio

if TYPE_CHECKING:
    import httpx2

    from node.client.discovery.model import SignedList

KNOCK_REFRESH_INTERVAL_S = 2.0
PENDING_POLL_S = 2.0  # rule 3
PENDING_POLL_FOR_S = 3600.0  # rule 3
JOIN_RETRY_MIN_S = 1.0  # rule 4
JOIN_RETRY_MAX_S = 30.0  # rule 4


def next_wake_s(now: float, *, heartbeat_at: float, pending_since: float | None, join_at: float | None) -> float:
    """Seconds the follower may sleep (a knock, rule 2, wakes it sooner): until the next full read (rule 1), the
    next pending poll while `pending_since` (the node's start; None once we are listed) is under an hour ago (rule
    3), or the next join attempt `join_at` while we are alone (rule 4; None when not alone)."""
    at = heartbeat_at
    if pending_since is not None and now - pending_since < PENDING_POLL_FOR_S:
        at = min(at, now + PENDING_POLL_S)
    if join_at is not None:
        at = min(at, join_at)
    return max(0.0, at - now)


@attrs.define
class KnockRefresh:
    """A rate-limited wake-up for the registry follower (sync `knock`, async `wait`).

    A knock less than `interval_s` after the last wake-up is not dropped: the knocks of an interval wake the
    follower once, at its end. Dropped, they let a newcomer approved just after one of its knocks be refused for
    all three tries of its join while the member that refused it waited for a knock that no longer came
    (tests/integration/test_admission_race.py)."""

    interval_s: float = attrs.field(default=KNOCK_REFRESH_INTERVAL_S, validator=attrs.validators.gt(0))
    clock: Callable[[], float] = trio.current_time
    knocks: int = 0  # knocks seen (every refusal of an unadmitted id)
    refreshes: int = 0  # wake-ups the knocks caused
    _wake: trio.Event = attrs.field(factory=trio.Event)  # set on every change below, for a sleeping `wait`
    _fire: bool = False  # a wake-up is due now
    _deferred: bool = False  # a wake-up is due at `_last + interval_s`
    _last: float = float("-inf")  # the last wake-up a knock caused

    def knock(self) -> None:
        """An unadmitted id knocked: wake the follower now, or at the end of the interval of the last wake-up."""
        self.knocks += 1
        if self._fire or self._deferred:
            return
        now = self.clock()
        if now - self._last >= self.interval_s:
            self._fire, self._last = True, now
            self.refreshes += 1
        else:
            self._deferred = True
        self._wake.set()

    async def wait(self, timeout_s: float) -> bool:
        """Sleep up to `timeout_s`; True when a knock (now, or one deferred to this moment) ended the sleep."""
        deadline = self.clock() + timeout_s
        while True:
            if self._fire:
                self._fire = False
                return True
            now = self.clock()
            if self._deferred and now >= self._last + self.interval_s:
                self._deferred, self._last = False, now
                self.refreshes += 1
                return True
            if now >= deadline:
                return False
            due = min(deadline, self._last + self.interval_s) if self._deferred else deadline
            with trio.move_on_after(due - now):
                await self._wake.wait()
            self._wake = trio.Event()


@attrs.define
class RegistryEtags:
    """The last `ETag` of each registry's list, for conditional re-reads, over one HTTP client kept between them.

    A pending node re-reads every 2 s (rule 3): a fresh client each time built a TLS context (the system CA store)
    and a new connection, a TLS handshake with a real registry. Against a registry on loopback (in the same
    process, HTTP), 50 re-reads answered 304 cost 22.7 ms of CPU each with a fresh client and 1.04 ms with the kept
    one (2026-12-04, b832aef, load 1.9): 1.1 % of a core at one read per 2 s, against 0.05 %. `aclose()` when
    the follower ends."""

    timeout_s: float = attrs.field(validator=attrs.validators.gt(0))  # each registry's whole exchange
    tags: dict[str, str] = attrs.field(factory=dict)
    _client: httpx2.AsyncClient | None = None

    async def fetch_lists(self, registries: tuple[str, ...], trust: frozenset[bytes]) -> list[SignedList]:
        """The verified lists of the registries whose list changed since the last read; a 304, an error or a list
        that does not verify contributes nothing (the heartbeat's full read reports errors)."""
        from node.client.discovery.sources import http_client, ssl_context  # lazy: imports httpx2 and dnspython

        if self._client is None:
            self._client = http_client(ssl_context(None), self.timeout_s)
        lists: list[SignedList] = []
        for base in registries:
            with trio.move_on_after(self.timeout_s):
                found = await self._one(self._client, base, trust)
                if found is not None:
                    lists.append(found)
        return lists

    async def aclose(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            with trio.move_on_after(1.0) as scope:
                scope.shield = True  # also when the follower is being cancelled: close the sockets
                await client.aclose()

    async def _one(self, client: httpx2.AsyncClient, base: str, trust: frozenset[bytes]) -> SignedList | None:
        import time

        import httpx2

        from node.client.discovery.model import Source
        from node.client.discovery.sources import REGISTRY_ANSWER_MAX_BYTES, followed, open_list, registry_url
        from node.protocol.errors import HomingError, RemoteProtocolError
        from node.protocol.identity import decode_document
        from node.protocol.rotation import unpack_chain

        url = registry_url(base)
        headers = {"accept": "application/msgpack"}
        if url in self.tags:
            headers["if-none-match"] = self.tags[url]
        try:
            async with client.stream("GET", url, headers=headers) as response:
                if response.status_code != 200:
                    return None
                body = b""
                async for chunk in response.aiter_bytes():
                    body += chunk
                    if len(body) > REGISTRY_ANSWER_MAX_BYTES:
                        return None
                etag = response.headers.get("etag")
            doc, now = decode_document(body), time.time()
            _, served = unpack_chain(doc.get("rot"), now=now)  # a rotated registry key (docs/bootstrap.md)
            found = open_list(doc, followed(trust, served, (), now), now, Source.REGISTRY, f"registry {url}")
        except (httpx2.HTTPError, HomingError, RemoteProtocolError):
            return None
        if etag and len(etag) <= 200:
            self.tags[url] = etag
        return found
