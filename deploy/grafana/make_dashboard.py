"""Writes deploy/grafana/homing.json, the Grafana dashboard over node and registry metrics (run this file).

The panels are data here so the dashboard stays reviewable; tests/ops/test_grafana.py checks that every metric a
panel queries is one the code exports and that the committed JSON is what this script writes.
"""

from __future__ import annotations

import json
from pathlib import Path

OUT = Path(__file__).resolve().parent / "homing.json"

# (title, unit, [(PromQL, legend)], width) rows of panels; $instance is the node chosen at the top
ROWS: list[list[tuple[str, str, list[tuple[str, str]], int]]] = [
    [
        ("Members by state", "short", [("sum by (state) (homing_members{instance=~\"$instance\"})", "{{state}}")], 8),
        ("Clients connected", "short", [("homing_clients_connected{instance=~\"$instance\"}", "{{instance}}")], 8),
        ("Peer links", "short", [("homing_peer_links{instance=~\"$instance\"}", "{{instance}}")], 8),
    ],
    [
        ("Envelopes by outcome (per s)", "ops",
         [("sum by (outcome) (rate(homing_envelopes_total{instance=~\"$instance\"}[5m]))", "{{outcome}}")], 12),
        ("Relay latency p50 / p99", "s",
         [(f"histogram_quantile({q}, sum by (le) (rate(homing_relay_seconds_bucket{{instance=~\"$instance\"}}[5m])))",
           f"p{round(q * 100)}") for q in (0.5, 0.99)], 12),
    ],
    [
        ("Mailbox envelopes waiting", "short", [("homing_mailbox_envelopes{instance=~\"$instance\"}", "{{instance}}")], 8),
        ("Member changes (per min)", "short",
         [("sum by (state) (increase(homing_member_changes_total{instance=~\"$instance\"}[1m]))", "{{state}}")], 8),
        ("SWIM probes by result (per s)", "ops",
         [("sum by (result) (rate(homing_swim_probes_total{instance=~\"$instance\"}[5m]))", "{{result}}")], 8),
    ],
    [
        ("Refused input by layer and reason (per s)", "ops",
         [("sum by (layer, reason) (rate(homing_packets_refused_total{instance=~\"$instance\"}[5m]))",
           "{{layer}} {{reason}}")], 8),
        ("SWIM datagrams the kernel dropped (per s)", "ops",
         [("rate(homing_swim_receive_drops_total{instance=~\"$instance\"}[5m])", "{{instance}}")], 8),
        ("Registry requests by route and status (per s)", "ops",
         [("sum by (route, status) (rate(homing_registry_requests_total[5m]))", "{{route}} {{status}}")], 8),
    ],
    [
        ("Builds running", "short", [("count by (version, commit) (homing_build_info)", "{{version}} {{commit}}")], 12),
        ("Nodes up", "short", [("up{job=~\"homing.*\"}", "{{instance}}")], 12),
    ],
]  # fmt: skip


def dashboard() -> dict[str, object]:
    panels: list[dict[str, object]] = []
    y = 0
    for row in ROWS:
        x = 0
        for title, unit, queries, width in row:
            panels.append({
                "id": len(panels) + 1,
                "type": "timeseries",
                "title": title,
                "datasource": {"type": "prometheus", "uid": "${datasource}"},
                "gridPos": {"x": x, "y": y, "w": width, "h": 8},
                "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
                "targets": [
                    {"refId": chr(ord("A") + i), "expr": expr, "legendFormat": legend}
                    for i, (expr, legend) in enumerate(queries)
                ],
            })  # fmt: skip
            x += width
        y += 8
    return {
        "title": "homing",
        "uid": "homing-overview",
        "schemaVersion": 39,
        "version": 1,
        "editable": True,
        "time": {"from": "now-6h", "to": "now"},
        "refresh": "30s",
        "tags": ["homing"],
        "templating": {
            "list": [
                {"name": "datasource", "type": "datasource", "query": "prometheus", "label": "Prometheus"},
                {
                    "name": "instance",
                    "type": "query",
                    "label": "Node",
                    "datasource": {"type": "prometheus", "uid": "${datasource}"},
                    "query": "label_values(homing_build_info, instance)",
                    "includeAll": True,
                    "multi": True,
                    "current": {"text": "All", "value": "$__all"},
                    "refresh": 2,
                },
            ]
        },
        "panels": panels,
    }


def render() -> str:
    return json.dumps(dashboard(), indent=1) + "\n"


if __name__ == "__main__":
    OUT.write_text(render())
    print(f"wrote {OUT}")
