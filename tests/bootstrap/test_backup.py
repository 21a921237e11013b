"""`homing bootstrap backup` while the registry runs, then a registry restored from the copies serves the same list."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from tests.bootstrap.test_cli import A, init, listed, post, running
from tests.bootstrap.util import registration
from tests.helpers import run_homing


@pytest.mark.timeout(90)
def test_backup_while_running_then_restore_elsewhere(tmp_path: Path) -> None:
    old, copies, new = tmp_path / "old", tmp_path / "backup", tmp_path / "new"
    key = init(old)
    with running(old, "--approval", "auto") as (_, base):
        assert post(base, registration(A)) == 200
        out = run_homing("bootstrap", "backup", "--data-dir", str(old), "--to", str(copies))
        assert out.returncode == 0, out.stderr
    assert sorted(p.name for p in copies.iterdir()) == ["registry.key", "registry.sqlite3"]
    assert stat.S_IMODE((copies / "registry.key").stat().st_mode) == 0o600
    new.mkdir()
    for f in copies.iterdir():
        (new / f.name).write_bytes(f.read_bytes())
        (new / f.name).chmod(0o600)
    assert init(new) == key, "the restored registry signs with the same key"
    with running(new, "--approval", "auto") as (_, base):
        assert A.id in listed(base, key)


def test_backup_refuses_a_non_empty_target_and_a_missing_registry(tmp_path: Path) -> None:
    init(tmp_path / "reg")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    out = run_homing("bootstrap", "backup", "--data-dir", str(tmp_path / "reg"), "--to", str(tmp_path / "full"))
    assert out.returncode == 2 and "not empty" in out.stderr
    out = run_homing("bootstrap", "backup", "--data-dir", str(tmp_path / "none"), "--to", str(tmp_path / "b"))
    assert out.returncode == 2 and "does not exist" in out.stderr
