"""A CORS front for the test DoH server, a black-holed registry and a registry stand-in serving a fixed list, for
the page's discovery tests.

Browsers may read a DoH answer only if the resolver sends CORS headers (public resolvers do); unbound does not. This
HTTPS front (HTTP/1.1, the test PKI's server certificate) answers the CORS preflight and forwards each RFC 8484 POST
unchanged to unbound's DoH endpoint over HTTP/2, returning unbound's answer bytes unchanged with
`Access-Control-Allow-Origin: *`. Everything DNS is real: knotd serves the zone, unbound resolves it.
"""

from __future__ import annotations

import base64
import hashlib
import http.server
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx2

QUERY_MAX_BYTES = 4096


def spki_sha256_b64(cert: Path) -> str:
    """Chromium's --ignore-certificate-errors-spki-list value for `cert` (trust exactly this key)."""
    pub = subprocess.run(["openssl", "x509", "-in", str(cert), "-pubkey", "-noout"], capture_output=True, check=True)
    der = subprocess.run(
        ["openssl", "pkey", "-pubin", "-outform", "der"], input=pub.stdout, capture_output=True, check=True
    )
    return base64.b64encode(hashlib.sha256(der.stdout).digest()).decode()


@contextmanager
def doh_cors_front(upstream: str, ca_file: Path, cert: Path, key: Path) -> Iterator[str]:
    client = httpx2.Client(http2=True, verify=ssl.create_default_context(cafile=str(ca_file)), timeout=5)

    class Handler(http.server.BaseHTTPRequestHandler):
        def _cors(self) -> None:
            self.send_header("Access-Control-Allow-Origin", "*")
            self.send_header("Access-Control-Allow-Methods", "POST")
            self.send_header("Access-Control-Allow-Headers", "content-type, accept")

        def do_OPTIONS(self) -> None:
            self.send_response(204)
            self._cors()
            self.send_header("Content-Length", "0")
            self.end_headers()

        def do_POST(self) -> None:
            length = int(self.headers.get("content-length") or 0)
            if self.path != "/dns-query" or not 0 < length <= QUERY_MAX_BYTES:
                self.send_error(400)
                return
            query = self.rfile.read(length)
            resp = client.post(upstream, content=query, headers={"content-type": "application/dns-message"})
            self.send_response(resp.status_code)
            self._cors()
            self.send_header("Content-Type", "application/dns-message")
            self.send_header("Content-Length", str(len(resp.content)))
            self.end_headers()
            self.wfile.write(resp.content)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(str(cert), str(key))
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    try:
        with _serving(server) as port:
            yield f"https://127.0.0.1:{port}/dns-query"
    finally:
        client.close()


@contextmanager
def list_server(body: bytes, delay_s: float) -> Iterator[str]:
    """A registry stand-in that serves one signed list (GET /v1/nodes, CORS open) after `delay_s`: a mirror or a
    resolver a censor controls, which may serve any list the registry ever signed."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            time.sleep(delay_s)
            self.send_response(200)
            self.send_header("content-type", "application/msgpack")
            self.send_header("access-control-allow-origin", "*")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    with _serving(http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)) as port:
        yield f"http://127.0.0.1:{port}"


@contextmanager
def _serving(server: http.server.ThreadingHTTPServer) -> Iterator[int]:
    """Serve `server` from a thread until the block ends; yields its port."""
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield int(server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@contextmanager
def black_hole() -> Iterator[int]:
    """A TCP port that completes connections and then never answers (a registry a censor made hang)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    try:
        yield int(sock.getsockname()[1])
    finally:
        sock.close()
