"""deploy/firewall/homing-node.nft's per-source limits on the node ports, for real, in network namespaces.

Three namespaces the test creates (as root; skipped elsewhere with the reason), named by pid so parallel workers
do not collide: "srv" holds the shipped file, loaded as it is, and a plain listener on 7402/tcp (accepts and closes,
counting per source address) and 7401/udp (counts datagrams per source): a counter, not a node, because a node
closes connections over its own budget ([peers] handshakes_per_address_*), lower than the firewall's, and what is
measured here is what the firewall lets through. "a" and "b" are two sources, each joined to "srv" by its own veth
pair. Source a floods; source b meanwhile connects, and sends SWIM-like datagrams at an honest pace, all of which
must arrive. Over IPv6, two addresses of a's /64 flood together and get one source's share (keyed on the whole
address, they got twice it), while b's /64 connects. The limits are read from the file, so tuning them keeps the
test meaningful.

nftables' `limit ... burst B packets` bucket holds `rate + B` tokens, so over W seconds a source gets at most
rate + B + rate * W through.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.helpers import stop_process

REPO = Path(__file__).resolve().parents[2]
RULES = REPO / "deploy" / "firewall" / "homing-node.nft"
TOOLS = ("ip", "nft")
RUN_S = 20.0
SWIM_PORT, PEER_PORT = 7401, 7402

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root to create network namespaces (CI runs as root)"),
    pytest.mark.skipif(
        any(shutil.which(t) is None for t in TOOLS), reason=f"needs {', '.join(TOOLS)} (tests/run installs them)"
    ),
]

# The listener in "srv": prints "ready", then answers each line on stdin with the counts so far as JSON.
SERVER = r"""
import json, socket, sys, threading
tcp, udp, lock = {}, {}, threading.Lock()
ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
ls.bind(("0.0.0.0", int(sys.argv[2])))
ls.listen(4096)
ls6 = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
ls6.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
ls6.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
ls6.bind(("::", int(sys.argv[2])))
ls6.listen(4096)
us = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
us.setsockopt(socket.SOL_SOCKET, 33, 16 << 20)  # SO_RCVBUFFORCE (root): a flood is counted, not lost in the socket
us.bind(("0.0.0.0", int(sys.argv[1])))
def accept(ls):
    while True:
        c, (host, *_) = ls.accept()
        c.close()
        with lock:
            tcp[host] = tcp.get(host, 0) + 1
def receive():
    while True:
        _, (host, _) = us.recvfrom(2048)
        with lock:
            udp[host] = udp.get(host, 0) + 1
threading.Thread(target=accept, args=(ls,), daemon=True).start()
threading.Thread(target=accept, args=(ls6,), daemon=True).start()
threading.Thread(target=receive, daemon=True).start()
print("ready", flush=True)
for _ in sys.stdin:
    with lock:
        print(json.dumps({"tcp": tcp, "udp": udp}), flush=True)
"""

# Opens connections to argv[1]:argv[2] as fast as it can for argv[3] seconds (at most argv[4] attempts, at most
# 512 pending; a connection not answered within 0.5 s is given up), from the address argv[5] if given; prints
# attempts and connections made.
TCP_FLOOD = r"""
import errno, json, selectors, socket, sys, time
host, port, duration, attempts_max = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
family, source = (socket.AF_INET6 if ":" in host else socket.AF_INET), sys.argv[5:]
sel, pending, attempts, connected = selectors.DefaultSelector(), {}, 0, 0
start = time.monotonic()
while time.monotonic() - start < duration:
    while attempts < attempts_max and len(pending) < 512:
        s = socket.socket(family, socket.SOCK_STREAM)
        if source:
            s.bind((source[0], 0))
        s.setblocking(False)
        if s.connect_ex((host, port)) not in (0, errno.EINPROGRESS):
            s.close()
            break
        attempts += 1
        pending[s] = time.monotonic()
        sel.register(s, selectors.EVENT_WRITE)
    for key, _ in sel.select(0.01):
        s = key.fileobj
        connected += s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0
        sel.unregister(s)
        del pending[s]
        s.close()
    now = time.monotonic()
    for s in [s for s, t in pending.items() if now - t > 0.5]:
        sel.unregister(s)
        del pending[s]
        s.close()
print(json.dumps({"attempts": attempts, "connected": connected, "seconds": time.monotonic() - start}), flush=True)
"""

# Sends argv[4] datagrams of 64 bytes to argv[1]:argv[2] at argv[3] a second (0: as fast as it can).
UDP_SEND = r"""
import json, socket, sys, time
host, port, rate, count = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.connect((host, port))
start, sent = time.monotonic(), 0
for i in range(count):
    if rate > 0:
        time.sleep(max(0.0, start + i / rate - time.monotonic()))
    try:
        s.send(b"x" * 64)
        sent += 1
    except OSError:  # a full send buffer
        pass
print(json.dumps({"sent": sent, "seconds": time.monotonic() - start}), flush=True)
"""


def sh(*args: str, ns: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    cmd = (["ip", "netns", "exec", ns] if ns else []) + list(args)
    return subprocess.run(cmd, capture_output=True, text=True, timeout=RUN_S, check=check)


def limit(proto_port: str) -> tuple[float, int]:
    """(rate per second, burst) of the shipped IPv4 per-source limit on `proto_port` ("tcp dport 7402")."""
    text = RULES.read_text()
    m = re.search(
        rf"^\s*{proto_port} .*update @\w+ {{ ip saddr limit rate over (\d+)/second burst (\d+) packets }} drop$",
        text,
        re.M,
    )
    assert m, f"homing-node.nft has no per-source limit on {proto_port}"
    return float(m.group(1)), int(m.group(2))


def v6(ipv4: str, n: int) -> str:
    """Host `n` of the IPv6 /64 that goes with the test's IPv4 net `ipv4` (10.X.Y.*: fd00:0:X:Y::n)."""
    parts = ipv4.split(".")
    return f"fd00:0:{parts[1]}:{parts[2]}::{n}"


def limit6(proto_port: str) -> tuple[float, int]:
    """(rate per second, burst) of the shipped IPv6 (/64) per-source limit on `proto_port`."""
    text = RULES.read_text()
    m = re.search(
        rf"^\s*{proto_port} .*update @\w+ {{ ip6 saddr and ffff:ffff:ffff:ffff:: limit rate over (\d+)/second"
        r" burst (\d+) packets } drop$",
        text,
        re.M,
    )
    assert m, f"homing-node.nft has no per-/64 limit on {proto_port}"
    return float(m.group(1)), int(m.group(2))


@contextmanager
def namespaces() -> Iterator[tuple[str, str, str, str, str]]:
    """(srv ns, a ns, b ns, srv's address towards a, srv's address towards b); a is .2 of the first net, b of the
    second. Each link also has an IPv6 /64 (`v6(srv's address, n)`): srv is ::1 in it, the client ::2 and ::3."""
    tag = f"{os.getpid() % 10000}{random.randrange(100)}"
    srv, a, b = f"hm-fws-{tag}", f"hm-fwa-{tag}", f"hm-fwb-{tag}"
    net = random.randrange(0, 250)
    made: list[str] = []
    try:
        for ns in (srv, a, b):
            r = sh("ip", "netns", "add", ns, check=False)
            if r.returncode != 0:
                pytest.skip(f"cannot create a network namespace here: {r.stderr.strip()}")
            made.append(ns)
            sh("ip", "link", "set", "lo", "up", ns=ns)
        for client, prefix in ((a, f"10.232.{net}"), (b, f"10.233.{net}")):
            inner = f"v-{client[3:6]}"
            sh("ip", "link", "add", inner, "netns", srv, "type", "veth", "peer", "name", "v-srv", "netns", client)
            sh("ip", "addr", "add", f"{prefix}.1/24", "dev", inner, ns=srv)
            sh("ip", "addr", "add", f"{prefix}.2/24", "dev", "v-srv", ns=client)
            sh("ip", "addr", "add", f"{v6(prefix, 1)}/64", "dev", inner, "nodad", ns=srv)
            # static neighbours: a flood's first SYNs and SYN-ACKs must meet the firewall, not a full queue of
            # packets waiting for neighbour discovery
            srv_mac = sh("cat", f"/sys/class/net/{inner}/address", ns=srv).stdout.strip()
            client_mac = sh("cat", "/sys/class/net/v-srv/address", ns=client).stdout.strip()
            sh("ip", "neigh", "add", v6(prefix, 1), "lladdr", srv_mac, "dev", "v-srv", "nud", "permanent", ns=client)
            for n in (2, 3):
                sh("ip", "addr", "add", f"{v6(prefix, n)}/64", "dev", "v-srv", "nodad", ns=client)
                sh("ip", "neigh", "add", v6(prefix, n), "lladdr", client_mac, "dev", inner, "nud", "permanent", ns=srv)
            sh("ip", "link", "set", inner, "up", ns=srv)
            sh("ip", "link", "set", "v-srv", "up", ns=client)
        yield srv, a, b, f"10.232.{net}.1", f"10.233.{net}.1"
    finally:
        for ns in made:
            sh("ip", "netns", "del", ns, check=False)


@contextmanager
def listener(ns: str) -> Iterator[subprocess.Popen[str]]:
    proc = subprocess.Popen(
        ["ip", "netns", "exec", ns, sys.executable, "-c", SERVER, str(SWIM_PORT), str(PEER_PORT)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready", "the listener did not start"
        yield proc
    finally:
        stop_process(proc)


def counts(proc: subprocess.Popen[str]) -> dict[str, dict[str, int]]:
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write("\n")
    proc.stdin.flush()
    result: dict[str, dict[str, int]] = json.loads(proc.stdout.readline())
    return result


def run_in(ns: str, src: str, *args: object) -> subprocess.Popen[str]:
    return subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, "-c", src, *map(str, args)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip


def result(proc: subprocess.Popen[str]) -> dict[str, float]:
    out, err = proc.communicate(timeout=RUN_S)
    assert proc.returncode == 0, err
    parsed: dict[str, float] = json.loads(out)
    return parsed


@pytest.mark.timeout(90)
def test_the_shipped_firewall_limits_each_sources_peer_connections_and_swim_datagrams() -> None:
    tcp_rate, tcp_burst = limit(f"tcp dport {PEER_PORT} ct state new")
    udp_rate, udp_burst = limit(f"udp dport {SWIM_PORT}")
    with namespaces() as (srv, a, b, srv_a, srv_b):
        r = sh("nft", "-f", str(RULES), ns=srv, check=False)
        assert r.returncode == 0, r.stderr
        with listener(srv) as server:
            a_addr, b_addr = srv_a[:-1] + "2", srv_b[:-1] + "2"
            # (a) source a opens peer-link connections as fast as it can for 3 s
            started = time.monotonic()
            flood = run_in(a, TCP_FLOOD, srv_a, PEER_PORT, 3.0, 6000)
            try:
                # (b) once a has had its burst, b still connects, every time
                deadline = time.monotonic() + 5
                while counts(server)["tcp"].get(a_addr, 0) < tcp_burst and time.monotonic() < deadline:
                    time.sleep(0.05)
                b_flood = result(run_in(b, TCP_FLOOD, srv_b, PEER_PORT, 1.0, 10))
                assert flood.poll() is None, "a's flood ended before b connected: not 'meanwhile'"
            finally:
                a_flood = result(flood)
            window = time.monotonic() - started
            tcp = counts(server)["tcp"]
            allowed = tcp_rate + tcp_burst + tcp_rate * window
            assert a_flood["attempts"] > 2 * allowed, f"a's flood was too slow to test anything: {a_flood}"
            assert tcp.get(a_addr, 0) <= allowed, (
                f"one source got {tcp.get(a_addr, 0)} of {a_flood['attempts']} connections accepted in"
                f" {window:.1f} s; the firewall allows at most {allowed:.0f}"
            )
            assert tcp.get(a_addr, 0) >= tcp_burst, f"the firewall refused a within its burst: {tcp}"
            assert b_flood == {**b_flood, "attempts": 10, "connected": 10}, b_flood
            assert tcp.get(b_addr, 0) == 10, tcp
            # (c) source a floods 7401/udp while b sends at three quarters of the limit, for longer than the burst
            # alone would last: everything of b's arrives, a gets at most the limit's share
            honest_rate, honest_count = 0.75 * udp_rate, int(udp_rate + udp_burst) + 50
            honest = run_in(b, UDP_SEND, srv_b, SWIM_PORT, honest_rate, honest_count)
            a_udp = result(run_in(a, UDP_SEND, srv_a, SWIM_PORT, 0, 10_000))
            b_udp = result(honest)
            assert b_udp["sent"] == honest_count, b_udp
            deadline = time.monotonic() + 5
            while (udp := counts(server)["udp"]).get(b_addr, 0) < honest_count and time.monotonic() < deadline:
                time.sleep(0.05)
            assert udp.get(b_addr, 0) == honest_count, f"an honest pace lost datagrams: {udp}, sent {b_udp}"
            allowed = udp_rate + udp_burst + udp_rate * a_udp["seconds"]
            assert a_udp["sent"] > 2 * allowed, f"a's flood was too slow to test anything: {a_udp}"
            assert udp.get(a_addr, 0) <= allowed, (
                f"one source got {udp.get(a_addr, 0)} of {a_udp['sent']} datagrams through in"
                f" {a_udp['seconds']:.2f} s; the firewall allows at most {allowed:.0f}"
            )


@pytest.mark.timeout(90)
def test_the_shipped_firewall_counts_an_ipv6_64_as_one_source_of_peer_connections() -> None:
    """Two addresses of one /64 flooding together get one source's share; another /64 still connects."""
    rate, burst = limit(f"tcp dport {PEER_PORT} ct state new")
    assert (rate, burst) == limit6(f"tcp dport {PEER_PORT} ct state new")
    with namespaces() as (srv, a, b, srv_a, srv_b):
        r = sh("nft", "-f", str(RULES), ns=srv, check=False)
        assert r.returncode == 0, r.stderr
        with listener(srv) as server:
            started = time.monotonic()
            floods = [run_in(a, TCP_FLOOD, v6(srv_a, 1), PEER_PORT, 2.0, 6000, v6(srv_a, n)) for n in (2, 3)]
            try:
                deadline = time.monotonic() + 5
                while sum(counts(server)["tcp"].values()) < burst and time.monotonic() < deadline:
                    time.sleep(0.05)
                other = result(run_in(b, TCP_FLOOD, v6(srv_b, 1), PEER_PORT, 1.0, 10, v6(srv_b, 2)))
            finally:
                made = [result(f) for f in floods]
            window = time.monotonic() - started
            tcp = counts(server)["tcp"]
            same_64 = tcp.get(v6(srv_a, 2), 0) + tcp.get(v6(srv_a, 3), 0)
            allowed = rate + burst + rate * window
            assert all(m["attempts"] > allowed for m in made), f"a flood was too slow to test anything: {made}"
            assert same_64 <= allowed, (
                f"one /64 got {same_64} connections accepted from two addresses in {window:.1f} s ({tcp});"
                f" the firewall allows one source at most {allowed:.0f}"
            )
            assert same_64 >= burst, f"the firewall refused the /64 within its burst: {tcp}"
            assert other == {**other, "attempts": 10, "connected": 10}, other
            assert tcp.get(v6(srv_b, 2), 0) == 10, tcp
