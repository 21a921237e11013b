"""The node's garbage-collector policy (node/app/gcpolicy.py), each in a fresh interpreter (the policy is global).

The measured problem: a node growing by 5,000 re-homed clients ran a full collection at every 25 % of growth, each
a pause of 0.1-0.8 s. Here a process grows the same way (250 kept container objects per "client", the rest freed
at once) and counts its full collections, with CPython's default thresholds and with the policy.
"""

from __future__ import annotations

import json
import subprocess
import sys

GROW = """
import gc, json, sys
if sys.argv[1] == "policy":
    from node.app import gcpolicy
    gcpolicy.serving()
full = []
gc.callbacks.append(lambda phase, info: full.append(1) if phase == "stop" and info["generation"] == 2 else None)
kept = []
for client in range(5000):                      # a storm of 5,000 clients re-homed on this node
    kept.append([[client, i] for i in range(125)])  # ~250 container objects each stay
    garbage = [{"n": i} for i in range(200)]     # and what handling them allocated goes again
print(json.dumps({"full": len(full), "threshold": gc.get_threshold(), "frozen": gc.get_freeze_count()}))
"""


def grow(mode: str) -> dict[str, object]:
    out = subprocess.run(
        [sys.executable, "-c", GROW, mode], capture_output=True, text=True, timeout=120, check=True
    ).stdout
    return dict(json.loads(out))


def test_a_node_growing_by_a_storm_runs_no_full_collection_under_the_policy() -> None:
    default, policy = grow("default"), grow("policy")
    assert default["full"] >= 3, default  # CPython's defaults: a full collection every 25 % of growth
    assert policy["full"] == 0, policy
    assert policy["threshold"] == [700, 10, 1_000] and policy["frozen"] > 1_000  # type: ignore[operator]


def test_a_leaving_node_collects_nothing() -> None:
    code = "import gc; from node.app import gcpolicy; gcpolicy.serving(); gcpolicy.leaving(); print(gc.isenabled())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "False"
