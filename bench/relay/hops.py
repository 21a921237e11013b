"""Where one cross-node envelope's time goes at 1,000 msg/s: per-stage medians from timestamps (issue #17).

    (cd bench/relay && npm install)
    python bench/relay/hops.py [--runs 2] [--duration 5] [--rate 1000]

Two real `homing node run` processes (as bench/relay/run.py starts them) run with timestamp hooks installed at start
(this file, `--node`: the node's own code is not changed; each hook appends a CLOCK_MONOTONIC time to a list, written
out at exit). bench/relay/loadgen.mjs sends one pair's `call_ice` at --rate from a caller on node A to a callee on
node B and writes each envelope's send and receive times (`--stamps`). All clocks are the same CLOCK_MONOTONIC, so
the stages line up across processes: for each envelope (after the first 10 %) the first event of each kind after the
previous stage. Each hook costs 1-3 µs, which the stages include.

Stages (A = the caller's node, B = the callee's):
  send -> A wakes     the load generator's write until A's epoll_wait returns (kernel and scheduler wake-up)
  A wakes -> A read   trio's run loop until the session's os.read returned the frame
  A read -> relay     WebSocket frame, session core, msgpack decode and checks, to RelayDriver.client_envelope
  A relay core        RelayCore.client_envelope
  A after core        the core's commands carried out: the peer-link frame encoded and staged
  A rest of batch     until the flusher writes: in a quiet loop at the end of the first reader's read
                      (`flush_if_quiet`, node/net/sockio.py), which holds the other envelopes of that read (the
                      load generator's sends come in pairs at times); else until trio's before_io_wait
  A seal              the batch's frames sealed into one Noise box (ChaCha20-Poly1305) and joined
  A write -> B wakes  os.write of the box to the peer link: loopback TCP and B's wake-up
  B wakes -> B read   B's run loop until the link reader's os.read returned
  B read -> frame     the frame's header and body cut from the read buffer
  B open              decrypting the box
  B unpack            msgpack of the maps in the box
  B link core         PeerLinkCore.received (ordering, hold-back)
  B to relay          the core's Deliver commands to RelayDriver.peer_frames (wire decode of the maps)
  B relay core        RelayCore.peer_message
  B after core        the delivery encoded as a WebSocket frame for the callee's session
  B rest of batch     as on A
  B write -> receiver os.write to the callee: loopback TCP, the load generator's wake-up and its reading of the frame
The write syscalls are also given alone (the next stage may begin on the other core before a write returns).
Results: bench/results/hops.md.
"""

from __future__ import annotations

import argparse
import atexit
import bisect
import os
import statistics
import sys
import tempfile
import time
import types
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
sys.path.insert(0, str(REPO))
from bench.provenance import commit  # noqa: E402  (run as a script: the repository is not on the path)

BIG = 900  # reads and writes of at least this many bytes carry an envelope (1,000-byte bodies); smaller are receipts


# --- in the node process ---------------------------------------------------------------------------------------


def install_hooks(out: Path) -> None:
    """Wrap the node's functions at the stage boundaries; write `kind time_ns` lines to `out` at exit."""
    from node.net import peerconn, relay, session, sockio
    from node.protocol import crypto, peerlink
    from node.protocol.relay import core

    log: list[tuple[str, int]] = []
    now = time.monotonic_ns
    woke = [0]

    def mark(kind: str) -> None:
        log.append((kind, now()))

    def wrap_read(orig: Any, kind: str) -> Any:
        async def read_some(*a: Any, **k: Any) -> bytes:
            data: bytes = await orig(*a, **k)
            if len(data) >= BIG:
                log.append(("woke" + kind, woke[0]))
                mark(kind)
            return data

        return read_some

    session.read_some = wrap_read(sockio.read_some, "A_read")  # type: ignore[attr-defined]
    peerconn.read_some = wrap_read(sockio.read_some, "B_read")  # type: ignore[attr-defined]

    def write(fd: int, data: bytes) -> int:
        big = len(data) >= BIG
        if big:
            mark("write_start")
        n = os.write(fd, data)
        if big:
            mark("write_end")
        return n

    sockio.os = types.SimpleNamespace(**{**vars(os), "write": write})  # type: ignore[attr-defined]

    flusher = sockio.Flusher
    flush, after = flusher.flush, flusher.after_io_wait

    def flush_hooked(self: Any) -> None:  # at the end of the batch, or early in a quiet one (`flush_if_quiet`)
        if self._dirty:
            mark("flush")
        flush(self)

    def after_io_wait(self: Any, timeout: float) -> None:
        woke[0] = now()
        after(self, timeout)

    flusher.flush = flush_hooked  # type: ignore[method-assign]
    flusher.after_io_wait = after_io_wait  # type: ignore[method-assign]

    def around(cls: Any, name: str, enter: str | None, leave: str | None) -> None:
        orig = getattr(cls, name)

        def wrapped(*a: Any, **k: Any) -> Any:
            if enter:
                mark(enter)
            result = orig(*a, **k)
            if leave:
                mark(leave)
            return result

        setattr(cls, name, wrapped)

    around(relay.RelayDriver, "client_envelope", "A_relay", "A_after_core_done")
    around(core.RelayCore, "client_envelope", None, "A_core_done")
    around(relay.RelayDriver, "peer_frames", None, "B_after_core_done")
    around(core.RelayCore, "peer_message", "B_relay", "B_core_done")
    around(crypto.LinkSession, "open", "B_frame", "B_opened")
    around(peerlink.PeerLinkCore, "received", None, "B_link_done")
    around(peerconn, "unpack_all", None, "B_unpacked")  # the name peerconn imported: patched where it is called

    def dump() -> None:
        out.write_text("".join(f"{k} {t}\n" for k, t in log))

    atexit.register(dump)


def node_main(argv: list[str]) -> None:
    out = Path(argv.pop(0))
    install_hooks(out)
    from node.cli import main

    sys.argv = ["homing", *argv]
    sys.exit(main())


# --- the bench -------------------------------------------------------------------------------------------------

# (stage name, from event, to event); events with an "A_"/"B_" prefix come from that node's log, "send"/"recv"
# from the load generator's stamps, "write_*"/"flush"/"woke*" from the node named by the stage's letter
STAGES = [
    ("send -> A wakes", "send", "A:wokeA_read"),
    ("A wakes -> A read", "A:wokeA_read", "A:A_read"),
    ("A read -> relay", "A:A_read", "A:A_relay"),
    ("A relay core", "A:A_relay", "A:A_core_done"),
    ("A after core", "A:A_core_done", "A:A_after_core_done"),
    ("A rest of batch", "A:A_after_core_done", "A:flush"),
    ("A seal", "A:flush", "A:write_start"),
    ("A write -> B wakes", "A:write_start", "B:wokeB_read"),
    ("B wakes -> B read", "B:wokeB_read", "B:B_read"),
    ("B read -> frame", "B:B_read", "B:B_frame"),
    ("B open", "B:B_frame", "B:B_opened"),
    ("B unpack", "B:B_opened", "B:B_unpacked"),
    ("B link core", "B:B_unpacked", "B:B_link_done"),
    ("B to relay", "B:B_link_done", "B:B_relay"),
    ("B relay core", "B:B_relay", "B:B_core_done"),
    ("B after core", "B:B_core_done", "B:B_after_core_done"),
    ("B rest of batch", "B:B_after_core_done", "B:flush"),
    ("B encode", "B:flush", "B:write_start"),
    ("B write -> receiver", "B:write_start", "recv"),
]
# the write syscalls themselves, beside the chain: on loopback a write delivers the bytes and wakes the reader, who
# may run on the other core before the write returns, so the chain goes on from the start of each write
WRITES = [("(A's write syscall)", "A"), ("(B's write syscall)", "B")]


def load_log(path: Path) -> dict[str, list[int]]:
    events: dict[str, list[int]] = {}
    for line in path.read_text().splitlines():
        kind, t = line.split()
        events.setdefault(kind, []).append(int(t))
    for times in events.values():
        times.sort()
    return events


def stage_times(
    a: dict[str, list[int]], b: dict[str, list[int]], stamps: list[tuple[int, int]]
) -> dict[str, list[int]]:
    """Per stage, the nanoseconds of each envelope whose every event was found, in order (the first 10 % skipped)."""
    logs = {"A": a, "B": b}
    out: dict[str, list[int]] = {name: [] for name, _, _ in STAGES}
    out["total"] = []
    for sent, received in stamps[len(stamps) // 10 :]:
        t = {"send": sent, "recv": received}
        for _name, start, end in STAGES:
            if end in t:
                continue
            node, kind = end.split(":")
            if kind.startswith("woke"):  # the I/O wait that ended before the read: logged beside each read
                reads, wokes = logs[node].get(kind.removeprefix("woke"), []), logs[node].get(kind, [])
                i = bisect.bisect_left(reads, t[start])
                if i >= len(reads):
                    break
                t[end], t[f"{node}:{kind.removeprefix('woke')}"] = wokes[i], reads[i]
                continue
            times = logs[node].get(kind, [])
            i = bisect.bisect_left(times, t[start])
            if i >= len(times):
                break
            t[end] = times[i]
        else:
            if t["recv"] >= t["B:write_start"]:
                for name, start, end in STAGES:
                    out[name].append(t[end] - t[start])
                out["total"].append(received - sent)
                for name, node in WRITES:
                    ends = logs[node]["write_end"]
                    out.setdefault(name, []).append(
                        ends[bisect.bisect_left(ends, t[f"{node}:write_start"])] - t[f"{node}:write_start"]
                    )
    return out


def relay_bench() -> Any:
    """bench/relay/run.py: the same nodes, settings and load generator as the relay benchmark (this script's own
    directory is first on sys.path)."""
    import run

    return run


def run_once(args: argparse.Namespace, tmp: Path) -> dict[str, list[int]]:
    relay_run = relay_bench()
    launcher = [sys.executable, str(Path(__file__).resolve()), "--node"]
    procs, urls = relay_run.start_nodes(2, tmp, launcher=lambda i: [*launcher, str(tmp / f"hops{i}.log")])
    stamps = tmp / "stamps.txt"
    try:
        lat = relay_run.loadgen(urls, 0, mode="latency", rate=args.rate, duration=args.duration, stamps=stamps)
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(timeout=30)
    print(f"loadgen: p50 {lat['p50_ms']:.3f} ms, p99 {lat['p99_ms']:.3f} ms", flush=True)
    pairs = [(int(s), int(r)) for s, r in (line.split() for line in stamps.read_text().splitlines() if line.strip())]
    a, b = load_log(tmp / "hops0.log"), load_log(tmp / "hops1.log")  # node 0 holds the caller, node 1 the callee
    return stage_times(a, b, pairs)


def anchor_p50(args: argparse.Namespace) -> float:
    """The bare Node.js `ws` relay's one-hop p50 (ms) with the same load generator: the anchor of the same run."""
    relay_run = relay_bench()
    proc, port = relay_run.start(relay_run.SERVERS["Node.js ws"])
    try:
        lat = relay_run.loadgen([f"ws://127.0.0.1:{port}/v1/client"], 0, mode="latency", rate=args.rate,
                                duration=args.duration)  # fmt: skip
    finally:
        proc.kill()
        proc.wait()
    return float(lat["p50_ms"])


def main() -> None:
    if sys.argv[1:2] == ["--node"]:
        node_main(sys.argv[2:])
        return
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=2)
    ap.add_argument("--duration", type=float, default=5)
    ap.add_argument("--rate", type=int, default=1000)
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "hops.md")
    args = ap.parse_args()
    runs = []
    anchors = []
    load0 = os.getloadavg()[0]
    for _ in range(args.runs):
        anchors.append(anchor_p50(args))
        with tempfile.TemporaryDirectory(prefix="homing-hops-") as tmp:
            runs.append(run_once(args, Path(tmp)))
    write(runs, anchors, args, load0)


def write(runs: list[dict[str, list[int]]], anchors: list[float], args: argparse.Namespace, load0: float) -> None:
    names = [n for n, _, _ in STAGES] + ["total"] + [n for n, _ in WRITES]
    lines = [
        "# Where a cross-node envelope's time goes (bench/relay/hops.py)",
        "",
        f"Command: `python bench/relay/hops.py --runs {args.runs} --duration {args.duration:g} --rate {args.rate}`; "
        f"commit {commit()}; {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; {os.cpu_count()} "
        f"CPUs; load average (1 min) {load0:.2f} before, {os.getloadavg()[0]:.2f} after. One pair, 1,000-byte "
        "`call_ice` bodies, caller on node A, callee on node B; per stage the median over the envelopes of each run "
        "(µs), stages as in the docstring of bench/relay/hops.py; hooks included (1-3 µs each).",
        "",
        "| stage | " + " | ".join(f"run {i + 1} p50 µs" for i in range(len(runs))) + " |",
        "|---|" + "---|" * len(runs),
    ]
    for name in names:
        cells = [f"{statistics.median(r[name]) / 1000:.0f}" if r.get(name) else "-" for r in runs]
        label = f"**{name}**" if name == "total" else name
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
        if name == "total":
            lines.append("| anchor: Node.js `ws` bare relay, one hop, total | " + " | ".join(
                f"{a * 1000:.0f}" for a in anchors) + " |")  # fmt: skip
    counts = ", ".join(str(len(r["total"])) for r in runs)
    lines += ["", f"Envelopes matched per run: {counts}. The anchor ran just before each run, with the same load "
              "generator and rate.", ""]  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
