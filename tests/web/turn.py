"""A real coturn on loopback for the browser tests (Debian `coturn`), REST-API credentials (`use-auth-secret`) that
the nodes issue from their `[turn]` section (docs/client-protocol.md, "ICE servers")."""

from __future__ import annotations

import json
import secrets
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.fixtures.dns import free_port  # free for both UDP and TCP, as coturn listens on both
from tests.helpers import stop_process

TURNSERVER = "/usr/bin/turnserver"


def turn_node_config(tmp: Path, port: int, secret: str) -> Path:
    """A homing-node.toml whose `[turn]` section points at this coturn and its secret (docs/configuration.md): nodes
    started with `--config` on it hand their clients REST credentials in `ice_servers`."""
    secret_file = tmp / "turn-secret"
    secret_file.write_text(secret + "\n")
    secret_file.chmod(0o600)
    conf = tmp / "turn-node.toml"
    conf.write_text(
        "[turn]\n"
        f'urls = ["turn:127.0.0.1:{port}?transport=udp"]\n'
        f"secret_file = {json.dumps(str(secret_file))}\n"
        'realm = "homing.test"\n'
    )
    return conf


def allocations_by(tmp: Path, user_suffix: str) -> int:
    """How many TURN allocations coturn's log shows for usernames ending in `:<user_suffix>` (a client id)."""
    log = tmp / "turnserver.log"
    text = log.read_text(errors="replace") if log.exists() else ""
    return sum(1 for line in text.splitlines() if f":{user_suffix}>" in line and "ALLOCATE processed, success" in line)


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
                "verbose",  # session lines: who allocated (the REST username carries the client id)
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
        stop_process(proc)
