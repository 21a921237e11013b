"""node/app/leanimports.py: `homing node run` keeps OpenSSL out until something needs TLS (issue #17).

Each test runs a fresh interpreter (the change is process-wide and must come before trio is imported). The digests
the node uses are compared with the ones this process computes through OpenSSL; TLS still works through the
stand-in, with a real handshake over trio on loopback."""

from __future__ import annotations

import base64
import hashlib
import json
import subprocess
import sys

from tests.helpers import REPO, homing_env

DIGESTS = """
import base64, hashlib, hmac
out = {
    "sha1": hashlib.sha1(b"dGhlIHNhbXBsZSBub25jZQ==258EAFA5-E914-47DA-95CA-C5AB0DC85B11").hexdigest(),
    "sha256": hashlib.sha256(b"homing" * 100).hexdigest(),
    "blake2b": hashlib.blake2b(b"member" + b"client", digest_size=8, person=b"homing-hrw").hexdigest(),
    "blake2b_keyed": hashlib.blake2b(b"10.1", digest_size=16, key=b"k" * 64).hexdigest(),
    "hmac_sha1": hmac.new(b"secret", b"1700000000:alice", "sha1").hexdigest(),
    "hmac_sha256": hmac.digest(b"key", b"message", "sha256").hex(),
}
"""

CHILD = (
    """
import json, sys
from pathlib import Path
from node.app.leanimports import defer_openssl
applied = defer_openssl()
import trio, secrets
import node.net.push, node.net.clients, node.net.httpserver, node.protocol.wire.upgrade
"""
    + DIGESTS
    + """
def openssl_mapped():
    maps = Path("/proc/self/maps").read_text()
    return sorted({l.rsplit("/", 1)[-1] for l in maps.splitlines() if "/libssl" in l or "/libcrypto" in l})

before = {"applied": applied, "libs": openssl_mapped(), "_ssl": "_ssl" in sys.modules, "digests": out}
# TLS through the stand-in that node.net.push imported: a real handshake on loopback
import trustme
ca = trustme.CA()
server_ctx = node.net.push.ssl.create_default_context(node.net.push.ssl.Purpose.CLIENT_AUTH)
ca.issue_cert("localhost").configure_cert(server_ctx)
client_ctx = node.net.push.ssl.create_default_context()
ca.configure_trust(client_ctx)

async def main():
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    async def serve():
        tcp = await listeners[0].accept()
        tls = trio.SSLStream(tcp, server_ctx, server_side=True)
        await tls.send_all(await tls.receive_some(100))
        await tls.aclose()
    with trio.fail_after(10):
        async with trio.open_nursery() as n:
            n.start_soon(serve)
            tls = trio.SSLStream(await trio.open_tcp_stream("127.0.0.1", port), client_ctx, server_hostname="localhost")
            await tls.send_all(b"ping")
            echo = await tls.receive_some(100)
            await tls.aclose()
    return echo, tls.version()

echo, version = trio.run(main)
import ssl
after = {"echo": echo.decode(), "version": version, "libs": openssl_mapped(),
         "same": ssl.SSLError is node.net.push.ssl.SSLError is trio._ssl._stdlib_ssl.SSLError}
print(json.dumps({"before": before, "after": after}))
"""
)


def run_child(code: str) -> dict[str, dict[str, object]]:
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=homing_env(), capture_output=True, text=True,
                         timeout=60)  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    result: dict[str, dict[str, object]] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def test_no_openssl_until_tls_is_used_then_tls_works() -> None:
    got = run_child(CHILD)
    before, after = got["before"], got["after"]
    assert before["applied"] is True
    assert before["libs"] == [] and before["_ssl"] is False, before  # fails without defer_openssl: both mapped
    assert after == {"echo": "ping", "version": after["version"], "libs": after["libs"], "same": True}
    assert str(after["version"]).startswith("TLS") and after["libs"], after  # OpenSSL loaded on first use


def test_the_builtin_digests_equal_openssl_ones() -> None:
    scope: dict[str, dict[str, str]] = {}
    exec(DIGESTS, scope)  # this process: hashlib through OpenSSL (_hashlib loaded)
    assert "_hashlib" in sys.modules and sys.modules["_hashlib"] is not None
    assert run_child(CHILD)["before"]["digests"] == scope["out"]
    # and one known answer: RFC 6455's Sec-WebSocket-Accept example
    accept = base64.b64encode(hashlib.sha1(b"dGhlIHNhbXBsZSBub25jZQ==258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest())
    assert accept == b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


def test_nothing_changes_once_openssl_is_loaded() -> None:
    code = "import json, ssl\nfrom node.app.leanimports import defer_openssl\n"
    code += "print(json.dumps({'r': {'applied': defer_openssl(), 'real': type(ssl.SSLContext).__name__}}))"
    got = run_child(code)
    assert got["r"] == {"applied": False, "real": "type"}
