"""The push sender: carries out the relay core's `SendPush` commands as RFC 8030 requests (docs/operations.md,
"Push wake-up").

Nodes make these requests to URLs that clients chose, so the sender is an SSRF boundary:
- only `https://` endpoints; with `[push] allowed_hosts`, only those exact host names;
- the host is resolved HERE, every address it resolves to is checked (refused: loopback, private, link-local,
  CGNAT/shared, multicast, unspecified, reserved, i.e. anything not globally routable, IPv4-mapped forms
  included), and the TCP connection goes to the checked address itself, with the name only as TLS SNI and Host:
  nothing resolves the name a second time (no DNS rebinding between check and connect);
- redirects are never followed (a 3xx is a failure); every attempt is bounded in time (`request_timeout_s`),
  the answer read is bounded in bytes (`response_bytes_max`), the queue and the concurrency are bounded.
The only exception is for tests: `[push] test_allow_loopback` names ONE 127.0.0.1:PORT (exact URL host and port)
and `test_ca_file` adds a CA; both are off by default and documented as unsafe.

Answers: 2xx sent; 404/410 the subscription is gone (the core forgets it everywhere); 429/5xx and network errors
are retried with exponential backoff (Retry-After honoured up to RETRY_AFTER_MAX_S) up to `attempts_max`.
"""

from __future__ import annotations

import functools
import ipaddress
import logging
import os
import ssl
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import h11
import trio

from node.protocol.numerals import decimal_at_most
from node.protocol.relay.push import SendPush
from node.protocol.settings import PushSection, parse_hostport
from node.protocol.webpush import (
    WAKE_PAYLOAD,
    BadSubscription,
    check_endpoint,
    check_scalar,
    encrypt,
    private_key_from_scalar,
    public_point,
    vapid_header,
)

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric import ec

log = logging.getLogger("homing.push")

RETRY_AFTER_MAX_S = 30.0
READ_BYTES = 4096

# The reasons of homing_push_failed_total{reason} (docs/operations.md).
FAIL_REASONS = (
    "refused_scheme",  # not https:// (registration refuses these too; kept for endpoints from peers)
    "refused_host",  # not in [push] allowed_hosts
    "refused_address",  # resolves to a non-public address (loopback, private, link-local, CGNAT, multicast, ...)
    "unresolvable",  # no address at all
    "redirect",  # a 3xx answer: never followed
    "gone",  # 404/410: the subscription was removed
    "rejected",  # another 4xx
    "server_error",  # 429/5xx after every attempt
    "network",  # connect, TLS, timeout or a malformed answer, after every attempt
    "queue_full",  # more pushes waiting than [push] queue_max
    "rate_limited",  # the callee had its pushes for this minute (decided by the relay core)
)


class Refused(Exception):
    """An endpoint this node will not contact; `reason` is one of FAIL_REASONS."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


def address_refused(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """Is this address one a push request must not go to (anything not globally routable unicast)?"""
    if isinstance(ip, ipaddress.IPv6Address):
        for inner in (ip.ipv4_mapped, ip.sixtofour):
            if inner is not None and address_refused(inner):
                return True
    if isinstance(ip, ipaddress.IPv4Address) and ip in ipaddress.ip_network("100.64.0.0/10"):
        return True  # CGNAT / shared address space (also not is_global; named for the reader)
    return (
        not ip.is_global
        or ip.is_multicast
        or ip.is_loopback
        or ip.is_private
        or ip.is_link_local
        or ip.is_unspecified
        or ip.is_reserved
    )


class PushSender:
    """Sends pushes from a bounded queue with `concurrent_max` workers. Feed it with `submit` (never blocks).

    `vapid_scalar` is the VAPID private key's 32-byte scalar (node/app/vapid.py); the key object and its public
    point are made on first use (a subscription's `ok`, a push), which is when `cryptography` is imported."""

    def __init__(
        self,
        *,
        config: PushSection,
        vapid_scalar: bytes,
        on_result: Callable[[str], None],
        on_gone: Callable[[bytes, str], None],
        on_written: Callable[[SendPush, float], None] | None = None,
    ) -> None:
        self.config = config
        self._vapid_scalar = check_scalar(vapid_scalar)
        self.on_result = on_result  # "sent" or a FAIL_REASONS value
        self.on_gone = on_gone
        self.on_written = on_written
        self._send, self._recv = trio.open_memory_channel[SendPush](config.queue_max)
        if config.test_ca_file:
            _ = self.ssl_context  # tests only: a bad CA file fails at start, as it always did
        self._test_loopback: tuple[str, int] | None = None
        if config.test_allow_loopback:
            self._test_loopback = parse_hostport(config.test_allow_loopback, key="push.test_allow_loopback")
            log.warning("event=push_test_loopback_enabled target=%s unsafe=true", config.test_allow_loopback)

    @functools.cached_property
    def ssl_context(self) -> ssl.SSLContext:
        """Made on the first push: loading the system CA store costs ~25 ms and ~2 MiB (issue #17)."""
        context = ssl.create_default_context()
        if self.config.test_ca_file:
            context.load_verify_locations(cafile=self.config.test_ca_file)
        return context

    @functools.cached_property
    def vapid_key(self) -> ec.EllipticCurvePrivateKey:
        return private_key_from_scalar(self._vapid_scalar)

    @functools.cached_property
    def vapid_public(self) -> bytes:
        """The VAPID public key, uncompressed (sent to clients with push_register's `ok`)."""
        return public_point(self.vapid_key)

    def submit(self, cmd: SendPush) -> bool:
        try:
            self._send.send_nowait(cmd)
        except trio.WouldBlock:
            self.on_result("queue_full")
            return False
        return True

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            for _ in range(self.config.concurrent_max):
                nursery.start_soon(self._worker)
            task_status.started()

    async def _worker(self) -> None:
        async for cmd in self._recv:
            try:
                outcome = await self.deliver(cmd)
            except Exception:  # a bug here must not end the worker (and with it the node)
                log.exception("event=push_error")
                outcome = "network"
            self.on_result(outcome)
            if outcome == "gone":
                self.on_gone(cmd.client, cmd.sub.endpoint)

    # --- one push -----------------------------------------------------------------------------------------

    async def deliver(self, cmd: SendPush) -> str:
        """Send one push with retries; returns "sent" or a FAIL_REASONS value."""
        cfg = self.config
        reason, delay = "network", 0.0
        for attempt in range(cfg.attempts_max):
            if attempt:
                await trio.sleep(delay)
            delay = cfg.retry_backoff_s * 2**attempt
            try:
                with trio.fail_after(cfg.request_timeout_s):
                    status, retry_after = await self._attempt(cmd)
            except Refused as exc:
                log.info("event=push_refused reason=%s", exc.reason)
                return exc.reason
            except (OSError, trio.TooSlowError, trio.BrokenResourceError, h11.ProtocolError, ssl.SSLError) as exc:
                log.info("event=push_attempt_failed attempt=%d error=%s", attempt + 1, type(exc).__name__)
                reason = "network"
                continue
            if 200 <= status < 300:
                return "sent"
            if 300 <= status < 400:
                return "redirect"
            if status in (404, 410):
                return "gone"
            if status == 429 or status >= 500:
                reason = "server_error"
                if retry_after is not None:
                    delay = max(delay, min(retry_after, RETRY_AFTER_MAX_S))
                continue
            return "rejected"
        return reason

    def _request(self, cmd: SendPush) -> tuple[str, int, bytes, h11.Connection]:
        """(host, port, request bytes, the HTTP state) after the policy checks that need no DNS."""
        try:
            host, port = check_endpoint(cmd.sub.endpoint)
        except BadSubscription as exc:
            raise Refused("refused_scheme", str(exc)) from None
        if self.config.allowed_hosts and host.lower() not in self.config.allowed_hosts:
            raise Refused("refused_host", host)
        parts = urlsplit(cmd.sub.endpoint)
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        host_header = (f"[{host}]" if ":" in host else host) + ("" if port == 443 else f":{port}")
        body = encrypt(cmd.sub, WAKE_PAYLOAD, os.urandom)
        auth = vapid_header(
            self.vapid_key, cmd.sub.endpoint, unix_now=int(time.time()), subject=self.config.vapid_subject
        )
        conn = h11.Connection(h11.CLIENT, max_incomplete_event_size=self.config.response_bytes_max)
        headers = [
            ("Host", host_header),
            ("TTL", str(cmd.ttl_s)),
            ("Urgency", "high"),
            ("Content-Encoding", "aes128gcm"),
            ("Content-Type", "application/octet-stream"),
            ("Content-Length", str(len(body))),
            ("Authorization", auth),
            ("Connection", "close"),
        ]
        data = conn.send(h11.Request(method="POST", target=target, headers=headers))
        data += conn.send(h11.Data(data=body)) + conn.send(h11.EndOfMessage())
        return host, port, data, conn

    async def addresses(self, host: str, port: int) -> list[str]:
        """Every address of `host`, each checked; Refused if any is not public (or none exists)."""
        if self._test_loopback == (host, port):
            return [host]
        try:
            literal: Any = ipaddress.ip_address(host)
        except ValueError:
            literal = None
        if literal is not None:
            found = [str(literal)]
        else:
            try:
                infos = await trio.socket.getaddrinfo(host, port, type=trio.socket.SOCK_STREAM)
            except OSError as exc:
                raise Refused("unresolvable", host) from exc
            found = sorted({str(info[4][0]) for info in infos})
        if not found:
            raise Refused("unresolvable", host)
        for text in found:
            if address_refused(ipaddress.ip_address(text.partition("%")[0])):
                raise Refused("refused_address", f"{host} -> {text}")
        return found

    async def _attempt(self, cmd: SendPush) -> tuple[int, float | None]:
        host, port, request, conn = self._request(cmd)
        last: Exception = OSError("no address")
        for ip in await self.addresses(host, port):
            try:
                tcp = await trio.open_tcp_stream(ip, port)  # an IP literal: no second resolution
            except OSError as exc:
                last = exc
                continue
            stream = trio.SSLStream(tcp, self.ssl_context, server_hostname=host, https_compatible=True)
            try:
                await stream.send_all(request)
                if self.on_written is not None:
                    self.on_written(cmd, trio.current_time())
                return await self._read_status(stream, conn)
            finally:
                await trio.aclose_forcefully(stream)
        raise last

    async def _read_status(self, stream: trio.SSLStream[Any], conn: h11.Connection) -> tuple[int, float | None]:
        seen = 0
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                data = await stream.receive_some(READ_BYTES)
                seen += len(data)
                if seen > self.config.response_bytes_max:
                    raise h11.RemoteProtocolError("push service answer too large")
                conn.receive_data(bytes(data))
                continue
            if isinstance(event, h11.Response):
                return event.status_code, _retry_after(event.headers)
            if isinstance(event, h11.ConnectionClosed):
                raise h11.RemoteProtocolError("closed before an answer")


def _retry_after(headers: Any) -> float | None:
    for name, value in headers:
        if name == b"retry-after":  # delta-seconds; an HTTP date (or garbage) is no advice
            seconds = decimal_at_most(value.decode("latin-1"), int(RETRY_AFTER_MAX_S))
            return None if seconds is None else float(seconds)
    return None
