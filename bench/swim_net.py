"""Network isolation and byte/CPU/memory counters for `bench/swim.py`.

Theory of operation: every trial (one system, one N, one repetition) runs in a fresh network namespace made by
`unshare --net --pid --fork --kill-child --mount-proc` (with `--map-root-user` when not root), so the loopback
device holds only that trial's traffic and every process of the trial dies with it. Inside, an nftables table
counts what leaves through the output hook, split into UDP, TCP between agents, and TCP to or from the control
ports (the bench's own HTTP/RPC polling, excluded from the figures). `/proc/net/dev` of `lo` is read too, as a
cross-check: on loopback it counts the same IP packets and bytes (no link header), so the sum of the nftables
counters must equal it.

Port plan inside a namespace (every port is free there): agent i listens on GOSSIP_BASE+i (SWIM UDP for homing,
memberlist UDP+TCP for Serf), PEER_BASE+i (homing push-pull/peer TCP), CONTROL_BASE+i (homing metrics HTTP, Serf
RPC) and WS_BASE+i (homing client WebSocket, idle). Without a namespace a random free base is chosen instead and
no byte figures are reported.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import socket
import subprocess
from typing import Any

GOSSIP_BASE = 20000
PEER_BASE = 21000
CONTROL_BASE = 22000
WS_BASE = 23000
PORT_SPAN = 1000  # agents per trial at most (and the width of each port block)
NFT_TABLE = "homing_bench"
COMMAND_TIMEOUT_S = 10.0

NFT_RULES = f"""
table inet {NFT_TABLE} {{
  chain out {{
    type filter hook output priority 0; policy accept;
    meta l4proto udp counter accept comment "udp"
    tcp sport {CONTROL_BASE}-{CONTROL_BASE + PORT_SPAN - 1} counter accept comment "control"
    tcp dport {CONTROL_BASE}-{CONTROL_BASE + PORT_SPAN - 1} counter accept comment "control"
    meta l4proto tcp counter accept comment "tcp"
    counter comment "other"
  }}
}}
"""


def unshare_prefix() -> list[str]:
    """The command prefix that runs a command in a fresh network + PID namespace (root or user namespace)."""
    prefix = ["unshare", "--net", "--pid", "--fork", "--kill-child", "--mount-proc"]
    if os.geteuid() != 0:
        prefix.insert(1, "--map-root-user")
    return prefix


def netns_available() -> tuple[bool, str]:
    """Whether `unshare_prefix()` works here, and why not if it does not."""
    if shutil.which("unshare") is None:
        return False, "unshare(1) is not installed"
    try:
        res = subprocess.run(
            [*unshare_prefix(), "true"], capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return False, f"unshare failed: {exc}"
    if res.returncode != 0:
        return False, f"unshare failed: {res.stderr.strip()[:200]}"
    return True, ""


def setup_namespace() -> str:
    """Inside a fresh namespace: bring `lo` up and install the counters. Returns the byte-counting method."""
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True, timeout=COMMAND_TIMEOUT_S)
    if shutil.which("nft") is None:
        return "netns-procnetdev"
    res = subprocess.run(
        ["nft", "-f", "-"], input=NFT_RULES, capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S, check=False
    )
    return "netns-nft" if res.returncode == 0 else "netns-procnetdev"


def read_nft() -> dict[str, list[int]]:
    """{"udp": [packets, bytes], "tcp": [...], "control": [...], "other": [...]} from the bench table."""
    res = subprocess.run(
        ["nft", "-j", "list", "table", "inet", NFT_TABLE],
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT_S,
        check=True,
    )
    out: dict[str, list[int]] = {"udp": [0, 0], "tcp": [0, 0], "control": [0, 0], "other": [0, 0]}
    for item in json.loads(res.stdout).get("nftables", []):
        rule = item.get("rule")
        if not rule:
            continue
        name = rule.get("comment", "other")
        for expr in rule.get("expr", []):
            if "counter" in expr and name in out:
                out[name][0] += int(expr["counter"]["packets"])
                out[name][1] += int(expr["counter"]["bytes"])
    return out


def read_lo_dev() -> list[int]:
    """[tx packets, tx bytes] of `lo` from /proc/net/dev."""
    with open("/proc/net/dev") as f:
        for line in f:
            name, _, rest = line.partition(":")
            if name.strip() == "lo":
                fields = rest.split()
                return [int(fields[9]), int(fields[8])]
    return [0, 0]


COUNTER_READS_MAX = 20  # attempts at a snapshot during which nothing left `lo`


def read_counters(method: str) -> dict[str, list[int]]:
    """The nftables counters and `lo`'s, as one snapshot: `nft` takes tens of milliseconds to answer, and a packet
    sent meanwhile (the last of the bench's own control connections closing, a SWIM probe) would be in one and not
    the other, and the cross-check would fail. So `lo` is read before and after `nft`, again until it did not move
    (a bounded number of times; the last read is kept either way)."""
    if not method.startswith("netns"):
        return {}
    counters: dict[str, list[int]] = {}
    lo = read_lo_dev()
    for _ in range(COUNTER_READS_MAX):
        counters = read_nft() if method == "netns-nft" else {}
        now = read_lo_dev()
        if now == lo:
            break
        lo = now
    counters["lo_dev"] = lo
    return counters


def counter_delta(before: dict[str, list[int]], after: dict[str, list[int]]) -> dict[str, list[int]]:
    return {k: [after[k][0] - before[k][0], after[k][1] - before[k][1]] for k in after if k in before}


def cpu_ticks(pid: int) -> int | None:
    """utime + stime of a process, in clock ticks (None if it is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return None
    fields = stat.rpartition(")")[2].split()
    return int(fields[11]) + int(fields[12])  # fields 14 and 15 of proc(5), counted after the comm field


def rss_bytes(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def clock_ticks_per_s() -> int:
    return os.sysconf("SC_CLK_TCK")


def ports_free(base: int, n: int) -> bool:
    for block in (0, PEER_BASE - GOSSIP_BASE, CONTROL_BASE - GOSSIP_BASE, WS_BASE - GOSSIP_BASE):
        for i in range(n):
            for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
                with socket.socket(socket.AF_INET, kind) as s:
                    try:
                        s.bind(("127.0.0.1", base + block + i))
                    except OSError:
                        return False
    return True


def pick_shared_base(n: int, rng: random.Random, attempts_max: int = 20) -> int:
    """Without a namespace: a gossip base port whose four port blocks are all free on 127.0.0.1."""
    for _ in range(attempts_max):
        base = rng.randrange(30000, 40000 - PORT_SPAN)
        if ports_free(base, n):
            return base
    raise RuntimeError(f"no free port blocks for {n} agents after {attempts_max} attempts")


def port_plan(base: int) -> dict[str, int]:
    """Block bases for a trial whose gossip block starts at `base`."""
    shift = base - GOSSIP_BASE
    return {"gossip": base, "peer": PEER_BASE + shift, "control": CONTROL_BASE + shift, "ws": WS_BASE + shift}


def describe_env() -> dict[str, Any]:
    return {"cpus": os.cpu_count(), "kernel": os.uname().release}
