"""Push wake-up latency: from a client's `call_offer` to the push request leaving the node (docs/performance.md,
"Push wake-up").

Three in-process nodes on 127.0.0.1 and the tests' local RFC 8030 push service (HTTPS, test CA). `--callees`
clients register a subscription and disconnect; a caller then sends `--offers` call_offers round-robin to them,
one at a time, each after the previous push arrived. The time is taken from the caller's send (trio clock) to the
moment the owner's push sender has written the request to its TLS stream (its `on_written` hook), so it covers
routing, mailbox replication, the owner's decision, RFC 8291 encryption, VAPID signing, TCP connect and the TLS
handshake (a fresh connection per push), all on one loaded machine. Writes bench/results/push.md.

Run: `python bench/push.py [--offers 200] [--callees 20]`.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import trio  # noqa: E402

from bench.provenance import commit  # noqa: E402
from node.client.connection import connect_client  # noqa: E402
from node.protocol.identity import Identity  # noqa: E402
from tests.integration.cluster import federation, url  # noqa: E402
from tests.push.service import push_service  # noqa: E402
from tests.push.webpush_check import UserAgent  # noqa: E402


def _pct(samples: list[float], p: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


async def run(offers: int, callees: int) -> list[float]:
    written: dict[bytes, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        async with push_service(Path(tmp)) as svc:
            push = {
                "test_allow_loopback": f"127.0.0.1:{svc.port}",
                "test_ca_file": str(svc.ca_file),
                "per_callee_per_minute_max": offers,
            }
            clients = {"rate_per_s": 1000.0, "burst": 1000}  # one caller sends back to back: lift its rate limit
            async with federation(Path(tmp), 3, push=push, clients=clients) as nodes:
                for h in nodes:
                    assert h.pusher is not None
                    h.pusher.on_written = lambda cmd, t: written.__setitem__(cmd.client, t)
                people = [Identity.generate() for _ in range(callees)]
                for i, who in enumerate(people):
                    ua = UserAgent(svc.url(f"/p/{i}"))
                    async with connect_client(url(nodes[i % 3]), who) as c:
                        await c.push_register(ua.endpoint, ua.p256dh, ua.auth)
                await trio.sleep(1.0)  # leases dropped, subscriptions at the owners
                samples: list[float] = []
                async with connect_client(url(nodes[0]), Identity.generate()) as caller:
                    for n in range(offers):
                        who = people[n % callees]
                        written.pop(who.id, None)
                        start = trio.current_time()
                        await caller.send_envelope("call_offer", who.id, b"call-%d" % n, b"offer")
                        with trio.move_on_after(10):
                            while who.id not in written:
                                await trio.sleep(0.0005)
                        if who.id not in written:
                            raise SystemExit(f"offer {n}: no push written within 10 s (arrivals {len(svc.arrivals)})")
                        samples.append(written[who.id] - start)
                        await svc.wait_for(n + 1, timeout=10)
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--offers", type=int, default=200)
    parser.add_argument("--callees", type=int, default=20)
    args = parser.parse_args()
    load_before = os.getloadavg()
    samples = trio.run(run, args.offers, args.callees)
    ms = [s * 1000 for s in samples]
    report = (
        "# Push wake-up latency (bench/push.py)\n\n"
        f"commit {commit()}, load average {load_before[0]:.2f} (1 min) before the run, "
        f"{os.cpu_count()} cores shared with other work; 3 nodes, client and push service in one process.\n\n"
        "| offers | p50 ms | p99 ms | max ms | mean ms |\n|---|---|---|---|---|\n"
        f"| {len(ms)} | {_pct(ms, 50):.1f} | {_pct(ms, 99):.1f} | {max(ms):.1f} | {statistics.mean(ms):.1f} |\n\n"
        "Measured from the caller's `call_offer` send to the owner's push request written to its TLS stream\n"
        "(routing, mailbox replication, the owner's decision, encryption, VAPID, TCP connect and TLS handshake).\n"
    )
    out = REPO / "bench" / "results" / "push.md"
    out.write_text(report)
    print(report)


if __name__ == "__main__":
    main()
