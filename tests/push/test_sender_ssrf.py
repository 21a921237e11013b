"""The push sender against a real local push service: what it sends, and the SSRF rules (node/net/push.py).

The service runs on 127.0.0.1 and is reachable only through `[push] test_allow_loopback` for its exact host and
port; every other loopback, private or special address, a NAME that resolves to loopback (`localhost`), other
ports on 127.0.0.1, and redirects must be refused, without a request reaching the service.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import trio

from node.net.push import PushSender, address_refused
from node.protocol.relay.push import SendPush
from node.protocol.settings import PushSection
from node.protocol.webpush import WAKE_PAYLOAD, Subscription, new_scalar, public_point, scalar_of
from tests.push.service import PushService, push_service
from tests.push.webpush_check import UserAgent, verify_vapid


def _sender(svc: PushService, results: list[str], gone: list[tuple[bytes, str]], **extra: object) -> PushSender:
    cfg = PushSection(
        test_allow_loopback=f"127.0.0.1:{svc.port}",
        test_ca_file=str(svc.ca_file),
        attempts_max=3,
        retry_backoff_s=0.01,
        request_timeout_s=3.0,
        **extra,  # type: ignore[arg-type]
    )
    scalar = new_scalar(__import__("os").urandom)
    return PushSender(
        config=cfg, vapid_scalar=scalar, on_result=results.append, on_gone=lambda c, e: gone.append((c, e))
    )


def _cmd(ua: UserAgent, ttl_s: int = 42) -> SendPush:
    sub = Subscription(endpoint=ua.endpoint, p256dh=ua.p256dh, auth=ua.auth)
    return SendPush(eid=b"e" * 16, client=b"c" * 32, sub=sub, ttl_s=ttl_s, created=0.0)


async def test_a_push_is_encrypted_authenticated_and_urgent(tmp_path: Path) -> None:
    results: list[str] = []
    async with push_service(tmp_path) as svc:
        sender = _sender(svc, results, [], vapid_subject="mailto:ops@example.org")
        ua = UserAgent(svc.url("/p/abc?x=1"))
        with trio.fail_after(10):
            assert await sender.deliver(_cmd(ua)) == "sent"
        [got] = svc.arrivals
        assert got.target == "/p/abc?x=1"
        assert got.headers["ttl"] == "42" and got.headers["urgency"] == "high"
        assert got.headers["content-encoding"] == "aes128gcm"
        assert got.headers["host"] == f"127.0.0.1:{svc.port}"
        key, claims = verify_vapid(got.headers["authorization"], audience=svc.url(""), unix_now=time.time())
        assert (
            key == sender.vapid_public == public_point(sender.vapid_key) and claims["sub"] == "mailto:ops@example.org"
        )
        assert ua.decrypt(got.body) == WAKE_PAYLOAD


@pytest.mark.parametrize(
    "host",
    [
        "localhost",  # a NAME resolving to 127.0.0.1: checked after resolution, not by its text
        "127.0.0.2",
        "10.1.2.3",
        "172.16.0.1",
        "192.168.1.1",
        "169.254.169.254",  # cloud metadata
        "100.64.1.1",  # CGNAT
        "0.0.0.0",
        "224.0.0.1",
        "[::1]",
        "[::ffff:127.0.0.1]",
        "[fe80::1]",
        "[fc00::1]",
        "[2002:7f00:1::1]",  # 6to4 of 127.0.0.1
    ],
)
async def test_non_public_addresses_are_refused_without_a_request(tmp_path: Path, host: str) -> None:
    results: list[str] = []
    async with push_service(tmp_path) as svc:
        sender = _sender(svc, results, [])
        ua = UserAgent(f"https://{host}:{svc.port}/p/x")
        with trio.fail_after(10):
            assert await sender.deliver(_cmd(ua)) == "refused_address"
        assert svc.arrivals == []


async def test_other_ports_of_the_allowed_loopback_are_refused(tmp_path: Path) -> None:
    async with push_service(tmp_path) as svc:
        sender = _sender(svc, [], [])
        with trio.fail_after(10):
            assert await sender.deliver(_cmd(UserAgent(f"https://127.0.0.1:{svc.port + 1}/x"))) == "refused_address"


async def test_redirects_are_not_followed(tmp_path: Path) -> None:
    async with push_service(tmp_path) as svc:
        svc.answer = lambda target: (307, [("location", "https://10.0.0.1/metadata")])
        sender = _sender(svc, [], [])
        with trio.fail_after(10):
            assert await sender.deliver(_cmd(UserAgent(svc.url("/r")))) == "redirect"
        assert len(svc.arrivals) == 1


async def test_allow_list_refuses_other_hosts(tmp_path: Path) -> None:
    async with push_service(tmp_path) as svc:
        sender = _sender(svc, [], [], allowed_hosts=("push.example.org",))
        with trio.fail_after(10):
            assert await sender.deliver(_cmd(UserAgent(svc.url("/x")))) == "refused_host"
        assert svc.arrivals == []


async def test_gone_and_retries(tmp_path: Path) -> None:
    results: list[str] = []
    gone: list[tuple[bytes, str]] = []
    async with push_service(tmp_path) as svc:
        svc.answer = lambda target: (410, []) if target == "/gone" else (503, [("retry-after", "0")])
        sender = _sender(svc, results, gone)
        async with trio.open_nursery() as nursery:
            await nursery.start(sender.run)
            ua = UserAgent(svc.url("/gone"))
            assert sender.submit(_cmd(ua))
            await svc.wait_for(1, timeout=5)
            with trio.fail_after(5):
                while not gone:
                    await trio.sleep(0.01)
            assert gone == [(b"c" * 32, ua.endpoint)] and results == ["gone"]
            with trio.fail_after(10):
                assert await sender.deliver(_cmd(UserAgent(svc.url("/busy")))) == "server_error"
            assert len(svc.arrivals) == 1 + 3, "one try and two retries on 503"
            svc.answer = lambda target: (429, [("retry-after", "0")]) if len(svc.arrivals) < 7 else (201, [])
            with trio.fail_after(10):
                assert await sender.deliver(_cmd(UserAgent(svc.url("/throttled")))) == "sent"
            assert len(svc.arrivals) == 4 + 3, "429, 429, then accepted on the third attempt"
            nursery.cancel_scope.cancel()


def test_address_rule_table() -> None:
    import ipaddress

    for text in ("8.8.8.8", "2001:4860:4860::8888", "1.1.1.1"):
        assert not address_refused(ipaddress.ip_address(text))
    for text in ("127.0.0.1", "10.0.0.1", "100.100.0.1", "::", "::ffff:10.0.0.1", "ff02::1", "240.0.0.1"):
        assert address_refused(ipaddress.ip_address(text))


def test_vapid_key_is_created_0600_kept_and_refused_when_readable(tmp_path: Path) -> None:
    import os

    from node.app.vapid import load_or_create_vapid_key, load_or_create_vapid_scalar
    from node.protocol.errors import ConfigError

    path = tmp_path / "vapid.key"
    key = load_or_create_vapid_key(path)
    assert path.stat().st_mode & 0o777 == 0o600
    assert public_point(load_or_create_vapid_key(path)) == public_point(key)
    assert load_or_create_vapid_scalar(path) == scalar_of(key)
    (tmp_path / "zero.key").write_text("A" * 43 + "\n")  # 32 zero bytes: not a P-256 private key
    os.chmod(tmp_path / "zero.key", 0o600)
    with pytest.raises(ConfigError):
        load_or_create_vapid_scalar(tmp_path / "zero.key")
    os.chmod(path, 0o644)
    with pytest.raises(ConfigError):
        load_or_create_vapid_key(path)
