"""Issue #19 points 2 and 9 (node side): a node shows its registration state and last heartbeat per registry in
`homing node status` and /metrics; `homing bootstrap nodes list` flags a node that is listed but not federated;
`/v1/clients` and `homing node status --clients` count connections per address range. Real processes on 127.0.0.1."""

from __future__ import annotations

import json
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

from node.app.ops import range_counts
from node.protocol.identity import Identity, id_text
from tests.bootstrap.test_cli import admin, init, running
from tests.helpers import homing_cmd, homing_env, run_homing, wait_for_file
from tests.integration.procs import wait_for

WRONG_KEY = id_text(Identity.from_seed(b"w" * 32).id)


def approve(reg_dir: Path, node_id: str) -> None:
    """`homing bootstrap nodes approve` with the id after `--` (one id in 64 starts with `-`)."""
    out = run_homing("bootstrap", "nodes", "approve", "--data-dir", str(reg_dir), "--", node_id)
    assert out.returncode == 0, out.stderr


class Node:
    """`homing node run` with its own TOML (heartbeat every second) and flags; no `--open`."""

    def __init__(self, tmp: Path, name: str, *flags: str, toml: str = "") -> None:
        self.dir = tmp / name
        self.dir.mkdir(parents=True, exist_ok=True)  # exists when a node is started again
        (self.dir / "homing-node.toml").write_text("[federation]\nheartbeat_s = 1.0\n" + toml)
        args = ["node", "run", "--data-dir", str(self.dir), "--preset", "local"]
        for flag in ("--ws", "--swim", "--peer", "--metrics"):
            args += [flag, "127.0.0.1:0"]
        self.log = (tmp / f"{name}.log").open("a")
        self.proc = subprocess.Popen(
            homing_cmd(*args, *flags), env=homing_env(), stdout=self.log, stderr=subprocess.STDOUT
        )
        self.ports: dict[str, int] = wait_for_file(self.dir / "ports.json", timeout=20)
        self.id = self.get("/v1/members")["self"]

    def get(self, path: str) -> Any:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.ports['metrics']}{path}", timeout=5) as resp:
            raw = resp.read()
        return raw.decode() if path == "/metrics" else json.loads(raw)

    def registration(self) -> dict[str, Any]:
        regs = self.get("/v1/members")["registrations"]
        assert len(regs) == 1, regs
        return dict(regs[0])

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.log.close()


@contextmanager
def nodes(tmp: Path, specs: dict[str, tuple[str, ...]]) -> Iterator[dict[str, Node]]:
    with ExitStack() as stack:
        out = {}
        for name, flags in specs.items():
            out[name] = Node(tmp, name, *flags)
            stack.callback(out[name].stop)
        yield out


def test_registration_state_heartbeat_and_the_not_federated_flag(tmp_path: Path) -> None:
    reg_dir = tmp_path / "registry"
    key = id_text(init(reg_dir))
    with running(reg_dir, "--write-rate", "50") as (_proc, base):  # four nodes heartbeat every second
        specs = {
            "a": ("--bootstrap", base, "--trust", key),
            "b": ("--bootstrap", base, "--trust", key),
            "lonely": ("--bootstrap", base),  # no --trust: registers, but admits no one
            "wrong": ("--bootstrap", base, "--trust", WRONG_KEY),  # will not register with an untrusted registry
        }
        with nodes(tmp_path, specs) as n:
            wait_for(lambda: n["a"].registration()["state"] == "pending", 20, "a pending")
            metrics = n["a"].get("/metrics")
            assert f'homing_registration_state{{registry="{base}",state="pending"}} 1.0' in metrics
            assert f'homing_registration_state{{registry="{base}",state="approved"}} 0.0' in metrics
            out = run_homing("node", "status", "--data-dir", str(n["a"].dir))
            assert f"registry {base}: pending" in out.stdout, out.stdout
            wait_for(lambda: n["wrong"].registration()["state"] == "untrusted", 20, "the wrong-key node untrusted")
            assert "registry key not learnt" in n["wrong"].registration()["reason"]
            out = run_homing("node", "status", "--data-dir", str(n["wrong"].dir))
            assert f"registry {base}: untrusted (registry key not learnt" in out.stdout, out.stdout
            for name in ("a", "b", "lonely"):
                approve(reg_dir, n[name].id)
            wait_for(lambda: n["a"].registration()["state"] == "approved", 20, "a approved")
            last = n["a"].registration()["last_success"]
            assert isinstance(last, int) and abs(last - time.time()) < 10
            assert f'homing_registration_last_success_timestamp_seconds{{registry="{base}"}} ' in n["a"].get("/metrics")
            # a heartbeat that times out on a loaded machine shows as "unreachable" until the next one succeeds
            # (CI saw it once with other test runs on the machine): the line is checked once it says approved
            approved_line = f"registry {base}: approved; last successful heartbeat 20"
            wait_for(
                lambda: approved_line in run_homing("node", "status", "--data-dir", str(n["a"].dir)).stdout,
                20,
                "`homing node status` saying approved",
            )

            def flagged() -> dict[str, Any]:
                doc = json.loads(admin(reg_dir, "list", "--json").stdout)
                return {row["id"]: row["federated"] for row in doc["nodes"]}

            # a and b find each other through the list; `lonely` is listed but refuses everyone
            wait_for(lambda: flagged() == {n["a"].id: True, n["b"].id: True, n["lonely"].id: False}, 30, "flags")
            table = admin(reg_dir, "list").stdout
            row = next(line for line in table.splitlines() if n["lonely"].id in line)
            assert "NOT FEDERATED" in row and "1 listed but not federated" in table
            assert not any("NOT FEDERATED" in line for line in table.splitlines() if n["a"].id in line)


def test_client_connections_are_counted_per_address_range(tmp_path: Path) -> None:
    toml = '[clients]\ntrusted_proxies = ["127.0.0.1"]\n'
    node = Node(tmp_path, "n", "--open", toml=toml)
    socks: list[socket.socket] = []
    try:
        for forwarded in ("203.0.113.5", "203.0.113.77", "198.51.100.1", "2001:db8:1:2::1", "2001:db8:1:3::9"):
            s = socket.create_connection(("127.0.0.1", node.ports["ws"]), timeout=5)
            s.sendall(
                b"GET /v1/client HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
                b"X-Forwarded-For: " + forwarded.encode() + b"\r\n\r\n"
            )
            assert b"101" in s.recv(4096).split(b"\r\n")[0]
            socks.append(s)
        want = [
            {"prefix": "2001:db8:1::/48", "connections": 2},
            {"prefix": "203.0.113.0/24", "connections": 2},
            {"prefix": "198.51.100.0/24", "connections": 1},
        ]
        wait_for(lambda: node.get("/v1/clients")["ranges"] == want, 10, "ranges")
        out = run_homing("node", "status", "--data-dir", str(node.dir), "--clients")
        assert out.returncode == 0, out.stderr
        assert "203.0.113.0/24" in out.stdout and "2001:db8:1::/48" in out.stdout
        assert "203.0.113.5" not in out.stdout, "no single address is shown"
        assert "5 connection(s) from 3 range(s)" in out.stdout
    finally:
        for s in socks:
            s.close()
        node.stop()


def test_range_counts_keep_the_largest_fifty() -> None:
    per_address = {f"10.{i}.0.1": i + 1 for i in range(60)}
    doc = range_counts(per_address)
    assert len(doc["ranges"]) == 50 and doc["ranges_total"] == 60
    assert doc["ranges"][0] == {"prefix": "10.59.0.0/24", "connections": 60}
    assert doc["connections"] == sum(per_address.values())


def test_registration_metrics_follow_results_and_never_grow_labels() -> None:
    from node.app.promtext import Registry
    from node.app.registration import RegistrationStatus
    from node.app.registry import Result

    reg = Registry()
    status = RegistrationStatus(["https://r.example"], reg, wall_clock=lambda: 1234.0)
    status.on_result(Result(url="https://r.example", http_status=200, status="pending"))
    status.on_result(Result(url="https://elsewhere.example", http_status=200, status="approved"))
    text = reg.render().decode()
    assert 'homing_registration_state{registry="https://r.example",state="pending"} 1.0' in text
    assert 'homing_registration_last_success_timestamp_seconds{registry="https://r.example"} 1234.0' in text
    assert "elsewhere" not in text, "only configured registries become label values"
    status.on_result(Result(url="https://r.example", http_status=403, reason="banned"))
    text = reg.render().decode()
    assert 'state="banned"} 1.0' in text and 'state="pending"} 0.0' in text
    assert status.document()[0] == {"registry": "https://r.example", "state": "banned", "last_success": 1234,
                                    "last_attempt": 1234, "reason": "banned"}  # fmt: skip
