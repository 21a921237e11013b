"""What one wake-up costs on this machine: a 1,000-byte message relayed at 1,000 msg/s through two relay processes.

    python bench/relay/wake_floor.py [--runs 3] [--count 5000]

source -> relay -> relay -> sink, each its own process on 127.0.0.1 TCP; every relay wakes up once per message,
reads it and writes it on. Run once with trio (`receive_some` / `send_all`, what a trio server does at the least)
and once with plain blocking sockets (the floor of any Python server). Reports the first relay's CPU per message
(user + system, from /proc) and the sink's one-way latency p50/p99 (the source stamps each message with
CLOCK_MONOTONIC, which every process shares). Results go to bench/results/wake_floor.md.

At a thousand messages a second a relayed message pays mostly for wake-ups, not for work; this bench is the
yardstick for the relay's per-message CPU at that rate (docs/performance.md, "Client WebSocket layer").
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import trio

SIZE = 1000
HERE = Path(__file__).resolve()
RESULTS = HERE.parent.parent / "results" / "wake_floor.md"


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# --- the roles (each runs in its own process) ----------------------------------------------------------------


def blocking_relay(listen: socket.socket, next_port: int) -> None:
    out = socket.create_connection(("127.0.0.1", next_port))
    out.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    conn, _ = listen.accept()
    buf = b""
    while chunk := conn.recv(65536):
        buf += chunk
        while len(buf) >= SIZE:
            out.sendall(buf[:SIZE])
            buf = buf[SIZE:]


async def trio_relay(listen: socket.socket, next_port: int) -> None:
    out = await trio.open_tcp_stream("127.0.0.1", next_port)
    sock = trio.socket.from_stdlib_socket(listen)
    conn, _ = await sock.accept()
    stream = trio.SocketStream(conn)
    buf = b""
    while chunk := await stream.receive_some(65536):
        buf += chunk
        while len(buf) >= SIZE:
            await out.send_all(buf[:SIZE])
            buf = buf[SIZE:]


def sink(listen: socket.socket, count: int) -> None:
    conn, _ = listen.accept()
    buf, lat = b"", []
    while len(lat) < count and (chunk := conn.recv(65536)):
        buf += chunk
        while len(buf) >= SIZE:
            msg, buf = buf[:SIZE], buf[SIZE:]
            lat.append((time.monotonic_ns() - int.from_bytes(msg[:8], "big")) / 1e6)
    lat.sort()
    print(f"{lat[len(lat) // 2]:.4f} {lat[int(len(lat) * 0.99)]:.4f}", flush=True)


def source(port: int, count: int, rate: float) -> None:
    out = socket.create_connection(("127.0.0.1", port))
    out.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    start = time.monotonic()
    for i in range(count):
        delay = start + i / rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        out.sendall(time.monotonic_ns().to_bytes(8, "big") + bytes(SIZE - 8))


def serve(role: str, args: list[str]) -> None:
    listen = socket.create_server(("127.0.0.1", 0))
    print(listen.getsockname()[1], flush=True)
    if role == "sink":
        sink(listen, int(args[0]))
    elif role == "blocking":
        blocking_relay(listen, int(args[0]))
    else:
        trio.run(trio_relay, listen, int(args[0]))


# --- the driver ---------------------------------------------------------------------------------------------


def spawn(*args: str) -> tuple[subprocess.Popen[str], int]:
    proc = subprocess.Popen([sys.executable, str(HERE), "--role", *args], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    return proc, int(proc.stdout.readline())


def one_run(kind: str, count: int) -> dict[str, float]:
    procs: list[subprocess.Popen[str]] = []
    try:
        sink_proc, port = spawn("sink", str(count))
        procs.append(sink_proc)
        relays = []
        for _ in range(2):
            proc, port = spawn(kind, str(port))
            procs.append(proc)
            relays.append(proc)
        before = cpu_s(relays[-1].pid)  # the first hop: the relay the source writes to
        t0 = time.monotonic()
        source(port, count, 1000.0)
        assert sink_proc.stdout is not None
        p50, p99 = (float(x) for x in sink_proc.stdout.readline().split())
        cpu = cpu_s(relays[-1].pid) - before
        return {"cpu_us_per_msg": cpu / count * 1e6, "p50_ms": p50, "p99_ms": p99, "secs": time.monotonic() - t0}
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "--role":
        serve(sys.argv[2], sys.argv[3:])
        return
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--count", type=int, default=5000)
    args = ap.parse_args()
    rows: dict[str, list[dict[str, float]]] = {"trio": [], "blocking sockets": []}
    for run in range(args.runs):
        for name, kind in (("trio", "trio"), ("blocking sockets", "blocking")):
            row = one_run(kind, args.count)
            print(f"run {run + 1} {name}: {row}", flush=True)
            rows[name].append(row)
    lines = [
        "# Wake-up floor: one relay hop at 1,000 msg/s",
        "",
        f"Command: `python bench/relay/wake_floor.py --runs {args.runs} --count {args.count}`; medians of "
        f"{args.runs} runs, side by side; {time.strftime('%Y-%m-%d')}, {os.cpu_count()} CPUs. source -> relay -> "
        "relay -> sink over loopback TCP, 1,000-byte messages at 1,000/s; CPU is the first relay's per message, "
        "latency is source to sink (two relay hops).",
        "",
        "| relay | CPU µs per message | one-way p50 ms | p99 ms |",
        "|---|---|---|---|",
    ]
    for name, runs in rows.items():
        med = {k: statistics.median(r[k] for r in runs) for k in ("cpu_us_per_msg", "p50_ms", "p99_ms")}
        lines.append(f"| {name} | {med['cpu_us_per_msg']:.0f} | {med['p50_ms']:.2f} | {med['p99_ms']:.2f} |")
    lines += ["", "Every run:", ""]
    for name, runs in rows.items():
        lines += [f"- {name}: " + ", ".join(f"{k}={v:.3g}" for k, v in r.items() if k != "secs") for r in runs]
    RESULTS.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
