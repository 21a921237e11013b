"""The censor lab (docs/security.md, "Censorship"): a client namespace whose only way out is a "censor" namespace.

    client ns  10.N.1.2 --- 10.N.1.1  censor ns  10.N.2.1 --- servers ns 10.N.2.x (registry, nodes, DoH, nginx)

The censor forwards between the two and, per `block()`, answers TCP to a blocked address with a reset and drops the
rest; every plain DNS query from the client (UDP/TCP 53, whatever resolver it names) is redirected to a liar in the
censor that answers every name with `POISON` (itself blocked). The client's /etc/resolv.conf (ip netns exec
bind-mounts /etc/netns/NAME) names a resolver that does not exist; only the liar answers.

The test process enters the servers namespace (`inside`, setns(2) on the calling thread) and runs the registry and the
nodes in its own trio loop there; the client runs as a subprocess in the client namespace (`client_argv`).
Root only; `close()` removes every namespace and file it made.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import random
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tests.faults.netns import missing_tools, run
from tests.helpers import REPO, homing_env

CLONE_NEWNET = 0x40000000
LIAR = r"""
import socket, sys, dns.message, dns.rrset
poison, addr = sys.argv[1], sys.argv[2]
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind((addr, 53))
while True:
    data, peer = s.recvfrom(4096)
    try:
        q = dns.message.from_wire(data)
        r = dns.message.make_response(q)
        r.answer.append(dns.rrset.from_text(q.question[0].name, 30, "IN", "A", poison))
        s.sendto(r.to_wire(), peer)
        print("poisoned", q.question[0].name, flush=True)
    except Exception as exc:
        print("bad query", exc, flush=True)
"""


def lab_missing() -> str | None:
    return missing_tools() or (None if shutil.which("nginx") or Path("/usr/sbin/nginx").exists() else "no nginx")


class CensorLab:
    def __init__(self) -> None:
        self.tag = f"cz{os.getpid() % 100000}"
        self.net = f"10.{random.randint(150, 199)}"
        self.client, self.censor, self.servers = f"{self.tag}c", f"{self.tag}x", f"{self.tag}s"
        self._made: list[str] = []
        self._procs: list[subprocess.Popen[Any]] = []
        self.etc = Path("/etc/netns") / self.client

    @property
    def poison(self) -> str:
        return f"{self.net}.9.9"

    def server_ip(self, host: int) -> str:
        return f"{self.net}.2.{host}"

    def __enter__(self) -> CensorLab:
        try:
            self._build()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _ns(self, name: str) -> None:
        run("ip", "netns", "add", name)
        self._made.append(name)
        run("ip", "-n", name, "link", "set", "lo", "up")

    def _build(self) -> None:
        for name in (self.client, self.censor, self.servers):
            self._ns(name)
        n, c, x, s = self.net, self.client, self.censor, self.servers
        run("ip", "link", "add", "c0", "netns", c, "type", "veth", "peer", "name", "c1", "netns", x)
        run("ip", "link", "add", "s0", "netns", s, "type", "veth", "peer", "name", "s1", "netns", x)
        for ns, dev, addr in ((c, "c0", f"{n}.1.2/24"), (x, "c1", f"{n}.1.1/24"), (x, "s1", f"{n}.2.1/24"),
                              (s, "s0", f"{n}.2.254/24")):  # fmt: skip
            run("ip", "-n", ns, "addr", "add", addr, "dev", dev)
            run("ip", "-n", ns, "link", "set", dev, "up")
        run("ip", "-n", c, "route", "add", "default", "via", f"{n}.1.1")
        run("ip", "-n", s, "route", "add", "default", "via", f"{n}.2.1")
        run("ip", "netns", "exec", x, "sysctl", "-q", "-w", "net.ipv4.ip_forward=1")
        nft = ["ip", "netns", "exec", x, "nft"]
        run(*nft, "add", "table", "inet", "censor")
        run(*nft, "add", "set", "inet", "censor", "blocked", "{ type ipv4_addr; }")
        run(*nft, "add", "chain", "inet", "censor", "fwd_c", "{ type filter hook forward priority 0; policy accept; }")
        run(*nft, "add", "rule", "inet", "censor", "fwd_c", "ip", "daddr", "@blocked", "meta", "l4proto", "tcp",
            "reject", "with", "tcp", "reset")  # fmt: skip
        run(*nft, "add", "rule", "inet", "censor", "fwd_c", "ip", "daddr", "@blocked", "drop")
        run(*nft, "add", "table", "ip", "liar")
        run(*nft, "add", "chain", "ip", "liar", "pre_c", "{ type nat hook prerouting priority -100; }")
        run(*nft, "add", "rule", "ip", "liar", "pre_c", "iifname", "c1", "udp", "dport", "53", "dnat", "to", f"{n}.1.1")
        self._procs.append(subprocess.Popen(
            ["ip", "netns", "exec", x, sys.executable, "-c", LIAR, self.poison, f"{n}.1.1"],
            env=homing_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        ))  # fmt: skip
        self.etc.mkdir(parents=True, exist_ok=True)
        (self.etc / "resolv.conf").write_text(f"nameserver {n}.2.53\noptions timeout:1 attempts:1\n")
        (self.etc / "hosts").write_text("127.0.0.1 localhost\n")
        self.block()

    def add_server_ip(self, host: int) -> str:
        ip = self.server_ip(host)
        run("ip", "-n", self.servers, "addr", "add", f"{ip}/24", "dev", "s0")
        return ip

    def block(self, *addresses: str) -> None:
        """Exactly these addresses (plus the poisoned one) are blocked from now on."""
        nft = ["ip", "netns", "exec", self.censor, "nft"]
        run(*nft, "flush", "set", "inet", "censor", "blocked")
        elems = ", ".join([self.poison, *addresses])
        run(*nft, "add", "element", "inet", "censor", "blocked", f"{{ {elems} }}")

    def client_argv(self, argv: list[str]) -> list[str]:
        return ["ip", "netns", "exec", self.client, *argv]

    def run_client(self, code: str, *args: str, timeout_s: float = 30.0) -> str:
        res = subprocess.run(self.client_argv([sys.executable, "-c", code, *args]), capture_output=True, text=True,
                             timeout=timeout_s, env=homing_env(), cwd=REPO)  # fmt: skip
        if res.returncode != 0:
            raise RuntimeError(f"client failed ({res.returncode}): {res.stderr[-3000:]}")
        return res.stdout

    def close(self) -> None:
        for proc in self._procs:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, 9)
            proc.wait(timeout=5)
        for name in reversed(self._made):
            run("ip", "netns", "del", name, check=False)
        self._made.clear()
        shutil.rmtree(self.etc, ignore_errors=True)


@contextlib.contextmanager
def inside(ns_name: str) -> Iterator[None]:
    """Run the calling thread in namespace `ns_name` (sockets it opens live there) until the block ends."""
    libc = ctypes.CDLL(None, use_errno=True)
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    target = os.open(f"/var/run/netns/{ns_name}", os.O_RDONLY)
    try:
        if libc.setns(target, CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), "setns into the lab failed")
        try:
            yield
        finally:
            if libc.setns(own, CLONE_NEWNET) != 0:  # pragma: no cover - cannot happen for our own namespace
                raise OSError(ctypes.get_errno(), "setns back failed")
    finally:
        os.close(own)
        os.close(target)
