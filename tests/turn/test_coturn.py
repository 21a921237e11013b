"""A real coturn (Debian `coturn`) with the node's credentials, and deploy/coturn/turnserver.conf's peer denials.

Each test starts `turnserver` on free loopback ports with its own secret, `turnutils_peer` as the relay's peer,
and `turnutils_uclient` as the TURN client (allocate, bind a channel, relay 3 packets). Skipped with a reason
when coturn is not installed (tests/run installs it).
"""

from __future__ import annotations

import ipaddress
import os
import random
import re
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import trio

from node.app.service import NodeHandle, run_node
from node.client.connection import connect_client
from node.protocol.identity import Identity
from node.protocol.turn import turn_credential, turn_username
from tests.helpers import stop_process, wait_for_log_line
from tests.integration.cluster import loopback_config, url

pytestmark = pytest.mark.skipif(
    shutil.which("turnserver") is None or shutil.which("turnutils_uclient") is None,
    reason="coturn is not installed (apt install coturn; tests/run does it)",
)
REPO = Path(__file__).resolve().parents[2]
DEPLOY_CONF = REPO / "deploy" / "coturn" / "turnserver.conf"
SECRET = "coturn-test-secret-0123456789"
RUN_S = 15


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def deploy_denials() -> list[str]:
    return [line for line in DEPLOY_CONF.read_text().splitlines() if line.startswith("denied-peer-ip=")]


@contextmanager
def coturn(tmp: Path, *, extra: list[str] = ()) -> Iterator[tuple[int, Path]]:  # type: ignore[assignment]
    """A turnserver on 127.0.0.1 (port, log file) with use-auth-secret and SECRET, loopback peers allowed."""
    port = free_udp_port()
    base = random.randrange(20000, 60000, 50)
    log = tmp / f"turn-{port}.log"
    conf = tmp / f"turn-{port}.conf"
    conf.write_text(
        "\n".join(
            [
                "listening-ip=127.0.0.1",
                "relay-ip=127.0.0.1",
                f"listening-port={port}",
                f"min-port={base}",
                f"max-port={base + 49}",
                "realm=test.homing",
                "use-auth-secret",
                f"static-auth-secret={SECRET}",
                "allow-loopback-peers",
                "no-multicast-peers",
                "no-tls",
                "no-dtls",
                "no-cli",
                "no-rfc5780",
                f"log-file={log}",
                "simple-log",
                f"pidfile={tmp / f'turn-{port}.pid'}",
                f"userdb={tmp / f'turn-{port}.db'}",
                *extra,
            ]
        )
        + "\n"
    )
    proc = subprocess.Popen(["turnserver", "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_log_line(log, "Total General servers", proc, "turnserver")
        yield port, log
    finally:
        stop_process(proc)


def echoes(proc: subprocess.Popen[bytes], host: str, port: int, within_s: float = 10.0) -> None:
    """Wait until the echo at `host:port` answers a datagram (at most `within_s`). turnutils_uclient waits about
    11 s for echoes that never come, so a peer not yet listening made a relay test time out, not fail clearly."""
    deadline = time.monotonic() + within_s
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((host, 0))
        s.settimeout(0.05)
        while True:
            s.sendto(b"ready?", (host, port))
            try:
                if s.recv(64) == b"ready?":
                    return
            except TimeoutError:
                pass
            assert proc.poll() is None, f"turnutils_peer on {host}:{port} exited ({proc.returncode})"
            assert time.monotonic() < deadline, f"turnutils_peer on {host}:{port} did not echo within {within_s} s"


@contextmanager
def udp_peer(host: str = "127.0.0.1") -> Iterator[int]:
    """turnutils_peer: the UDP echo the relay sends to, echoing before this yields."""
    port = free_udp_port()
    proc = subprocess.Popen(
        ["turnutils_peer", "-L", host, "-p", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        echoes(proc, host, port)
        yield port
    finally:
        proc.kill()
        proc.wait()


def relay(turn_port: int, peer_port: int, username: str, credential: str) -> str:
    """turnutils_uclient: allocate, bind a channel to the peer, send 3 packets; its whole output (what it wrote
    before RUN_S, and a last line saying so, when it ran longer)."""
    try:
        r = subprocess.run(
            ["turnutils_uclient", "-u", username, "-w", credential, "-e", "127.0.0.1", "-r", str(peer_port),
             "-n", "3", "-m", "1", "-l", "100", "-z", "5", "-p", str(turn_port), "127.0.0.1"],
            capture_output=True, text=True, timeout=RUN_S,
        )  # fmt: skip
    except subprocess.TimeoutExpired as exc:
        partial = [x.decode(errors="replace") if isinstance(x, bytes) else (x or "") for x in (exc.stdout, exc.stderr)]
        return "".join(partial) + f"\n<turnutils_uclient still running after {RUN_S} s: killed>"
    return r.stdout + r.stderr


def relayed(output: str) -> bool:
    totals = re.findall(r"tot_send_bytes ~ (\d+), tot_recv_bytes ~ (\d+)", output)
    return bool(totals) and int(totals[-1][1]) > 0 and "Cannot complete Allocation" not in output


async def credential_from_node(tmp: Path, turn_port: int) -> tuple[str, str]:
    """A credential got over a real client connection: `{"t":"ice_servers"}` to a node sharing the secret."""
    secret_path = tmp / "secret"
    secret_path.write_text(SECRET + "\n")
    os.chmod(secret_path, 0o600)
    turn = {"urls": [f"turn:127.0.0.1:{turn_port}?transport=udp"], "secret_file": str(secret_path)}
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            node: NodeHandle = await nursery.start(run_node, loopback_config(tmp / "n", turn=turn), Identity.generate())
            async with connect_client(url(node), Identity.generate()) as conn:
                (server,) = (await conn.ice_servers()).servers
            node.request_shutdown()
    assert server.username is not None and server.credential is not None
    return server.username, server.credential


async def test_a_credential_from_the_node_allocates_a_relay(tmp_path: Path) -> None:
    with coturn(tmp_path) as (port, _log), udp_peer() as peer:
        username, credential = await credential_from_node(tmp_path, port)
        out = await trio.to_thread.run_sync(relay, port, peer, username, credential)
        assert relayed(out), out[-2000:]


async def test_an_expired_or_forged_credential_cannot_allocate(tmp_path: Path) -> None:
    with coturn(tmp_path) as (port, log), udp_peer() as peer:
        username, credential = await credential_from_node(tmp_path, port)
        expired = turn_username(int(time.time()) - 10, b"\x07" * 32)
        forged = turn_credential(b"not-the-shared-secret-xyz", username)
        for user, password in ((expired, turn_credential(SECRET.encode(), expired)), (username, forged)):
            out = await trio.to_thread.run_sync(relay, port, peer, user, password)
            assert "Cannot complete Allocation" in out and not relayed(out), out[-2000:]
        # the control: the same coturn relays with the genuine credential
        assert relayed(await trio.to_thread.run_sync(relay, port, peer, username, credential))
        # coturn answers 401 (its log: "check_stun_auth: Cannot find credentials of user <expired username>")
        assert f"Cannot find credentials of user <{expired}>" in log.read_text(errors="replace")


async def test_the_deploy_configs_denials_keep_the_relay_off_private_addresses(tmp_path: Path) -> None:
    """With deploy/coturn/turnserver.conf's denied-peer-ip lines, a peer on loopback (a range they deny) gets 403
    although the test config allows loopback peers; without them (the test above) the same relay works."""
    denials = deploy_denials()
    assert denials, "deploy/coturn/turnserver.conf lists no denied-peer-ip"
    with coturn(tmp_path, extra=denials) as (port, log), udp_peer() as peer:
        username, credential = await credential_from_node(tmp_path, port)
        out = await trio.to_thread.run_sync(relay, port, peer, username, credential)
        assert "403" in out and not relayed(out), out[-2000:]
        assert "A peer IP 127.0.0.1 denied in the range: 127.0.0.0-127.255.255.255" in log.read_text(errors="replace")


REQUIRED_DENIED = [
    "0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16", "172.16.0.0/12", "192.168.0.0/16",
    "192.0.0.0/24", "198.18.0.0/15", "224.0.0.0/4", "240.0.0.0/4",
    "::1/128", "::ffff:0:0/96", "fc00::/7", "fe80::/10", "ff00::/8", "2002::/16",
]  # fmt: skip


def test_the_deploy_config_denies_every_private_loopback_link_local_cgnat_and_multicast_range() -> None:
    ranges = []
    for line in deploy_denials():
        lo, _, hi = line.split("=", 1)[1].partition("-")
        ranges.append((ipaddress.ip_address(lo), ipaddress.ip_address(hi or lo)))
    for text in REQUIRED_DENIED:
        net = ipaddress.ip_network(text)
        covered = any(
            lo.version == net.version and lo <= net.network_address and net.broadcast_address <= hi  # type: ignore[operator]
            for lo, hi in ranges
        )
        assert covered, f"{text} is not denied in {DEPLOY_CONF}"
    conf = DEPLOY_CONF.read_text()
    for line in (
        "use-auth-secret",
        "no-multicast-peers",
        "no-cli",
        "tls-listening-port=5349",
        "user-quota=",
        "total-quota=",
    ):
        assert re.search(rf"^{re.escape(line)}", conf, re.M), line
    assert "allow-loopback-peers" not in conf


def test_render_config_fills_the_secret_and_coturn_accepts_the_result(tmp_path: Path) -> None:
    secret = tmp_path / "turn-secret"
    secret.write_text(SECRET + "\n")
    out = tmp_path / "rendered.conf"
    r = subprocess.run(
        ["sh", str(REPO / "deploy/coturn/render-config.sh"), str(DEPLOY_CONF), str(out), str(secret)],
        capture_output=True, text=True, timeout=10,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    text = out.read_text()
    assert f"static-auth-secret={SECRET}\n" in text and "@HOMING_TURN_SECRET@" not in text
    assert oct(out.stat().st_mode & 0o777) == "0o600"
    bad = tmp_path / "bad-secret"
    bad.write_text("short\n")
    r = subprocess.run(
        ["sh", str(REPO / "deploy/coturn/render-config.sh"), str(DEPLOY_CONF), str(tmp_path / "x.conf"), str(bad)],
        capture_output=True, text=True, timeout=10,
    )  # fmt: skip
    assert r.returncode != 0 and not (tmp_path / "x.conf").exists()
