"""Call setup time: two real Chromium pages homed on two nodes of a real 3-node federation on 127.0.0.1.

    python -m bench.calls [--n 20] [--warmup 1] [--modes direct,relay] [--out bench/results/calls.md]
    python bench/calls/run.py ...   (the same)

For each mode, the caller page (homed on node 1) dials the callee page (homed on node 3) N times, a video call
each time; the callee page accepts as soon as it rings; the bench waits until both pages are `connected`, reads
the pages' performance.now() stamps (web/lib/call.js `marks`), hangs up and waits until both ended.
`direct`: no ICE servers (the page's `ice=[]` setting), host candidates on loopback. `relay`: "always relay"
(iceTransportPolicy "relay") through a real coturn this bench starts; the nodes carry a `[turn]` section for it and
each page gets its REST credentials (coturn --use-auth-secret) from its node's `ice_servers`, as in a deployment.
Headless Debian Chromium with fake media, driven through the tests' own helpers (tests/web). Every wait has a
timeout, a failed call is recorded and the next one starts, and the whole run stops at --deadline-s.
Results: the --out markdown and a .json next to it (docs/performance.md, "Call setup", quotes them).
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as `python bench/calls/run.py`: make the checkout importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import argparse
import json
import os
import shlex
import shutil
import subprocess
import tempfile
import time
from contextlib import ExitStack
from typing import Any

from bench.calls.report import figures, summarize, write
from node.cli.webdemo import page_link, serve_web
from node.protocol.identity import Identity
from tests.helpers import REPO
from tests.integration.procs import NodeProcess
from tests.web.browser import CHROMIUM, WEB, Page, chromium, skip_reason
from tests.web.conftest import start_federation
from tests.web.turn import TURNSERVER, coturn, turn_node_config

CONNECT_S = 20.0  # page → its node
CALL_S = 30.0  # dial → both connected
END_S = 10.0  # hangup → both ended
SETTLE_S = 0.3  # between calls
DEADLINE_S = 900.0
MODES = ("direct", "relay")

AUTO_ACCEPT_JS = """
if (!window.__benchAccept) {
  const overlay = document.getElementById("incoming");
  window.__benchAccept = new MutationObserver(() => {
    if (!overlay.hidden) document.getElementById("accept").click();
  });
  window.__benchAccept.observe(overlay, {attributes: true, attributeFilter: ["hidden"]});
}
"""
STAMPS_JS = """
const c = window.homing.call;
return c ? JSON.stringify({key: c.key, state: c.state, origin: performance.timeOrigin, marks: c.marks}) : null;
"""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m bench.calls", description=__doc__.split("\n")[0] if __doc__ else "")
    ap.add_argument("--n", type=int, default=20, help="measured calls per mode")
    ap.add_argument("--warmup", type=int, default=1, help="calls per mode before the measured ones, not counted")
    ap.add_argument("--modes", default=",".join(MODES), help="comma-separated: direct, relay")
    ap.add_argument("--deadline-s", type=float, default=DEADLINE_S, help="the whole run stops after this long")
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "calls.md")
    args = ap.parse_args(argv)
    args.modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    if not args.modes or any(m not in MODES for m in args.modes) or args.n < 1 or args.warmup < 0:
        ap.error(f"--modes must name some of {MODES}; --n >= 1; --warmup >= 0")
    return args


def command_line(argv: list[str]) -> str:
    prog = "python -m bench.calls" if sys.argv[0].endswith("__main__.py") else "python bench/calls/run.py"
    return " ".join([prog, *(shlex.quote(a) for a in argv)])


def git(*args: str) -> str:
    res = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, timeout=20)
    return res.stdout.strip() if res.returncode == 0 else "unknown"


def chromium_version() -> str:
    try:
        res = subprocess.run([CHROMIUM, "--version"], capture_output=True, text=True, timeout=30)
        return res.stdout.strip() or "unknown Chromium"
    except (OSError, subprocess.TimeoutExpired):
        return "unknown Chromium"


def clock_offset_ms(page: Page, samples: int = 9) -> tuple[float, float]:
    """(page clock - this process's wall clock, round trip) for the fastest of `samples` WebDriver round trips."""
    best: tuple[float, float] | None = None
    for _ in range(samples):
        t0 = time.time() * 1000
        page_now = float(page.js("return performance.timeOrigin + performance.now()"))
        t1 = time.time() * 1000
        if best is None or t1 - t0 < best[1]:
            best = (page_now - (t0 + t1) / 2, t1 - t0)
    assert best is not None
    return best


def stamps(page: Page) -> dict[str, Any]:
    raw = page.js(STAMPS_JS)
    if not raw:
        raise AssertionError(f"{page.name}: no call on the page")
    doc: dict[str, Any] = json.loads(raw)
    return doc


def one_call(a: Page, b: Page, callee: Identity) -> dict[str, Any]:
    """Dial, wait for both `connected`, read the stamps and the selected pair, hang up, wait for both `ended`."""
    a.click_css(f'li[data-id="{callee.id_text}"] .call-video')
    deadline = time.monotonic() + CALL_S
    for page in (a, b):
        page.wait(lambda v: v["callState"] == "connected", max(0.5, deadline - time.monotonic()), "connected")
    caller, answerer = stamps(a), stamps(b)
    if caller["key"] != answerer["key"]:
        raise AssertionError(f"the pages are in different calls: {caller['key']} / {answerer['key']}")
    s = a.stats()
    row = {"figures": figures(caller, answerer), "pair": f"{s.get('local')}/{s.get('remote')}"}
    row["stamps"] = {"caller": caller, "callee": answerer}
    a.click("hangup")
    for page in (a, b):
        page.wait(lambda v: v["callState"] == "ended", END_S, "ended")
    return row


def recover(a: Page, b: Page) -> None:
    """After a failed call: hang up wherever a call is still up, bounded; errors here are only reported."""
    for page in (a, b):
        try:
            page.js("const c = window.homing.call; if (c && c.state !== 'ended') void c.hangup();")
            page.wait(lambda v: v["callState"] in ("ended", "idle"), END_S, "ended after a failure")
        except Exception as exc:  # a page that is gone fails the next call, which is recorded
            print(f"  recover {page.name}: {exc}", flush=True)


def links(mode: str, base: str, nodes: list[NodeProcess]) -> tuple[str, str, Identity]:
    alice, bob = Identity.generate(), Identity.generate()
    # direct: no ICE servers at all (the nodes would hand out their TURN server); relay: the node's, relay only
    page_setting = {"relay": "1"} if mode == "relay" else {"ice": "[]"}
    extra = [page_setting, page_setting]
    a = page_link(
        base,
        profile=f"{mode}-caller",
        me=alice,
        node_ws=nodes[0].url,
        node_id=nodes[0].id,
        contacts={"bob": bob.id},
        cache="0",
        **extra[0],
    )
    b = page_link(
        base,
        profile=f"{mode}-callee",
        me=bob,
        node_ws=nodes[2].url,
        node_id=nodes[2].id,
        contacts={"alice": alice.id},
        cache="0",
        **extra[1],
    )
    return a, b, bob


def run_mode(
    mode: str, pages: tuple[Page, Page], urls: tuple[str, str, Identity], args: argparse.Namespace, deadline: float
) -> dict[str, Any]:
    a, b = pages
    for page, url in ((a, urls[0]), (b, urls[1])):
        page.open("about:blank")  # a link differing only in its #fragment would not reload the page
        page.open(url)
    for page in (a, b):
        page.wait(lambda v: v["conn"] == "connected", CONNECT_S, "connected to its node")
    b.js(AUTO_ACCEPT_JS)
    calls: list[dict[str, Any]] = []
    for i in range(args.warmup + args.n):
        if time.monotonic() > deadline:
            calls.append({"i": i, "error": f"not run: the bench's --deadline-s ({args.deadline_s:g}) passed"})
            break
        try:
            row = one_call(a, b, urls[2])
        except Exception as exc:
            first = (str(exc).strip().splitlines() or [""])[0]
            row = {"error": f"{type(exc).__name__}: {first}"}
            recover(a, b)
        row.update(i=i, warmup=i < args.warmup)
        calls.append(row)
        shown = {k: round(v) for k, v in row["figures"].items()} if "figures" in row else row["error"][:200]
        print(f"{mode} call {i}{' (warm-up)' if row['warmup'] else ''}: {shown} {row.get('pair', '')}", flush=True)
        time.sleep(SETTLE_S)
    return {"calls": calls, "summary": summarize(calls)}


def skew_text(a: Page, b: Page) -> str:
    (off_a, rtt_a), (off_b, rtt_b) = clock_offset_ms(a), clock_offset_ms(b)
    return f"{off_b - off_a:+.1f} ms ± {(rtt_a + rtt_b) / 2:.1f} ms"


def run(args: argparse.Namespace, argv: list[str], tmp: Path) -> dict[str, Any]:
    deadline = time.monotonic() + args.deadline_s
    doc: dict[str, Any] = {
        "command": command_line(argv),
        "commit": git("rev-parse", "--short=12", "HEAD"),
        "dirty": bool(git("status", "--porcelain", "--untracked-files=no")),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "cpus": os.cpu_count(),
        "chromium": chromium_version(),
        "n": args.n,
        "warmup": args.warmup,
        "loadavg_before": list(os.getloadavg()),
        "modes": {},
    }
    with ExitStack() as stack:
        turn = None
        extra: list[str] = []
        if "relay" in args.modes and shutil.which(TURNSERVER):
            turn = stack.enter_context(coturn(tmp))
            extra = ["--config", str(turn_node_config(tmp, *turn))]
        nodes = start_federation(tmp / "fed", 3, *extra)
        for node in nodes:
            stack.callback(node.stop)
        base = stack.enter_context(serve_web(WEB))
        pages = (stack.enter_context(chromium(tmp, "caller")), stack.enter_context(chromium(tmp, "callee")))
        doc["clock_skew_ms"] = skew_text(*pages)
        for mode in args.modes:
            if mode == "relay" and turn is None:
                doc["modes"][mode] = {"skipped": f"{TURNSERVER} is missing (Debian coturn)"}
                continue
            doc["modes"][mode] = run_mode(mode, pages, links(mode, base, nodes), args, deadline)
    doc["loadavg_after"] = list(os.getloadavg())
    return doc


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    reason = skip_reason()
    if reason:
        sys.exit(f"bench.calls: {reason}")
    with tempfile.TemporaryDirectory(prefix="bench-calls-") as tmp:
        doc = run(args, argv, Path(tmp))
    print(write(doc, args.out))
    failed = sum(m.get("summary", {}).get("n_failed", 0) for m in doc["modes"].values())
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
