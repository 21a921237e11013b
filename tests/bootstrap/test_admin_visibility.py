"""Issue #19 points 2 and 4: approval is visible (registry log, audit trail, `nodes list`, the node's own log) and
admin CLI errors are one line with the right advice. Real processes; stdout/stderr read line by line."""

from __future__ import annotations

import getpass
import logging
import os
import random
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import trio

from bootstrap.registry import Policy
from bootstrap.store import Store
from node.app.registry import Result, register_forever
from node.protocol.identity import Identity, id_text
from tests.bootstrap.test_cli import admin, init, post, running
from tests.bootstrap.util import init_registry, make_config, registration, running_registry
from tests.helpers import REPO, homing_cmd, homing_env

A = Identity.from_seed(b"v" * 32)


def test_pending_is_logged_admin_actions_are_audited_and_listed(tmp_path: Path) -> None:
    d = tmp_path / "d"
    init(d)
    with running(d) as (proc, base):  # manual approval: the default
        assert post(base, registration(A)) == 200
        out = admin(d, "list")
        row = next(line for line in out.stdout.splitlines() if id_text(A.id) in line)
        assert "pending" in row and "s ago" in row and "HEARTBEAT" in out.stdout
        assert admin(d, "approve", id_text(A.id)).returncode == 0
        assert admin(d, "ban", id_text(A.id)).returncode == 0
        post(base, registration(A, ts=int(time.time()) + 1))  # the next request shows the service the change
        proc.terminate()
        _, err = proc.communicate(timeout=10)
    assert any("event=node_pending" in line and id_text(A.id)[:8] in line for line in err.splitlines()), err
    for action in ("approve", "ban"):
        assert any(f"event=admin_action action={action}" in line and f"who={getpass.getuser()}" in line
                   for line in err.splitlines()), err  # fmt: skip
    audit = admin(d, "audit").stdout.splitlines()
    assert [line.split()[1:3] for line in audit] == [["api", "pending"], [getpass.getuser(), "approve"],
                                                      [getpass.getuser(), "ban"]]  # fmt: skip
    assert all(id_text(A.id) in line for line in audit)


def test_without_data_dir_the_error_says_where_it_looked_and_suggests_data_dir(tmp_path: Path) -> None:
    env = homing_env(XDG_DATA_HOME=str(tmp_path / "xdg"))
    out = subprocess.run(homing_cmd("bootstrap", "nodes", "list"), env=env, capture_output=True, text=True, timeout=60)
    lines = out.stderr.strip().splitlines()
    assert out.returncode == 2 and len(lines) == 1, out.stderr
    assert str(tmp_path / "xdg" / "homing-bootstrap" / "registry.sqlite3") in lines[0]
    assert "--data-dir" in lines[0] and "bootstrap init" not in lines[0]


def _as_unprivileged(*args: str) -> subprocess.CompletedProcess[str]:
    """`homing ...` without root's power over files: as root, in a new user namespace (`unshare -U`), where
    permission bits hold for it as for anyone (the admin who is not the registry's user)."""
    cmd = homing_cmd(*args)
    if os.geteuid() == 0:
        if shutil.which("unshare") is None:
            pytest.skip("needs unshare(1) to drop root's file powers")
        cmd = ["unshare", "-U", *cmd]
    return subprocess.run(cmd, env=homing_env(), capture_output=True, text=True, timeout=60, cwd=REPO)


@pytest.mark.parametrize("mode", ["unreadable dir", "read-only database"])
def test_a_permission_error_is_one_line(tmp_path: Path, mode: str) -> None:
    d = tmp_path / "d"
    init(d)
    commands = [("approve", id_text(A.id))] if mode == "read-only database" else [("list",), ("approve", id_text(A.id))]
    if mode == "unreadable dir":
        d.chmod(0o000)
    else:
        (d / "registry.sqlite3").chmod(0o444)
        d.chmod(0o555)
    try:
        for args in commands:
            out = _as_unprivileged("bootstrap", "nodes", *args, "--data-dir", str(d))
            if out.returncode == 0 and os.geteuid() == 0 and "unshare" in out.stderr:
                pytest.skip("user namespaces are not available here")
            lines = out.stderr.strip().splitlines()
            assert out.returncode != 0 and len(lines) == 1, out.stderr
            assert "permission denied" in lines[0] and "Traceback" not in out.stderr
    finally:
        d.chmod(0o700)
        (d / "registry.sqlite3").chmod(0o644)


def test_the_node_logs_when_it_is_approved(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    registry = init_registry(tmp_path)
    results: list[Result] = []
    caplog.set_level(logging.INFO, logger="homing.registry_client")

    async def main() -> None:
        with trio.fail_after(20):
            config = make_config(tmp_path, policy=Policy(approval="manual", ttl_min_s=1))
            async with running_registry(config) as base, trio.open_nursery() as nursery:
                await nursery.start(
                    lambda task_status: register_forever(
                        A, [base], ws="wss://a.example/v1/client", swim="127.0.0.1:7401", peer="127.0.0.1:7402",
                        ttl_s=2, heartbeat_s=0.3, rng=random.Random(1), on_result=results.append,
                        trust=frozenset([registry.id]), task_status=task_status,
                    )
                )  # fmt: skip
                while not results:
                    await trio.sleep(0.05)
                assert results[0].status == "pending"
                Store.open(tmp_path).set_approved(A.id, time.time(), who="test")
                while results[-1].status != "approved":
                    await trio.sleep(0.05)
                nursery.cancel_scope.cancel()

    trio.run(main)
    lines = [r.getMessage() for r in caplog.records]
    assert any("event=registration_status" in m and "status=approved previous=pending" in m for m in lines), lines


def test_a_node_does_not_register_with_a_registry_whose_key_it_does_not_trust(tmp_path: Path) -> None:
    init_registry(tmp_path)
    results: list[Result] = []

    async def main() -> None:
        with trio.fail_after(20):
            async with running_registry(make_config(tmp_path)) as base, trio.open_nursery() as nursery:
                await nursery.start(
                    lambda task_status: register_forever(
                        A, [base], ws="wss://a.example/v1/client", swim="127.0.0.1:7401", peer="127.0.0.1:7402",
                        ttl_s=2, heartbeat_s=0.3, rng=random.Random(1), on_result=results.append,
                        trust=frozenset([Identity.generate().id]), task_status=task_status,
                    )
                )  # fmt: skip
                while not results:
                    await trio.sleep(0.05)
                nursery.cancel_scope.cancel()
        assert not results[0].ok and "not trusted" in results[0].reason

    trio.run(main)
    assert Store.open(tmp_path).get(A.id) is None


def test_a_bad_trusted_proxy_is_one_line_naming_the_flag(tmp_path: Path) -> None:
    d = tmp_path / "d"
    init(d)
    out = subprocess.run(homing_cmd("bootstrap", "run", "--data-dir", str(d), "--trusted-proxy", "nope"),
                         env=homing_env(), capture_output=True, text=True, timeout=60)  # fmt: skip
    lines = out.stderr.strip().splitlines()
    assert out.returncode == 2 and len(lines) == 1 and "--trusted-proxy" in lines[0], out.stderr
