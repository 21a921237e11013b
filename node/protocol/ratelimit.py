"""The one token bucket, a bounded table of them per key (address, id, peer), and buckets that outlive a connection.

Theory: a bucket holds at most `burst` tokens and gains `rate_per_s` tokens per second of `now`; an event that
costs `cost` tokens is allowed when the bucket holds that many, which spends them. Over any window of T seconds a
bucket allows at most `burst + rate_per_s * T` tokens' worth of events, whatever their timing.

`KeyedBuckets` keeps one bucket per key for at most `keys_max` keys. A key that is new when the table is full
evicts the least recently used one: a forgotten key comes back with a full bucket, so `keys_max` must be larger
than the number of keys an attacker can cycle through within `burst / rate_per_s` seconds for the limit to hold
(per-address tables are keyed by network prefix, see `address_key`, for that reason). Pure: `now` is passed in.
"""

from __future__ import annotations

import ipaddress
from collections import OrderedDict
from typing import Generic, TypeVar

K = TypeVar("K")


class TokenBucket:
    """`rate_per_s` tokens per second up to `burst`; `take(now)` spends `cost` if the bucket holds it."""

    __slots__ = ("burst", "rate_per_s", "stamp", "tokens")

    def __init__(self, rate_per_s: float, burst: float, now: float = 0.0) -> None:
        if rate_per_s <= 0 or burst < 1:
            raise ValueError("a token bucket needs rate_per_s > 0 and burst >= 1")
        self.rate_per_s = float(rate_per_s)
        self.burst = float(burst)
        self.tokens = float(burst)
        self.stamp = now

    def _refill(self, now: float) -> None:
        if now > self.stamp:
            self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate_per_s)
            self.stamp = now

    def take(self, now: float, cost: float = 1.0) -> bool:
        self._refill(now)
        if self.tokens >= cost:
            self.tokens -= cost
            return True
        return False

    def charge(self, now: float, cost: float) -> None:
        """Spend `cost` whether or not the bucket holds it: it may go into debt, down to -burst, which the refill
        pays back before anything can be taken again. For a price learnt after the take (an abuse close)."""
        self._refill(now)
        self.tokens = max(-self.burst, self.tokens - cost)

    def wait_s(self, now: float, cost: float = 1.0) -> float:
        """Seconds until `cost` tokens are there (0 when they are now)."""
        self._refill(now)
        return max(0.0, (cost - self.tokens) / self.rate_per_s)

    def full(self, now: float) -> bool:
        self._refill(now)
        return self.tokens >= self.burst


class KeyedBuckets(Generic[K]):
    """One `TokenBucket` per key, at most `keys_max` keys (least recently used evicted)."""

    def __init__(self, rate_per_s: float, burst: float, keys_max: int) -> None:
        if keys_max < 1:
            raise ValueError("keys_max must be >= 1")
        TokenBucket(rate_per_s, burst)  # validates the parameters once
        self.rate_per_s = rate_per_s
        self.burst = burst
        self.keys_max = keys_max
        self._buckets: OrderedDict[K, TokenBucket] = OrderedDict()

    def _bucket(self, key: K, now: float) -> TokenBucket:
        bucket = self._buckets.get(key)
        if bucket is None:
            while len(self._buckets) >= self.keys_max:
                self._buckets.popitem(last=False)
            bucket = self._buckets[key] = TokenBucket(self.rate_per_s, self.burst, now)
        else:
            self._buckets.move_to_end(key)
        return bucket

    def take(self, key: K, now: float, cost: float = 1.0) -> bool:
        return self._bucket(key, now).take(now, cost)

    def charge(self, key: K, now: float, cost: float) -> None:
        self._bucket(key, now).charge(now, cost)

    def wait_s(self, key: K, now: float, cost: float = 1.0) -> float:
        return self._bucket(key, now).wait_s(now, cost)

    def __len__(self) -> int:
        return len(self._buckets)


class HeldBuckets(Generic[K]):
    """Token buckets per key (a client id) that outlive the connections spending them (docs/security.md,
    "Malicious client": reconnecting does not restore the burst).

    Rules
    1. `attach(key, now)` gives a connection of `key` its buckets, one per `(rate_per_s, burst)` of `shapes`;
       `detach(key)` is called once for each attach, when that connection ends.
    2. While a key has connections attached they all share one tuple of buckets: a second connection (another
       device of the same id, or the same phone on a new network before the node noticed the old one died)
       spends the same tokens, so opening a connection before closing the last one buys no burst either.
    3. When the last connection of a key detaches, its buckets are kept, with their tokens and time, in a table
       of at most `keys_max` keys (the least recently detached forgotten first); an attach of a key with no
       connection takes them back, refilled by the time elapsed and never above `burst`, else starts full.
    4. A kept state that has refilled to full is worth nothing (a full bucket is what a forgotten key gets) and
       is dropped at the next attach: at the defaults (20/s burst 60, call_ice 50/s burst 200) a key is kept at
       most 4 s after its end, so the table holds the keys that ended in the last few seconds, and only
       `keys_max` keys ending within that time can push one out early.

    Pure: `now` is passed in; the buckets are `TokenBucket`s the caller spends with `take`.
    """

    __slots__ = ("_kept", "_live", "keys_max", "shapes")

    def __init__(self, shapes: tuple[tuple[float, float], ...], keys_max: int) -> None:
        if keys_max < 1:
            raise ValueError("keys_max must be >= 1")
        for rate_per_s, burst in shapes:
            TokenBucket(rate_per_s, burst)  # validates the parameters once
        self.shapes = shapes
        self.keys_max = keys_max
        self._live: dict[K, tuple[tuple[TokenBucket, ...], list[int]]] = {}  # key -> (buckets, [connections])
        self._kept: OrderedDict[K, tuple[TokenBucket, ...]] = OrderedDict()  # rule 3, oldest detach first

    def attach(self, key: K, now: float) -> tuple[TokenBucket, ...]:
        """The buckets a new connection of `key` spends (rules 2, 3)."""
        live = self._live.get(key)
        if live is not None:
            live[1][0] += 1
            return live[0]
        kept = self._kept
        while kept and all(b.full(now) for b in next(iter(kept.values()))):  # rule 4
            kept.popitem(last=False)
        buckets = kept.pop(key, None)
        if buckets is None:
            buckets = tuple(TokenBucket(rate_per_s, burst, now) for rate_per_s, burst in self.shapes)
        self._live[key] = (buckets, [1])
        return buckets

    def detach(self, key: K) -> None:
        """A connection of `key` ended; its last one leaves the buckets in the table (rule 3)."""
        live = self._live.get(key)
        if live is None:
            return
        live[1][0] -= 1
        if live[1][0] > 0:
            return
        del self._live[key]
        kept = self._kept
        while len(kept) >= self.keys_max:
            kept.popitem(last=False)
        kept[key] = live[0]

    def kept(self) -> int:
        """Keys whose buckets are kept for a connection to come (not those with one attached)."""
        return len(self._kept)

    def attached(self) -> int:
        """Keys with a connection attached."""
        return len(self._live)


FORGED_PER_SENDER_PER_S = 0.2  # bad signatures one sender may make this node check, per second (after the burst)
FORGED_PER_SENDER_BURST = 5


class ForgeryBudget(Generic[K]):
    """Bad signatures one authenticated sender (a member) may make this node check.

    An honest member never sends a signature that fails: it signed it itself, or checked it before passing it on.
    So a sender whose signatures failed `burst` times gets one more check per 1 / `rate_per_s` seconds, and
    everything else it sends that would need a check is refused unchecked until then. An Ed25519 check costs
    about 60-160 µs here, and a forged signature costs its sender nothing to make.
    """

    def __init__(
        self, keys_max: int, rate_per_s: float = FORGED_PER_SENDER_PER_S, burst: float = FORGED_PER_SENDER_BURST
    ) -> None:
        self._buckets: KeyedBuckets[K] = KeyedBuckets(rate_per_s, burst, keys_max)

    def allows(self, key: K, now: float) -> bool:
        """May `key` still make this node check a signature?"""
        return self._buckets.wait_s(key, now) == 0

    def failed(self, key: K, now: float) -> None:
        """A signature `key` sent did not verify."""
        self._buckets.charge(key, now, 1.0)


def address_key(host: str) -> str:
    """The network an address belongs to for per-address limits: the /32 of an IPv4, the /64 of an IPv6.

    One IPv6 host usually holds a whole /64, so counting single IPv6 addresses would let one machine use 2^64
    budgets. Anything that is not an IP address (a Unix socket path, a test name) is its own key.
    """
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return host
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if isinstance(ip, ipaddress.IPv4Address):
        return str(ip)
    return str(ipaddress.IPv6Network((ip, 64), strict=False))


class PreauthBytes:
    """The bytes that unauthenticated peer-port connections hold in first frames (node/net/peerconn.py).

    Rules
    1. A first frame's announced length is reserved (`take`) before its body is read, and given back (`give`) once,
       when the frame has been read or refused or the connection ended: the caller pairs them in every path.
    2. All reservations together stay within `total`: a frame that does not fit is refused, nothing waits.
    3. Reservations from addresses where no member is known (strangers) stay within `total // 2` together, so the
       other half is always left to members' hosts: strangers cannot starve members' syncs.
    4. One address (`address_key`) holds at most `per_address`, so a few addresses cannot take a whole share.
    """

    __slots__ = ("_per_key", "held", "per_address", "strangers", "total")

    def __init__(self, total: int, per_address: int) -> None:
        if not 0 < per_address <= total:
            raise ValueError("preauth bytes need 0 < per_address <= total")
        self.total = total
        self.per_address = per_address
        self.held = 0  # all reservations
        self.strangers = 0  # reservations from strangers' addresses (rule 3)
        self._per_key: dict[str, int] = {}

    def take(self, key: str, n: int, *, member: bool) -> bool:
        """Reserve `n` bytes for a frame from `key` (a member's host or not): False when it does not fit."""
        held_here = self._per_key.get(key, 0)
        if (
            self.held + n > self.total  # rule 2
            or (not member and self.strangers + n > self.total // 2)  # rule 3
            or held_here + n > self.per_address  # rule 4
        ):
            return False
        self.held += n
        if not member:
            self.strangers += n
        self._per_key[key] = held_here + n
        return True

    def give(self, key: str, n: int, *, member: bool) -> None:
        """Give back what `take(key, n, member=member)` reserved (rule 1)."""
        self.held -= n
        if not member:
            self.strangers -= n
        left = self._per_key.get(key, 0) - n
        if left > 0:
            self._per_key[key] = left
        else:
            self._per_key.pop(key, None)
