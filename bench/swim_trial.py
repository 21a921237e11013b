"""One trial of `bench/swim.py`: N agents of one system, start to finish, in the current network namespace.

Run by the runner as `unshare ... python -m bench.swim_trial --system homing --n 10 ... --result R.json`; it
writes one JSON object to R.json and exits 0, or exits non-zero with the reason on stderr.

Phases, each bounded in time (a phase that times out is recorded as null with how many agents got there):
1. spawn: agent 0 first, then agents 1..N-1 with agent 0 as their seed, each after the previous one is running;
2. join: every agent has reported every other one alive (times from its log lines; checked once by HTTP/RPC);
3. settle (see bench/swim.py SETTLE_S), then idle: bytes (nftables counters in the namespace), CPU ticks and
   RSS (/proc) over `idle_s`;
4. crash: SIGKILL the last agent; first suspicion anywhere, and every other agent reporting it dead/failed;
5. leave: the graceful-leave signal to the second-to-last agent; every remaining agent reporting it left.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs
from attrs import validators as v

from bench import swim_net as net
from bench.swim_agents import REPO, Agent, Homing, Ports, Serf, System

POLL_STEP_S = 0.02
MB = 1024 * 1024


@attrs.frozen(kw_only=True, slots=True)
class TrialConfig:
    system: str = attrs.field(validator=v.in_(("homing", "serf")))
    n: int = attrs.field(validator=[v.ge(3), v.le(net.PORT_SPAN)])
    idle_s: float = attrs.field(default=30.0, validator=v.gt(0))
    settle_s: float = attrs.field(default=30.0, validator=v.ge(0))
    ready_timeout_s: float = attrs.field(default=30.0, validator=v.gt(0))
    join_timeout_s: float = attrs.field(default=60.0, validator=v.gt(0))
    dead_timeout_s: float = attrs.field(default=90.0, validator=v.gt(0))
    leave_timeout_s: float = attrs.field(default=30.0, validator=v.gt(0))
    isolated: bool = True
    serf_binary: str = "serf"


class TrialError(Exception):
    pass


def wait_until(pred: Callable[[], bool], timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while True:
        if pred():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(POLL_STEP_S)


def make_system(cfg: TrialConfig) -> System:
    return Homing() if cfg.system == "homing" else Serf(cfg.serf_binary)


def spawn_all(cfg: TrialConfig, system: System, plan: dict[str, int], work: Path) -> list[Agent]:
    env = dict(os.environ, PYTHONPATH=str(REPO), PYTHONUNBUFFERED="1")
    agents: list[Agent] = []
    for i in range(cfg.n):
        ports = Ports(gossip=plan["gossip"] + i, peer=plan["peer"] + i, control=plan["control"] + i, ws=plan["ws"] + i,
                      host=f"127.0.0.{i + 1}")  # fmt: skip
        seed = plan["gossip"] if i > 0 else None
        agent = Agent(system, f"a{i}", ports, seed, work, env)
        agents.append(agent)
        if not agent.wait_ready(cfg.ready_timeout_s):
            raise TrialError(f"{agent.name} not running after {cfg.ready_timeout_s} s:\n{agent.tail()}")
    return agents


def measure_join(cfg: TrialConfig, agents: list[Agent]) -> dict[str, Any]:
    idents = [a.ident for a in agents]

    def missing(agent: Agent) -> int:
        known = agent.known_alive()
        return sum(1 for i in idents if i != agent.ident and i not in known)

    done = wait_until(lambda: all(missing(a) == 0 for a in agents), cfg.join_timeout_s)
    last = agents[-1]
    out: dict[str, Any] = {"join_complete_agents": sum(1 for a in agents if missing(a) == 0)}
    startup = (last.first_line_t - last.spawn_t) if last.first_line_t is not None else None
    out["last_startup_s"] = startup
    if not done:
        out["join_s"] = None
        return out
    converged = max(max(t for s, t in a.known_alive().items() if s in idents) for a in agents)
    out["join_s"] = max(0.0, converged - last.spawn_t)
    # the pairs that took longest, so that a slow join can be traced in the kept logs (--keep-logs): seconds after
    # the later of the two agents was spawned, observer, subject
    names = {a.ident: a.name for a in agents}
    spawned = {a.ident: a.spawn_t for a in agents}
    lags = sorted(
        ((t - max(a.spawn_t, spawned[s]), a.name, names[s]) for a in agents for s, t in a.known_alive().items()
         if s in names and s != a.ident),
        reverse=True,
    )
    out["join_slowest_pairs"] = [[round(lag, 3), o, s] for lag, o, s in lags[:3]]
    verified = 0
    for a in agents:
        try:
            verified += a.system.alive_count(a.ports) == cfg.n
        except Exception as exc:  # a failed check is reported, it does not end the trial
            print(f"verify {a.name}: {exc}", file=sys.stderr)
    out["join_verified_agents"] = verified
    return out


def measure_idle(cfg: TrialConfig, agents: list[Agent], method: str) -> dict[str, Any]:
    time.sleep(cfg.settle_s)
    before = net.read_counters(method) if method != "none" else {}
    ticks0 = {a.name: net.cpu_ticks(a.proc.pid) for a in agents}
    t0 = time.monotonic()
    time.sleep(cfg.idle_s)
    elapsed = time.monotonic() - t0
    after = net.read_counters(method) if method != "none" else {}
    ticks1 = {a.name: net.cpu_ticks(a.proc.pid) for a in agents}
    rss = [r for r in (net.rss_bytes(a.proc.pid) for a in agents) if r is not None]
    hz = net.clock_ticks_per_s()
    cpu = [
        100.0 * (t1 - t0_) / hz / elapsed
        for name, t1 in ticks1.items()
        if t1 is not None and (t0_ := ticks0.get(name)) is not None
    ]
    out: dict[str, Any] = {"idle_window_s": elapsed, "bytes_method": method}
    for key, (pkts, nbytes) in net.counter_delta(before, after).items():
        out[f"{key}_packets_per_node_s"] = pkts / cfg.n / elapsed
        out[f"{key}_bytes_per_node_s"] = nbytes / cfg.n / elapsed
    out["cpu_pct_median"] = statistics.median(cpu) if cpu else None
    out["cpu_pct_max"] = max(cpu) if cpu else None
    out["rss_mib_median"] = statistics.median(rss) / MB if rss else None
    out["rss_mib_max"] = max(rss) / MB if rss else None
    return out


def first_times(observers: list[Agent], kinds: tuple[str, ...], subject: str, since: float) -> list[float]:
    return [ev.t for a in observers if (ev := a.first(kinds, subject, since)) is not None]


def measure_crash(cfg: TrialConfig, agents: list[Agent]) -> dict[str, Any]:
    victim, observers = agents[-1], agents[:-1]
    assert victim.ident is not None
    t_kill = time.monotonic()
    victim.proc.kill()
    victim.proc.wait(net.COMMAND_TIMEOUT_S)
    wait_until(
        lambda: len(first_times(observers, ("dead",), victim.ident or "", t_kill)) == len(observers),
        cfg.dead_timeout_s,
    )
    dead = first_times(observers, ("dead",), victim.ident, t_kill)
    suspect = first_times(observers, ("suspect", "dead"), victim.ident, t_kill)
    return {
        "suspect_first_s": min(suspect) - t_kill if suspect else None,
        "dead_first_s": min(dead) - t_kill if dead else None,
        "dead_all_s": max(dead) - t_kill if len(dead) == len(observers) else None,
        "dead_reported": len(dead),
        "dead_observers": len(observers),
    }


def measure_leave(cfg: TrialConfig, agents: list[Agent]) -> dict[str, Any]:
    leaver, observers = agents[-2], agents[:-2]
    assert leaver.ident is not None
    t_leave = time.monotonic()
    leaver.proc.send_signal(leaver.system.leave_signal)
    wait_until(
        lambda: len(first_times(observers, ("left",), leaver.ident or "", t_leave)) == len(observers),
        cfg.leave_timeout_s,
    )
    left = first_times(observers, ("left",), leaver.ident, t_leave)
    misreported = sum(
        1 for a in observers if (ev := a.first(("left", "dead"), leaver.ident, t_leave)) and ev.kind == "dead"
    )
    try:
        leaver.proc.wait(net.COMMAND_TIMEOUT_S)
        exit_s: float | None = time.monotonic() - t_leave
    except Exception:
        exit_s = None
    return {
        "leave_all_s": max(left) - t_leave if len(left) == len(observers) else None,
        "leave_reported": len(left),
        "leave_observers": len(observers),
        "leave_reported_dead_first": misreported,
        "leaver_exit_s": exit_s,
    }


def run_trial(cfg: TrialConfig, work: Path) -> dict[str, Any]:
    method = net.setup_namespace() if cfg.isolated else "none"
    base = net.GOSSIP_BASE if cfg.isolated else net.pick_shared_base(cfg.n, random.Random())
    system = make_system(cfg)
    result: dict[str, Any] = {"system": cfg.system, "n": cfg.n}
    agents: list[Agent] = []
    try:
        agents = spawn_all(cfg, system, net.port_plan(base), work)
        result.update(measure_join(cfg, agents))
        if result["join_s"] is None:
            raise TrialError(f"join incomplete after {cfg.join_timeout_s} s: {result}")
        result.update(measure_idle(cfg, agents, method))
        result.update(measure_crash(cfg, agents))
        result.update(measure_leave(cfg, agents))
    finally:
        for a in agents:
            a.stop()
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.swim_trial", description=__doc__.splitlines()[0])
    p.add_argument("--system", required=True, choices=["homing", "serf"])
    p.add_argument("--n", type=int, required=True)
    p.add_argument("--idle-s", type=float, default=30.0)
    p.add_argument("--settle-s", type=float, default=30.0)
    p.add_argument("--shared-loopback", action="store_true", help="not in a private namespace: no byte figures")
    p.add_argument("--serf", default="serf", help="the serf binary")
    p.add_argument("--work", type=Path, required=True, help="a scratch directory (data dirs, agent logs)")
    p.add_argument("--result", type=Path, required=True, help="where to write the JSON result")
    args = p.parse_args(argv)
    cfg = TrialConfig(
        system=args.system,
        n=args.n,
        idle_s=args.idle_s,
        settle_s=args.settle_s,
        isolated=not args.shared_loopback,
        serf_binary=shutil.which(args.serf) or args.serf,
    )
    args.work.mkdir(parents=True, exist_ok=True)
    try:
        result = run_trial(cfg, args.work)
    except TrialError as exc:
        print(f"trial failed: {exc}", file=sys.stderr)
        return 1
    args.result.write_text(json.dumps(result, indent=1, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
