"""N SWIM cores on a SimNet: build, join, crash, leave, partition, and a log of what every node saw.

Ids and addresses are derived from the seed, each core gets `random.Random(f"{seed}:{index}")`, so a seed
reproduces a cluster run exactly. `repro()` is the command line that reruns the current test with this seed.
"""

from __future__ import annotations

import functools
import os
import random
from typing import Any

import attrs

from node.protocol.identity import Identity
from node.protocol.swim.config import LOCAL, SwimConfig
from node.protocol.swim.messages import MemberChanged, MemberInfo, MemberState, ProbeResult
from node.protocol.swim.protocol import Swim
from node.protocol.swim.records import RecordVerifier, sign_record
from node.testing.simnet import SimNet, SimNode


@attrs.frozen(slots=True)
class Change:
    t: float
    observer: bytes
    member: bytes
    state: MemberState
    previous: MemberState | None
    incarnation: int


def _admit_all(_member_id: bytes) -> bool:
    return True


def node_addr(index: int) -> tuple[str, int]:
    return (f"10.{index // 65536}.{(index // 256) % 256}.{index % 256}", 7401)


class SimCluster:
    def __init__(
        self,
        n: int,
        *,
        seed: int,
        config: SwimConfig = LOCAL,
        converged: bool = False,
        late: int = 0,
        record: bool = True,
        **net_kw: Any,
    ) -> None:
        self.seed = seed
        self.config = config
        self.net = SimNet(seed=seed, **net_kw)
        self.net.repro = self.repro()
        id_rng = random.Random(f"ids:{seed}")
        # Real node keys: every alive/left record is signed by its member and verified by the others. One
        # verifier (with its cache) serves every core: a result does not depend on who asks, and each distinct
        # record is then verified once per simulation instead of once per core.
        self.keys: list[Identity] = [Identity.from_seed(id_rng.randbytes(32)) for _ in range(n)]
        self.ids: list[bytes] = [k.id for k in self.keys]
        self.verifier = RecordVerifier(cache_max=max(65_536, 8 * n))
        self.crashed: dict[bytes, float] = {}
        self.left: dict[bytes, float] = {}
        self.changes: list[Change] = []
        self.probes: dict[str, int] = {"ok": 0, "indirect_ok": 0, "failed": 0}
        if record:
            self.net.on_change.append(self._record)
            self.net.on_probe.append(self._record_probe)
        # One record per member, shared by every core's table when converged (records are immutable).
        snapshot = {
            nid: sign_record(
                MemberInfo(id=nid, addr=node_addr(i), meta=b"m%d" % i, incarnation=0, state=MemberState.ALIVE),
                self.keys[i].sign,
            )
            for i, nid in enumerate(self.ids)
        }
        admit_all = _admit_all
        if not 0 <= late <= n:
            raise ValueError("late must be within 0..n")
        early = dict(list(snapshot.items())[: n - late])  # `late` last nodes start fresh, outside the snapshot
        for i, (node_id, me) in enumerate(snapshot.items()):
            swim = Swim(
                self_id=node_id,
                addr=me.addr,
                meta=me.meta,
                config=config,
                rng=random.Random(f"{seed}:{i}"),
                now=0.0,
                admit=admit_all,
                sign=self.keys[i].sign,
                verifier=self.verifier,
            )
            if converged and node_id in early:
                swim.preload(early, 0.0)  # steady state from the start: every table from one snapshot
            self.net.add(swim, node_id, me.addr)

    def repro(self) -> str:
        test = os.environ.get("PYTEST_CURRENT_TEST", "").split(" ")[0]
        where = f"python -m pytest '{test}'" if test else "python bench/swim_sim.py"
        return f"HOMING_SIM_SEED={self.seed} {where}"

    # ---- recording ----

    def _record(self, t: float, observer: bytes, ch: MemberChanged) -> None:
        m = ch.member
        self.changes.append(Change(t, observer, m.id, m.state, ch.previous, m.incarnation))

    def _record_probe(self, _t: float, _observer: bytes, res: ProbeResult) -> None:
        self.probes[res.result] += 1

    # ---- accessors ----

    def node(self, i: int | bytes) -> SimNode:
        return self.net.nodes[self.ids[i] if isinstance(i, int) else i]

    def swim(self, i: int | bytes) -> Swim:
        return self.node(i).swim

    def running(self) -> list[bytes]:
        """Nodes neither crashed nor left."""
        return [nid for nid in self.ids if nid not in self.crashed and nid not in self.left]

    @property
    def now(self) -> float:
        return self.net.now

    # ---- actions ----

    def join_all(self, *, spread_s: float = 0.0, seed_index: int = 0) -> None:
        """Every node joins through node `seed_index`, joins spread uniformly over `spread_s` from now."""
        start = self.net.now
        for i, nid in enumerate(self.ids):
            if i == seed_index:
                continue
            t = start + (spread_s * i / len(self.ids) if spread_s else 0.0)
            self.net.at(t, functools.partial(self.join, nid, seed_index))

    def join(self, i: int | bytes, seed_index: int = 0) -> None:
        """Node `i` joins now through node `seed_index` (also a `late` node joining a converged cluster)."""
        node, seed = self.node(i), self.node(seed_index)
        self.net.call(node, lambda s: s.add_seed(seed.id, seed.addr, self.net.now))

    def crash(self, i: int | bytes) -> bytes:
        nid = self.node(i).id
        self.net.crash(nid)
        self.crashed[nid] = self.net.now
        return nid

    def leave(self, i: int | bytes) -> bytes:
        node = self.node(i)
        self.net.call(node, lambda s: s.leave(self.net.now))
        self.left[node.id] = self.net.now
        return node.id

    def partition(self, *groups: set[bytes]) -> None:
        self.net.partition(*groups)

    def heal(self) -> None:
        self.net.heal()

    def run_for(self, seconds: float) -> None:
        self.net.run_for(seconds)

    def run_until_true(self, pred: Any, *, timeout_s: float, step_s: float = 0.25) -> bool:
        """Run in steps until `pred()` holds (True) or `timeout_s` of simulated time passes (False)."""
        end = self.net.now + timeout_s
        while self.net.now < end:
            if pred():
                return True
            self.net.run_for(min(step_s, end - self.net.now))
        return bool(pred())
