"""deploy/firewall/homing-turn.nft's output rule, for real: coturn's relay cannot reach the host's own UDP services.

Two network namespaces the test creates (as root; skipped elsewhere with the reason): "turn" holds coturn, running
as the `turnserver` user (`proc-user`), on a private test address, and a UDP echo (turnutils_peer) bound to that
same address on a port outside the relay range, standing for a VPS's DNS or SWIM port; "client" holds the TURN
client (turnutils_uclient), joined to it by a veth pair. Without the shipped rule the client reaches the echo
through its allocation; with it (loaded from the file, TURN_ADDR set to the test address) it does not, while two
allocations on the same server still relay to each other (`-y`: each sends to the other's relay address).
"""

from __future__ import annotations

import os
import random
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from node.protocol.turn import turn_credential, turn_username
from tests.helpers import stop_process, wait_for_log_line
from tests.turn.test_coturn import relayed

REPO = Path(__file__).resolve().parents[2]
RULES = REPO / "deploy" / "firewall" / "homing-turn.nft"
SECRET = "netns-test-secret-0123456789"
TOOLS = ("ip", "nft", "turnserver", "turnutils_uclient", "turnutils_peer")
RUN_S = 20
ECHO_PORT = 5353  # a service's port on the TURN's own address, outside the relay range

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root to create network namespaces (CI runs as root)"),
    pytest.mark.skipif(
        any(shutil.which(t) is None for t in TOOLS), reason=f"needs {', '.join(TOOLS)} (tests/run installs coturn)"
    ),
]


def sh(
    *args: str, ns: str | None = None, check: bool = True, timeout: float = RUN_S
) -> subprocess.CompletedProcess[str]:
    cmd = (["ip", "netns", "exec", ns] if ns else []) + list(args)
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=check)


@contextmanager
def namespaces() -> Iterator[tuple[str, str, str, str]]:
    """(turn ns, client ns, turn address, client address): two namespaces joined by a veth pair."""
    tag = f"{os.getpid() % 10000}{random.randrange(100)}"
    turn, client = f"hm-turn-{tag}", f"hm-cli-{tag}"
    net = random.randrange(0, 250)
    turn_addr, client_addr = f"10.231.{net}.1", f"10.231.{net}.2"
    made: list[str] = []
    try:
        for ns in (turn, client):
            r = sh("ip", "netns", "add", ns, check=False)
            if r.returncode != 0:
                pytest.skip(f"cannot create a network namespace here: {r.stderr.strip()}")
            made.append(ns)
            sh("ip", "link", "set", "lo", "up", ns=ns)
        sh("ip", "link", "add", "veth-t", "netns", turn, "type", "veth", "peer", "name", "veth-c", "netns", client)
        sh("ip", "addr", "add", f"{turn_addr}/24", "dev", "veth-t", ns=turn)
        sh("ip", "addr", "add", f"{client_addr}/24", "dev", "veth-c", ns=client)
        sh("ip", "link", "set", "veth-t", "up", ns=turn)
        sh("ip", "link", "set", "veth-c", "up", ns=client)
        yield turn, client, turn_addr, client_addr
    finally:
        for ns in made:
            sh("ip", "netns", "del", ns, check=False)


@contextmanager
def process(args: list[str], ns: str) -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(
        ["ip", "netns", "exec", ns, *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )  # fmt: skip
    try:
        yield proc
    finally:
        stop_process(proc)


@contextmanager
def coturn(tmp: Path, ns: str, addr: str) -> Iterator[Path]:
    """turnserver in `ns` on `addr`, relaying from 49152-49199 (inside the shipped rule's range), as `turnserver`."""
    log, conf = tmp / "turn.log", tmp / "turn.conf"
    conf.write_text(
        "\n".join(
            [
                f"listening-ip={addr}",
                f"relay-ip={addr}",
                "listening-port=3478",
                "min-port=49152",
                "max-port=49199",
                "realm=test.homing",
                "use-auth-secret",
                f"static-auth-secret={SECRET}",
                "no-multicast-peers",
                "no-tls",
                "no-dtls",
                "no-cli",
                "no-rfc5780",
                "proc-user=turnserver",
                "proc-group=turnserver",
                f"log-file={log}",
                "simple-log",
                f"pidfile={tmp / 'turn.pid'}",
                f"userdb={tmp / 'turn.db'}",
            ]
        )
        + "\n"
    )
    with process(["turnserver", "-c", str(conf)], ns) as proc:
        wait_for_log_line(log, "Total General servers", proc, "turnserver")
        yield log


def uclient(ns: str, server: str, *extra: str, timeout: float = RUN_S) -> str:
    """turnutils_uclient from `ns`: allocate and relay 3 packets; its output ("" when it waited past `timeout` for
    answers that did not come)."""
    username = turn_username(int(time.time()) + 600, os.urandom(32))
    credential = turn_credential(SECRET.encode(), username)
    try:
        r = sh("turnutils_uclient", "-u", username, "-w", credential, "-n", "3", "-m", "1", "-l", "100", "-z", "5",
               "-p", "3478", *extra, server, ns=ns, check=False, timeout=timeout)  # fmt: skip
    except subprocess.TimeoutExpired:
        return ""
    return r.stdout + r.stderr


def listening(ns: str, port: int) -> None:
    """Wait (at most 5 s) until a UDP socket in `ns` is bound to `port`."""
    deadline = time.monotonic() + 5
    while not sh("ss", "-Hlun", f"sport = :{port}", ns=ns).stdout.strip():
        assert time.monotonic() < deadline, f"nothing listens on udp/{port} in {ns}"
        time.sleep(0.05)


def shipped_rules(turn_addr: str) -> str:
    text = RULES.read_text()
    assert re.search(r"^define TURN_ADDR = ", text, re.M), "homing-turn.nft defines TURN_ADDR"
    return re.sub(r"^define TURN_ADDR = .*$", f"define TURN_ADDR = {turn_addr}", text, flags=re.M)


def test_the_shipped_output_rule_keeps_the_relay_off_the_hosts_own_udp_services(tmp_path: Path) -> None:
    tmp_path.chmod(0o755)  # coturn writes its log after it drops to the turnserver user
    with (
        namespaces() as (turn, client, turn_addr, _client_addr),
        coturn(tmp_path, turn, turn_addr),
        process(["turnutils_peer", "-L", turn_addr, "-p", str(ECHO_PORT)], turn),
    ):
        listening(turn, ECHO_PORT)
        to_service = ("-e", turn_addr, "-r", str(ECHO_PORT))
        # control: without the rule the relay reaches the echo on the TURN's own address (the gap)
        before = uclient(client, turn_addr, *to_service)
        assert relayed(before), before[-2000:]
        r = subprocess.run(["ip", "netns", "exec", turn, "nft", "-f", "-"], input=shipped_rules(turn_addr),
                           capture_output=True, text=True, timeout=RUN_S)  # fmt: skip
        assert r.returncode == 0, r.stderr
        after = uclient(client, turn_addr, *to_service, timeout=3)  # the control took about 1 s
        assert not relayed(after), f"the relay still reaches the host's own UDP service: {after[-2000:]}"
        # two allocations on the same server still relay to each other (both relay ports are in the range)
        both = uclient(client, turn_addr, "-y")
        assert relayed(both), both[-2000:]
