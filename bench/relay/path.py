"""The same-node relay path in one process, without sockets: what the node's Python does per envelope.

    python bench/relay/path.py [--envelopes 20000] [--rounds 5] [--before DIR] [--profile]

For each envelope, as a node does it for a 1,000-byte `call_ice` between two clients homed on it: unmask the
client's frame (node/protocol/wire/wsframe.py), decode it (node/protocol/wire/client.py), run the relay core
(`RelayCore.client_envelope`, its loopback to itself as the callee's home, the result and the receipt), then
encode and frame the delivery and the receipt. No I/O and no event loop: this is the part of the node's CPU per
message that the bench/relay/run.py figures hold besides the kernel's and trio's (about two thirds of it).
Prints microseconds per envelope, the best and the median of `--rounds`. With `--before DIR` (a git worktree of
another commit) the two trees run alternately, each in its own process, and the ratio of medians is printed;
a relay path change of 5 % is visible here where bench/relay/ab.py needs many rounds. `--profile` prints the
functions that took the most time (cProfile; its overhead inflates small functions).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent


def measure(tree: Path, envelopes: int, rounds: int, profile: bool) -> dict[str, Any]:
    """Microseconds per envelope on `tree`'s node code (imported from there)."""
    sys.path.insert(0, str(tree))
    from node.protocol.identity import Identity
    from node.protocol.relay.core import RelayCore, ToClient
    from node.protocol.settings import RelaySection
    from node.protocol.wire import packb
    from node.protocol.wire.client import decode_client_frame, encode_client_message
    from node.protocol.wire.wsframe import data_frame, unmask
    from node.testing.relaysim import WALL0_S, client_claim, sim_client

    key = Identity.from_seed(b"\x10" * 32)
    a, b = sim_client(b"bench-path-A"), sim_client(b"bench-path-B")
    core = RelayCore(
        node_id=key.id, config=RelaySection(), rng=random.Random(3), now=0.0, sign=key.sign, wall_offset_s=WALL0_S
    )
    core.members_changed([key.id], 0.0)
    for conn, client in ((1, a), (2, b)):
        core.client_online(conn, client, 0.0, claim=client_claim(client, key.id, WALL0_S), address_key=f"a{conn}")
    core.drain()
    rng = random.Random(7)
    plain = packb({"t": "call_ice", "to": b, "call": rng.randbytes(16), "body": rng.randbytes(1000), "ref": 1})
    mask = rng.randbytes(4)
    masked = unmask(plain, mask, 0)
    clock = [1.0]

    def one() -> None:
        env = decode_client_frame(unmask(masked, mask, 0))
        now = clock[0] = clock[0] + 1e-5
        core.client_envelope(1, env, now)
        for cmd in core.drain():
            if isinstance(cmd, ToClient):
                data_frame(encode_client_message(cmd.msg, json=False))

    def run(n: int) -> float:
        start = time.perf_counter()
        for i in range(n):
            one()
            if i % 256 == 0 and core.next_deadline() <= clock[0]:  # a node's timer ticks the core once per batch
                core.tick(clock[0])
        return (time.perf_counter() - start) / n * 1e6

    run(min(envelopes, 2000))  # warm-up: caches, the lookup of the callee's home
    times = [run(envelopes) for _ in range(rounds)]
    if profile:
        import cProfile
        import pstats

        prof = cProfile.Profile()
        prof.runcall(run, envelopes)
        pstats.Stats(prof, stream=sys.stderr).sort_stats("tottime").print_stats(25)
    return {"best_us": min(times), "median_us": statistics.median(times), "runs_us": times}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--envelopes", type=int, default=20_000)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--before", type=Path, help="another tree (git worktree) to run alternately with this one")
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--tree", type=Path, default=REPO, help=argparse.SUPPRESS)  # the tree a child process measures
    ap.add_argument("--json", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.before is None:
        result = measure(args.tree, args.envelopes, args.rounds, args.profile)
        if args.json:
            print(json.dumps(result))
        else:
            print(f"{args.tree}: {result['best_us']:.2f} µs per envelope best, {result['median_us']:.2f} median")
        return
    medians: dict[str, list[float]] = {"before": [], "after": []}
    for rnd in range(args.rounds):
        order = [("before", args.before), ("after", REPO)]
        for name, tree in order if rnd % 2 == 0 else order[::-1]:
            cmd = [sys.executable, __file__, "--tree", str(tree), "--envelopes", str(args.envelopes), "--rounds", "3",
                   "--json"]
            out = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=600,
                                 env=dict(os.environ, PYTHONDONTWRITEBYTECODE="1"))
            medians[name].append(json.loads(out.stdout)["median_us"])
            print(f"round {rnd + 1} {name}: {medians[name][-1]:.2f} µs per envelope", flush=True)
    before, after = statistics.median(medians["before"]), statistics.median(medians["after"])
    print(f"before {before:.2f} µs, after {after:.2f} µs per envelope (medians of {args.rounds}); "
          f"after/before {after / before:.2f}; load average {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
