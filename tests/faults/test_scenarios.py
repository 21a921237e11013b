"""Network fault scenarios: five real nodes, each in its own network namespace, and a load host with call clients.

Scenario                       preset  what must hold
kill -9 during calls           local   survivors declare it dead; every envelope from a connected sender gets exactly
                                       one terminal receipt (0 lost); its clients move to other nodes
SIGSTOP 10 s, then SIGCONT     local   declared dead while paused; refutes (higher incarnation) and is alive everywhere
                                       again; 0 lost receipts
2|3 partition, then heal       local   each side keeps serving its own clients; the sides declare each other dead;
                                       after the heal membership reconverges and cross-side envelopes are delivered or
                                       expired, each with one terminal receipt
10 % loss + 50 ms delay        lan     no member is ever seen dead (Lifeguard); calls complete; 0 lost receipts
(60 s here, 5 min with -m soak)

The `local` preset (probe every 0.2 s, timeout 0.1 s) keeps the scenarios without delay fast. With 50 ms of delay
each way (100 ms RTT) its 0.1 s probe timeout is below the network's RTT, a misconfiguration; the delay scenario
uses `lan` (memberlist's LAN timings), the preset real deployments run. HOMING_SEED picks the victims.
"""

from __future__ import annotations

import os
import random
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.faults.labcluster import LabCluster, wait_loaded, wait_report
from tests.faults.netns import Lab, missing_tools, wait_until

NODES = 5
LOAD_HOST = 6
SEED = int(os.environ.get("HOMING_SEED", str(random.SystemRandom().randrange(1, 10_000))))

pytestmark = [pytest.mark.root]


@pytest.fixture
def lab() -> Iterator[Lab]:
    why = missing_tools()
    if why:
        pytest.skip(why)
    with Lab(hosts=NODES + 1, seed=SEED) as lab:
        yield lab


def check_books(report: dict[str, Any], *, terminal_ok: set[str]) -> None:
    """Every envelope gets exactly one terminal receipt (docs/client-protocol.md; orphans: the sender's link died)."""
    summary = {k: v for k, v in report.items() if k != "timeline"}
    assert report["lost"] == 0, f"envelopes without a terminal receipt (seed {SEED}): {summary}"
    assert report["duplicate_terminal"] == 0, f"a second terminal receipt (seed {SEED}): {summary}"
    assert report["unknown_receipts"] == 0, summary
    assert report["sent"] == report["terminal_total"] + report["orphaned"], summary
    assert set(report["terminal"]) <= terminal_ok, summary
    assert report["sent"] > 0


def test_kill9_one_node_during_calls_loses_no_receipt(lab: Lab, tmp_path: Path) -> None:
    cluster = LabCluster(lab, tmp_path, NODES, preset="local", mailbox_ttl_s=15)
    cluster.start_all()
    victim = random.Random(SEED).randint(1, NODES)
    out = tmp_path / "load.json"
    load = cluster.start_load(LOAD_HOST, out, [cluster.url(i) for i in range(1, NODES + 1)], pairs=15,
                              seconds=25, interval_s=0.5, drain_s=30, seed=SEED)
    wait_loaded(out)
    time.sleep(8)  # calls in flight everywhere
    cluster.kill9(victim)
    survivors = [i for i in range(1, NODES + 1) if i != victim]
    wait_until(lambda: all(cluster.sees(i, {cluster.ids[victim]: "dead"}) for i in survivors), 20,
               f"the survivors to declare node {victim} dead (seed {SEED})")
    report = wait_report(load, out, 120)
    print(f"seed {SEED} victim {victim}", {k: v for k, v in report.items() if k != "timeline"})
    check_books(report, terminal_ok={"delivered", "expired"})
    assert report["reconnects"] > 0, "the victim's clients moved to other nodes"
    assert report["calls"]["completed"] >= 0.9 * report["calls"]["started"], report["calls"]


def test_sigstop_10s_then_resume_refutes_and_rejoins(lab: Lab, tmp_path: Path) -> None:
    cluster = LabCluster(lab, tmp_path, NODES, preset="local", mailbox_ttl_s=15)
    cluster.start_all()
    victim = random.Random(SEED + 1).randint(1, NODES)
    vid = cluster.ids[victim]
    others = [i for i in range(1, NODES + 1) if i != victim]
    before = cluster.members(others[0])
    assert before is not None
    out = tmp_path / "load.json"
    load = cluster.start_load(LOAD_HOST, out, [cluster.url(i) for i in range(1, NODES + 1)], pairs=10,
                              seconds=30, interval_s=0.5, drain_s=30, seed=SEED)
    wait_loaded(out)
    time.sleep(3)
    cluster.signal(victim, signal.SIGSTOP)
    paused = time.monotonic()
    try:
        wait_until(lambda: all(cluster.sees(i, {vid: "dead"}) for i in others), 10,
                   f"the others to declare the paused node {victim} dead (seed {SEED})")
        time.sleep(max(0.0, 10 - (time.monotonic() - paused)))
    finally:
        cluster.signal(victim, signal.SIGCONT)
    cluster.wait_converged(30, f"node {victim} to refute and every node to see all five alive (seed {SEED})")
    after = cluster.members(others[0])
    assert after is not None and after[vid][1] > before[vid][1], "it came back with a higher incarnation"
    report = wait_report(load, out, 120)
    print(f"seed {SEED} victim {victim}", {k: v for k, v in report.items() if k != "timeline"})
    check_books(report, terminal_ok={"delivered", "expired"})


def calls_between(report: dict[str, Any], t0: float, t1: float) -> tuple[int, int]:
    """(completed, failed) calls that finished between unix times t0 and t1, from the timeline."""
    rows = [r for r in report["timeline"] if t0 <= r[0] <= t1]
    if len(rows) < 2:
        return 0, 0
    return rows[-1][4] - rows[0][4], rows[-1][5] - rows[0][5]


def test_partition_2_3_and_heal(lab: Lab, tmp_path: Path) -> None:
    cluster = LabCluster(lab, tmp_path, NODES, preset="local", mailbox_ttl_s=20)
    cluster.start_all()
    a, b = [1, 2], [3, 4, 5]
    urls = [cluster.url(i) for i in range(1, NODES + 1)]
    same_out, cross_out = tmp_path / "same.json", tmp_path / "cross.json"
    # indices into urls: 0,1 = side A (nodes 1, 2); 2,3,4 = side B (nodes 3, 4, 5)
    same = cluster.start_load(LOAD_HOST, same_out, urls, pairs=10, homes="0-1,1-0,2-3,3-4,4-2", seconds=35,
                              interval_s=0.5, drain_s=30, seed=SEED)
    cross = cluster.start_load(LOAD_HOST, cross_out, urls, pairs=6, homes="0-2,3-1,1-4", seconds=35,
                               interval_s=1.0, call_timeout_s=5, drain_s=35, seed=SEED + 1)
    wait_loaded(same_out)
    wait_loaded(cross_out)
    time.sleep(3)
    lab.partition(a, b)
    cut_at = time.time()
    ids = cluster.ids
    wait_until(lambda: all(cluster.sees(i, {ids[j]: "dead" for j in (b if i in a else a)}) for i in a + b), 20,
               f"each side to declare the other dead (seed {SEED})")
    detected_at = time.time()
    time.sleep(12)
    lab.heal()
    healed_at = time.time()
    cluster.wait_converged(40, f"membership to reconverge after the heal (seed {SEED})")
    reconverged_s = time.time() - healed_at
    same_r, cross_r = wait_report(same, same_out, 150), wait_report(cross, cross_out, 150)
    strip = lambda r: {k: v for k, v in r.items() if k != "timeline"}  # noqa: E731
    print(f"seed {SEED} detect {detected_at - cut_at:.1f}s reconverge {reconverged_s:.1f}s")
    print("same side", strip(same_r))
    print("cross", strip(cross_r))
    check_books(same_r, terminal_ok={"delivered", "expired"})
    check_books(cross_r, terminal_ok={"delivered", "expired", "cancelled"})
    assert same_r["orphaned"] == 0 and cross_r["orphaned"] == 0, "no client lost its node"
    done, failed = calls_between(same_r, detected_at, healed_at)
    assert done > 0 and failed == 0, f"each side serves its own clients while partitioned: {done} done {failed} failed"


class MemberWatch:
    """Polls every node's /v1/members once a second in a thread; records every dead or left sighting."""

    def __init__(self, cluster: LabCluster) -> None:
        self.cluster = cluster
        self.stop = threading.Event()
        self.polls = 0
        self.suspect = 0
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.stop.wait(1.0):
            for i in self.cluster.procs:
                view = self.cluster.members(i)
                if view is not None:
                    self.polls += 1
                    self.suspect += sum(1 for st, _ in view.values() if st == "suspect")

    def __enter__(self) -> MemberWatch:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(10)


def loss_and_delay(lab: Lab, tmp_path: Path, seconds: float) -> dict[str, Any]:
    try:
        import netfilterqueue  # noqa: F401
    except ImportError:
        pytest.skip("the netfilterqueue package is not installed (Debian libnetfilter-queue-dev, then pip)")
    cluster = LabCluster(lab, tmp_path, NODES, preset="lan", mailbox_ttl_s=30)
    cluster.start_all(timeout=60)
    hosts = list(range(1, NODES + 2))
    cluster.start_delayers(hosts, delay_ms=50, seconds=seconds + 120)
    lab.faults(hosts, loss_pct=10, queue=0)
    out = tmp_path / "load.json"
    load = cluster.start_load(LOAD_HOST, out, [cluster.url(i) for i in range(1, NODES + 1)], pairs=10,
                              seconds=seconds, interval_s=1.0, call_timeout_s=15, drain_s=60, ping_timeout_s=10,
                              seed=SEED)
    with MemberWatch(cluster) as watch:
        report = wait_report(load, out, seconds + 180)
    dead = cluster.dead_sightings()
    result = {k: v for k, v in report.items() if k != "timeline"}
    result.update(polls=watch.polls, suspect_sightings=watch.suspect, dead_sightings=len(dead), seed=SEED)
    print("loss+delay", result)
    print(lab.fault_counters(1))
    assert watch.polls >= NODES * seconds * 0.5, "the watch kept polling"
    assert not dead, f"false deaths under 10 % loss + 50 ms delay (seed {SEED}): {dead[:5]}"
    check_books(report, terminal_ok={"delivered", "expired"})
    assert report["orphaned"] == 0, "no client lost its node"
    assert report["calls"]["completed"] >= 0.95 * report["calls"]["started"], report["calls"]
    return result


@pytest.mark.timeout(300)
def test_loss_10pct_delay_50ms_60s_no_false_death(lab: Lab, tmp_path: Path) -> None:
    loss_and_delay(lab, tmp_path, 60)


@pytest.mark.soak
@pytest.mark.timeout(900)
def test_loss_10pct_delay_50ms_5min_no_false_death(lab: Lab, tmp_path: Path) -> None:
    loss_and_delay(lab, tmp_path, 300)
