"""A flooding client and a slow-reading client do not hurt the others (docs/security.md, "Malicious client").

Two real nodes (`homing node run`, each its own process, same settings) each serve four well-behaved
caller/callee pairs, each pair relaying one `call_ice` every 25 ms (within its rate limit). While a second process
(tests/adversarial/attacker.py) floods node A far above the rate limit, with malformed and oversized frames,
reconnecting whenever it is closed, and keeps a client on A that never reads, we measure each envelope's relay
latency (send at the caller to arrival at the callee) on A and, at the same time, on B, which nobody attacks.
Three rounds, each with a fresh attacker. In at least two of them (the median round), the p99 on A must stay
within max(2 x the p99 on B in the same round, that + 5 ms).
Why a control node measured at the same time rather than a baseline before the attack: on this VM kind, an idle
relay's p99 is set by the hypervisor (vCPU wake-ups, steal), not by the node, and it moves 5-30 ms from one
3-second window to the next with the machine otherwise idle. Baselines measured before the attack failed CI three
times (e.g. 15.09 ms baseline, 30.65 ms under attack); two nodes measured in the same window see the same machine
(clean windows: 7.17/7.16, 17.28/19.20 ms), so what differs between them is what the attack did to A's event loop,
which is the claim. The 5 ms floor keeps a sub-millisecond p99 on a quieter host from failing on scheduler jitter.
What the control showed: A's loop was held 5-17 ms at a time by one connection's task step (a read of many flood
envelopes handled in one go), and A's p99 was over 2x B's in 7 of 27 rounds (median rounds 2.24x, 1.47x, 1.21x in
three runs of 9). With `[clients] handle_slice_s` (1 ms, then the other connections run): 1 of 36 (1.01x-1.14x).
The flooder must have been closed with 4429 (and 1009 for its oversized frames) in every round, as A's log says,
the slow reader disconnected, and A's /metrics must count the refusals.
"""

from __future__ import annotations

import gc
import json
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import httpx2
import trio

from node.client.connection import ClientConnection, connect_client
from node.protocol.identity import Identity
from node.protocol.wire.client import Deliver, Receipt
from tests.helpers import REPO, homing_cmd, homing_env, refused_by_reason, wait_for_file

PAIRS = 4
SAMPLES_PER_PAIR = 100
INTERVAL_S = 0.025  # 40 envelopes/s per caller: under the call_ice limit (50/s, burst 200)
ATTACK_S = 30.0  # the attacker's own deadline; the test stops it as soon as the measurement is done
ROUNDS = 3  # each with a fresh attacker; the median rounds are compared


def p99(samples: list[float]) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


async def _pair(url: str, out: list[float]) -> None:
    caller, callee = Identity.generate(), Identity.generate()
    async with connect_client(url, caller) as a, connect_client(url, callee) as b:
        await _relay_once(a, b, callee.id)  # warm up: both homed, caches filled
        for _ in range(SAMPLES_PER_PAIR):
            out.append(await _relay_once(a, b, callee.id))
            await trio.sleep(INTERVAL_S)


async def _relay_once(a: ClientConnection, b: ClientConnection, to: bytes) -> float:
    start = trio.current_time()
    ref = await a.send_envelope("call_ice", to, b"call", b"candidate:1 1 udp 2122260223 10.0.0.1 54321 typ host")
    while not isinstance(await b.receive(), Deliver):
        pass
    elapsed = trio.current_time() - start
    while not (isinstance(receipt := await a.receive(), Receipt) and receipt.ref == ref):
        pass
    assert receipt.status.value == "delivered", receipt
    return elapsed


async def measure(attacked_url: str, control_url: str) -> tuple[list[float], list[float]]:
    """PAIRS pairs on each node at once, so both see the same machine; returns (attacked, control) latencies."""
    attacked: list[float] = []
    control: list[float] = []
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            for _ in range(PAIRS):
                nursery.start_soon(_pair, attacked_url, attacked)
                nursery.start_soon(_pair, control_url, control)
    return attacked, control


def _attack_round(attacked_url: str, control_url: str, address: str) -> tuple[list[float], list[float], dict[str, Any]]:
    """Both nodes measured while a fresh attacker process attacks the first from `address`; returns both latencies
    and the attacker's stats."""
    attacker = subprocess.Popen(
        [sys.executable, "-m", "tests.adversarial.attacker", attacked_url, str(ATTACK_S), address],
        env=homing_env(), cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert attacker.stdout is not None
        assert attacker.stdout.readline().strip() == "ready"
        attacked, control = trio.run(measure, attacked_url, control_url)
        out, _ = attacker.communicate("stop\n", timeout=20)
    finally:
        if attacker.poll() is None:
            attacker.kill()
            attacker.wait(timeout=10)
    stats: dict[str, Any] = json.loads(out.splitlines()[-1])
    return attacked, control, stats


def _start_node(data_dir: Path) -> subprocess.Popen[bytes]:
    """A node whose log goes to `data_dir`/node.log."""
    data_dir.mkdir()
    (data_dir / "homing-node.toml").write_text("[clients]\nsend_queue_bytes_max = 262144\n")
    args = ["node", "run", "--data-dir", str(data_dir), "--config", str(data_dir / "homing-node.toml")]
    args += ["--ws", "127.0.0.1:0", "--swim", "127.0.0.1:0", "--peer", "127.0.0.1:0", "--metrics", "127.0.0.1:0"]
    with (data_dir / "node.log").open("wb") as log:
        return subprocess.Popen(homing_cmd(*args), env=homing_env(), cwd=REPO, stderr=log)


def _close_codes(log: bytes) -> dict[str, int]:
    """Close code -> how many clients the node closed so (its `event=client_closed` lines: 4429, 1009, 1008)."""
    return dict(Counter(re.findall(r"event=client_closed .*? code=(\d+)", log.decode(errors="replace"))))


def test_flooding_and_slow_reading_clients_leave_others_p99_within_2x(tmp_path: Path) -> None:
    nodes = [_start_node(tmp_path / "attacked"), _start_node(tmp_path / "control")]
    # The measuring clients run in this process: after the suite's hypothesis tests its heap is large, and a
    # collector pause here would be charged to the nodes. Measure the nodes, not pytest's garbage.
    gc.collect()
    gc.freeze()
    gc.disable()
    try:
        ports = [wait_for_file(tmp_path / name / "ports.json", timeout=20) for name in ("attacked", "control")]
        attacked_url, control_url = (f"ws://127.0.0.1:{p['ws']}/v1/client" for p in ports)
        # Each round from a fresh address: the node charges an abusive address (4429, 1009) new handshakes, and a
        # round that started in the last round's debt would be refused at its first connection.
        log = tmp_path / "attacked" / "node.log"
        rounds, closes = [], []
        for i in range(ROUNDS):
            start = log.stat().st_size
            rounds.append(_attack_round(attacked_url, control_url, f"127.0.0.{2 + i}"))
            closes.append(_close_codes(log.read_bytes()[start:]))
        metrics = httpx2.get(f"http://127.0.0.1:{ports[0]['metrics']}/metrics", timeout=5).text
    finally:
        gc.enable()
        gc.unfreeze()
        for node in nodes:
            if node.poll() is None:
                node.kill()
                node.wait(timeout=10)

    # A burst of load from the rest of a shared machine can still land on one round's A or B: the median round.
    measured = [(p99(a), p99(c)) for a, c, _ in rounds]
    within = [a <= max(2 * c, c + 0.005) for a, c in measured]
    report = "p99 ms on the attacked/control node, per round: " + ", ".join(
        f"{a * 1000:.2f}/{c * 1000:.2f} ({'within' if ok else 'over'} the limit)"
        for (a, c), ok in zip(measured, within, strict=True)
    )
    assert sum(within) > len(within) // 2, report
    # Every attacker was refused the same way, not just one lucky round. The closes are counted in the node's log:
    # the attacker runs at nice 10 and, starved on a loaded host, may see its socket fail before it reads the close
    # frame (a close it counts as 0).
    for (_, _, stats), codes in zip(rounds, closes, strict=True):
        assert codes.get("4429", 0) >= 1 and codes.get("1009", 0) >= 1, (codes, stats)
        assert stats["receipts"].get("rate_limited", 0) > 0, stats
        assert stats["slow_reader_dropped"], stats
    counts = refused_by_reason(metrics, "client")
    assert counts.get("rate_limited", 0) > 0 and counts.get("oversized", 0) > 0, counts
    print(report, [stats for _, _, stats in rounds], closes)
