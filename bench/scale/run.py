"""One node at real scale (issue #17): idle phones, reconnect storms, handshake rate, process cost.

    (cd bench/relay && npm install)     # ws and @msgpack/msgpack, shared with bench/relay
    python bench/scale/run.py                       # everything, full size (19,000 idle, 10,000 in the storms)
    python bench/scale/run.py --only idle --conns 19000 --hold 600     # the issue's 10-minute idle target
    python bench/scale/run.py --conns 150 --storm-conns 100 --hold 3 --out /tmp/x.md   # smoke size

Scenarios (each server its own process, the load generator bench/scale/phones.mjs another):
- idle: one `homing node run` holds --conns authenticated clients, opened --batch handshakes at a time, for --hold
  seconds with WebSocket keepalive at its defaults (ping after 30 s of silence): node CPU % of a core, KiB of RSS
  per client above the fresh process, clients dropped, handshakes per second and CPU per handshake while
  connecting; then the same load on the bare Node.js relay (bench/relay/ws_relay.mjs), in the same run.
- storm (kill -9) and goaway (SIGTERM): three nodes; --storm-conns clients homed on the first, which is then
  killed (or stopped gracefully); every client reconnects with docs/client-protocol.md's backoff and jitter to
  the others: time until every client is re-homed and an offer to it is `delivered`; envelopes (offers sent all
  along) without exactly one terminal receipt; the survivors' CPU per re-homed client. Then the same storm on
  three bare Node.js relays (bench/relay/ws_relay.mjs; on SIGTERM the first sends a `goaway` naming the others),
  the anchor, in the same run: they do not federate, so each probe goes through a prober on the relay its callee
  re-homed to, and there are no background offers.
- process: `homing node run` with no registry: process start to ports.json written, and RSS when idle.
Every figure is written with the commit, the command and the load average (the machine may be shared).
Results: bench/results/scale.md and .json (or --out).
To look inside a run: BENCH_KEEP_DIR=/tmp/x keeps the nodes' data and logs there (emptied first),
BENCH_NODE_LOG=info sets their log level, BENCH_LOADGEN_PROF=/tmp/p writes the load generator's CPU profile there.
BENCH_NODE_PROF=/tmp/p samples every node with py-spy from the fault for BENCH_NODE_PROF_S seconds (15; node0.txt is
the stopped one).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import select
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
sys.path.insert(0, str(REPO))
from bench.bytecode import compiled_env  # noqa: E402  (run as a script: the repository is not on the path)
from bench.provenance import commit  # noqa: E402

RELAY = HERE.parent / "relay"

# Connection limits raised to the fd limit (20,000 here); keepalive, handshake and idle timeouts at their defaults.
# Every simulated phone connects from 127.0.0.1, so the per-address budgets (handshakes, pending and mailed
# envelopes) are lifted: they stand for one real address each. Envelope rate limits, the envelopes one sender may
# have pending (a prober has thousands while callees re-home) and the send queue are lifted
# only so that the storm's probers (a few connections) can address 10,000 clients and take their 10,000 receipts
# in bursts while the load generator is busy (a real sender is one phone with a few receipts in flight).
NODE_TOML = """
[clients]
send_queue_max = 65536
send_queue_bytes_max = 67108864
connections_max = 19500
connections_per_ip_max = 19500
handshakes_per_address_per_s = 1000000.0
handshakes_per_address_burst = 1000000
rate_per_s = 1000000.0
burst = 1000000

[relay]
pending_per_id_max = 1000000
pending_per_address_max = 1000000
mailbox_per_address_max = 1000000
mailbox_per_address_per_id_max = 1000000
"""


NODEJS = "Node.js ws relay (ping every 30 s)"
READY_TIMEOUT_S = 180.0  # a storm's load generator homes its clients on the first node within this


def raise_fd_limit() -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # inherited by the load generator and servers
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def env() -> dict[str, str]:
    """The nodes' environment: started from compiled modules, as an installed node is (bench/bytecode.py)."""
    extra = os.pathsep.join(filter(None, [str(REPO), os.environ.get("BENCH_EXTRA_PATH")]))
    return compiled_env(dict(os.environ, PYTHONPATH=extra))


def wait_json(path: Path, timeout_s: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            return dict(json.loads(path.read_text()))
        except (OSError, ValueError):
            time.sleep(0.005)
    raise SystemExit(f"{path} did not appear")


def members_alive(metrics_port: int) -> int:
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/v1/members", timeout=5) as resp:
        return sum(m["state"] == "alive" for m in json.loads(resp.read())["members"])


def start_nodes(count: int, tmp: Path, toml: str = NODE_TOML) -> list[tuple[subprocess.Popen[bytes], dict[str, int]]]:
    """`count` real `homing node run` processes (LAN preset) joined into one open federation."""
    tmp.mkdir(parents=True, exist_ok=True)
    (tmp / "bench.toml").write_text(toml)
    nodes: list[tuple[subprocess.Popen[bytes], dict[str, int]]] = []
    seed: list[str] = []
    for i in range(count):
        data = tmp / f"node{i}"
        cmd = [sys.executable, "-m", "node", "node", "run", "--config", str(tmp / "bench.toml"), "--data-dir",
               str(data), "--open", "--log-level", os.environ.get("BENCH_NODE_LOG", "warning"),
               *[a for s in seed for a in ("--join", s)],
               *[a for f in ("ws", "swim", "peer", "metrics") for a in (f"--{f}", "127.0.0.1:0")]]  # fmt: skip
        proc = subprocess.Popen(cmd, cwd=REPO, env=env(), stderr=(tmp / f"node{i}.log").open("wb"))
        LOGS[proc.pid] = tmp / f"node{i}.log"
        ports = wait_json(data / "ports.json")
        nodes.append((proc, ports))
        seed = seed or [f"127.0.0.1:{ports['swim']}"]
    deadline = time.monotonic() + 60
    while not all(members_alive(p["metrics"]) == count for _, p in nodes):
        if time.monotonic() > deadline:
            raise SystemExit("the bench federation did not converge")
        time.sleep(0.2)
    return nodes


def ws_url(ports: dict[str, int]) -> str:
    return f"ws://127.0.0.1:{ports['ws']}/v1/client"


LOGS: dict[int, Path] = {}  # node pid -> its stderr log (kept only while the run's temp dir lives)


def stop(procs: list[subprocess.Popen[Any]], *, expect_running: bool = True) -> None:
    """Kill what still runs; a node that exited on its own during a measurement fails the run with its log."""
    died = [p for p in procs if p.poll() is not None]
    for p in procs:
        if p.poll() is None:
            p.kill()
        p.wait(30)
    if expect_running and died:
        tails = []
        for p in died:
            log = LOGS.get(p.pid)
            text = log.read_text(errors="replace")[-3000:] if log and log.exists() else "(no log)"
            tails.append(f"pid {p.pid} exit {p.returncode}:\n{text}")
        raise SystemExit("a server exited during the measurement:\n" + "\n".join(tails))


def loadgen(*opts: str, timeout_s: float) -> dict[str, Any]:
    cmd = ["node", str(HERE / "phones.mjs"), *opts]
    out = subprocess.run(cmd, cwd=HERE, capture_output=True, text=True, timeout=timeout_s)
    if out.returncode != 0:
        raise SystemExit(f"phones.mjs failed: {out.stderr.strip()[-2000:]}")
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def load() -> float:
    return round(os.getloadavg()[0], 1)


def idle(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    rows: dict[str, Any] = {}
    timeout_s = args.hold + 600
    opts = ["--mode", "idle", "--conns", str(args.conns), "--batch", str(args.batch), "--hold", str(args.hold),
            *(["--client", args.client] if args.client else [])]
    load0 = load()
    (proc, ports), = start_nodes(1, tmp / "idle")  # fmt: skip
    try:
        time.sleep(1.0)
        rows["homing node"] = loadgen("--url", ws_url(ports), "--pid", str(proc.pid), *opts, timeout_s=timeout_s)
    finally:
        stop([proc])
    rows["homing node"]["load_avg"] = [load0, load()]
    load0 = load()
    # pinging every client every 30 s, as a homing node pings each idle client after 30 s of silence
    relay, url = start_relay({}, "30")
    try:
        time.sleep(0.5)
        rows[NODEJS] = loadgen("--url", url, "--pid", str(relay.pid), *opts, timeout_s=timeout_s)
    finally:
        stop([relay])
    rows[NODEJS]["load_avg"] = [load0, load()]
    return rows


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def node_profilers(procs: list[subprocess.Popen[str]]) -> list[subprocess.Popen[bytes]]:
    """With BENCH_NODE_PROF=DIR: py-spy samples every node (node0 is the stopped one) for BENCH_NODE_PROF_S (15)
    seconds from the fault, into DIR/node<i>.txt (collapsed stacks; `pip install py-spy`, it is no dependency of
    the project)."""
    out = os.environ.get("BENCH_NODE_PROF")
    if not out:
        return []
    Path(out).mkdir(parents=True, exist_ok=True)
    seconds = os.environ.get("BENCH_NODE_PROF_S", "15")
    spy = Path(sys.executable).with_name("py-spy")
    return [subprocess.Popen([str(spy), "record", "--nonblocking", "-r", "200", "-d", seconds, "-f", "raw", "-o",
                              f"{out}/node{i}.txt", "-p", str(p.pid)], stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL) for i, p in enumerate(procs)]  # fmt: skip


class CpuTimeline:
    """CPU seconds each of `pids` used in each whole second from start() (read from /proc every 0.1 s in a thread):
    where a storm's time goes, process by process. Bounded: at most `seconds` seconds."""

    def __init__(self, pids: dict[str, int], seconds: float) -> None:
        self.pids, self.seconds = pids, seconds
        self.per_s: dict[str, list[float]] = {name: [] for name in pids}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> dict[str, list[float]]:
        self._stop.set()
        self._thread.join(timeout=5)
        return {name: [round(c, 2) for c in cpu] for name, cpu in self.per_s.items()}

    def _read(self, pid: int) -> float | None:
        try:
            return cpu_s(pid)
        except (OSError, IndexError, ValueError):  # exited
            return None

    def _run(self) -> None:
        t0 = time.monotonic()
        last = {name: self._read(pid) for name, pid in self.pids.items()}
        second = 0
        while not self._stop.wait(0.1) and time.monotonic() - t0 < self.seconds:
            now = int(time.monotonic() - t0)
            if now == second:
                continue
            second = now
            for name, pid in self.pids.items():
                cpu, before = self._read(pid), last[name]
                self.per_s[name].append(cpu - before if cpu is not None and before is not None else 0.0)
                last[name] = cpu


def start_relay(env_extra: dict[str, str], *argv: str) -> tuple[subprocess.Popen[str], str]:
    """One bare Node.js relay (bench/relay/ws_relay.mjs PORT `argv`) on a free port, and its client URL."""
    proc = subprocess.Popen(["node", str(RELAY / "ws_relay.mjs"), "0", *argv], cwd=RELAY, stdout=subprocess.PIPE,
                            text=True, env={**os.environ, **env_extra})  # fmt: skip
    assert proc.stdout is not None
    if not select.select([proc.stdout], [], [], 30)[0]:
        stop([proc], expect_running=False)
        raise SystemExit("a Node.js relay did not start within 30 s")
    return proc, f"ws://127.0.0.1:{int(proc.stdout.readline().split()[1])}/v1/client"


def start_relays(count: int) -> tuple[list[subprocess.Popen[str]], list[str]]:
    """`count` bare relays, the first listed sending `goaway` naming the others on SIGTERM (it starts last)."""
    started: list[tuple[subprocess.Popen[str], str]] = []
    try:
        for _ in range(count - 1):
            started.append(start_relay({}))
        started.insert(0, start_relay({"WS_RELAY_GOAWAY": ",".join(url for _, url in started)}))
    except BaseException:
        stop([p for p, _ in started], expect_running=False)
        raise
    return [p for p, _ in started], [url for _, url in started]


def storm(args: argparse.Namespace, tmp: Path, how: str) -> dict[str, Any]:
    """Home --storm-conns clients on server 0 of 3, then kill -9 it (`kill`) or SIGTERM it (`goaway`): homing
    nodes; or (`kill_nodejs`, `goaway_nodejs`: the anchors) bare Node.js relays, which do not federate, so each
    probe goes through the prober on its callee's new relay and no background offers are sent (phones.mjs
    --local)."""
    load0 = load()
    procs: list[subprocess.Popen[Any]]
    if how.endswith("_nodejs"):
        procs, urls = start_relays(3)
        local = ["--local", "1"]
    else:
        nodes = start_nodes(3, tmp / how)
        procs, urls, local = [p for p, _ in nodes], [ws_url(ports) for _, ports in nodes], []
    prof = os.environ.get("BENCH_LOADGEN_PROF")  # a directory: profile the load generator (node --cpu-prof)
    cmd = ["node", *([f"--cpu-prof-dir={prof}", "--cpu-prof"] if prof else []), str(HERE / "phones.mjs"),
           "--mode", "storm", "--conns", str(args.storm_conns),
           "--batch", str(args.batch), "--rate", str(args.rate), "--timeout", str(args.storm_timeout),
           *(["--client", args.client] if args.client else []), *local,
           *[a for url in urls for a in ("--url", url)]]  # fmt: skip
    gen = subprocess.Popen(cmd, cwd=HERE, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           text=True)  # fmt: skip
    try:
        assert gen.stdin is not None and gen.stdout is not None
        # bounded: homing 10,000 clients takes about 20 s here; a generator that never gets there is reported
        if not select.select([gen.stdout], [], [], READY_TIMEOUT_S)[0]:
            gen.kill()
            said = gen.stderr.read()[-3000:] if gen.stderr else ""
            raise SystemExit(f"phones.mjs storm was not ready within {READY_TIMEOUT_S:.0f} s; it said:\n{said}")
        line = gen.stdout.readline()
        if not line.startswith("ready"):
            raise SystemExit(f"phones.mjs storm did not get ready: {line!r} {gen.stderr.read() if gen.stderr else ''}")
        time.sleep(1.0)  # background offers flow before the fault
        survivors = procs[1:]
        cpu0 = [cpu_s(p.pid) for p in survivors]
        spies = [] if local else node_profilers(procs)
        timeline = CpuTimeline({"stopped": procs[0].pid, "node1": procs[1].pid, "node2": procs[2].pid,
                                "loadgen": gen.pid}, seconds=args.storm_timeout)  # fmt: skip
        timeline.start()
        t0 = time.monotonic()
        procs[0].send_signal(signal.SIGKILL if how.startswith("kill") else signal.SIGTERM)
        gen.stdin.write("go\n")
        gen.stdin.flush()
        out, err = gen.communicate(timeout=args.storm_timeout + 180)
        wall = time.monotonic() - t0
        cpu_per_s = timeline.stop()
        cpu = sum(cpu_s(p.pid) - c for p, c in zip(survivors, cpu0, strict=True))
        for spy in spies:
            spy.wait(timeout=60)
        if gen.returncode != 0:
            raise SystemExit(f"phones.mjs storm failed: {err.strip()[-2000:]}")
        row = dict(json.loads(out.strip().splitlines()[-1]))
    finally:
        stop([gen, procs[0]], expect_running=False)  # the load generator ended, the first node was stopped
        stop(procs[1:])
    row["survivors_cpu_s"] = round(cpu, 2)
    row["cpu_s_per_s"] = cpu_per_s
    row["survivors_cpu_ms_per_rehomed_client"] = round(1000 * cpu / max(row["rehomed"], 1), 3)
    row["survivors_cpu_pct_of_a_core"] = round(100 * cpu / wall, 1)
    row["load_avg"] = [load0, load()]
    return row


def process_cost(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    """`homing node run` with no registry and no DoH: process start to ports.json, RSS idle (medians)."""
    starts, rss = [], []
    load0 = load()
    for i in range(args.process_runs):
        data = tmp / f"proc{i}"
        cmd = [sys.executable, "-m", "node", "node", "run", "--data-dir", str(data), "--log-level", "warning",
               *[a for f in ("ws", "swim", "peer", "metrics") for a in (f"--{f}", "127.0.0.1:0")]]  # fmt: skip
        child_env = env()  # before the clock starts: the harness's own work is not the node's start
        t0 = time.monotonic()
        proc = subprocess.Popen(cmd, cwd=REPO, env=child_env, stderr=subprocess.DEVNULL)
        try:
            wait_json(data / "ports.json")
            starts.append(time.monotonic() - t0)
            time.sleep(2.0)
            status = Path(f"/proc/{proc.pid}/status").read_text()
            rss.append(int(status.split("VmRSS:")[1].split()[0]) / 1024)
        finally:
            stop([proc])
    return {"start_to_serving_s": round(statistics.median(starts), 3), "runs_s": [round(s, 3) for s in starts],
            "rss_idle_mib": round(statistics.median(rss), 1), "load_avg": [load0, load()]}  # fmt: skip


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", choices=["idle", "storm", "goaway", "process"], action="append")
    ap.add_argument("--conns", type=int, default=19_000, help="idle clients held by one node")
    ap.add_argument("--hold", type=float, default=60.0, help="seconds the idle clients are held")
    ap.add_argument("--batch", type=int, default=200, help="handshakes in flight at once")
    ap.add_argument("--storm-conns", type=int, default=10_000, help="clients on the node that is killed/stopped")
    ap.add_argument("--storm-timeout", type=float, default=120.0, help="seconds a storm may take at most")
    ap.add_argument("--rate", type=float, default=50.0, help="background offers per second during a storm")
    ap.add_argument("--client", choices=["ws", "raw"], default="",
                    help="the load generator's WebSocket client: the ws library or bench/scale/rawws.mjs "
                         "(default: ws for idle, raw for the storms)")
    ap.add_argument("--process-runs", type=int, default=3)
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "scale.md")
    args = ap.parse_args(argv)
    fds = raise_fd_limit()
    need = max(args.conns, args.storm_conns) + 200
    if fds < need:
        raise SystemExit(f"open-file limit {fds} < {need}: lower --conns/--storm-conns")
    only = set(args.only or ["idle", "storm", "goaway", "process"])
    cmdline = "python bench/scale/run.py " + " ".join(sys.argv[1:] if argv is None else argv)
    result: dict[str, Any] = {"command": cmdline.strip(),
                              "commit": commit(), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                              "cpus": os.cpu_count(), "fd_limit": fds}  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="homing-scale-") as tmp_text:
        tmp = Path(os.environ.get("BENCH_KEEP_DIR") or tmp_text)  # BENCH_KEEP_DIR: keep the nodes' logs there
        if tmp != Path(tmp_text):
            shutil.rmtree(tmp, ignore_errors=True)  # a node's old ports.json would be read as the new one's
            tmp.mkdir(parents=True)
        if "process" in only:
            result["process"] = process_cost(args, tmp)
            print("process", result["process"], flush=True)
        if "idle" in only:
            result["idle"] = idle(args, tmp)
            print("idle", json.dumps(result["idle"]), flush=True)
        for how in ("kill", "kill_nodejs", "goaway", "goaway_nodejs"):  # each storm with its anchor, in one run
            if ("storm" if how.startswith("kill") else "goaway") in only:
                result[how] = storm(args, tmp, how)
                print(how, json.dumps(result[how]), flush=True)
    write(result, args.out)
    return result


def fmt(value: Any, digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def render(r: dict[str, Any]) -> str:
    lines = ["# One node at scale (bench/scale)", "",
             f"Command: `{r['command']}`; commit {r['commit']}; {r['date']}; {r['cpus']} CPUs; open-file limit "
             f"{r['fd_limit']}. Load average (1 min) before/after each scenario is given with it: the machine may be "
             "shared, so read CPU figures as upper bounds and times as noisy.", ""]  # fmt: skip
    if "process" in r:
        p = r["process"]
        lines += ["## Process cost (`homing node run`, no registry, no DoH)", "",
                  f"- start to serving (process start to ports.json written): median {p['start_to_serving_s']} s "
                  f"(runs {p['runs_s']}); RSS idle {p['rss_idle_mib']} MiB; load {p['load_avg']}", ""]  # fmt: skip
    if "idle" in r:
        cols = [("conns", "clients held", 0), ("dropped", "dropped", 0), ("hold_s", "held s", 0),
                ("server_cpu_pct_idle", "server CPU % of a core, idle", 2), ("kib_per_client", "KiB RSS per client", 2),
                ("rss_before_kib", "RSS before, KiB", 0), ("handshakes_per_s", "handshakes/s", 0),
                ("server_cpu_us_per_handshake", "server CPU µs per handshake", 0),
                ("loadgen_cpu_pct_connecting", "load generator CPU % connecting", 0),
                ("loadgen_cpu_pct_idle", "load generator CPU % idle", 2), ("load_avg", "load avg", 1)]  # fmt: skip
        lines += ["## Idle phones", "", "| server | " + " | ".join(h for _, h, _ in cols) + " |",
                  "|---|" + "---|" * len(cols)]  # fmt: skip
        for name, row in r["idle"].items():
            lines.append(f"| {name} | " + " | ".join(fmt(row.get(k), d) for k, _, d in cols) + " |")
        lines.append("")
    storms = (("kill", "Reconnect storm: kill -9"),
              ("kill_nodejs", "Reconnect storm: kill -9, bare Node.js relays (the anchor, same run)"),
              ("goaway", "Graceful stop with goaway (SIGTERM)"),
              ("goaway_nodejs", "Graceful stop with goaway, bare Node.js relays (the anchor, same run)"))
    for how, title in storms:
        if how in r:
            s = r[how]
            lines += [f"## {title}", "",
                      f"- {s['conns']} clients on the stopped node; re-homed {s['rehomed']}, callable {s['callable']}; "
                      f"every client re-homed and callable after **{fmt(s['all_callable_s'], 2)} s**",
                      f"- re-homed p50/p99/max {fmt(s['rehome_p50_s'], 2)} / {fmt(s['rehome_p99_s'], 2)} / "
                      f"{fmt(s['rehome_max_s'], 2)} s; callable p50/p99/max {fmt(s['callable_p50_s'], 2)} / "
                      f"{fmt(s['callable_p99_s'], 2)} / {fmt(s['callable_max_s'], 2)} s",
                      f"- envelopes {s['envelopes']}, without exactly one terminal receipt: "
                      f"**{s['without_one_terminal']}**"
                      f" (none: {s['missing_terminal']}, of which `queued` first: "
                      f"{s.get('missing_terminal_after_queued', '-')}; "
                      f"more than one: {s['duplicate_terminal']}); receipts "
                      f"{s['receipts']}; not delivered, by status and reason: {s.get('not_delivered', '-')}; "
                      f"`delivered` but never received by the callee: **{s.get('delivered_not_received', '-')}** "
                      f"{s.get('dnr_detail') or ''}",
                      f"- reconnect attempts {s['reconnect_attempts']}, failures {s['reconnect_failures']}, goaways "
                      f"{s['goaways']}; survivors' CPU {s['survivors_cpu_s']} s = "
                      f"{s['survivors_cpu_ms_per_rehomed_client']} ms per re-homed client "
                      f"({s['survivors_cpu_pct_of_a_core']} % of a core); load generator "
                      f"{fmt(s['loadgen_cpu_pct'], 0)} % of a core; load {s['load_avg']}",
                      f"- per second since the fault: goaways received {s.get('goaways_per_s', '-')}; "
                      f"reconnects started {s.get('attempts_per_s', '-')}; "
                      f"challenges received {s.get('challenges_per_s', '-')}; "
                      f"failed reconnects {s.get('failures_per_s', '-')}; "
                      f"load generator's worst event-loop lag (ms) {s.get('loadgen_lag_ms_per_s', '-')}; "
                      f"re-homed {s.get('rehomed_per_s', '-')}; callable "
                      f"{s.get('callable_per_s', '-')}; probers closed by a node {s.get('probers_closed', '-')}",
                      f"- CPU seconds used in each second since the fault: {s.get('cpu_s_per_s', '-')}",
                      f"- callable more than 1.5 s after re-homing: {s.get('late_callable', '-')} clients; their "
                      f"probes' receipts (seconds after each probe when 1 s or more), most common first: "
                      f"{s.get('late_callable_patterns', '-')}",
                      ""]  # fmt: skip
    return "\n".join(lines)


def write(result: dict[str, Any], out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render(result))
    out.with_suffix(".json").write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
