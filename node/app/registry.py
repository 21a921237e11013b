"""Node side of the bootstrap registry (docs/bootstrap.md): register, heartbeat before the lease runs out, deregister.

- `register_forever` runs one loop per registry URL (one blocked registry never delays another). Each loop
  POSTs a fresh `node-register` document, then sleeps `heartbeat_s` (with ±10 % jitter so a fleet restarted at
  once spreads out); `heartbeat_s` must be below `ttl_s`, so the lease is renewed before it runs out.
- On a network error, a 5xx or a 429 it retries with exponential backoff (1 s doubling, capped at
  `heartbeat_s`, jittered; a 429's Retry-After is honoured). On 400 or 403 (a bad document, or banned) it logs the
  reason and tries again only at the heartbeat interval: an admin may lift a ban.
- `ts` is strictly increasing per node: max(now, last + 1). A 409 (the registry saw a `ts` as new, e.g. after
  a restart within the same second) is answered at once with `ts + 1`, a few times at most.
- `deregister` sends signed `node-leave` documents to every registry concurrently, bounded by `timeout_s`.
- A registration names the registry it is for (`reg`, its key). The node learns the key from the registry's own
  `GET /v1/nodes` (the signed list's `key`, verified) before its first registration; with `--trust` keys the
  learnt key must be one of them (else it does not register there, and logs why: a registry we do not trust
  would have us register with it for nothing). Key rotation statements served with the list (`rot`, docs/bootstrap.md
  "Rotating the registry key") are followed: a registry whose key was rotated from a trusted one is trusted.
- Every answer is streamed and read with a size cap (`ANSWER_BYTES_MAX` for a POST/DELETE answer, the readers'
  list cap for GET /v1/nodes) and a time cap for the whole exchange (`timeout_s`): an endless or trickling
  answer costs at most the cap, then the attempt fails with a reason (`answer exceeds N bytes`, `timed out`).
- When a registry's answer moves from `pending` to `approved` (an admin approved us), it is logged. What a
  registry says (`status`, `reason`) goes into "event=..." messages as arguments, which node/app/log.py quotes:
  the log reads such messages back into fields, and an unquoted answer could add fields, `event=` too
  (tests/bootstrap/test_hostile_registry.py).
- A registration sent while the node saw no other member (`peers` 0, e.g. the first one, before joining) is
  followed by another as soon as it sees one, not a heartbeat later: the registry's "not federated" flag clears.
HTTP client: httpx2 (dnspython's DoH dependency, so no extra package), on trio through anyio.
"""

from __future__ import annotations

import logging
import random
import ssl
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import attrs
import httpx2
import msgpack
import trio

from node.client.discovery.sources import followed
from node.protocol.errors import RemoteProtocolError
from node.protocol.identity import SIGNED_DOC_MAX_BYTES, Identity, decode_document, encode_document, id_text
from node.protocol.nodelist import build_leave, build_registration, open_node_list
from node.protocol.numerals import decimal, decimal_at_most
from node.protocol.rotation import unpack_chain

log = logging.getLogger("homing.registry_client")

MSGPACK = "application/msgpack"
ANSWER_BYTES_MAX = 64 * 1024  # a POST/DELETE answer is a small map
LIST_ANSWER_BYTES_MAX = SIGNED_DOC_MAX_BYTES + 1024  # what discovery accepts for GET /v1/nodes
BACKOFF_MIN_S = 1.0
CONFLICT_RETRIES = 3
RETRY_AFTER_MAX_S = 3600  # a registry's Retry-After beyond this is capped: never sleep forever on its word


@attrs.frozen(kw_only=True, slots=True)
class Result:
    """The outcome of one registration or leave attempt at one registry."""

    url: str  # the registry's base URL, as given
    http_status: int  # 0 when no HTTP answer came (network error, timeout)
    status: str = ""  # "approved", "pending" or "removed" on success
    reason: str = ""  # the registry's reason, or the network error
    retry_after_s: float = 0.0

    @property
    def ok(self) -> bool:
        return self.http_status == 200


class TsClock:
    """Strictly increasing unix-second timestamps for one node's documents.

    Give the same instance to `register_forever` and `deregister`, so a leave always outranks the last heartbeat.
    """

    def __init__(self, wall_clock: Callable[[], float]) -> None:
        self.wall_clock = wall_clock
        self.last = 0

    def next(self) -> int:
        self.last = max(int(self.wall_clock()), self.last + 1)
        return self.last


class AnswerTooLarge(Exception):
    """An answer went past its byte cap (reading stopped there)."""


async def _read_capped(resp: httpx2.Response, limit: int) -> bytes:
    """The body of a streamed answer, at most `limit` bytes; AnswerTooLarge as soon as it goes past."""
    declared = resp.headers.get("content-length", "")
    if (decimal(declared) or 0) > limit:
        raise AnswerTooLarge(f"answer of {declared[:20]} bytes exceeds {limit}")
    chunks, size = [], 0
    async for chunk in resp.aiter_raw():
        size += len(chunk)
        if size > limit:
            raise AnswerTooLarge(f"answer exceeds {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


async def _request(
    client: httpx2.AsyncClient, method: str, url: str, limit: int, timeout_s: float, **kw: Any
) -> tuple[httpx2.Response, bytes]:
    """One request, its answer streamed with a size cap and the whole exchange with a time cap.

    Raises httpx2.HTTPError, OSError, ssl.SSLError, AnswerTooLarge or trio.TooSlowError."""
    with trio.fail_after(timeout_s):
        async with client.stream(method, url, **kw) as resp:
            return resp, await _read_capped(resp, limit)


def _decode_answer(resp: httpx2.Response, data: bytes) -> dict[str, Any]:
    try:
        obj = msgpack.unpackb(data, raw=False) if resp.headers.get("content-type", "").startswith(MSGPACK) else {}
    except Exception:
        obj = {}
    return obj if isinstance(obj, dict) else {}


def _result(url: str, resp: httpx2.Response, data: bytes = b"") -> Result:
    answer = _decode_answer(resp, data)
    retry_after = resp.headers.get("retry-after", "")
    return Result(
        url=url,
        http_status=resp.status_code,
        status=str(answer.get("status", "")),
        reason=str(answer.get("reason", "") or resp.reason_phrase)[:300],
        retry_after_s=_retry_after_s(retry_after),
    )


def _retry_after_s(text: str) -> float:
    """Retry-After in delta-seconds (RFC 9110), capped; anything else (an HTTP date, garbage) counts as 0."""
    seconds = decimal_at_most(text, RETRY_AFTER_MAX_S)
    return 0.0 if seconds is None else float(seconds)


def _failure(base: str, exc: BaseException) -> Result:
    if isinstance(exc, trio.TooSlowError):
        return Result(url=base, http_status=0, reason="timed out: the answer did not complete in time")
    return Result(url=base, http_status=0, reason=f"{type(exc).__name__}: {exc}"[:300])


_NETWORK_ERRORS = (httpx2.HTTPError, OSError, ssl.SSLError, AnswerTooLarge, trio.TooSlowError)


async def _send(
    client: httpx2.AsyncClient,
    method: str,
    base: str,
    path: str,
    make_doc: Callable[[int], dict[str, bytes]],
    ts: TsClock,
    timeout_s: float,
) -> Result:
    """Send a signed document built for a fresh `ts`; on 409 retry at once with a newer `ts`."""
    url = base.rstrip("/") + path
    result = Result(url=base, http_status=0)
    headers = {"Content-Type": MSGPACK, "Accept": MSGPACK}
    for _ in range(CONFLICT_RETRIES):
        body = encode_document(make_doc(ts.next()))
        try:
            resp, data = await _request(client, method, url, ANSWER_BYTES_MAX, timeout_s, content=body, headers=headers)
        except _NETWORK_ERRORS as exc:
            return _failure(base, exc)
        result = _result(base, resp, data)
        if result.http_status != 409:
            return result
    return result


async def learn_registry_key(
    client: httpx2.AsyncClient, base: str, trust: frozenset[bytes], *, now: float, timeout_s: float
) -> bytes | Result:
    """The key `base` signs its list with (GET /v1/nodes, verified), or a failed Result saying why not.

    With `trust` keys the registry's key must be one of them."""
    url = base.rstrip("/") + "/v1/nodes"
    try:
        resp, data = await _request(client, "GET", url, LIST_ANSWER_BYTES_MAX, timeout_s, headers={"Accept": MSGPACK})
    except _NETWORK_ERRORS as exc:
        return _failure(base, exc)
    if resp.status_code != 200:
        return Result(url=base, http_status=resp.status_code, reason=f"GET /v1/nodes answered {resp.status_code}")
    try:
        doc = decode_document(data)
        key = doc.get("key")
        if not isinstance(key, bytes):
            raise RemoteProtocolError("the list has no signing key")
        _, served = unpack_chain(doc.get("rot"), now=now)
        open_node_list(doc, followed(trust, served, (), now) or frozenset([key]), now=now)
    except RemoteProtocolError as exc:
        return Result(url=base, http_status=0, reason=f"registry key not learnt: {exc}"[:300])
    return key


def make_client(*, verify: ssl.SSLContext | str | None = None, timeout_s: float = 10.0) -> httpx2.AsyncClient:
    """An HTTP client for registries: `verify` is a CA file or context for private registries (default: system
    store, which honours SSL_CERT_FILE). No proxy settings are taken from the environment."""
    ctx = verify if verify is not None else ssl.create_default_context()
    return httpx2.AsyncClient(verify=ctx, timeout=timeout_s, trust_env=False, follow_redirects=False)


async def register_forever(
    identity: Identity,
    urls: Sequence[str],
    *,
    ws: str,
    swim: str,
    peer: str,
    ttl_s: int,
    heartbeat_s: float,
    verify: ssl.SSLContext | str | None = None,
    timeout_s: float = 10.0,
    rng: random.Random | None = None,
    wall_clock: Callable[[], float] = time.time,
    on_result: Callable[[Result], None] | None = None,
    ts_clock: TsClock | None = None,
    trust: frozenset[bytes] = frozenset(),
    listed: bool = True,
    peers: Callable[[], int] | None = None,
    listed_now: Callable[[], bool] | None = None,
    rot: bytes | None = None,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Register with every registry in `urls` and keep the registrations alive until cancelled.

    `listed=False`: register as a bridge (`[node] listed = false`, docs/discovery.md "Bridges"), with a fresh card.

    `trust`: registry keys (--trust); a registry whose list is signed by another key is not registered with.
    `on_result` hears every attempt's outcome (node/app/registration.py keeps the state for `node status`);
    `peers()` is how many other live members the node sees, sent with every registration; `listed_now()` whether
    the node is on a list it trusts now (the registry follower's last read); `rot` is the statement
    of a node key rotation naming this node's key as NEW (`homing node rotate-key`), sent with every registration
    so the registry moves the old key's approval."""
    if not 0 < heartbeat_s < ttl_s:
        raise ValueError(f"heartbeat_s ({heartbeat_s}) must be above 0 and below ttl_s ({ttl_s})")
    rng = rng or random.Random()
    ts = ts_clock or TsClock(wall_clock)
    alone = [False]  # the last registration said `peers: 0`

    async def wait(delay: float, pending: bool) -> None:
        """Sleep `delay`, but end early once a node that registered as alone sees a member (the registry's "not
        federated" flag clears), or once a node the registry answered `pending` finds itself on a list it trusts
        (an admin approved it: the next answer says `approved` to `node status` and the log now, not a heartbeat
        later). Only a change ends the wait: a node listed by one registry and pending at another does not
        register every second."""
        end = trio.current_time() + delay
        watch_peers = alone[0] and peers is not None
        watch_listing = pending and listed_now is not None and not listed_now()
        while (watch_peers or watch_listing) and trio.current_time() < end:
            await trio.sleep(min(1.0, end - trio.current_time()))
            if (watch_peers and peers is not None and peers() > 0) or (
                watch_listing and listed_now is not None and listed_now()
            ):
                return
        await trio.sleep(max(0.0, end - trio.current_time()))

    def doc_maker(reg: bytes) -> Callable[[int], dict[str, bytes]]:
        def make_doc(t: int) -> dict[str, bytes]:
            n = peers() if peers is not None else None
            alone[0] = n == 0
            return build_registration(
                identity, ws=ws, swim=swim, peer=peer, ts=t, ttl=int(ttl_s), reg=reg, listed=listed, peers=n, rot=rot
            )

        return make_doc

    budget_s = min(timeout_s, heartbeat_s)
    client = make_client(verify=verify, timeout_s=budget_s)
    async with client, trio.open_nursery() as nursery:
        for url in dict.fromkeys(urls):
            nursery.start_soon(
                _keep_registered,
                _Target(client=client, base=url, trust=trust, timeout_s=budget_s, wall_clock=wall_clock),
                doc_maker, ts, heartbeat_s, rng, on_result, wait,
            )  # fmt: skip
        task_status.started()


@attrs.frozen(kw_only=True, slots=True)
class _Target:
    client: httpx2.AsyncClient
    base: str
    trust: frozenset[bytes]
    timeout_s: float
    wall_clock: Callable[[], float]


async def _keep_registered(
    target: _Target,
    doc_maker: Callable[[bytes], Callable[[int], dict[str, bytes]]],
    ts: TsClock,
    heartbeat_s: float,
    rng: random.Random,
    on_result: Callable[[Result], None] | None,
    wait: Callable[[float, bool], Awaitable[None]],
) -> None:
    backoff_s = BACKOFF_MIN_S
    was_ok = False
    last_status = ""
    make_doc: Callable[[int], dict[str, bytes]] | None = None
    base = target.base
    while True:
        if make_doc is None:
            key = await learn_registry_key(
                target.client, base, target.trust, now=target.wall_clock(), timeout_s=target.timeout_s
            )
            if isinstance(key, bytes):
                make_doc = doc_maker(key)
                log.info("event=registry_key registry=%s key=%s", base, id_text(key))
        if make_doc is None:
            result = key if isinstance(key, Result) else Result(url=base, http_status=0)
        else:
            result = await _send(target.client, "POST", base, "/v1/nodes", make_doc, ts, target.timeout_s)
        if on_result is not None:
            on_result(result)
        if result.ok:
            if not was_ok:
                log.info("event=registered registry=%s status=%s", base, result.status)
            elif result.status != last_status:
                log.info(
                    "event=registration_status registry=%s status=%s previous=%s",
                    base,
                    result.status,
                    last_status,
                )
            was_ok, backoff_s, last_status = True, BACKOFF_MIN_S, result.status
            delay = heartbeat_s * rng.uniform(0.9, 1.0)
        elif result.http_status in (400, 403):
            log.warning(
                "event=registration_refused registry=%s http=%d reason=%s",
                base,
                result.http_status,
                result.reason,
            )
            was_ok, delay = False, heartbeat_s
            if result.http_status == 400:
                make_doc = None  # the registry may have a new key: learn it again before the next attempt
        else:
            log.warning(
                "event=registration_failed registry=%s http=%d reason=%s",
                base,
                result.http_status,
                result.reason,
            )
            was_ok = False
            delay = max(result.retry_after_s, min(backoff_s, heartbeat_s) * rng.uniform(0.5, 1.0))
            backoff_s = min(backoff_s * 2, heartbeat_s)
        await (wait(delay, result.status == "pending") if result.ok else trio.sleep(delay))


async def deregister(
    identity: Identity,
    urls: Sequence[str],
    timeout_s: float,
    *,
    verify: ssl.SSLContext | str | None = None,
    wall_clock: Callable[[], float] = time.time,
    ts_clock: TsClock | None = None,
) -> list[Result]:
    """Send a signed leave to every registry at once; returns what each answered (within `timeout_s` in all)."""
    ts = ts_clock
    if ts is None:
        ts = TsClock(wall_clock)
        ts.last = int(wall_clock())  # outrank a registration sent in this same second
    results: dict[str, Result] = {u: Result(url=u, http_status=0, reason="timed out") for u in dict.fromkeys(urls)}

    def make_doc(t: int) -> dict[str, bytes]:
        return build_leave(identity, ts=t)

    async def one(client: httpx2.AsyncClient, base: str) -> None:
        path = f"/v1/nodes/{id_text(identity.id)}"
        results[base] = await _send(client, "DELETE", base, path, make_doc, ts, timeout_s)

    with trio.move_on_after(timeout_s):
        async with make_client(verify=verify, timeout_s=timeout_s) as client, trio.open_nursery() as nursery:
            for base in results:
                nursery.start_soon(one, client, base)
    return list(results.values())
