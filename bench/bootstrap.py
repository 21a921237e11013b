"""Bootstrap registry benchmark: registrations per second, then `GET /v1/nodes` requests per second and p99
with 1,000 registered nodes, side by side with nginx serving the same signed list as a static file (the ceiling).

Run: `python bench/bootstrap.py [--nodes 1000] [--duration 10] [--connections 16]` (needs `wrk` and `nginx`,
Debian packages). Everything runs on 127.0.0.1 and stops by itself; the registry and nginx are child processes
in a temp dir. Results are printed as a Markdown table for docs/performance.md.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import httpx2  # noqa: E402

from node.protocol.identity import Identity, decode_document, encode_document  # noqa: E402
from node.protocol.nodelist import build_registration  # noqa: E402
from tests.helpers import homing_cmd, homing_env, wait_for_file  # noqa: E402

NGINX_CONF = """
daemon off;
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/nginx-error.log warn;
events {{ worker_connections 1024; }}
http {{
  access_log off;
  client_body_temp_path {d}/tmp; proxy_temp_path {d}/tmp; fastcgi_temp_path {d}/tmp;
  uwsgi_temp_path {d}/tmp; scgi_temp_path {d}/tmp;
  types {{ application/msgpack msgpack; }}
  server {{
    listen 127.0.0.1:{port};
    location = /v1/nodes {{ default_type application/msgpack; alias {d}/nodes.msgpack; etag on; }}
  }}
}}
"""


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wrk(url: str, *, duration_s: int, connections: int, headers: tuple[str, ...] = ()) -> dict[str, float]:
    cmd = ["wrk", "--latency", "-t", "1", "-c", str(connections), "-d", f"{duration_s}s", "--timeout", "5s"]
    for h in headers:
        cmd += ["-H", h]
    out = subprocess.run([*cmd, url], capture_output=True, text=True, timeout=duration_s + 30, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p50 = _latency_ms(re.search(r"50%\s+([\d.]+\w+)", out).group(1))  # type: ignore[union-attr]
    p99 = _latency_ms(re.search(r"99%\s+([\d.]+\w+)", out).group(1))  # type: ignore[union-attr]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {"rps": rps, "p50_ms": p50, "p99_ms": p99, "non2xx": float(errors.group(1)) if errors else 0.0}


def _latency_ms(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s)", text)
    assert m, text
    return float(m.group(1)) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[m.group(2)]


def register_all(base: str, nodes: int, threads: int) -> float:
    """Register `nodes` distinct nodes from `threads` client threads; returns registrations per second."""
    now = int(time.time())
    registry_key = decode_document(httpx2.get(f"{base}/v1/nodes", timeout=10).content)["key"]
    docs = [
        encode_document(
            build_registration(
                Identity.from_seed(i.to_bytes(4, "big") * 8),
                ws=f"wss://node{i}.example.org/v1/client",
                swim=f"198.51.100.{i % 250}:7401",
                peer=f"198.51.100.{i % 250}:7402",
                ts=now,
                ttl=3600,
                reg=registry_key,
            )
        )
        for i in range(nodes)
    ]
    failures: list[int] = []

    def worker(part: list[bytes]) -> None:
        with httpx2.Client(timeout=10) as client:
            for body in part:
                r = client.post(f"{base}/v1/nodes", content=body, headers={"Content-Type": "application/msgpack"})
                if r.status_code != 200:
                    failures.append(r.status_code)

    start = time.perf_counter()
    pool = [threading.Thread(target=worker, args=(docs[i::threads],)) for i in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    elapsed = time.perf_counter() - start
    if failures:
        raise SystemExit(f"{len(failures)} registrations failed: {sorted(set(failures))}")
    return nodes / elapsed


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nodes", type=int, default=1000)
    ap.add_argument("--duration", type=int, default=10, help="seconds per wrk run")
    ap.add_argument("--connections", type=int, default=16)
    ap.add_argument("--threads", type=int, default=8, help="registration client threads")
    args = ap.parse_args()
    for tool in ("wrk", "nginx"):
        if shutil.which(tool) is None:
            print(f"bench/bootstrap.py: needs `{tool}` (apt-get install {tool if tool == 'wrk' else 'nginx-light'})")
            return 2
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        d.chmod(0o755)  # nginx workers (user nobody) read the list file from here
        env = homing_env()
        subprocess.run(
            homing_cmd("bootstrap", "init", "--data-dir", str(d / "reg")),
            env=env,
            check=True,
            capture_output=True,
            timeout=60,
        )
        reg = subprocess.Popen(
            homing_cmd(
                "bootstrap",
                "run",
                "--data-dir",
                str(d / "reg"),
                "--listen",
                "127.0.0.1:0",
                "--write-rate",
                "1000000",
                "--read-rate",
                "1000000",
                "--approval",
                "auto",
            ),
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        nginx = None
        try:
            base = f"http://127.0.0.1:{wait_for_file(d / 'reg' / 'ports.json')['http']}"
            reg_rate = register_all(base, args.nodes, args.threads)
            listing = httpx2.get(f"{base}/v1/nodes", timeout=10)
            (d / "nodes.msgpack").write_bytes(listing.content)
            etag = listing.headers["etag"]
            port = free_port()
            (d / "tmp").mkdir()
            (d / "nginx.conf").write_text(NGINX_CONF.format(d=d, port=port))
            nginx = subprocess.Popen(
                ["nginx", "-c", str(d / "nginx.conf"), "-p", str(d)],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                try:
                    if httpx2.get(f"http://127.0.0.1:{port}/v1/nodes", timeout=1).status_code == 200:
                        break
                except httpx2.HTTPError:
                    time.sleep(0.05)
            kw = {"duration_s": args.duration, "connections": args.connections}
            results = {
                "registry GET 200": wrk(f"{base}/v1/nodes", **kw),  # type: ignore[arg-type]
                "registry GET 304 (If-None-Match)": wrk(f"{base}/v1/nodes", headers=(f"If-None-Match: {etag}",), **kw),  # type: ignore[arg-type]
                "nginx static file 200": wrk(f"http://127.0.0.1:{port}/v1/nodes", **kw),  # type: ignore[arg-type]
            }
        finally:
            for p in (reg, nginx):
                if p is not None:
                    p.terminate()
                    try:
                        p.wait(timeout=10)
                    except subprocess.TimeoutExpired:
                        p.kill()
    size = len(listing.content)
    print(
        f"\n{args.nodes} nodes, list {size} bytes; wrk 1 thread, "
        f"{args.connections} connections, {args.duration} s each\n"
    )
    print("| what | requests/s | p50 ms | p99 ms | non-2xx/3xx |")
    print("|---|---|---|---|---|")
    print(f"| registrations (POST, {args.threads} client threads, fsync each) | {reg_rate:.0f} | | | 0 |")
    for name, r in results.items():
        print(f"| {name} | {r['rps']:.0f} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | {r['non2xx']:.0f} |")
    print("\n" + json.dumps({"registrations_per_s": reg_rate, "list_bytes": size, **results}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
