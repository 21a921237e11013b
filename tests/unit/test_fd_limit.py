"""`homing node run` raises its soft open-file limit toward [clients] connections_max, and says at start what would
keep it from holding that many phones (node/cli/node.py; docs/operations.md, "How many phones one node holds")."""

from __future__ import annotations

import resource
import subprocess
import sys
from pathlib import Path

import attrs
import pytest

from node.app.config import NodeConfig
from node.cli.node import FDS_BESIDES_CLIENTS, capacity_warnings
from tests.helpers import REPO, homing_cmd, homing_env, wait_for_file

PROBE = """
import resource
from node.cli.node import raise_fd_limit
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))
got = raise_fd_limit(5000)
now = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
assert got == now, (got, now)
print(now)
"""


def test_the_soft_limit_is_raised_to_connections_max_plus_a_margin_within_the_hard_limit() -> None:
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    out = subprocess.run([sys.executable, "-c", PROBE], cwd=REPO, env=homing_env(), capture_output=True, text=True,
                         timeout=30, check=True)  # fmt: skip
    want = 5000 + 1024
    assert int(out.stdout) == (want if hard == resource.RLIM_INFINITY else min(want, hard))


def _config(connections_max: int = 10_000, leases_per_home_max: int = 20_000) -> NodeConfig:
    c = NodeConfig()
    return attrs.evolve(
        c,
        clients=attrs.evolve(c.clients, connections_max=connections_max),
        relay=attrs.evolve(c.relay, leases_per_home_max=leases_per_home_max),
    )


def test_the_defaults_under_a_sufficient_or_unlimited_limit_warn_of_nothing() -> None:
    assert capacity_warnings(_config(), 10_000 + FDS_BESIDES_CLIENTS) == []
    assert capacity_warnings(_config(), -1) == []


def test_an_open_file_limit_below_connections_max_is_named_with_what_it_holds() -> None:
    [(event, fields)] = capacity_warnings(_config(), 4096)
    assert event == "open_file_limit_low"
    assert fields["clients_held_at_most"] == 4096 - FDS_BESIDES_CLIENTS
    assert fields["connections_max"] == 10_000
    assert "11024" in str(fields["fix"])


def test_connections_max_above_the_lease_share_of_other_nodes_is_named() -> None:
    events = dict(capacity_warnings(_config(connections_max=30_000), -1))
    assert set(events) == {"connections_max_above_lease_share"}
    assert events["connections_max_above_lease_share"]["leases_per_home_max"] == 20_000
    assert capacity_warnings(_config(connections_max=30_000, leases_per_home_max=30_000), -1) == []


@pytest.mark.timeout(60)
def test_a_node_started_under_a_low_hard_limit_logs_both_warnings(tmp_path: Path) -> None:
    cfg = tmp_path / "node.toml"
    cfg.write_text("[clients]\nconnections_max = 30000\n")
    data = tmp_path / "node"
    log_path = tmp_path / "node.log"

    def low_hard_limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (2048, 2048))

    args = ["node", "run", "--config", str(cfg), "--data-dir", str(data)]
    for flag in ("--ws", "--swim", "--peer", "--metrics"):
        args += [flag, "127.0.0.1:0"]
    with log_path.open("w") as log:
        proc = subprocess.Popen(homing_cmd(*args), env=homing_env(), stdout=log, stderr=subprocess.STDOUT,
                                preexec_fn=low_hard_limit)  # fmt: skip
        try:
            wait_for_file(data / "ports.json", timeout=30)  # serving: the warnings did not stop it
        finally:
            proc.kill()
            proc.wait(10)
    text = log_path.read_text()
    assert "open_file_limit_low" in text and "clients_held_at_most=1024" in text, text
    assert "connections_max_above_lease_share" in text, text
