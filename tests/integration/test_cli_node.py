"""`homing node init|run|status` as an operator uses them."""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import pytest

from node.protocol.identity import parse_id
from tests.helpers import fill_disk, homing_cmd, homing_env, killed_at_exit, run_homing, small_disk, wait_for_file

# every port of `homing node run` on a free loopback port (flag, value, ...)
FREE_PORTS = ["--ws", "127.0.0.1:0", "--swim", "127.0.0.1:0", "--peer", "127.0.0.1:0", "--metrics", "127.0.0.1:0"]


def test_init_creates_key_and_commented_config(tmp_path: Path) -> None:
    d = tmp_path / "node"
    result = run_homing("node", "init", "--data-dir", str(d))
    assert result.returncode == 0, result.stderr
    node_id = result.stdout.split()[-1]
    assert len(parse_id(node_id)) == 32
    assert stat.S_IMODE((d / "node.key").stat().st_mode) == 0o600
    text = (d / "homing-node.toml").read_text()
    assert text.count("# ") > 20, "every setting is commented"
    parsed = tomllib.loads(text)
    assert parsed["relay"]["mailbox_ttl"] == 60.0
    again = run_homing("node", "init", "--data-dir", str(d))
    assert again.stdout.split()[-1] == node_id, "init keeps an existing identity"


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--ws", "nonsense"], "--ws"),
        (["--swim", "127.0.0.1:99999"], "--swim"),
        (["--trust", "not-a-key"], "federation.trust"),
        (["--join", "nohost"], "federation.join"),
    ],
)
def test_bad_flags_exit_2_naming_the_flag(tmp_path: Path, args: list[str], needle: str) -> None:
    result = run_homing("node", "run", "--data-dir", str(tmp_path), *args, timeout=30)
    assert result.returncode == 2
    assert needle in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_bad_toml_value_exits_2_naming_the_key(tmp_path: Path) -> None:
    cfg = tmp_path / "bad.toml"
    cfg.write_text("[swim]\nprobe_interval_s = -1\n")
    result = run_homing("node", "run", "--config", str(cfg), "--data-dir", str(tmp_path), timeout=30)
    assert result.returncode == 2
    assert "swim.probe_interval_s" in result.stderr
    cfg.write_text("[relay]\nmailbox_tll = 5\n")
    result = run_homing("node", "run", "--config", str(cfg), "--data-dir", str(tmp_path), timeout=30)
    assert result.returncode == 2
    assert "relay.mailbox_tll" in result.stderr


@pytest.mark.timeout(60)
def test_run_with_no_arguments_then_status_and_sigterm(tmp_path: Path) -> None:
    """No flags at all: identity in the user's data dir, loopback defaults (docs/operations.md ports)."""
    env = homing_env(XDG_DATA_HOME=str(tmp_path / "xdg"), HOME=str(tmp_path))
    popen = subprocess.Popen(
        homing_cmd("node", "run"), env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    with killed_at_exit(popen) as proc:
        data_dir = tmp_path / "xdg" / "homing"
        try:
            ports = wait_for_file(data_dir / "ports.json", timeout=20)
        except TimeoutError:
            proc.kill()
            out = proc.communicate(timeout=5)[0]
            if "Address already in use" in out:
                pytest.skip("a default port (7400-7403) is taken on this machine")
            raise
        assert ports == {"ws": ports["ws"], "swim": 7401, "peer": 7402, "metrics": 7403}
        status = subprocess.run(homing_cmd("node", "status"), env=env, capture_output=True, text=True, timeout=20)
        assert status.returncode == 0, status.stderr
        assert "alive" in status.stdout and "(self)" in status.stdout
        raw = subprocess.run(
            homing_cmd("node", "status", "--json"), env=env, capture_output=True, text=True, timeout=20
        )
        doc = json.loads(raw.stdout)
        assert [m["state"] for m in doc["members"]] == ["alive"]
        assert doc["members"][0]["id"] == doc["self"]
        os.kill(proc.pid, signal.SIGTERM)
        assert proc.wait(10) == 0


@pytest.mark.timeout(60)
@pytest.mark.parametrize("flag", ["--ws", "--swim", "--peer", "--metrics"])
def test_a_port_in_use_is_one_line_naming_the_address_and_the_setting(tmp_path: Path, flag: str) -> None:
    """Another process holds the port: exit 1 with one line that names the address, the setting and what to do.

    On the code before, the OSError came out of trio's nurseries as a traceback of exception groups."""
    kind = socket.SOCK_DGRAM if flag == "--swim" else socket.SOCK_STREAM
    with socket.socket(socket.AF_INET, kind) as taken:
        taken.bind(("127.0.0.1", 0))
        if kind == socket.SOCK_STREAM:
            taken.listen()
        address = f"127.0.0.1:{taken.getsockname()[1]}"
        ports = list(FREE_PORTS)
        ports[ports.index(flag) + 1] = address  # this flag's value: the taken port
        args = ["node", "run", "--data-dir", str(tmp_path / "node"), "--open", "--preset", "local"]
        result = run_homing(*args, *ports, timeout=30)
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    setting = f"node.{flag.removeprefix('--')}, {flag}"
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(f"homing: cannot listen on {address} ({setting}): "), last
    assert "another process holds it" in last, last


@pytest.mark.parametrize("command", ["init", "run"])
def test_a_data_dir_that_cannot_be_written_is_a_config_error_naming_it(tmp_path: Path, command: str) -> None:
    """A data dir the node cannot create files in: exit 2 (not retried by systemd) with one line naming the setting
    and the path. A file where the directory should be fails as an unwritable directory does, even as root (which
    may write anywhere else). On the code before: a traceback (FileExistsError, NotADirectoryError)."""
    blocker = tmp_path / "file"
    blocker.write_text("not a directory\n")
    for data_dir in (blocker, blocker / "below"):
        args = ["node", command, "--data-dir", str(data_dir)]
        if command == "run":
            args += FREE_PORTS
        result = run_homing(*args, timeout=30)
        assert result.returncode == 2, result.stderr
        assert "Traceback" not in result.stderr, result.stderr
        line = result.stderr.strip()
        assert line.startswith(f"homing: config error: node.data_dir, --data-dir: {data_dir}: "), line
        assert "must be a directory that" in line, line


def _quiet_node(args: list[str]) -> subprocess.Popen[str]:
    return subprocess.Popen(homing_cmd(*args), env=homing_env(), stderr=subprocess.DEVNULL, text=True)


@pytest.mark.timeout(60)
def test_a_second_node_on_the_same_data_dir_is_refused_while_the_first_runs(tmp_path: Path) -> None:
    """Two processes with one data dir would be one key, one member, to the federation (and the second overwrote
    ports.json): the second exits 1 naming the first's pid, and binds nothing. Once the first has stopped, a node
    starts there again (the lock ends with its process). On the code before, the second ran."""
    d = tmp_path / "node"
    args = ["node", "run", "--data-dir", str(d), "--open", "--preset", "local", *FREE_PORTS]
    with killed_at_exit(_quiet_node(args)) as first:
        ports = wait_for_file(d / "ports.json", timeout=20)
        second = run_homing(*args, timeout=30)
        assert second.returncode == 1, second.stderr
        line = second.stderr.strip()
        assert line == (
            f"homing: another homing node (pid {first.pid}) is running with the data dir {d}: stop it first, "
            "or give this one its own --data-dir"
        ), line
        assert wait_for_file(d / "ports.json") == ports, "the refused node wrote nothing"
        first.send_signal(signal.SIGTERM)
        assert first.wait(15) == 0
    (d / "ports.json").unlink()
    with killed_at_exit(_quiet_node(args)) as again:
        wait_for_file(d / "ports.json", timeout=20)
        again.send_signal(signal.SIGTERM)
        assert again.wait(15) == 0


def test_status_of_unreachable_node_exits_1(tmp_path: Path) -> None:
    result = run_homing("node", "status", "--metrics", "127.0.0.1:1", timeout=30)
    assert result.returncode == 1
    assert "cannot reach" in result.stderr


def test_status_unreachable_says_where_it_looked_and_how_to_point_it(tmp_path: Path) -> None:
    result = run_homing("node", "status", "--metrics", "127.0.0.1:1", timeout=30)
    assert result.returncode == 1
    line = result.stderr.strip()
    assert len(line.splitlines()) == 1 and "127.0.0.1:1" in line and "--metrics" in line and "--data-dir" in line


@pytest.mark.timeout(60)
def test_status_with_data_dir_uses_the_configured_metrics_address(tmp_path: Path) -> None:
    """[node] metrics on a private address (here 127.0.0.3) is the normal case: --data-dir must find it."""
    d = tmp_path / "node"
    assert run_homing("node", "init", "--data-dir", str(d)).returncode == 0
    toml = d / "homing-node.toml"
    text = toml.read_text()
    for key, value in (
        ("ws", "127.0.0.1:0"),
        ("swim", "127.0.0.1:0"),
        ("peer", "127.0.0.1:0"),
        ("metrics", "127.0.0.3:0"),
    ):
        text = text.replace(
            f'{key} = "127.0.0.1:{ {"ws": 7400, "swim": 7401, "peer": 7402, "metrics": 7403}[key] }"',
            f'{key} = "{value}"',
        )
    toml.write_text(text)
    assert 'metrics = "127.0.0.3:0"' in text
    proc = subprocess.Popen(
        homing_cmd("node", "run", "--data-dir", str(d), "--open"), env=homing_env(), stderr=subprocess.PIPE, text=True
    )
    try:
        wait_for_file(d / "ports.json", timeout=20)
        status = run_homing("node", "status", "--data-dir", str(d), timeout=20)
        assert status.returncode == 0, status.stderr
        assert "(self)" in status.stdout
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(15)


def _json_logging_node(data_dir: Path, preset: str = "local") -> subprocess.Popen[str]:
    """`homing node run --log-json` on free loopback ports, its stderr piped."""
    args = ["node", "run", "--data-dir", str(data_dir), "--open", "--log-json", "--preset", preset]
    args += FREE_PORTS
    return subprocess.Popen(homing_cmd(*args), env=homing_env(), stderr=subprocess.PIPE, text=True)


@pytest.mark.timeout(60)
def test_log_json_is_one_json_object_per_line_to_a_clean_leave(tmp_path: Path) -> None:
    """--log-json: every stderr line parses; ports are numbers; the leave steps follow in order, ending `left`."""
    d = tmp_path / "node"
    with killed_at_exit(_json_logging_node(d)) as proc:
        wait_for_file(d / "ports.json", timeout=20)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=15)
    assert proc.returncode == 0, err
    lines = [json.loads(line) for line in err.splitlines() if line.strip()]  # raises on any plain-text line
    events = [line["event"] for line in lines]
    ready = next(line for line in lines if line["event"] == "ready")
    assert all(isinstance(ready[k], int) for k in ("ws", "swim", "peer", "metrics")), ready
    listening = next(line for line in lines if line["event"] == "clients_listening")  # logged in "k=v" form
    assert listening["port"] == ready["ws"], listening
    order = ["ready", "signal", "leaving", "goaway_sent", "handoff_done", "swim_leave_sent", "left"]
    positions = [events.index(e) for e in order]
    assert positions == sorted(positions), events
    assert lines[-1]["event"] == "left" and lines[-1]["clean"] is True, lines[-1]


def _signal_at(
    data_dir: Path, plan: list[tuple[str, signal.Signals]], preset: str = "local"
) -> tuple[int, list[dict[str, Any]]]:
    """Run a JSON-logging node and send each signal of `plan` when its event is logged, in order; stop reading after
    the last one. Returns the exit code and every log record."""
    seen: list[str] = []
    steps = iter(plan)
    event, signum = next(steps)
    with killed_at_exit(_json_logging_node(data_dir, preset)) as proc:
        assert proc.stderr is not None
        for line in proc.stderr:  # bounded by the test's timeout; ends at EOF if the node exits
            seen.append(line)
            if json.loads(line)["event"] == event:
                proc.send_signal(signum)
                step = next(steps, None)
                if step is None:
                    break
                event, signum = step
        _, err = proc.communicate(timeout=15)
    return proc.returncode, [json.loads(line) for line in seen + err.splitlines() if line.strip()]


@pytest.mark.timeout(60)
def test_a_sigterm_while_the_node_starts_still_ends_in_a_clean_leave(tmp_path: Path) -> None:
    """SIGTERM the moment the node logs `started` (ports.json is written; `ready` not yet): exit 0 after `left`.

    On the code before, the signal handler was installed only after the start returned, so this SIGTERM found
    the default action and killed the process (exit -15, no leave): what `systemctl stop` right after `start`
    did, and what made the test above fail now and then."""
    returncode, records = _signal_at(tmp_path / "node", [("started", signal.SIGTERM)])
    events = [r["event"] for r in records]
    assert "started" in events, events
    assert returncode == 0, events
    assert events.index("started") < events.index("signal") < events.index("left"), events


@pytest.mark.timeout(60)
def test_a_second_sigterm_during_the_leave_stops_the_node_at_once(tmp_path: Path) -> None:
    """The first SIGTERM starts the clean leave; a second one (Ctrl-C twice, an impatient supervisor) is not held
    for it: the process ends by that signal, without `left`. The default preset's last leave step waits 2 s for
    the leave to spread (2 SWIM probe intervals), so the second signal lands well inside the leave."""
    plan = [("ready", signal.SIGTERM), ("swim_leave_sent", signal.SIGTERM)]
    returncode, records = _signal_at(tmp_path / "node", plan, preset="lan")
    events = [r["event"] for r in records]
    assert "swim_leave_sent" in events, events
    assert returncode == -signal.SIGTERM, events
    assert "left" not in events, events


def _limit_file_size_to_10_bytes() -> None:
    import resource

    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit then fails with EFBIG, like a full disk
    resource.setrlimit(resource.RLIMIT_FSIZE, (10, 10))


def test_a_key_write_cut_short_leaves_no_key_file_and_the_next_init_makes_one(tmp_path: Path) -> None:
    """A disk that fills up (or a crash) while `node init` or the first `node run` writes node.key must not leave a
    truncated key file behind: the node refuses such a file ("not a homing key file", exit 2, which the systemd unit
    does not restart), so it would stay down until the operator deletes the file. On the code before, the key file
    was created first and written after: the cut-short write left 10 bytes in node.key and the next init exited 2."""
    d = tmp_path / "node"
    cut = subprocess.run(
        homing_cmd("node", "init", "--data-dir", str(d)), env=homing_env(PYTHONDONTWRITEBYTECODE="1"),
        capture_output=True, text=True, timeout=60, preexec_fn=_limit_file_size_to_10_bytes,
    )  # fmt: skip
    assert cut.returncode != 0
    assert not (d / "node.key").exists(), f"a {(d / 'node.key').stat().st_size}-byte node.key was left behind"
    assert not any(p.name.startswith(".node.key") for p in d.iterdir()), "a temporary file was left behind"
    again = run_homing("node", "init", "--data-dir", str(d))
    assert again.returncode == 0, again.stderr
    assert len(parse_id(again.stdout.split()[-1])) == 32
    assert stat.S_IMODE((d / "node.key").stat().st_mode) == 0o600


@pytest.mark.timeout(90)
@pytest.mark.parametrize("first_write", ["lock", "swim-epoch"])
def test_a_full_disk_is_one_line_naming_the_file_and_the_node_starts_once_there_is_room(
    tmp_path: Path, first_write: str
) -> None:
    """A disk that filled up (logs, a backup) while the node was down: `node run` exits 1 with one line naming the
    file it could not write, and starts once there is room again (as the systemd unit's restart would do). The lock
    is the first write of a start; with a lock file left from an earlier run (its block already there), the boot
    epoch is, inside the node's nursery. On the code before, both were tracebacks (OSError: [Errno 28])."""
    with small_disk(tmp_path / "disk", 96) as disk:
        d = disk / "node"
        assert run_homing("node", "init", "--data-dir", str(d)).returncode == 0
        if first_write == "swim-epoch":
            (d / "lock").write_text("1234567\n")
        filler = fill_disk(disk)
        args = ["node", "run", "--data-dir", str(d), "--open", "--preset", "local", *FREE_PORTS]
        result = run_homing(*args, timeout=30)
        assert result.returncode == 1, result.stderr
        assert "Traceback" not in result.stderr, result.stderr
        last = result.stderr.strip().splitlines()[-1]
        assert last == (
            f"homing: cannot write {d / first_write}: No space left on device (the disk is full: free space on it, "
            "then start again)"
        ), last
        filler.unlink()
        with killed_at_exit(_quiet_node(args)) as node:
            wait_for_file(d / "ports.json", timeout=20)
            node.send_signal(signal.SIGTERM)
            assert node.wait(timeout=20) == 0


@pytest.mark.timeout(60)
def test_a_boot_epoch_file_with_a_number_too_large_is_a_config_error_naming_it(tmp_path: Path) -> None:
    """Exit 2 with one line naming DATA_DIR/swim-epoch and what to do. On the code before: a traceback of trio's
    exception groups in `ValueError: boot incarnation out of range`, exit 1 (restarted by systemd without end)."""
    d = tmp_path / "node"
    assert run_homing("node", "init", "--data-dir", str(d)).returncode == 0
    (d / "swim-epoch").write_text("9" * 20 + "\n")
    result = run_homing("node", "run", "--data-dir", str(d), "--open", "--preset", "local", *FREE_PORTS, timeout=30)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(f"homing: config error: {d / 'swim-epoch'}: holds '{'9' * 20}': no boot epoch"), last
    assert "delete the file and start again" in last, last


def test_status_of_a_directory_that_is_not_a_node_data_dir_says_so(tmp_path: Path) -> None:
    """A mistyped --data-dir: exit 2 naming it. On the code before, status asked the default port (7403) and blamed
    the node: "cannot reach the node's metrics endpoint ... is the node running?" (exit 1)."""
    for d in (tmp_path / "missing", tmp_path):
        result = run_homing("node", "status", "--data-dir", str(d), timeout=20)
        assert result.returncode == 2, result.stderr
        line = result.stderr.strip()
        assert line == f"homing: config error: --data-dir: {d} is not a node's data dir (no node.key there)", line


def test_status_of_a_data_dir_this_user_cannot_look_in_says_how_to_ask(tmp_path: Path) -> None:
    """The service's data dir is 0700 and owned by `homing`; an admin's own user cannot look inside (here: root
    without the capabilities that pass over file modes, `setpriv`, and a directory owned by nobody). On the code
    before: a traceback (PermissionError)."""
    if os.geteuid() != 0:
        pytest.skip("hands the data dir to another user: needs root (CI runs as root)")
    d = tmp_path / "node"
    assert run_homing("node", "init", "--data-dir", str(d)).returncode == 0
    os.chown(d, 65534, 65534)
    d.chmod(0o700)
    no_override = ["setpriv", "--bounding-set=-dac_override,-dac_read_search"]
    status = subprocess.run(
        [*no_override, *homing_cmd("node", "status", "--data-dir", str(d))],
        env=homing_env(), capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert status.returncode == 2, status.stderr
    line = status.stderr.strip()
    assert line.startswith(f"homing: config error: --data-dir: cannot look in {d}: Permission denied; run as"), line


@pytest.mark.timeout(60)
def test_node_init_on_a_disk_that_fills_up_leaves_no_cut_config_and_the_next_init_writes_it(tmp_path: Path) -> None:
    """Room for the key but not for the 32 KB config: exit 1 with one line, and no homing-node.toml at all. On the code
    before: a traceback, and the part that fit (4 KB) was left as homing-node.toml, which every later init kept
    ("kept existing") and every start read: a config that had lost most of its text without a word (cut inside a
    value, it would not parse at all)."""
    with small_disk(tmp_path / "disk", 128) as disk:
        d = disk / "node"
        d.mkdir()
        filler = fill_disk(disk, leave=2 * 4096)
        result = run_homing("node", "init", "--data-dir", str(d))
        assert result.returncode == 1, result.stdout + result.stderr
        assert "Traceback" not in result.stderr, result.stderr
        assert result.stderr.strip().startswith(f"homing: cannot write {d / 'homing-node.toml'}: No space left"), (
            result.stderr
        )
        assert sorted(p.name for p in d.iterdir()) == ["node.key"]
        filler.unlink()
        again = run_homing("node", "init", "--data-dir", str(d))
        assert again.returncode == 0, again.stderr
        assert f"wrote {d / 'homing-node.toml'}" in again.stdout
        assert tomllib.loads((d / "homing-node.toml").read_text())["node"]["data_dir"] == str(d.resolve())


@pytest.mark.timeout(60)
def test_a_hangup_ends_in_a_clean_leave(tmp_path: Path) -> None:
    """SIGHUP, what a node run by hand gets when its terminal or ssh session goes away: exit 0 after `left`, as for
    SIGTERM. On the code before, SIGHUP had its default action: the process died (exit -1) without a leave, so the
    other members waited out the suspicion timeout and its clients got no goaway."""
    returncode, records = _signal_at(tmp_path / "node", [("ready", signal.SIGHUP)])
    events = [r["event"] for r in records]
    assert returncode == 0, events
    assert events.index("ready") < events.index("signal") < events.index("left"), events
    assert next(r for r in records if r["event"] == "signal")["signal"] == "SIGHUP"
