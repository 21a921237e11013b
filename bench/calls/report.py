"""What one call's page stamps mean, and the summary written to bench/results/calls.md (+ .json)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

# The figures per call, in ms, from the two pages' performance.now() stamps on one clock (timeOrigin + now).
FIGURES = {
    "total_ms": "dial → both pages `connected`",
    "signalling_ms": "offer leg + answer leg",
    "offer_leg_ms": "dial → callee page receives the offer",
    "answer_leg_ms": "accept → caller page receives the answer",
    "wire_ms": "offer sent → received + answer sent → received (through the two nodes)",
    "pre_offer_ms": "dial → offer sent (camera/mic, createOffer, seal)",
    "after_answer_ms": "caller receives the answer → both `connected` (ICE checks, DTLS)",
}


def figures(caller: dict[str, Any], callee: dict[str, Any]) -> dict[str, float]:
    """Per-call figures from each page's {origin, marks} (marks are performance.now() ms since origin)."""

    def at(page: dict[str, Any], mark: str) -> float:
        value = page["marks"].get(mark)
        if value is None:
            raise ValueError(f"the page did not stamp {mark!r}: {page['marks']}")
        return float(page["origin"]) + float(value)

    dial, connected = at(caller, "dial"), max(at(caller, "connected"), at(callee, "connected"))
    offer_leg = at(callee, "offer_received") - dial
    answer_leg = at(caller, "answer_received") - at(callee, "accept")
    wire = (at(callee, "offer_received") - at(caller, "offer_sent")) + (
        at(caller, "answer_received") - at(callee, "answer_sent")
    )
    return {
        "total_ms": connected - dial,
        "signalling_ms": offer_leg + answer_leg,
        "offer_leg_ms": offer_leg,
        "answer_leg_ms": answer_leg,
        "wire_ms": wire,
        "pre_offer_ms": at(caller, "offer_sent") - dial,
        "after_answer_ms": connected - at(caller, "answer_received"),
    }


def nearest_rank(values: list[float], q: float) -> float:
    """The q-quantile by nearest rank (p95 of 20 values is the 19th smallest)."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def summarize(calls: list[dict[str, Any]]) -> dict[str, Any]:
    ok = [c for c in calls if "error" not in c and not c.get("warmup")]
    out: dict[str, Any] = {"n_ok": len(ok), "n_failed": sum(1 for c in calls if "error" in c)}
    for key in FIGURES:
        vals = [c["figures"][key] for c in ok]
        if vals:
            out[key] = {"p50": nearest_rank(vals, 0.5), "p95": nearest_rank(vals, 0.95), "max": max(vals)}
    pairs: dict[str, int] = {}
    for c in ok:
        pairs[c["pair"]] = pairs.get(c["pair"], 0) + 1
    out["candidate_pairs"] = pairs
    return out


def _table(modes: dict[str, Any]) -> list[str]:
    lines = ["| mode | figure | p50 ms | p95 ms | max ms |", "|---|---|---|---|---|"]
    for mode, result in modes.items():
        summary = result.get("summary", {})
        for key, what in FIGURES.items():
            if key in summary:
                s = summary[key]
                lines.append(f"| {mode} | {key[:-3]}: {what} | {s['p50']:.0f} | {s['p95']:.0f} | {s['max']:.0f} |")
    return lines


def write(doc: dict[str, Any], out: Path) -> str:
    """bench/results/calls.md and calls.json from the run's document; returns the markdown."""
    load_b, load_a = doc["loadavg_before"], doc["loadavg_after"]
    lines = [
        "# Call setup benchmark (two Chromium pages, 3-node federation on 127.0.0.1)",
        "",
        f"Command: `{doc['command']}`; commit {doc['commit']}{' (with local changes)' if doc['dirty'] else ''};"
        f" {doc['date']}; {doc['cpus']} CPUs; load average (1/5/15 min) before"
        f" {' / '.join(f'{x:.2f}' for x in load_b)}, after {' / '.join(f'{x:.2f}' for x in load_a)};"
        f" {doc['chromium']}.",
        f"N = {doc['n']} calls per mode (after {doc['warmup']} warm-up call(s), not counted); percentiles by nearest"
        " rank. The caller page is homed on node 1, the callee page on node 3; the callee page answers as soon as it"
        " rings (a DOM observer clicks Accept). Every figure comes from the pages' own performance.now() stamps"
        " (web/lib/call.js `marks`), compared across the two pages as performance.timeOrigin + now.",
        f"Clock check: the callee page's clock minus the caller page's, estimated through WebDriver round trips:"
        f" {doc['clock_skew_ms']}.",
        "",
        *_table(doc["modes"]),
        "",
    ]
    for mode, result in doc["modes"].items():
        if "skipped" in result:
            lines.append(f"- {mode}: skipped ({result['skipped']})")
            continue
        s = result["summary"]
        lines.append(
            f"- {mode}: {s['n_ok']} calls connected, {s['n_failed']} failed; selected candidate pairs"
            f" (caller local/remote): {s['candidate_pairs']}"
        )
        for call in result["calls"]:
            if "error" in call:
                lines.append(f"  - call {call['i']} failed: {call['error'][:300]}")
    text = "\n".join(lines) + "\n"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    out.with_suffix(".json").write_text(json.dumps(doc, indent=1) + "\n")
    return text
