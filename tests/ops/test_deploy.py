"""deploy/: the files an operator copies must be valid for the tools that read them and true to the code."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest

from node.app.config import build_config, parse_hostport
from node.app.metrics import NodeMetrics
from node.net.listen import UDP_RECEIVE_BUFFER
from node.protocol.identity import Identity
from node.protocol.settings import PeersSection
from node.protocol.swim.config import LAN
from tests.helpers import REPO

DEPLOY = REPO / "deploy"
UNITS = ("homing-node.service", "homing-bootstrap.service", "homing-publish-dns.service")
TIMERS = ("homing-publish-dns.timer",)
# Names Prometheus itself provides, allowed in rules besides NodeMetrics' own.
PROMETHEUS_BUILTINS = {"up"}


def unit_settings(name: str) -> dict[str, list[str]]:
    settings: dict[str, list[str]] = {}
    for line in (DEPLOY / "systemd" / name).read_text().splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            settings.setdefault(key.strip(), []).append(value.strip())
    return settings


def _seconds(text: str) -> float:
    m = re.fullmatch(r"(\d+)(s|min)?", text)
    assert m, text
    return int(m.group(1)) * (60 if m.group(2) == "min" else 1)


@pytest.mark.parametrize("name", UNITS)
def test_unit_is_hardened(name: str) -> None:
    s = unit_settings(name)
    assert s["NoNewPrivileges"] == ["yes"]
    assert s["ProtectSystem"] == ["strict"]
    assert s["CapabilityBoundingSet"] == [""]
    assert s["StateDirectory"] and s["StateDirectoryMode"] == ["0700"]
    assert "DynamicUser" in s or s["User"][0] not in ("", "root")
    assert s["Restart"] == ["on-failure"]
    assert s["KillSignal"] == ["SIGTERM"]
    assert s["RestartPreventExitStatus"] == ["2"]
    if name == "homing-node.service":
        # the graceful leave takes up to 10 s (docs/operations.md): the stop timeout must leave room for it
        assert _seconds(s["TimeoutStopSec"][0]) > 10
        exec_start = s["ExecStart"][0]
        assert " node run " in exec_start and "--data-dir /var/lib/" + s["StateDirectory"][0] in exec_start


@pytest.fixture
def units_for_verify(tmp_path: Path) -> list[Path]:
    """The units with ExecStart pointing at an executable that exists here (verify checks it)."""
    fake = tmp_path / "homing"
    fake.write_text("#!/bin/sh\nexit 0\n")
    fake.chmod(0o755)
    out = []
    for name in UNITS + TIMERS:
        text = (DEPLOY / "systemd" / name).read_text().replace("/opt/homing/bin/homing", str(fake))
        path = tmp_path / name
        path.write_text(text)
        out.append(path)
    return out


def _systemd_analyze() -> str:
    tool = shutil.which("systemd-analyze")
    if tool is None:
        pytest.skip("systemd-analyze is not installed")
    return tool


def test_units_pass_systemd_analyze_verify(units_for_verify: list[Path]) -> None:
    tool = _systemd_analyze()
    r = subprocess.run([tool, "verify", *map(str, units_for_verify)], capture_output=True, text=True, timeout=60)
    if "Failed to" in r.stderr and "bus" in r.stderr.lower():
        pytest.skip(f"systemd-analyze verify cannot run here: {r.stderr.strip()[:200]}")
    # verify exits 0 on unknown keys and only warns: any output at all is a finding
    assert r.returncode == 0 and r.stderr.strip() == "" and r.stdout.strip() == "", r.stderr + r.stdout


def test_units_sandbox_exposure_is_low(units_for_verify: list[Path]) -> None:
    tool = _systemd_analyze()
    for unit in units_for_verify:
        if unit.suffix != ".service":
            continue
        r = subprocess.run(
            [tool, "security", "--offline=yes", "--no-pager", str(unit)], capture_output=True, text=True, timeout=60
        )
        if "unrecognized option" in r.stderr or "Unknown command" in r.stderr:
            pytest.skip("this systemd-analyze has no offline security check (needs systemd 252)")
        m = re.search(r"Overall exposure level for \S+: ([\d.]+)", r.stdout)
        assert m, r.stdout[-500:] + r.stderr
        assert float(m.group(1)) <= 2.0, f"{unit.name} exposure {m.group(1)}"


def rendered_metric_names() -> set[str]:
    m = NodeMetrics()
    m.relay_seconds.observe(0.001)
    return {line.split("{")[0].split(" ")[0] for line in m.render().decode().splitlines() if not line.startswith("#")}


def alert_rules_text() -> str:
    return (DEPLOY / "prometheus" / "homing-alerts.yml").read_text()


def test_alert_rules_use_only_metrics_nodemetrics_exports() -> None:
    yaml = pytest.importorskip("yaml")
    doc = yaml.safe_load(alert_rules_text())
    rules = [r for g in doc["groups"] for r in g["rules"]]
    names = {r["alert"] for r in rules}
    assert {"HomingNodeDown", "HomingSuspectFlapping", "HomingMailboxGrowing", "HomingRelaySlow"} <= names
    known = rendered_metric_names() | PROMETHEUS_BUILTINS
    for rule in rules:
        used = set(re.findall(r"\b(homing_[a-z_]+)\b", rule["expr"]))
        assert rule["alert"] == "HomingNodeDown" or used, rule["alert"]
        assert used <= known, f"{rule['alert']} uses {used - known}"
        assert rule["labels"]["severity"] in {"critical", "warning", "info"}


def test_alert_rules_metric_names_without_yaml() -> None:
    # the same check by regex, so it runs even where PyYAML is missing
    used = set(re.findall(r"\b(homing_[a-z_]+)\b", alert_rules_text()))
    assert used and used <= rendered_metric_names()


def test_alert_rules_pass_promtool_when_available() -> None:
    tool = shutil.which("promtool")
    if tool is None:
        pytest.skip("promtool is not installed (Debian package prometheus)")
    r = subprocess.run([tool, "check", "rules", str(DEPLOY / "prometheus" / "homing-alerts.yml")], capture_output=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_prometheus_configs_scrape_the_metrics_port() -> None:
    yaml = pytest.importorskip("yaml")
    for path in (DEPLOY / "prometheus" / "prometheus.yml", DEPLOY / "compose" / "prometheus.yml"):
        doc = yaml.safe_load(path.read_text())
        (job,) = [j for j in doc["scrape_configs"] if j["job_name"] == "homing"]
        targets = [t for sc in job["static_configs"] for t in sc["targets"]]
        assert targets and all(t.endswith(":7403") for t in targets), path
        assert any("homing-alerts.yml" in f for f in doc["rule_files"])


def _example_values(path: Path) -> dict[str, object]:
    text = path.read_text().replace(
        "REPLACE_WITH_THE_REGISTRY_PUBLIC_KEY_FROM_ITS_ADMIN_43_CHARS", Identity.generate().id_text
    )
    return tomllib.loads(text)


@pytest.mark.parametrize("rel", ["homing-node.toml", "compose/node1.toml", "compose/node2.toml", "compose/node3.toml"])
def test_example_configs_load(rel: str) -> None:
    config = build_config(_example_values(DEPLOY / rel))  # type: ignore[arg-type]
    host, port = parse_hostport(config.node.metrics)
    if rel == "homing-node.toml":
        assert host == "127.0.0.1" and port == 7403
        assert config.node.public_url.startswith("wss://") and config.node.public_url.endswith("/v1/client")
        assert parse_hostport(config.node.swim)[1] == 7401 and parse_hostport(config.node.peer)[1] == 7402


def test_compose_runs_a_bootstrap_and_three_nodes() -> None:
    yaml = pytest.importorskip("yaml")
    doc = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    services = doc["services"]
    assert {"bootstrap", "node1", "node2", "node3"} <= set(services)
    assert "--approval" in services["bootstrap"]["command"]
    for name in ("node1", "node2", "node3"):
        svc = services[name]
        assert _seconds(svc["stop_grace_period"]) > 10
        assert svc["depends_on"]["bootstrap"]["condition"] == "service_healthy"
        for volume in svc["volumes"]:
            src = volume.split(":")[0]
            if src.startswith("./"):
                assert (DEPLOY / src).exists(), src
        assert any(p.startswith("127.0.0.1:") for p in svc["ports"])


def test_compose_shell_snippets_parse() -> None:
    yaml = pytest.importorskip("yaml")
    sh = shutil.which("sh")
    if sh is None:
        pytest.skip("no sh")
    services = yaml.safe_load((DEPLOY / "compose.yaml").read_text())["services"]
    for name in ("registry-init", "node1"):
        script = services[name]["command"][0].replace("$$", "$")
        r = subprocess.run([sh, "-n", "-c", script], capture_output=True, text=True)
        assert r.returncode == 0, f"{name}: {r.stderr}"


def test_containerfile_is_non_root_slim_and_installs_the_project() -> None:
    text = (DEPLOY / "Containerfile").read_text()
    froms = re.findall(r"^FROM (\S+)", text, re.M)
    assert froms and all("python:3.11-slim" in f for f in froms)
    users = re.findall(r"^USER (\S+)", text, re.M)
    assert users and users[-1].split(":")[0] not in ("root", "0")
    assert re.search(r"pip install \.", text)
    assert "STOPSIGNAL SIGTERM" in text
    for port in ("7400/tcp", "7401/udp", "7402/tcp"):
        assert port in text
    assert "7403" not in re.findall(r"^EXPOSE .*", text, re.M)[0]
    for src in re.findall(r"^COPY (?!--from)(.+) \S+$", text, re.M):
        for item in src.split():
            assert (REPO / item).exists(), item


def test_nginx_proxy_example_passes_nginx_t(tmp_path: Path) -> None:
    nginx = shutil.which("nginx") or ("/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else None)
    openssl = shutil.which("openssl")
    if nginx is None or openssl is None:
        pytest.skip("nginx or openssl is not installed")
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
         "-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=localhost"],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    site = (DEPLOY / "proxy" / "nginx-homing.conf").read_text()
    site = re.sub(r"/etc/letsencrypt/live/[a-z.]+/fullchain\.pem", str(cert), site)
    site = re.sub(r"/etc/letsencrypt/live/[a-z.]+/privkey\.pem", str(key), site)
    (tmp_path / "site.conf").write_text(site)
    temps = "".join(f"  {t}_temp_path {tmp_path}/{t};\n" for t in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    (tmp_path / "nginx.conf").write_text(
        f"pid {tmp_path}/nginx.pid;\nerror_log {tmp_path}/error.log;\nevents {{}}\n"
        f"http {{\n  access_log off;\n{temps}  include {tmp_path}/site.conf;\n}}\n"
    )
    r = subprocess.run(
        [nginx, "-t", "-q", "-p", str(tmp_path), "-c", str(tmp_path / "nginx.conf")],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "location = /v1/client" in site and "proxy_pass http://127.0.0.1:7400" in site


def test_firewall_example_passes_nft_check() -> None:
    nft = shutil.which("nft") or ("/usr/sbin/nft" if os.path.exists("/usr/sbin/nft") else None)
    if nft is None:
        pytest.skip("nft is not installed")
    text = (DEPLOY / "firewall" / "homing-node.nft").read_text()
    assert "udp dport 7401 accept" in text and "tcp dport 7402 accept" in text
    assert not re.search(r"^\s*tcp dport 7403", text, re.M), "metrics must not be opened"
    r = subprocess.run([nft, "-c", "-f", str(DEPLOY / "firewall" / "homing-node.nft")], capture_output=True, text=True)
    if r.returncode != 0 and ("Operation not permitted" in r.stderr or "permission" in r.stderr.lower()):
        pytest.skip(f"nft -c needs CAP_NET_ADMIN here: {r.stderr.strip()[:200]}")
    assert r.returncode == 0, r.stderr


def test_prometheus_configs_pass_promtool_when_available(tmp_path: Path) -> None:
    tool = shutil.which("promtool")
    if tool is None:
        pytest.skip("promtool is not installed (Debian package prometheus)")
    shutil.copy(DEPLOY / "prometheus" / "homing-alerts.yml", tmp_path / "homing-alerts.yml")
    for src in (DEPLOY / "prometheus" / "prometheus.yml", DEPLOY / "compose" / "prometheus.yml"):
        # the compose one names the rules file by its path inside the container
        text = src.read_text().replace("/etc/prometheus/homing-alerts.yml", "homing-alerts.yml")
        (tmp_path / "prometheus.yml").write_text(text)
        r = subprocess.run([tool, "check", "config", str(tmp_path / "prometheus.yml")], capture_output=True, text=True)
        assert r.returncode == 0, f"{src}: {r.stdout}{r.stderr}"


def test_caddyfile_adapts_when_caddy_is_available() -> None:
    caddy = shutil.which("caddy")
    if caddy is None:
        pytest.skip("caddy is not installed (Debian package caddy)")
    path = DEPLOY / "proxy" / "Caddyfile"
    r = subprocess.run(
        [caddy, "adapt", "--adapter", "caddyfile", "--config", str(path)], capture_output=True, text=True, timeout=60
    )
    assert r.returncode == 0, r.stderr
    assert "not formatted" not in r.stderr, r.stderr
    adapted = r.stdout
    assert '"/v1/client"' in adapted and "127.0.0.1:7400" in adapted


def test_sysctl_example_gives_the_swim_socket_its_buffer() -> None:
    """deploy/sysctl/90-homing.conf sets only net.core.rmem_max, to at least what the SWIM socket asks for."""
    settings = [
        tuple(part.strip() for part in line.split("=", 1))
        for line in (DEPLOY / "sysctl" / "90-homing.conf").read_text().splitlines()
        if line.strip() and not line.lstrip().startswith(("#", ";"))
    ]
    assert [k for k, _ in settings] == ["net.core.rmem_max"], settings
    assert int(settings[0][1]) >= UDP_RECEIVE_BUFFER


def test_logrotate_example_parses(tmp_path: Path) -> None:
    tool = shutil.which("logrotate") or ("/usr/sbin/logrotate" if Path("/usr/sbin/logrotate").exists() else None)
    if tool is None:
        pytest.skip("logrotate is not installed (Debian package logrotate)")
    logs = tmp_path / "log"
    logs.mkdir()
    (logs / "node.log").write_text("x\n")
    conf = (DEPLOY / "logrotate" / "homing").read_text().replace("/var/log/homing", str(logs))
    conf = conf.replace("    su root adm\n", "")  # the test's directory is not owned by root:adm
    (tmp_path / "homing.conf").write_text(conf)
    r = subprocess.run(
        [tool, "-d", "-s", str(tmp_path / "state"), str(tmp_path / "homing.conf")],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert r.returncode == 0 and "error" not in (r.stdout + r.stderr).lower(), r.stdout + r.stderr
    assert "node.log" in r.stdout + r.stderr


def test_firewall_ssh_rules_take_their_sources_from_sets_for_both_families() -> None:
    """The file says "restrict SSH to your addresses here": an operator who puts their addresses in the source set
    must get SSH closed to everyone else over IPv6 too. On the code before, only IPv4 had a set; the IPv6 rule
    accepted SSH from any address, so a VPS "restricted" this way kept SSH open to the whole IPv6 internet."""
    text = (DEPLOY / "firewall" / "homing-node.nft").read_text()
    lines = [ln.strip() for ln in text.splitlines() if not ln.strip().startswith("#")]
    rules = [ln for ln in lines if re.search(r"\bdport 22\b", ln)]
    assert rules, "no SSH rule"
    families = set()
    for rule in rules:
        m = re.match(r"(ip6?) saddr @(\w+) ", rule)
        assert m, f"SSH accepted without a source set: {rule!r}"
        families.add(m.group(1))
        assert re.search(rf"set {m.group(2)} {{[^}}]*type {'ipv4' if m.group(1) == 'ip' else 'ipv6'}_addr", text)
    assert families == {"ip", "ip6"}


def test_firewall_per_source_limits_sit_above_the_nodes_own_budgets() -> None:
    """The firewall may only drop what the node would refuse anyway: its per-source limits on the peer port are at
    or above `[peers] handshakes_per_address_*`, and on SWIM far above what an honest member sends with the LAN
    defaults, for IPv4 addresses and IPv6 /64s alike; the sets that hold them are bounded. The client port is not
    limited per address (CGNAT). On the file before there was no limit at all (tests/ops/test_node_firewall.py
    shows the limits on real traffic)."""
    text = (DEPLOY / "firewall" / "homing-node.nft").read_text()
    rules = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.strip().startswith("#")]
    limits: dict[tuple[str, str], tuple[int, int]] = {}
    for rule in rules:
        m = re.fullmatch(
            r"(tcp dport 7402 ct state new|udp dport 7401) update @(\w+) \{ (ip saddr|ip6 saddr and "
            r"ffff:ffff:ffff:ffff::) limit rate over (\d+)/second burst (\d+) packets \} drop",
            rule,
        )
        if m:
            limits[(m.group(1).split()[0], m.group(3).split()[0])] = (int(m.group(4)), int(m.group(5)))
            block = re.search(rf"set {m.group(2)} {{([^}}]*)}}", text)
            assert block, f"no set {m.group(2)}"
            assert re.search(r"\bsize \d+", block.group(1)) and re.search(r"\btimeout \d+", block.group(1))
            assert "dynamic" in block.group(1)
    assert set(limits) == {("tcp", "ip"), ("tcp", "ip6"), ("udp", "ip"), ("udp", "ip6")}, limits
    peers = PeersSection()
    for family in ("ip", "ip6"):
        rate, burst = limits[("tcp", family)]
        assert rate >= peers.handshakes_per_address_per_s and burst >= peers.handshakes_per_address_burst
        rate, burst = limits[("udp", family)]
        # gossip rounds (one datagram to a given member each), a probe and an ack per probe interval, the pings
        # and acks of indirect probes: what one member sends one node at most, with the LAN defaults
        honest = 1 / LAN.gossip_interval_s + (2 + 2 * LAN.indirect_checks) / LAN.probe_interval_s
        assert rate >= 10 * honest and burst >= rate, (rate, honest)
    assert "tcp dport 7400 accept" in rules
    assert not any(re.match(r"tcp dport 7400 .*(limit|update|meter)", r) for r in rules)
