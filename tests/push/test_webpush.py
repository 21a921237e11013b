"""RFC 8291 / RFC 8292 in node/protocol/webpush.py, checked by independent implementations (http_ece, cryptography)."""

from __future__ import annotations

import random
import time

import pytest
from cryptography.exceptions import InvalidSignature

from node.protocol.webpush import (
    WAKE_PAYLOAD,
    BadSubscription,
    Subscription,
    check_endpoint,
    check_subscription,
    encrypt,
    new_private_key,
    public_point,
    vapid_header,
)
from node.protocol.wire.client import BadFrame, Ok, PushRegister, decode_client_frame, encode_client_message
from tests.push.webpush_check import UserAgent, b64u, verify_vapid


def _sub(ua: UserAgent) -> Subscription:
    return Subscription(endpoint=ua.endpoint, p256dh=ua.p256dh, auth=ua.auth)


def test_http_ece_decrypts_our_aes128gcm_message() -> None:
    ua = UserAgent("https://push.example.org/p/abc")
    rng = random.Random(7)
    body = encrypt(_sub(ua), WAKE_PAYLOAD, rng.randbytes)
    assert ua.decrypt(body) == WAKE_PAYLOAD
    assert encrypt(_sub(ua), WAKE_PAYLOAD, random.Random(7).randbytes) == body, "reproducible from its inputs"
    other = UserAgent(ua.endpoint)
    with pytest.raises(Exception):  # noqa: B017 - http_ece raises its own or cryptography's errors
        other.decrypt(body)


def test_vapid_token_verifies_and_a_forged_one_does_not() -> None:
    key = new_private_key(random.Random(1).randbytes)
    now = int(time.time())
    header = vapid_header(key, "https://push.example.org:8443/p/abc", unix_now=now, subject="mailto:ops@example.org")
    k, claims = verify_vapid(header, audience="https://push.example.org:8443", unix_now=now)
    assert k == public_point(key) and claims["sub"] == "mailto:ops@example.org"
    forged = header.replace(header[header.index("t=") + 10], "A" if header[header.index("t=") + 10] != "A" else "B", 1)
    with pytest.raises((InvalidSignature, ValueError, AssertionError, KeyError)):
        verify_vapid(forged, audience="https://push.example.org:8443", unix_now=now)


@pytest.mark.parametrize(
    "endpoint",
    [
        "http://push.example.org/x",
        "ftp://x/y",
        "https://",
        "https://user:pw@host/x",
        "https://h/x#f",
        "https://h/" + "a" * 1000,
        "https://h/\u00e9",
        "https://h:99999/",
    ],
)
def test_bad_endpoints_are_refused(endpoint: str) -> None:
    with pytest.raises(BadSubscription):
        check_endpoint(endpoint)


def test_subscription_fields_are_checked() -> None:
    ua = UserAgent("https://push.example.org/x")
    check_subscription(_sub(ua))
    for bad in (
        Subscription(endpoint=ua.endpoint, p256dh=b"\x04" + b"\x01" * 64, auth=ua.auth),  # not on the curve
        Subscription(endpoint=ua.endpoint, p256dh=b"\x02" + ua.p256dh[1:], auth=ua.auth),
        Subscription(endpoint=ua.endpoint, p256dh=ua.p256dh, auth=b"x" * 15),
    ):
        with pytest.raises(BadSubscription):
            check_subscription(bad)


def test_push_register_json_and_msgpack_round_trip() -> None:
    ua = UserAgent("https://push.example.org/x")
    msg = PushRegister(endpoint=ua.endpoint, p256dh=ua.p256dh, auth=ua.auth)
    for as_json in (True, False):
        assert decode_client_frame(encode_client_message(msg, json=as_json)) == msg
    text = encode_client_message(msg, json=True)
    assert (
        isinstance(text, str) and '"t":"push_register"' in text and b64u(text.split('"p256dh":"')[1][:87]) == ua.p256dh
    )
    with pytest.raises(BadFrame):
        decode_client_frame('{"t":"push_register","endpoint":"http://x/y","p256dh":"' + text.split('"p256dh":"')[1])
    ok = Ok(of="push_register", vapid=ua.p256dh)
    assert decode_client_frame(encode_client_message(ok, json=True), from_node=True) == ok
