"""`homing bootstrap ...` as a real process: init, run, admin actions on the running service, kill -9 durability."""

from __future__ import annotations

import os
import signal
import socket
import stat
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx2
import pytest

from node.protocol.identity import Identity, decode_document, id_text, parse_id
from node.protocol.nodelist import open_node_list
from tests.bootstrap.util import LAST_REGISTRY_KEY, MSGPACK, registration
from tests.helpers import fill_disk, homing_cmd, homing_env, killed_at_exit, run_homing, small_disk, wait_for_file

A = Identity.from_seed(b"a" * 32)


def init(data_dir: Path) -> bytes:
    out = run_homing("bootstrap", "init", "--data-dir", str(data_dir))
    assert out.returncode == 0, out.stderr
    key = parse_id(out.stdout.split()[-1])
    LAST_REGISTRY_KEY[0] = key  # registrations name their registry
    return key


@contextmanager
def running(data_dir: Path, *flags: str) -> Iterator[tuple[subprocess.Popen[str], str]]:
    (data_dir / "ports.json").unlink(missing_ok=True)
    proc = subprocess.Popen(
        homing_cmd("bootstrap", "run", "--data-dir", str(data_dir), "--listen", "127.0.0.1:0", *flags),
        env=homing_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        port = wait_for_file(data_dir / "ports.json")["http"]
        yield proc, f"http://127.0.0.1:{port}"
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=10)


def listed(base: str, key: bytes) -> set[bytes]:
    resp = httpx2.get(f"{base}/v1/nodes", timeout=10)
    assert resp.status_code == 200
    return {n.id for n in open_node_list(decode_document(resp.content), {key}, now=time.time()).nodes}


def post(base: str, body: bytes) -> int:
    return httpx2.post(f"{base}/v1/nodes", content=body, headers={"Content-Type": MSGPACK}, timeout=10).status_code


def admin(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return run_homing("bootstrap", "nodes", *args, "--data-dir", str(data_dir))


def test_init_prints_the_key_last_and_is_idempotent(tmp_path: Path) -> None:
    key = init(tmp_path / "d")
    assert stat.S_IMODE((tmp_path / "d" / "registry.key").stat().st_mode) == 0o600
    assert init(tmp_path / "d") == key


def test_usage_errors_exit_2_naming_the_flag(tmp_path: Path) -> None:
    out = run_homing("bootstrap", "run", "--data-dir", str(tmp_path / "none"))
    assert out.returncode == 2 and "--data-dir" in out.stderr and len(out.stderr.strip().splitlines()) == 1
    init(tmp_path / "d")
    out = run_homing("bootstrap", "run", "--data-dir", str(tmp_path / "d"), "--listen", "nope")
    assert out.returncode == 2 and "--listen" in out.stderr
    out = run_homing("bootstrap", "run", "--data-dir", str(tmp_path / "d"), "--approval", "maybe")
    assert out.returncode == 2 and "--approval" in out.stderr
    out = run_homing("bootstrap", "run", "--data-dir", str(tmp_path / "d"), "--tls-cert", "x.pem")
    assert out.returncode == 2 and "--tls-cert" in out.stderr
    out = admin(tmp_path / "d", "ban", "not-an-id")
    assert out.returncode == 2 and "ID" in out.stderr
    out = admin(tmp_path / "d", "remove", id_text(A.id))
    assert out.returncode == 1 and "no node" in out.stderr


def test_admin_actions_reach_the_running_service(tmp_path: Path) -> None:
    d = tmp_path / "d"
    key = init(d)
    with running(d, "--approval", "manual") as (proc, base):
        assert post(base, registration(A)) == 200
        assert listed(base, key) == set()
        out = admin(d, "list")
        assert out.returncode == 0 and id_text(A.id) in out.stdout and "pending" in out.stdout
        assert admin(d, "approve", id_text(A.id)).returncode == 0
        assert listed(base, key) == {A.id}
        assert admin(d, "ban", id_text(A.id)).returncode == 0
        assert listed(base, key) == set()
        assert post(base, registration(A, ts=int(time.time()) + 1)) == 403
        assert '"state": "banned"' in admin(d, "list", "--json").stdout
        assert admin(d, "remove", id_text(A.id)).returncode == 0
        assert id_text(A.id) not in admin(d, "list").stdout
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0


@pytest.mark.timeout(60)
def test_a_sigterm_the_moment_ports_json_appears_stops_the_registry_cleanly(tmp_path: Path) -> None:
    """ports.json is written while the registry starts: a SIGTERM then is caught (exit 0), not the default action.

    Polled every 0.2 ms (bounded at 20 s) so the signal lands right after the file does: on the code before, the
    handler was installed only after the start returned, and the registry died of the signal (exit -15)."""
    d = tmp_path / "d"
    init(d)
    ports = d / "ports.json"
    ports.unlink(missing_ok=True)
    cmd = homing_cmd("bootstrap", "run", "--data-dir", str(d), "--listen", "127.0.0.1:0")
    popen = subprocess.Popen(cmd, env=homing_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    with killed_at_exit(popen) as proc:
        deadline = time.monotonic() + 20
        while not ports.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.0002)
        assert ports.exists(), "the registry never wrote ports.json"
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=15)
    assert proc.returncode == 0, (out, err)
    assert "SIGTERM, stopping" in err, err


def test_a_port_in_use_is_one_line_naming_the_address(tmp_path: Path) -> None:
    """On the code before, this was a traceback of trio's exception groups (its `except OSError` never matched)."""
    d = tmp_path / "d"
    init(d)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        address = f"127.0.0.1:{taken.getsockname()[1]}"
        result = run_homing("bootstrap", "run", "--data-dir", str(d), "--listen", address, timeout=30)
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(f"homing: cannot listen on {address} (--listen): Address already in use"), last


def test_a_data_dir_that_cannot_be_written_is_a_config_error_naming_it(tmp_path: Path) -> None:
    """A file where the registry's directory should be: exit 2, one line. On the code before: a traceback."""
    blocker = tmp_path / "file"
    blocker.write_text("not a directory\n")
    for data_dir in (blocker, blocker / "below"):
        result = run_homing("bootstrap", "init", "--data-dir", str(data_dir))
        assert result.returncode == 2, result.stderr
        line = result.stderr.strip()
        assert line.startswith(f"homing: config error: --data-dir: {data_dir}: "), line
        assert "must be a directory that" in line, line


def test_a_second_registry_on_the_same_data_dir_is_refused_while_the_first_runs(tmp_path: Path) -> None:
    """Exit 1 naming the first's pid; the first keeps serving. On the code before, the second served too."""
    d = tmp_path / "d"
    key = init(d)
    with running(d) as (proc, base):
        second = run_homing("bootstrap", "run", "--data-dir", str(d), "--listen", "127.0.0.1:0", timeout=30)
        assert second.returncode == 1, second.stderr
        assert f"another homing registry (pid {proc.pid}) is running with the data dir {d}" in second.stderr
        assert listed(base, key) == set()


def test_kill_9_loses_no_acknowledged_registration(tmp_path: Path) -> None:
    d = tmp_path / "d"
    key = init(d)
    acked: list[bytes] = []
    stop = threading.Event()
    with running(d, "--write-rate", "100000", "--approval", "auto") as (proc, base):

        def register_many() -> None:
            with httpx2.Client(timeout=5) as client:
                for i in range(10_000):
                    if stop.is_set():
                        return
                    node = Identity.from_seed(i.to_bytes(4, "big") * 8)
                    try:
                        resp = client.post(
                            f"{base}/v1/nodes",
                            content=registration(node, port=10_000 + i % 50_000),
                            headers={"Content-Type": MSGPACK},
                        )
                    except httpx2.HTTPError:
                        return  # the server died mid-request: that one was not acknowledged
                    if resp.status_code == 200:
                        acked.append(node.id)

        writer = threading.Thread(target=register_many)
        writer.start()
        deadline = time.monotonic() + 20
        while len(acked) < 40 and time.monotonic() < deadline:
            time.sleep(0.01)
        os.kill(proc.pid, signal.SIGKILL)  # while registrations are in flight
        proc.wait(timeout=10)
        writer.join(timeout=10)
        stop.set()
    assert len(acked) >= 40
    with running(d) as (_, base):
        assert set(acked) <= listed(base, key)


@pytest.mark.parametrize("flag", ["--help"])
def test_help_lists_the_commands(flag: str) -> None:
    out = run_homing("bootstrap", flag)
    assert out.returncode == 0
    for word in ("init", "run", "nodes"):
        assert word in out.stdout


def test_a_node_id_starting_with_a_dash_is_an_id_not_an_option(tmp_path: Path) -> None:
    """One id in 64 starts with "-" (base64url); argparse took it for an unknown option (found walking the guide)."""
    init(tmp_path)
    node = next(i for i in (Identity.from_seed(bytes([n]) * 32) for n in range(256)) if id_text(i.id).startswith("-"))
    out = run_homing("bootstrap", "nodes", "ban", id_text(node.id), "--data-dir", str(tmp_path))
    assert out.returncode == 0, out.stderr
    listed = run_homing("bootstrap", "nodes", "list", "--data-dir", str(tmp_path), "--json")
    assert id_text(node.id) in listed.stdout and "banned" in listed.stdout


def test_init_in_an_existing_open_directory_makes_the_database_owner_only(tmp_path: Path) -> None:
    """`bootstrap init` into a data dir that already exists with mode 0755 (a systemd StateDirectory, a dir made by
    hand) under umask 022: the database holds the bridge distribution salt and every node's addresses, so it and
    SQLite's -wal and -shm files must not be readable by other local users. On the code before, the database was
    created 0644, like the umask gave it."""
    data = tmp_path / "open"
    data.mkdir(mode=0o755)
    old = os.umask(0o022)
    try:
        init(data)
        with running(data):  # the service opens it: the -wal and -shm files exist while it runs
            made = [p for p in data.iterdir() if p.name.startswith("registry.sqlite3")]
            assert {p.name for p in made} >= {"registry.sqlite3", "registry.sqlite3-wal", "registry.sqlite3-shm"}
            loose = {p.name: oct(stat.S_IMODE(p.stat().st_mode)) for p in made if p.stat().st_mode & 0o077}
            assert not loose, f"readable by others: {loose}"
    finally:
        os.umask(old)


@pytest.mark.timeout(90)
def test_a_full_disk_refuses_registrations_with_a_reason_and_they_are_taken_once_there_is_room(tmp_path: Path) -> None:
    """The registry's disk fills up while it runs: a registration gets 503 "registry storage full" (the node retries
    at its next heartbeat), the admin's log says `db_full`, the list already signed is still served, and nothing is
    half-written: once there is room, the same node registers. On the code before, the 503 said "registry database
    busy" and the log `db_busy`, which sent an admin looking for a lock."""
    with small_disk(tmp_path / "disk", 512) as disk:
        d = disk / "reg"
        key = init(d)
        B = Identity.from_seed(b"b" * 32)
        with running(d, "--approval", "auto") as (proc, base):
            assert post(base, registration(A)) == 200
            filler = fill_disk(disk)
            resp = httpx2.post(
                f"{base}/v1/nodes", content=registration(B), headers={"Content-Type": MSGPACK}, timeout=10
            )
            assert resp.status_code == 503, resp.text
            assert "registry storage full" in resp.text, resp.text
            assert listed(base, key) == {A.id}
            filler.unlink()
            assert post(base, registration(B, ts=int(time.time()) + 1)) == 200
            assert listed(base, key) == {A.id, B.id}
            proc.send_signal(signal.SIGTERM)
            _, err = proc.communicate(timeout=15)
    assert "event=db_full" in err, err
    assert "db_busy" not in err, err


@pytest.mark.timeout(60)
def test_a_full_disk_at_start_is_one_line_naming_the_file(tmp_path: Path) -> None:
    """On the code before: a traceback (OSError: [Errno 28] No space left on device)."""
    with small_disk(tmp_path / "disk", 128) as disk:
        d = disk / "reg"
        init(d)
        fill_disk(disk)
        result = run_homing("bootstrap", "run", "--data-dir", str(d), "--listen", "127.0.0.1:0", timeout=30)
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        f"homing: cannot write {d / 'lock'}: No space left on device (the disk is full: free space on it, then start "
        "again)"
    )


@pytest.mark.timeout(90)
def test_a_full_disk_when_the_database_opens_is_retried_not_called_a_bad_database(tmp_path: Path) -> None:
    """With the lock left from an earlier run (its block already there), the first write that fails is SQLite's, as
    it opens the database. Exit 1 (the systemd unit retries) with one line that says the disk may be full; once there
    is room, the registry starts on the same database. On the code before: "config error: ... not a usable registry
    database (disk I/O error)", exit 2, which the unit does not retry and which reads as if the file were damaged."""
    with small_disk(tmp_path / "disk", 256) as disk:
        d = disk / "reg"
        key = init(d)
        (d / "lock").write_text("12345\n")
        filler = fill_disk(disk)
        result = run_homing("bootstrap", "run", "--data-dir", str(d), "--listen", "127.0.0.1:0", timeout=30)
        assert result.returncode == 1, result.stderr
        assert "Traceback" not in result.stderr, result.stderr
        last = result.stderr.strip().splitlines()[-1]
        assert last.startswith(f"homing: cannot open the registry database {d / 'registry.sqlite3'}: "), last
        assert "free space on it and start again" in last, last
        filler.unlink()
        with running(d) as (_proc, base):
            assert listed(base, key) == set()
            assert post(base, registration(A)) == 200


@pytest.mark.timeout(60)
def test_a_hangup_stops_the_registry_cleanly(tmp_path: Path) -> None:
    """SIGHUP (the terminal of a registry run by hand closed): exit 0, as for SIGTERM. On the code before: killed by
    the signal's default action (exit -1)."""
    d = tmp_path / "d"
    init(d)
    with running(d) as (proc, base):
        assert httpx2.get(f"{base}/healthz", timeout=10).status_code == 200
        proc.send_signal(signal.SIGHUP)
        _, err = proc.communicate(timeout=15)
    assert proc.returncode == 0, err
    assert "SIGHUP, stopping" in err, err
