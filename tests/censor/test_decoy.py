"""Probe resistance (docs/security.md, "Censorship"): a prober that knows a node's address but not its client path
gets the answers a stock nginx serving the same site gives, byte for byte (Date masked); the right path still works.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from node.client.connection import handshake_only
from node.net.decoy import DecoySite, answer
from node.protocol.decoy import BODY_SKIP_BYTES_MAX, body_bytes, parse_head
from node.protocol.identity import Identity
from tests.censor.nginx import exchange, have_nginx, masked, running_nginx
from tests.clients.fixtures import run, running_node

SECRET = "/k7Qd2xw9/ws"
UPGRADE = (b"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
           b"Sec-WebSocket-Version: 13\r\n")  # fmt: skip

NUMBER_PROBES = [
    b"GET / HTTP/\xb2.0\r\nHost: example.org\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: example.org\r\nContent-Length: \xb2\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: example.org\r\nContent-Length: " + b"9" * 5000 + b"\r\n\r\n",
]

PROBES = [
    b"GET / HTTP/1.1\r\nHost: example.org\r\n\r\n",
    b"GET /index.html HTTP/1.1\r\nHost: example.org\r\n\r\n",
    b"HEAD / HTTP/1.1\r\nHost: example.org\r\n\r\n",
    b"GET /style.css HTTP/1.1\r\nHost: example.org\r\n\r\n",
    b"GET /missing HTTP/1.1\r\nHost: example.org\r\n\r\n",
    b"GET /v1/client HTTP/1.1\r\nHost: example.org\r\n\r\n",
    b"GET /v1/client HTTP/1.1\r\nHost: example.org\r\n" + UPGRADE + b"\r\n",
    b"GET /v1/client?format=json HTTP/1.1\r\nHost: example.org\r\n"
    + UPGRADE
    + b"Sec-WebSocket-Protocol: homing.v1.json\r\n\r\n",
    b"GET /k7Qd2xw9 HTTP/1.1\r\nHost: example.org\r\n" + UPGRADE + b"\r\n",
    b"GET /k7Qd2xw9/ws HTTP/1.1\r\nHost: example.org\r\n\r\n",  # the right path, but no upgrade
    b"POST /k7Qd2xw9/ws HTTP/1.1\r\nHost: example.org\r\nContent-Length: 3\r\n\r\nabc",
    b"GET /blog HTTP/1.1\r\nHost: example.org:8443\r\n\r\n",
    b"GET /blog/ HTTP/1.1\r\nHost: example.org\r\n\r\n",
    b"GET /blog/post.html HTTP/1.1\r\nHost: example.org\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: example.org\r\nContent-Length: 0\r\n\r\n",
    b"OPTIONS / HTTP/1.1\r\nHost: example.org\r\n\r\n",
    b"PUT /missing HTTP/1.1\r\nHost: example.org\r\n\r\n",
    b"GET / HTTP/1.0\r\n\r\n",
    b"GET / HTTP/1.1\r\n\r\n",
    b"GET / HTTP/2.0\r\nHost: example.org\r\n\r\n",
    b"get / HTTP/1.1\r\nHost: example.org\r\n\r\n",
    b"GET /../etc/passwd HTTP/1.1\r\nHost: example.org\r\n\r\n",
    b"garbage\r\n\r\n",
    b"GET /missing HTTP/1.1\r\nHost: a\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    # numbers that str.isdigit() takes and int() refuses: "²" (latin-1 0xb2), 5,000 nines
    *NUMBER_PROBES,
    b"POST / HTTP/1.1\r\nHost: example.org\r\nContent-Length: abc\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: example.org\r\nContent-Length: \r\n\r\n",
    b"GET /blog HTTP/1.1\r\nHost: example.org:\xb2\r\n\r\n",
    b"GET /blog HTTP/1.1\r\nHost: example.org:1a:2\r\n\r\n",  # nginx cuts the Host at its first ":"
    b"GET /blog HTTP/1.1\r\nHost: [::1]:\xb2\r\n\r\n",
    b"GET /blog HTTP/1.1\r\nHost: [::1\r\n\r\n",
]


def make_site(root: Path) -> None:
    (root / "blog").mkdir(parents=True)
    (root / "index.html").write_text("<!doctype html><title>Garden club</title><h1>Welcome</h1>\n")
    (root / "style.css").write_text("body { font-family: serif; }\n")
    (root / "blog" / "post.html").write_text("<p>Tomatoes.</p>\n")
    t = 1_700_000_000
    for p in [root / "index.html", root / "style.css", root / "blog" / "post.html"]:
        os.utime(p, (t, t))


async def ask(port: int, probe: bytes, answers: dict[int, bytes]) -> None:
    answers[port] = await trio.to_thread.run_sync(exchange, port, probe)


@pytest.mark.skipif(not have_nginx(), reason="needs nginx (Debian nginx-light)")
@pytest.mark.parametrize("with_site", [True, False], ids=["site", "empty"])
def test_probes_get_nginx_answers_byte_for_byte(tmp_path: Path, with_site: bool) -> None:
    root = tmp_path / "site"
    root.mkdir()
    if with_site:
        make_site(root)
    decoy = str(root) if with_site else ""

    async def main() -> None:
        async with running_node(path=SECRET, decoy_dir=decoy) as node:
            with running_nginx(root, tmp_path / "nginx") as nginx_port:
                for probe in PROBES:  # both at once: a kept-alive answer ends with 0.25 s of silence
                    answers: dict[int, bytes] = {}
                    async with trio.open_nursery() as both:
                        both.start_soon(ask, node.port, probe, answers)
                        both.start_soon(ask, nginx_port, probe, answers)
                    ours, theirs = answers[node.port], answers[nginx_port]
                    assert masked(ours, node.port) == masked(theirs, nginx_port), probe
                # and the right path still opens a client connection
                node_id, _ = await handshake_only(
                    f"ws://127.0.0.1:{node.port}{SECRET}", Identity.generate(), node.identity.id, 5.0
                )
                assert node_id == node.identity.id

    run(main, limit_s=40)


def test_wrong_path_says_nothing_homing_specific() -> None:
    """Without nginx: the default path on a node with a secret path is an nginx 404, not a homing refusal."""

    async def main() -> None:
        async with running_node(path=SECRET) as node:
            probe = b"GET /v1/client HTTP/1.1\r\nHost: x\r\n" + UPGRADE + b"\r\n"
            answer = await trio.to_thread.run_sync(exchange, node.port, probe)
            assert answer.startswith(b"HTTP/1.1 404 Not Found\r\nServer: nginx\r\n"), answer
            assert b"homing" not in answer.lower() and b"client" not in answer.lower()

    run(main)


def test_numbers_that_only_look_like_numbers_get_nginx_s_400_and_the_node_keeps_serving() -> None:
    """Before node/protocol/numerals.py each of these raised ValueError in the connection's task: the prober saw
    the connection close without an answer, where nginx answers 400 (and the node logged a traceback)."""
    for probe in NUMBER_PROBES:
        assert parse_head(probe).bad == 400, probe

    async def main() -> None:
        async with running_node() as node:
            for probe in NUMBER_PROBES:
                answer = await trio.to_thread.run_sync(exchange, node.port, probe)
                assert answer.startswith(b"HTTP/1.1 400 Bad Request\r\nServer: nginx\r\n"), (probe, answer)
            node_id, _ = await handshake_only(node.url, Identity.generate(), node.identity.id, 5.0)
            assert node_id == node.identity.id

    run(main)


@given(st.binary(max_size=600))
@settings(max_examples=400, deadline=None)
def test_any_head_gets_an_answer_and_never_raises(raw: bytes) -> None:
    head = parse_head(raw + b"\r\n\r\n")
    data = answer(DecoySite(root=None, port=8080), head, 1_700_000_000.0)
    assert data.startswith(b"HTTP/1.1 ") and b"\r\nServer: nginx\r\n" in data
    skip = body_bytes(head)
    assert skip is None or 0 <= skip <= BODY_SKIP_BYTES_MAX


def test_the_decoy_serves_nothing_outside_its_root(tmp_path: Path) -> None:
    root = tmp_path / "site"
    root.mkdir()
    (tmp_path / "secret.txt").write_text("key material")
    (root / "link.txt").symlink_to(tmp_path / "secret.txt")
    site = DecoySite(root=root, port=80)
    for target in ("/link.txt", "/../secret.txt", "/%2e%2e/secret.txt", "/a/../../secret.txt"):
        out = answer(site, parse_head(f"GET {target} HTTP/1.1\r\nHost: x\r\n\r\n".encode()), 0.0)
        assert b"key material" not in out and out.split(b"\r\n")[0] in (
            b"HTTP/1.1 404 Not Found",
            b"HTTP/1.1 400 Bad Request",
        )
