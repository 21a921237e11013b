"""A real coturn on loopback for the browser tests (Debian `coturn`), with coturn's REST-API credential scheme."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

TURNSERVER = "/usr/bin/turnserver"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def rest_credential(secret: str, user: str, ttl_s: int = 3600) -> tuple[str, str]:
    """username `<expiry>:<user>`, credential base64(HMAC-SHA1(secret, username)) (coturn --use-auth-secret)."""
    username = f"{int(time.time()) + ttl_s}:{user}"
    digest = hmac.new(secret.encode(), username.encode(), hashlib.sha1).digest()
    return username, base64.b64encode(digest).decode()


@contextmanager
def coturn(tmp: Path) -> Iterator[tuple[int, str]]:
    """Start turnserver on a free loopback port; yield (port, shared secret)."""
    if shutil.which(TURNSERVER) is None:
        import pytest

        pytest.skip("Debian coturn is not installed (tests/run installs it as root)")
    port, secret = free_port(), secrets.token_hex(16)
    relay_lo = 40000 + (port % 20000)
    conf = tmp / "turnserver.conf"
    conf.write_text(
        "\n".join(
            [
                f"listening-port={port}",
                "listening-ip=127.0.0.1",
                "relay-ip=127.0.0.1",
                f"min-port={relay_lo}",
                f"max-port={relay_lo + 200}",
                "use-auth-secret",
                f"static-auth-secret={secret}",
                "realm=homing.test",
                "allow-loopback-peers",
                "no-tls",
                "no-dtls",
                "no-cli",
                "no-multicast-peers",
                f"pidfile={tmp / 'turnserver.pid'}",
                f"log-file={tmp / 'turnserver.log'}",
                "simple-log",
                "",
            ]
        )
    )
    proc = subprocess.Popen([TURNSERVER, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"turnserver exited with {proc.returncode}; see {tmp / 'turnserver.log'}")
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.05)
        else:
            raise RuntimeError("turnserver did not listen within 10 s")
        yield port, secret
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
