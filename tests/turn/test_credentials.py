"""TURN REST credentials (node/protocol/turn.py) against coturn's documented scheme, and the [turn] settings.

coturn (README.turnserver, `--use-auth-secret`): usercombo = "timestamp:username", turn password =
base64(hmac(input_buffer = usercombo, key = shared-secret)), HMAC-SHA1; "north" is the secret its README.turnutils
uses as an example. The expected passwords below were computed with `openssl dgst -sha1 -hmac north -binary | base64`,
an implementation independent of ours; tests/turn/test_coturn.py checks the same against a running coturn.
"""

from __future__ import annotations

import pytest

from node.app.config import build_config
from node.protocol.errors import ConfigError
from node.protocol.identity import b64u_encode
from node.protocol.turn import IceIssuer, check_secret, check_url, ice_servers, turn_credential, turn_username


def test_credential_matches_coturns_documented_formula_computed_by_openssl() -> None:
    assert turn_credential(b"north", "1700000000:alice") == "Cd/49soE35ICqcJF/bCTn8Z4OyE="


def test_username_is_expiry_colon_base64url_id() -> None:
    cid = bytes(range(32))
    assert turn_username(1700003600, cid) == f"1700003600:{b64u_encode(cid)}"
    assert turn_username(1700003600, cid) == "1700003600:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8"


def test_ice_servers_with_a_secret_carry_one_credential_for_every_url() -> None:
    cid = b"\x01" * 32
    urls = ("stun:t.example.org", "turn:t.example.org:3478?transport=udp", "turns:t.example.org:443?transport=tcp")
    (server,) = ice_servers(urls, b"0123456789abcdef", 3600, cid, 1_700_000_000.7)
    assert server.urls == urls
    assert server.username == f"1700003600:{b64u_encode(cid)}"
    assert server.credential == turn_credential(b"0123456789abcdef", server.username)


def test_without_a_secret_only_stun_urls_are_handed_out() -> None:
    urls = ("stun:t.example.org:3478", "turn:t.example.org:3478")
    (server,) = ice_servers(urls, None, 3600, b"\x01" * 32, 0)
    assert server.urls == ("stun:t.example.org:3478",) and server.username is None and server.credential is None
    assert ice_servers(("turn:t.example.org",), None, 3600, b"\x01" * 32, 0) == ()
    assert ice_servers((), b"0123456789abcdef", 3600, b"\x01" * 32, 0) == ()


def test_issuer_limits_per_connection_and_per_id() -> None:
    issuer = IceIssuer(urls=("stun:a.example",), ttl_s=3600, rate_per_s=0.1, burst=2, ids_per_address_max=1)
    a, b = b"\x0a" * 32, b"\x0b" * 32
    ip = "192.0.2.1/32"
    assert issuer.request(conn_id=1, client_id=a, address=ip, secret=None, now=0.0, wall_s=0)
    assert issuer.request(conn_id=1, client_id=a, address=ip, secret=None, now=0.0, wall_s=0)
    assert issuer.request(conn_id=1, client_id=a, address=ip, secret=None, now=0.0, wall_s=0) is None, "per conn"
    assert issuer.request(conn_id=2, client_id=a, address=ip, secret=None, now=0.0, wall_s=0) is None, "per id"
    assert issuer.request(conn_id=3, client_id=b, address=ip, secret=None, now=0.0, wall_s=0), "STUN only: no T1"
    assert issuer.request(conn_id=1, client_id=a, address=ip, secret=None, now=10.0, wall_s=0), "the bucket refills"
    assert issuer.refused == {"connection": 1, "id": 1}


def test_t1_bounds_the_ids_one_address_holds_credentials_for_within_a_lifetime() -> None:
    """Rule T1 with an injected clock: 3 ids per /32 within ttl_s; a held id may ask again; another address is
    not affected; an id's count ends ttl_s after its latest credential (when that credential has expired). An id
    over the bound gets the STUN URLs without a credential, so it keeps its server-reflexive candidates."""
    secret = b"0123456789abcdef"
    urls = ("stun:a.example", "turn:a.example")
    issuer = IceIssuer(urls=urls, ttl_s=600, rate_per_s=1.0, burst=5, ids_per_address_max=3)
    ids = [bytes([i]) * 32 for i in range(5)]

    def ask(i: int, address: str, now: float) -> bool:
        """True for a credential; False for the STUN URLs alone (T1)."""
        got = issuer.request(conn_id=i, client_id=ids[i], address=address, secret=secret, now=now, wall_s=now)
        assert got is not None, "T1 never refuses the request, it withholds the credential"
        (server,) = got
        if server.credential is None:
            assert server.urls == ("stun:a.example",) and server.username is None
            return False
        assert server.urls == urls
        return True

    assert [ask(i, "192.0.2.1/32", 0.0) for i in range(4)] == [True, True, True, False]
    assert issuer.refused["address"] == 1
    assert ask(1, "192.0.2.1/32", 100.0), "an id the address holds a credential for"
    assert ask(3, "192.0.2.2/32", 100.0), "another address"
    assert not ask(4, "192.0.2.1/32", 599.0)
    assert ask(4, "192.0.2.1/32", 600.0), "ids 0 and 2 got theirs at 0: expired at 600"
    assert ask(0, "192.0.2.1/32", 600.0), "1 (renewed at 100), 4 and now 0"
    assert not ask(2, "192.0.2.1/32", 601.0)
    assert issuer.refused == {"address": 3}


@pytest.mark.parametrize(
    "url",
    ["stun:t.example.org", "stun:t.example.org:3478", "turn:[2001:db8::1]:3478?transport=udp",
     "turns:t.example.org:443?transport=tcp", "turn:192.0.2.1"],
)  # fmt: skip
def test_good_urls(url: str) -> None:
    assert check_url(url) == url


@pytest.mark.parametrize(
    "url",
    ["http://t.example.org", "turn://t.example.org", "turn:", "turn:h:0", "turn:h:99999", "stun:h?transport=udp",
     "turn:h?transport=sctp", "turn:h x", "turn:" + "a" * 300, 7],
)  # fmt: skip
def test_bad_urls_are_refused_with_a_reason(url: object) -> None:
    with pytest.raises(ConfigError):
        check_url(url)


def test_secret_rules() -> None:
    assert check_secret(b"0123456789abcdef") == b"0123456789abcdef"
    for bad in (b"short", b"0123456789 abcdef", b"0123456789abcdef\x00", b"x" * 257):
        with pytest.raises(ConfigError):
            check_secret(bad)


def test_turn_section_validates_and_defaults() -> None:
    cfg = build_config({"turn": {"urls": ["stun:t.example.org"], "realm": "example.org"}})
    assert cfg.turn.ttl_s == 3600 and cfg.turn.urls == ("stun:t.example.org",)
    with pytest.raises(ConfigError) as exc:
        build_config({"turn": {"urls": ["http://x"]}})
    assert exc.value.key.startswith("turn.")
    with pytest.raises(ConfigError) as exc:
        build_config({"turn": {"ttl_s": 10}})
    assert exc.value.key == "turn.ttl_s"


def test_the_example_in_client_protocol_md_is_true() -> None:
    import json
    import re
    from pathlib import Path

    text = (Path(__file__).resolve().parents[2] / "docs" / "client-protocol.md").read_text()
    example = json.loads(re.search(r'^\{"t":"ice_servers","ttl".*$', text, re.M).group(0))  # type: ignore[union-attr]
    (server,) = example["servers"]
    assert server["credential"] == turn_credential(b"example-shared-secret-0123456789", server["username"])
    assert all(check_url(u) for u in server["urls"])
