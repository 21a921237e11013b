"""ICE servers for clients, with time-limited TURN credentials (coturn's REST-API scheme, docs/client-protocol.md).

Rules
- A credential is coturn's `use-auth-secret` pair: username `"<expiry unix seconds>:<client id, base64url>"`,
  credential `base64(HMAC-SHA1(secret, username))` (standard base64 with padding). coturn checks the HMAC with its
  `static-auth-secret` and refuses a username whose expiry has passed; nothing else is shared, so a credential
  cannot be revoked before it expires, only the secret rotated (docs/security.md).
- The secret is what coturn reads from its config: printable ASCII without spaces, SECRET_MIN..SECRET_MAX_BYTES.
- A node without a secret hands out its STUN URLs only (TURN URLs are useless without a credential), or no server.
- `IceIssuer` answers `ice_servers` requests with a per-connection and a per-id token bucket.
- Rule T1 (ids per address): one client address (`address_key`: /32 IPv4, /64 IPv6) gets credentials for at most
  `ids_per_address_max` distinct client ids within a credential lifetime (`ttl_s`, counted from each id's latest
  credential). coturn's `user-quota` counts allocations per id (the username without its expiry), so without this
  the key pairs one address makes could collect enough ids to fill coturn's `total-quota` at once
  (docs/security.md, "TURN credentials and relayed calls"). It bounds credentials, not allocations: coturn
  refreshes an allocation after its credential expired, so T1 is a rate (ids per address per `ttl_s`), not a cap
  on what one address holds. An id the address already holds a credential for is never refused by T1 (only by
  the buckets). An id over T1 still gets the STUN URLs (no credential): many clients behind one address (CGNAT)
  keep their server-reflexive candidates and lose only the relay. Addresses are kept least recently used first,
  at most ADDRESSES_MAX: forgetting one needs that many other addresses, which is the open part (many addresses,
  docs/security.md "Known gaps").

Pure: no clock, no file; `now` (monotonic, for the buckets) and `wall_s` (unix seconds, for the expiry) are given.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections import Counter, OrderedDict
from typing import Final

import attrs

from node.protocol.errors import ConfigError
from node.protocol.identity import b64u_encode
from node.protocol.numerals import decimal
from node.protocol.ratelimit import KeyedBuckets

SCHEMES: Final = ("stun:", "turn:", "turns:")
URL_MAX_BYTES: Final = 256
URLS_MAX: Final = 16
SECRET_MIN_BYTES: Final = 16
SECRET_MAX_BYTES: Final = 256
TTL_MIN_S: Final = 60
TTL_MAX_S: Final = 86400
IDS_MAX: Final = 100_000  # per-id buckets kept (least recently used forgotten first)
CONNS_MAX: Final = 100_000  # per-connection buckets kept
ADDRESSES_MAX: Final = 100_000  # addresses whose credentialed ids are kept (T1; least recently used forgotten first)
_URL_CHARS: Final = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-_:[]?=&%")


def check_url(url: object) -> str:
    """A `stun:`, `turn:` or `turns:` URL (RFC 7064/7065): scheme, host, optional port and `?transport=`."""
    if not isinstance(url, str) or not url.startswith(SCHEMES):
        raise ConfigError("urls", f"{url!r} is not a stun:, turn: or turns: URL")
    if len(url) > URL_MAX_BYTES or not set(url) <= _URL_CHARS:
        raise ConfigError("urls", f"{url[:40]!r} has characters a STUN/TURN URL cannot hold, or is too long")
    rest = url.split(":", 1)[1]
    host, _, query = rest.partition("?")
    if not host or host.startswith("//"):
        raise ConfigError("urls", f"{url!r}: write scheme:host[:port], without //")
    if query and (url.startswith("stun:") or query not in ("transport=udp", "transport=tcp")):
        raise ConfigError("urls", f"{url!r}: the only query a turn(s): URL takes is ?transport=udp|tcp")
    port = host.rsplit("]", 1)[-1].rpartition(":")[2] if ":" in host.rsplit("]", 1)[-1] else ""
    number = decimal(port)
    if port and not (number is not None and 1 <= number <= 65535):
        raise ConfigError("urls", f"{url!r}: port must be 1..65535")
    return url


def check_secret(secret: bytes) -> bytes:
    """The shared secret as coturn reads it from `static-auth-secret=`: printable ASCII, no spaces."""
    if not SECRET_MIN_BYTES <= len(secret) <= SECRET_MAX_BYTES:
        raise ConfigError("turn.secret_file", f"the secret must be {SECRET_MIN_BYTES}..{SECRET_MAX_BYTES} bytes")
    if any(not 0x21 <= b <= 0x7E for b in secret):
        raise ConfigError("turn.secret_file", "the secret must be printable ASCII without spaces")
    return secret


def turn_username(expiry_s: int, client_id: bytes) -> str:
    """`"<expiry unix seconds>:<client id base64url>"`."""
    return f"{int(expiry_s)}:{b64u_encode(client_id)}"


def turn_credential(secret: bytes, username: str) -> str:
    """`base64(HMAC-SHA1(secret, username))`, what coturn computes with `use-auth-secret`."""
    return base64.b64encode(hmac.new(secret, username.encode("utf-8"), hashlib.sha1).digest()).decode("ascii")


@attrs.frozen(kw_only=True, slots=True)
class IceServer:
    """One RTCIceServer: `urls`, and for TURN `username` and `credential`."""

    urls: tuple[str, ...]
    username: str | None = None
    credential: str | None = None


def ice_servers(
    urls: tuple[str, ...], secret: bytes | None, ttl_s: int, client_id: bytes, wall_s: float
) -> tuple[IceServer, ...]:
    """The server list for `client_id`: every URL with a credential, or the STUN URLs alone without a secret."""
    if secret is None:
        stun = tuple(u for u in urls if u.startswith("stun:"))
        return (IceServer(urls=stun),) if stun else ()
    if not urls:
        return ()
    username = turn_username(int(wall_s) + ttl_s, client_id)
    return (IceServer(urls=urls, username=username, credential=turn_credential(secret, username)),)


class IdsPerAddress:
    """Rule T1: the distinct ids each address got a credential for in the last `window_s` (monotonic `now`)."""

    def __init__(self, ids_max: int, window_s: float, addresses_max: int = ADDRESSES_MAX) -> None:
        if ids_max < 1 or window_s <= 0 or addresses_max < 1:
            raise ValueError("IdsPerAddress needs ids_max >= 1, window_s > 0 and addresses_max >= 1")
        self.ids_max, self.window_s, self.addresses_max = ids_max, window_s, addresses_max
        # address -> {id: time of its latest credential}, both oldest first
        self._table: OrderedDict[str, OrderedDict[bytes, float]] = OrderedDict()

    def admit(self, address: str, client_id: bytes, now: float) -> bool:
        """May `address` get a credential for `client_id` now? Records it when yes."""
        ids = self._table.get(address)
        if ids is None:
            while len(self._table) >= self.addresses_max:
                self._table.popitem(last=False)
            ids = self._table[address] = OrderedDict()
        else:
            self._table.move_to_end(address)
        while ids and next(iter(ids.values())) <= now - self.window_s:
            ids.popitem(last=False)  # that id's latest credential has expired
        if client_id not in ids and len(ids) >= self.ids_max:
            return False
        ids[client_id] = now
        ids.move_to_end(client_id)
        return True

    def __len__(self) -> int:
        return len(self._table)


class IceIssuer:
    """Answers `ice_servers` requests: a bucket per connection and one per id, then T1 per address, then the list
    (or None). `refused` counts the refusals by what refused them: "connection", "id", "address"."""

    def __init__(
        self, *, urls: tuple[str, ...], ttl_s: int, rate_per_s: float, burst: int, ids_per_address_max: int
    ) -> None:
        self.urls = tuple(check_url(u) for u in urls)
        if not TTL_MIN_S <= ttl_s <= TTL_MAX_S:
            raise ConfigError("turn.ttl_s", f"must be {TTL_MIN_S}..{TTL_MAX_S} s")
        if ids_per_address_max < 1:
            raise ConfigError("turn.ids_per_address_max", "must be at least 1")
        self.ttl_s = ttl_s
        self._per_conn: KeyedBuckets[int] = KeyedBuckets(rate_per_s, burst, CONNS_MAX)
        self._per_id: KeyedBuckets[bytes] = KeyedBuckets(rate_per_s, burst, IDS_MAX)
        self._per_address = IdsPerAddress(ids_per_address_max, float(ttl_s))
        self.refused: Counter[str] = Counter()

    def request(
        self, *, conn_id: int, client_id: bytes, address: str, secret: bytes | None, now: float, wall_s: float
    ) -> tuple[IceServer, ...] | None:
        """The list for this client, or None when its connection or its id is over the rate. When (T1) its
        address holds credentials for `ids_per_address_max` other ids, the STUN URLs alone (as without a secret).
        A list without a credential (no secret, no URLs) is not counted by T1."""
        if not self._per_conn.take(conn_id, now):
            self.refused["connection"] += 1
            return None
        if not self._per_id.take(client_id, now):
            self.refused["id"] += 1
            return None
        credentialed = secret is not None and bool(self.urls)  # what `ice_servers` gives a credential for
        if credentialed and not self._per_address.admit(address, client_id, now):
            self.refused["address"] += 1
            secret = None  # T1: no credential, the STUN URLs still
        return ice_servers(self.urls, secret, self.ttl_s, client_id, wall_s)
