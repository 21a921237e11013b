"""The limits of node/net/httpserver.py (`HttpLimits`), apart from the server: the registry's and a node's configs
hold them, and reading a config must not import trio and h11 (a third of a second of every `homing bootstrap`
admin command)."""

from __future__ import annotations

import attrs
from attrs import validators as v


@attrs.frozen(kw_only=True, slots=True)
class HttpLimits:
    # Request line plus headers; larger gets 431 (h11 refuses it) and the connection closes.
    header_bytes_max: int = attrs.field(default=16 * 1024, validator=v.ge(1024))
    # Request body; larger (declared or sent) gets 413 and the connection closes.
    body_bytes_max: int = attrs.field(default=64 * 1024, validator=v.ge(0))
    # Connections open at once; more are answered 503 and closed.
    connections_max: int = attrs.field(default=1024, validator=v.ge(1))
    # Connections open at once from one client IP.
    connections_per_ip_max: int = attrs.field(default=64, validator=v.ge(1))
    # Requests per second from one client IP (token bucket) and its burst; more get 429.
    rate_per_ip_per_s: float = attrs.field(default=50.0, validator=v.gt(0))
    rate_per_ip_burst: int = attrs.field(default=100, validator=v.ge(1))
    # Client IPs whose rate buckets are remembered (least recently seen are forgotten first).
    rate_ips_max: int = attrs.field(default=10_000, validator=v.ge(1))
    # Seconds to receive a whole request once its first byte arrived.
    read_timeout_s: float = attrs.field(default=10.0, validator=v.gt(0))
    # Seconds an idle keep-alive connection stays open waiting for its next request.
    keepalive_timeout_s: float = attrs.field(default=30.0, validator=v.gt(0))
    # Seconds to write a whole response to a slow reader.
    write_timeout_s: float = attrs.field(default=10.0, validator=v.gt(0))
    # Seconds for a TLS handshake.
    tls_handshake_timeout_s: float = attrs.field(default=10.0, validator=v.gt(0))
    # Requests served on one connection before it is closed (bounds one client's hold on a task).
    requests_per_connection_max: int = attrs.field(default=10_000, validator=v.ge(1))
