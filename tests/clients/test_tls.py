"""wss://: the client server behind its own TLS (ssl_context) and the client library with a private CA."""

from __future__ import annotations

import ssl
import subprocess
from pathlib import Path

import pytest
import trio

from node.client.connection import HandshakeError, connect_client
from node.net.clients import ClientServer
from node.protocol.identity import Identity
from node.protocol.settings import ClientsSection

from .fixtures import LocalRelay, run


def make_cert(tmp: Path) -> tuple[Path, Path]:
    key, cert = tmp / "key.pem", tmp / "cert.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
        check=True, capture_output=True, timeout=30,
    )
    return key, cert


def test_wss_with_a_private_ca(tmp_path: Path) -> None:
    key, cert = make_cert(tmp_path)
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(cert, key)
    client_ctx = ssl.create_default_context(cafile=str(cert))
    node_identity, me = Identity.generate(), Identity.generate()

    async def main() -> None:
        cfg = ClientsSection()
        server = ClientServer(identity=node_identity, config=cfg, relay=LocalRelay(), ssl_context=server_ctx)
        async with trio.open_nursery() as nursery:
            port = await nursery.start(server.serve, "127.0.0.1", 0)
            url = f"wss://127.0.0.1:{port}/v1/client"
            async with connect_client(url, me, expected_node_id=node_identity.id, ssl_context=client_ctx) as conn:
                assert conn.node_id == node_identity.id
                assert await conn.ping() >= 0
            with pytest.raises(HandshakeError, match="TLS"):
                async with connect_client(url, me, ssl_context=ssl.create_default_context()):
                    pass
            nursery.cancel_scope.cancel()

    run(main)
