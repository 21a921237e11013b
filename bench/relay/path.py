"""The relay path in one process, without sockets: what the nodes' Python does per envelope.

    python bench/relay/path.py [--envelopes 20000] [--rounds 5] [--cross] [--before DIR] [--profile]

For each envelope, as a node does it for a 1,000-byte `call_ice` between two clients homed on it: unmask the
client's frame (node/protocol/wire/wsframe.py), decode it (node/protocol/wire/client.py), run the relay core
(`RelayCore.client_envelope`: rule 13's local delivery, node/protocol/relay/core.py), then encode and frame the
delivery and the receipt. No I/O and no event loop: this is the part of the node's CPU per message that the
bench/relay/run.py figures hold besides the kernel's and trio's.

`--cross`: the caller on node A, the callee on node B, both cores in this process. A's peer envelope and B's
result cross as a peer link carries them (`peer_to_map`, msgpack, `unpack_all`, `peer_from_map`), without the
Noise sealing (C code, not the Python this bench is for) or the link's batching; B frames the delivery, A the
receipt. Microseconds are for both nodes' work, as bench/relay/run.py's cross-node CPU figure is.
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


def measure(tree: Path, envelopes: int, rounds: int, profile: bool, cross: bool = False) -> dict[str, Any]:
    """Microseconds per envelope on `tree`'s node code (imported from there)."""
    sys.path.insert(0, str(tree))
    from node.protocol.identity import Identity
    from node.protocol.relay.core import RelayCore, ToClient, ToPeer
    from node.protocol.settings import RelaySection
    from node.protocol.wire import Limits, packb, unpack_all
    from node.protocol.wire.client import Deliver, Receipt, Status, decode_client_frame, encode_client_message
    from node.protocol.wire.peer import peer_from_map, peer_to_map
    from node.protocol.wire.wsframe import data_frame, unmask
    from node.testing.relaysim import WALL0_S, client_claim, sim_client

    keys = [Identity.from_seed(bytes([0x10 + i]) * 32) for i in range(2 if cross else 1)]
    cores = {
        k.id: RelayCore(
            node_id=k.id, config=RelaySection(), rng=random.Random(3), now=0.0, sign=k.sign, wall_offset_s=WALL0_S
        )
        for k in keys
    }
    home_a, home_b = keys[0].id, keys[-1].id
    a, b = sim_client(b"bench-path-A"), sim_client(b"bench-path-B")
    clock = [0.0]
    sent, delivered, receipted = [0], [0], [0]  # checked at the end: a bench of a broken path measures nothing

    def settle(node: bytes) -> None:
        """Carry out `node`'s commands, and those they set off on the other node, until both are quiet."""
        work = [node]
        while work:
            at = work.pop()
            for cmd in cores[at].drain():
                if isinstance(cmd, ToClient):
                    data_frame(encode_client_message(cmd.msg, json=False))
                    if isinstance(cmd.msg, Deliver):
                        delivered[0] += 1
                    elif isinstance(cmd.msg, Receipt) and cmd.msg.status is Status.DELIVERED:
                        receipted[0] += 1
                elif isinstance(cmd, ToPeer):
                    (frame,) = unpack_all(packb(peer_to_map(cmd.msg)), max_bytes=Limits.PEER_FRAME_MAX)
                    cores[cmd.node].peer_message(at, peer_from_map(frame), clock[0])
                    work.append(cmd.node)

    for core in cores.values():
        core.members_changed(list(cores), 0.0)
    for conn, client, home in ((1, a, home_a), (2, b, home_b)):
        claim = client_claim(client, home, WALL0_S)
        cores[home].client_online(conn, client, 0.0, claim=claim, address_key=f"a{conn}")
    for node in cores:
        settle(node)
    rng = random.Random(7)
    plain = packb({"t": "call_ice", "to": b, "call": rng.randbytes(16), "body": rng.randbytes(1000), "ref": 1})
    mask = rng.randbytes(4)
    masked = unmask(plain, mask, 0)
    origin = cores[home_a]

    def one() -> None:
        env = decode_client_frame(unmask(masked, mask, 0))
        clock[0] += 1e-5
        sent[0] += 1
        origin.client_envelope(1, env, clock[0])
        settle(home_a)

    def run(n: int) -> float:
        start = time.perf_counter()
        for i in range(n):
            one()
            if i % 256 == 0:  # a node's timer ticks the core once per batch
                for node, core in cores.items():
                    if core.next_deadline() <= clock[0]:
                        core.tick(clock[0])
                        settle(node)
        return (time.perf_counter() - start) / n * 1e6

    run(min(envelopes, 2000))  # warm-up: caches, the lookup of the callee's home
    times = [run(envelopes) for _ in range(rounds)]
    if profile:
        import cProfile
        import pstats

        prof = cProfile.Profile()
        prof.runcall(run, envelopes)
        pstats.Stats(prof, stream=sys.stderr).sort_stats("tottime").print_stats(25)
    if not sent[0] == delivered[0] == receipted[0]:
        raise SystemExit(f"sent {sent[0]}, delivered {delivered[0]}, receipted {receipted[0]}: not a relay path")
    return {"best_us": min(times), "median_us": statistics.median(times), "runs_us": times}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--envelopes", type=int, default=20_000)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--before", type=Path, help="another tree (git worktree) to run alternately with this one")
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--cross", action="store_true", help="caller and callee on two nodes (both nodes' work)")
    ap.add_argument("--tree", type=Path, default=REPO, help=argparse.SUPPRESS)  # the tree a child process measures
    ap.add_argument("--json", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.before is None:
        result = measure(args.tree, args.envelopes, args.rounds, args.profile, args.cross)
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
                   "--json", *(["--cross"] if args.cross else [])]
            out = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=600,
                                 env=dict(os.environ, PYTHONDONTWRITEBYTECODE="1"))
            medians[name].append(json.loads(out.stdout)["median_us"])
            print(f"round {rnd + 1} {name}: {medians[name][-1]:.2f} µs per envelope", flush=True)
    before, after = statistics.median(medians["before"]), statistics.median(medians["after"])
    print(f"before {before:.2f} µs, after {after:.2f} µs per envelope (medians of {args.rounds}); "
          f"after/before {after / before:.2f}; load average {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
