"""Hold every packet of an NFQUEUE for a fixed delay, then let it go (this kernel has no netem; faults.md).

    ip netns exec H python -m tests.faults.delayer --queue 0 --delay-ms 50 --seconds 120

Run it inside the namespace whose nftables rule sends packets to `queue` (see Lab.faults). Packets keep their
order (a constant delay is a FIFO). It stops by itself after `--seconds` (and on SIGTERM); the rule's `bypass`
flag then lets packets through undelayed, so a dead delayer never blackholes the lab. `--loss` optionally drops
that fraction too (seeded), for runs that want loss and delay from one place.
"""

from __future__ import annotations

import argparse
import collections
import random
import select
import signal
import sys
import time
from typing import Any

QUEUE_PACKETS_MAX = 65536  # packets held at once; beyond it packets pass undelayed (never unbounded memory)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--queue", type=int, default=0)
    p.add_argument("--delay-ms", type=float, default=50.0)
    p.add_argument("--loss", type=float, default=0.0, help="fraction of packets to drop, 0..1")
    p.add_argument("--seconds", type=float, required=True, help="stop after this long (bounded run time)")
    p.add_argument("--seed", type=int, default=1)
    args = p.parse_args(argv)
    try:
        from netfilterqueue import NetfilterQueue
    except ImportError:
        print("delayer: the netfilterqueue package is not installed", file=sys.stderr)
        return 3

    rng = random.Random(args.seed)
    delay_s = args.delay_ms / 1000.0
    held: collections.deque[tuple[float, Any]] = collections.deque()
    stats = {"held": 0, "dropped": 0, "passed": 0}

    def on_packet(pkt: Any) -> None:
        if args.loss and rng.random() < args.loss:
            pkt.drop()
            stats["dropped"] += 1
        elif len(held) >= QUEUE_PACKETS_MAX:
            pkt.accept()
            stats["passed"] += 1
        else:
            held.append((time.monotonic() + delay_s, pkt))
            stats["held"] += 1

    stop = {"now": False}
    signal.signal(signal.SIGTERM, lambda *_: stop.update(now=True))
    nfq = NetfilterQueue()
    nfq.bind(args.queue, on_packet, max_len=QUEUE_PACKETS_MAX, mode=1)  # COPY_META: no payload copies
    fd = nfq.get_fd()
    end = time.monotonic() + args.seconds
    print(f"delayer: queue {args.queue}, {args.delay_ms} ms, loss {args.loss}, for {args.seconds} s", flush=True)
    try:
        while not stop["now"]:
            now = time.monotonic()
            while held and held[0][0] <= now:
                held.popleft()[1].accept()
            if now >= end:
                break
            wait = min(end - now, held[0][0] - now if held else 0.5, 0.5)
            ready, _, _ = select.select([fd], [], [], max(0.0, wait))
            if ready:
                nfq.run(block=False)
    finally:
        while held:
            held.popleft()[1].accept()
        nfq.unbind()
    print(f"delayer: done {stats}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
