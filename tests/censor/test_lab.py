"""The censor lab's scenarios (docs/security.md, "Censorship"), each timed, in one set of namespaces (lab.py).

(e) one network asking the distributor 1,000 times learns at most its 3 bridges;
(a) registry blocked (TCP reset, its name poisoned in plain DNS), DoH reachable -> a listed node in < 2 s;
(b) every listed node blocked too, the client holds a referral card of a bridge -> connected in < 2 s;
(c) everything blocked (DoH too) but the cache -> the cached bridge;
(d) a prober that knows the bridge's address but not its path gets nginx's answers, byte for byte;
(h) a registry's health checks: a node whose client port is firewalled leaves the list within two check periods
    and comes back when it answers again.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from pathlib import Path
from typing import Any

import attrs
import httpx2
import pytest
import trio

from bootstrap.app import run_bootstrap
from bootstrap.dns_cli import load_tsig_key, publish_dns
from bootstrap.service import current_signed_list
from node.net.clients import ClientServer
from node.protocol.identity import Identity, encode_document, id_text
from node.protocol.nodelist import build_registration, make_card
from node.protocol.settings import ClientsSection
from tests.bootstrap.util import evolve_http, init_registry, make_config
from tests.censor.lab import CensorLab, inside, lab_missing
from tests.censor.nginx import CONF, NGINX
from tests.censor.test_decoy import PROBES, make_site
from tests.clients.fixtures import LocalRelay
from tests.fixtures.dns import dns_stack, have_dns_tools

pytestmark = [
    pytest.mark.skipif(lab_missing() is not None, reason=f"censor lab: {lab_missing()}"),
    pytest.mark.skipif(not have_dns_tools(), reason="censor lab: needs knotd, unbound and openssl"),
]

PORT = 8443  # every server on its own address, same port: a prober's answers can be compared byte for byte
NAME = "_homing.lab.test."
SECRET = "/c4n4ry/ws"
DISCOVER = r"""
import json, sys, time, trio
from pathlib import Path
from node.client.discovery import DiscoveryConfig, discover, parse_entry
from node.protocol.identity import parse_id
c = json.loads(sys.argv[1])
cfg = DiscoveryConfig(trust=frozenset(parse_id(k) for k in c["trust"]), registries=tuple(c["registries"]),
    doh=tuple(c["doh"]), names=tuple(c["names"]), cache=Path(c["cache"]) if c["cache"] else None,
    extra=tuple(parse_entry(u) for u in c["extra"]), ca_file=c["ca"], want=1, deadline_s=8, handshake_timeout_s=3)
async def main():
    t0 = time.monotonic()
    result = await discover(cfg)
    print(json.dumps({"elapsed_s": time.monotonic() - t0, "result": result.to_json()}))
trio.run(main)
"""
DISTRIBUTOR = r"""
import json, sys, time, httpx2
from node.protocol.bridges import open_bridge_list
from node.protocol.identity import decode_document, parse_id
url, key, n = sys.argv[1], parse_id(sys.argv[2]), int(sys.argv[3])
seen, answered = set(), 0
with httpx2.Client() as client:
    for _ in range(n):
        r = client.get(url)
        if r.status_code == 200:
            answered += 1
            seen |= {c.id.hex() for c in open_bridge_list(decode_document(r.content), {key}, now=time.time()).cards}
print(json.dumps({"answered": answered, "learned": sorted(seen)}))
"""
PROBE = r"""
import json, socket, sys
out = []
for host in sys.argv[1:3]:
    answers = []
    for probe in json.loads(sys.argv[3]):
        s = socket.create_connection((host, int(sys.argv[4])), timeout=2); s.sendall(probe.encode("latin-1"))
        s.settimeout(3); data = b""
        try:
            while (chunk := s.recv(65536)):
                data += chunk
                s.settimeout(0.2)
            data += b"<closed>"
        except TimeoutError:
            data += b"<open>"
        s.close(); answers.append(data.decode("latin-1"))
    out.append(answers)
print(json.dumps(out))
"""


def client_discover(lab: CensorLab, **cfg: Any) -> dict[str, Any]:
    out: dict[str, Any] = json.loads(lab.run_client(DISCOVER, json.dumps(cfg)))
    return out


def start_nginx(root: Path, work: Path, ip: str) -> subprocess.Popen[bytes]:
    from node.protocol.decoy import TYPES

    types = " ".join(f"{t} {e[1:]};" for e, t in TYPES.items())
    work.mkdir(parents=True, exist_ok=True)
    conf = CONF.format(user="user root root;\n", dir=work, types=types, port=PORT, root=root)
    (work / "nginx.conf").write_text(conf.replace(f"127.0.0.1:{PORT}", f"{ip}:{PORT}"))
    return subprocess.Popen([NGINX, "-c", str(work / "nginx.conf"), "-p", str(work), "-e", str(work / "e.log")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip


def test_censor_lab(tmp_path: Path) -> None:
    site = tmp_path / "site"
    site.mkdir()
    make_site(site)
    timings: dict[str, float] = {}
    with CensorLab() as lab:
        ips = {name: lab.add_server_ip(h) for name, h in
               (("registry", 10), ("a", 11), ("b", 12), ("bridge", 20), ("doh", 30), ("nginx", 40))}  # fmt: skip
        with inside(lab.servers), dns_stack(tmp_path, zone="lab.test.", doh_host=ips["doh"]) as dns:
            nginx = start_nginx(site, tmp_path / "nginx", ips["nginx"])
            try:
                trio.run(_scenarios, lab, ips, dns, tmp_path, site, timings)
            finally:
                nginx.terminate()
                nginx.wait(timeout=5)
    print("censor lab timings:", json.dumps(timings))


async def _serve_node(nursery: trio.Nursery, ip: str, **clients: Any) -> ClientServer:
    server = ClientServer(identity=Identity.generate(), config=ClientsSection(**clients), relay=LocalRelay())
    await nursery.start(server.serve, ip, PORT)
    return server


async def _scenarios(lab: CensorLab, ips: dict[str, str], dns: Any, tmp: Path, site: Path,
                     timings: dict[str, float]) -> None:  # fmt: skip
    reg_dir = tmp / "registry"
    registry = init_registry(reg_dir)
    config = attrs.evolve(make_config(reg_dir, bridge_rate_per_range_per_s=1000.0, bridge_burst=5000),
                          listen=f"{ips['registry']}:{PORT}")  # fmt: skip
    config = evolve_http(config, rate_per_ip_per_s=10_000.0, rate_per_ip_burst=10_000)  # every ask is answered
    async with trio.open_nursery() as nursery:
        await nursery.start(lambda task_status: run_bootstrap(config, task_status=task_status))
        a = await _serve_node(nursery, ips["a"])
        b = await _serve_node(nursery, ips["b"])
        bridge = await _serve_node(nursery, ips["bridge"], path=SECRET, decoy_dir=str(site))
        base = f"http://{ips['registry']}:{PORT}"
        async with httpx2.AsyncClient() as http:
            now = int(time.time())
            regs = [(a.identity, ips["a"], "/v1/client", True), (b.identity, ips["b"], "/v1/client", True),
                    (bridge.identity, ips["bridge"], SECRET, False)]  # fmt: skip
            regs += [(Identity.generate(), f"{lab.net}.3.{i}", "/x", False) for i in range(1, 8)]  # more bridges
            for ident, ip, path, listed in regs:
                doc = build_registration(ident, ws=f"ws://{ip}:{PORT}{path}", swim=f"{ip}:7401", peer=f"{ip}:7402",
                                         ts=now, ttl=3600, reg=registry.id, listed=listed)  # fmt: skip
                resp = await http.post(f"{base}/v1/nodes", content=encode_document(doc),
                                       headers={"content-type": "application/msgpack"})  # fmt: skip
                assert resp.status_code == 200, resp.text
        publish_dns(current_signed_list(reg_dir, time.time()), name=NAME, zone="lab.test", server=dns.auth,
                    key=load_tsig_key(dns.bind_key_file))  # fmt: skip
        common = {"trust": [id_text(registry.id)], "registries": [f"http://registry.lab.test:{PORT}"],
                  "doh": [dns.doh_url], "names": [NAME], "ca": str(dns.ca_file)}  # fmt: skip
        bridge_ids = {ident.id.hex() for ident, _, _, listed in regs if not listed}

        # (e) the distributor: 1,000 asks from one network learn at most 3 bridges
        t0 = time.monotonic()
        got = json.loads(
            await trio.to_thread.run_sync(
                lambda: lab.run_client(DISTRIBUTOR, f"{base}/v1/bridges", id_text(registry.id), "1000", timeout_s=60)
            )
        )
        timings["e_distributor_1000"] = time.monotonic() - t0
        assert got["answered"] == 1000 and 1 <= len(got["learned"]) <= 3 and set(got["learned"]) <= bridge_ids

        # (a) the registry is blocked and its name poisoned; DoH still answers
        lab.block(ips["registry"])
        out = await trio.to_thread.run_sync(lambda: client_discover(lab, cache="", extra=[], **common))
        proven = [f for f in out["result"]["nodes"] if f.get("handshake_ms") is not None]
        assert proven and proven[0]["id"] in {id_text(a.identity.id), id_text(b.identity.id)}, out
        assert proven[0]["source"] == "doh" and out["elapsed_s"] < 2.0, out
        assert any("registry.lab.test" in e for e in out["result"]["errors"]), out  # the registry did not answer
        timings["a_doh"] = out["elapsed_s"]

        # (b) every listed node blocked too; the client holds the bridge's referral card
        lab.block(ips["registry"], ips["a"], ips["b"])
        card = make_card(bridge.identity, ws=f"ws://{ips['bridge']}:{PORT}{SECRET}", ts=int(time.time()))
        cache = str(tmp / "client-cache.json")
        out = await trio.to_thread.run_sync(lambda: client_discover(lab, cache=cache, extra=[card], **common))
        proven = [f for f in out["result"]["nodes"] if f.get("handshake_ms") is not None]
        assert proven and proven[0]["id"] == id_text(bridge.identity.id) and out["elapsed_s"] < 2.0, out
        timings["b_referral"] = out["elapsed_s"]

        # (c) everything blocked, DoH too: the cache still names the bridge
        lab.block(ips["registry"], ips["a"], ips["b"], ips["doh"])
        out = await trio.to_thread.run_sync(lambda: client_discover(lab, cache=cache, extra=[], **common))
        proven = [f for f in out["result"]["nodes"] if f.get("handshake_ms") is not None]
        assert proven and proven[0]["id"] == id_text(bridge.identity.id) and proven[0]["source"] == "cache", out
        timings["c_cache"] = out["elapsed_s"]

        # (d) a prober who knows the bridge's address, not its path: nginx's answers, byte for byte
        t0 = time.monotonic()
        probes = json.dumps([p.decode("latin-1") for p in PROBES])
        answers = json.loads(await trio.to_thread.run_sync(
            lab.run_client, PROBE, ips["bridge"], ips["nginx"], probes, str(PORT)))  # fmt: skip
        timings["d_probe"] = time.monotonic() - t0

        def masked(text: str) -> str:
            return re.sub(r"Date: [^\r]+\r\n", "Date: *\r\n", text)

        for probe, ours, theirs in zip(PROBES, answers[0], answers[1], strict=True):
            assert masked(ours) == masked(theirs), probe

        # (h) health checks by a second registry (checks every 0.5 s): firewall A's client port, then open it
        timings["h_unlisted_s"], timings["h_back_s"] = await _health(lab, ips, a, tmp)
        nursery.cancel_scope.cancel()
    assert os.geteuid() == 0


async def _health(lab: CensorLab, ips: dict[str, str], a: ClientServer, tmp: Path) -> tuple[float, float]:
    interval_s, timeout_s = 0.5, 0.4
    reg_dir = tmp / "registry2"
    registry = init_registry(reg_dir)
    ip = lab.add_server_ip(13)
    config = attrs.evolve(make_config(reg_dir, health_interval_s=interval_s, health_timeout_s=timeout_s),
                          listen=f"{ip}:{PORT}")  # fmt: skip
    fw = ["nft"]  # the test process is in the servers namespace: this firewall is theirs
    async with trio.open_nursery() as nursery, httpx2.AsyncClient() as http:
        await nursery.start(lambda task_status: run_bootstrap(config, task_status=task_status))
        base = f"http://{ip}:{PORT}"
        doc = build_registration(a.identity, ws=f"ws://{ips['a']}:{PORT}/v1/client", swim=f"{ips['a']}:7401",
                                 peer=f"{ips['a']}:7402", ts=int(time.time()), ttl=3600, reg=registry.id)  # fmt: skip
        resp = await http.post(f"{base}/v1/nodes", content=encode_document(doc),
                               headers={"content-type": "application/msgpack"})  # fmt: skip
        assert resp.status_code == 200

        async def listed() -> bool:
            from node.protocol.identity import decode_document
            from node.protocol.nodelist import open_node_list

            got = open_node_list(decode_document((await http.get(f"{base}/v1/nodes")).content), {registry.id},
                                 now=time.time())  # fmt: skip
            return a.identity.id in {n.id for n in got.nodes}

        assert await listed()
        subprocess.run([*fw, "add", "table", "inet", "fw"], check=True)
        try:
            subprocess.run([*fw, "add", "chain", "inet", "fw", "in_c",
                            "{ type filter hook input priority 0; policy accept; }"], check=True)  # fmt: skip
            subprocess.run([*fw, "add", "rule", "inet", "fw", "in_c", "ip", "daddr", ips["a"], "tcp", "dport",
                            str(PORT), "drop"], check=True)  # fmt: skip
            t0 = time.monotonic()
            while await listed():
                await trio.sleep(0.05)
            unlisted_s = time.monotonic() - t0
            assert unlisted_s < 2 * interval_s + 2 * timeout_s + 1.0, unlisted_s  # two checks, each may time out
        finally:
            subprocess.run([*fw, "delete", "table", "inet", "fw"], check=True)
        t0 = time.monotonic()
        while not await listed():
            await trio.sleep(0.05)
            assert time.monotonic() - t0 < interval_s + timeout_s + 2.0
        nursery.cancel_scope.cancel()
    return unlisted_s, time.monotonic() - t0
