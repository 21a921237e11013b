"""What a handshake flood on the peer port costs a node: one host with no key, reconnecting as fast as it can.

    python -m bench.peer_handshakes [--duration 10] [--workers 8] [--addresses 1] [--out FILE]

Starts `homing node run` (a closed federation: the flooding key is not admitted), then from 127.0.0.2 (or, with
`--addresses N`, from N addresses 127.0.2.1, 127.0.2.2, ... in turn: each its own /32) opens connections to its
peer port and runs the dialler's side of the Noise handshake on each, `--workers` at a time,
for `--duration` seconds. Reports the attempts per second, the node's CPU (from /proc, as a share of one core and
per attempt) and the node's own count of what it refused (`homing_packets_refused_total{layer="peer"}`: `unadmitted`
is a handshake the node ran to its end, `rate_limited` a connection closed unread). docs/security.md quotes it.
No anchor runs alongside: this measures a protection (how much of a core a keyless host can take), not speed.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

import trio

from bench.swim import git_commit
from node.net.peerconn import handshake
from node.protocol.errors import TransportError
from node.protocol.identity import Identity, parse_id
from tests.helpers import homing_cmd, homing_env, refused_by_reason, wait_for_file

REPO = Path(__file__).resolve().parent.parent
ATTACKER = "127.0.0.2"
ATTACKERS_FROM = "127.0.2."  # with --addresses N: 127.0.2.1 ... (N <= 250)
ATTEMPT_TIMEOUT_S = 2.0


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def refused(metrics_port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5) as resp:
        return refused_by_reason(resp.read().decode(), "peer")


def source(addresses: int, n: int) -> str:
    """The address the `n`th attempt binds to: one attacker address, or `addresses` of them in turn."""
    return ATTACKER if addresses <= 1 else f"{ATTACKERS_FROM}{1 + n % addresses}"


async def flood(port: int, node_id: bytes, duration_s: float, workers: int, addresses: int = 1) -> int:
    stranger = Identity.generate()
    attempts = 0

    async def worker() -> None:
        nonlocal attempts
        end = trio.current_time() + duration_s
        while trio.current_time() < end:
            sock = trio.socket.socket()
            try:
                await sock.bind((source(addresses, attempts), 0))
                with trio.move_on_after(ATTEMPT_TIMEOUT_S):
                    await sock.connect(("127.0.0.1", port))
                    stream = trio.SocketStream(sock)
                    await handshake(stream, stranger, initiator=True, expected_id=node_id, admit=lambda _: True)
            except (OSError, TransportError):
                pass  # refused or closed: what the flood expects
            finally:
                sock.close()
            attempts += 1

    async with trio.open_nursery() as nursery:
        for _ in range(workers):
            nursery.start_soon(worker)
    return attempts


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--duration", type=float, default=10.0)
    ap.add_argument("--workers", type=int, default=8)
    ap.add_argument("--addresses", type=int, default=1, choices=range(1, 251), metavar="1..250")
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "peer_handshakes.md")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        flags = [arg for flag in ("--ws", "--swim", "--peer", "--metrics") for arg in (flag, "127.0.0.1:0")]
        node = subprocess.Popen(
            homing_cmd("node", "run", "--data-dir", tmp, *flags),
            env=homing_env(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            ports = wait_for_file(Path(tmp) / "ports.json", timeout=20)
            with urllib.request.urlopen(f"http://127.0.0.1:{ports['metrics']}/v1/members", timeout=5) as resp:
                node_id = parse_id(json.load(resp)["self"])
            time.sleep(1.0)  # past the start-up work
            before, cpu0, t0 = refused(ports["metrics"]), cpu_s(node.pid), time.monotonic()
            attempts = trio.run(flood, ports["peer"], node_id, args.duration, args.workers, args.addresses)
            elapsed, cpu = time.monotonic() - t0, cpu_s(node.pid) - cpu0
            after = refused(ports["metrics"])
        finally:
            node.kill()
            node.wait(10)
    counts = {k: round(after.get(k, 0) - before.get(k, 0)) for k in after if after.get(k, 0) != before.get(k, 0)}
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    block = (
        f"\n## {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, node code {git_commit()}, load average {load}\n\n"
        f"`python -m bench.peer_handshakes --duration {args.duration:g} --workers {args.workers}"
        f"{f' --addresses {args.addresses}' if args.addresses > 1 else ''}`\n\n"
        f"- {attempts} attempts in {elapsed:.1f} s ({attempts / elapsed:.0f}/s) from "
        f"{'one address' if args.addresses <= 1 else f'{args.addresses} addresses'} with no key\n"
        f"- node CPU {cpu:.2f} s: {100 * cpu / elapsed:.0f} % of a core, "
        f"{1e6 * cpu / max(1, attempts):.0f} µs per attempt\n"
        f"- the node's refusals (layer peer): {counts}\n"
    )
    print(block)
    if not args.out.exists():
        args.out.write_text("# Peer-port handshake flood (bench/peer_handshakes.py)\n")
    with args.out.open("a") as f:
        f.write(block)


if __name__ == "__main__":
    main()
