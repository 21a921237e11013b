"""Medians and the Markdown report of `bench/swim.py` (pure: trial results in, text out)."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from typing import Any

# (result key, row label, format); every time is from the event that starts the phase, see bench/swim_trial.py
FIGURES: tuple[tuple[str, str, str], ...] = (
    ("join_s", "join: every agent knows all N, from the last spawn (s)", "{:.2f}"),
    ("last_startup_s", "  of which: last agent's start-up, spawn to first output line (s)", "{:.2f}"),
    ("suspect_first_s", "kill -9 to first suspicion (s)", "{:.2f}"),
    ("dead_first_s", "kill -9 to first observer reporting dead/failed (s)", "{:.2f}"),
    ("dead_all_s", "kill -9 to every observer reporting dead/failed (s)", "{:.2f}"),
    ("leave_all_s", "graceful leave to every observer reporting left (s)", "{:.2f}"),
    ("leaver_exit_s", "graceful leave: leaving process exits after (s)", "{:.2f}"),
    ("udp_packets_per_node_s", "idle UDP sent per node (packets/s)", "{:.2f}"),
    ("udp_bytes_per_node_s", "idle UDP sent per node (B/s, IP+UDP headers included)", "{:.0f}"),
    ("udp_bytes_per_packet", "  mean UDP packet (B)", "{:.0f}"),
    ("tcp_bytes_per_node_s", "idle TCP sent per node, push-pull and links (B/s)", "{:.0f}"),
    ("total_bytes_per_node_s", "idle UDP+TCP sent per node (B/s)", "{:.0f}"),
    ("lo_dev_bytes_per_node_s", "  cross-check: lo tx from /proc/net/dev per node (B/s)", "{:.0f}"),
    ("cpu_pct_median", "idle CPU per process, median (% of one core)", "{:.2f}"),
    ("cpu_pct_max", "idle CPU per process, max (% of one core)", "{:.2f}"),
    ("rss_mib_median", "RSS per process, median (MiB)", "{:.1f}"),
    ("rss_mib_max", "RSS per process, max (MiB)", "{:.1f}"),
)
COUNTS: tuple[tuple[str, str, str], ...] = (
    ("leave_reported_dead_first", "leave_observers", "graceful leave first reported as a failure (observer reports)"),
    ("dead_reported", "dead_observers", "crash reported dead by (observer reports, all repetitions)"),
)


def derive(result: dict[str, Any]) -> dict[str, Any]:
    """Add the figures computed from others (packet size, UDP+TCP total)."""
    out = dict(result)
    udp_b, udp_p = result.get("udp_bytes_per_node_s"), result.get("udp_packets_per_node_s")
    tcp_b = result.get("tcp_bytes_per_node_s")
    if udp_b is not None and udp_p:
        out["udp_bytes_per_packet"] = udp_b / udp_p
    if udp_b is not None and tcp_b is not None:
        out["total_bytes_per_node_s"] = udp_b + tcp_b
    return out


def median_of(results: Sequence[dict[str, Any]], key: str) -> float | None:
    values = [r[key] for r in results if r.get(key) is not None]
    return statistics.median(values) if values else None


def group(results: Sequence[dict[str, Any]]) -> dict[tuple[str, int], list[dict[str, Any]]]:
    groups: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for r in results:
        if "error" not in r:
            groups.setdefault((r["system"], r["n"]), []).append(derive(r))
    return groups


def cell(rs: list[dict[str, Any]], key: str, fmt: str) -> str:
    value = median_of(rs, key)
    if value is None:
        return "n/a"
    got = sum(1 for r in rs if r.get(key) is not None)
    return fmt.format(value) + ("" if got == len(rs) else f" ({got}/{len(rs)} runs)")


def table(results: Sequence[dict[str, Any]], systems: Sequence[str], ns: Sequence[int]) -> str:
    groups = group(results)
    cols = [(s, n) for n in ns for s in systems]
    head = "| figure (median of runs) | " + " | ".join(f"{s} N={n}" for s, n in cols) + " |"
    lines = [head, "|---" * (len(cols) + 1) + "|"]
    lines.append("| runs completed | " + " | ".join(str(len(groups.get(c, []))) for c in cols) + " |")
    for key, label, fmt in FIGURES:
        lines.append(f"| {label} | " + " | ".join(cell(groups.get(c, []), key, fmt) for c in cols) + " |")
    for key, total_key, label in COUNTS:
        cells = []
        for c in cols:
            rs = groups.get(c, [])
            cells.append(f"{sum(r.get(key) or 0 for r in rs)} of {sum(r.get(total_key) or 0 for r in rs)}")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def verdict(results: Sequence[dict[str, Any]], ns: Sequence[int]) -> list[str]:
    """One line per N and criterion: does homing detect a crash no slower than Serf, and send no more bytes?"""
    groups = group(results)
    lines = []
    for n in ns:
        h, s = groups.get(("homing", n), []), groups.get(("serf", n), [])
        for key, what, unit in (
            ("dead_all_s", "crash detected at every observer", "s"),
            ("suspect_first_s", "first suspicion", "s"),
            ("total_bytes_per_node_s", "idle UDP+TCP bytes sent per node", "B/s"),
            ("udp_bytes_per_node_s", "idle UDP bytes sent per node", "B/s"),
        ):
            hv, sv = median_of(h, key), median_of(s, key)
            if hv is None or sv is None:
                lines.append(f"- N={n}, {what}: not compared (no figure for {'homing' if hv is None else 'Serf'})")
                continue
            ok = hv <= sv
            ratio = f"{hv / sv:.2f}x Serf" if sv else "Serf 0"
            lines.append(
                f"- N={n}, {what}: homing {hv:.2f} {unit} vs Serf {sv:.2f} {unit} ({ratio}): "
                + ("**meets** (no worse than Serf)" if ok else f"**does not meet** (+{hv - sv:.2f} {unit})")
            )
    return lines


def render(
    results: Sequence[dict[str, Any]],
    *,
    systems: Sequence[str],
    ns: Sequence[int],
    command: str,
    date: str,
    environment: dict[str, Any],
    notes: Sequence[str],
) -> str:
    env = ", ".join(f"{k} {v}" for k, v in environment.items())
    failed = [r for r in results if "error" in r]
    out = [
        "# SWIM on real processes: homing vs HashiCorp Serf",
        "",
        f"Produced by `{command}` on {date}.",
        "",
        f"Environment: {env}.",
        "",
        *[f"- {note}" for note in notes],
        "",
        table(results, systems, ns),
        "",
        "## Verdict",
        "",
        *verdict(results, ns),
        "",
    ]
    if failed:
        out += ["## Failed runs", ""]
        out += [f"- {r['system']} N={r['n']} run {r.get('rep', '?')}: {r['error'][:300]}" for r in failed]
        out.append("")
    return "\n".join(out)
