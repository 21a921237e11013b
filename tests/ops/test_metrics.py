"""node/app/metrics.py: every documented metric is rendered, registries are per node, label values are bounded."""

from __future__ import annotations

import re
import subprocess

import pytest
from prometheus_client.parser import text_string_to_metric_families

from node import __version__
from node.app.metrics import METRIC_NAMES, RELAY_BUCKETS_S, NodeMetrics
from node.protocol.refusals import Layer, Refusal
from tests.helpers import REPO

# docs/operations.md names, as they appear in the text format, with the labels the contract gives them.
REQUIRED_METRICS = {
    "homing_members": {"state"},
    "homing_clients_connected": set(),
    "homing_envelopes_total": {"kind", "outcome"},
    "homing_relay_seconds": set(),
    "homing_mailbox_envelopes": set(),
    "homing_swim_probes_total": {"result"},
}
ISSUE_METRICS = {
    "homing_packets_refused_total": {"layer", "reason"},
    "homing_peer_links": set(),
    "homing_build_info": {"version", "commit", "python"},
}


def samples(m: NodeMetrics) -> dict[str, list[tuple[dict[str, str], float]]]:
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(m.render().decode()):
        for s in family.samples:
            out.setdefault(s.name, []).append((dict(s.labels), s.value))
    return out


def value(m: NodeMetrics, name: str, **labels: str) -> float:
    for got_labels, v in samples(m).get(name, []):
        if got_labels == labels:
            return v
    raise KeyError(f"{name}{labels} not rendered")


def test_every_contract_metric_is_rendered_with_its_labels() -> None:
    m = NodeMetrics()
    text = m.render().decode()
    rendered = samples(m)
    for name, labels in {**REQUIRED_METRICS, **ISSUE_METRICS}.items():
        assert re.search(rf"^# TYPE {name.removesuffix('_total')}(_total)? ", text, re.M), name
        series = rendered.get(name) or rendered.get(f"{name}_bucket")
        assert series, f"{name} has no samples before the first event"
        assert set(series[0][0]) - {"le"} == labels, name
    assert set(METRIC_NAMES) >= set(REQUIRED_METRICS) | set(ISSUE_METRICS)
    for name in METRIC_NAMES:
        assert name in text


def test_types() -> None:
    types = {f.name: f.type for f in text_string_to_metric_families(NodeMetrics().render().decode())}
    assert types["homing_members"] == "gauge"
    assert types["homing_envelopes"] == "counter"
    assert types["homing_relay_seconds"] == "histogram"
    assert types["homing_swim_probes"] == "counter"
    assert types["homing_packets_refused"] == "counter"


def test_updates_show_in_render() -> None:
    m = NodeMetrics()
    m.set_members({"alive": 3, "suspect": 1})
    m.set_members({"alive": 2, "dead": 1})
    m.envelope("call_offer", "delivered")
    m.envelope("call_offer", "delivered")
    m.envelope("call_ice", "expired", 40_000)  # a running total's delta (node/net/relay.py), one increment
    m.swim_probe("indirect_ack")
    m.packet_refused(Layer.SWIM, Refusal.FORGED)
    m.packet_refused(Layer.PEER, Refusal.RATE_LIMITED, 250_000)
    m.member_changed("suspect")
    m.clients_connected.set(5)
    m.mailbox_envelopes.set(7)
    m.peer_links.set(2)
    m.relay_seconds.observe(0.0003)
    assert value(m, "homing_members", state="alive") == 2
    assert value(m, "homing_members", state="suspect") == 0
    assert value(m, "homing_members", state="dead") == 1
    assert value(m, "homing_envelopes_total", kind="call_offer", outcome="delivered") == 2
    assert value(m, "homing_envelopes_total", kind="call_ice", outcome="queued") == 0
    assert value(m, "homing_swim_probes_total", result="indirect_ack") == 1
    assert value(m, "homing_envelopes_total", kind="call_ice", outcome="expired") == 40_000
    assert value(m, "homing_packets_refused_total", layer="swim", reason="forged") == 1
    assert value(m, "homing_packets_refused_total", layer="peer", reason="rate_limited") == 250_000
    assert value(m, "homing_member_changes_total", state="suspect") == 1
    assert value(m, "homing_clients_connected") == 5
    assert value(m, "homing_mailbox_envelopes") == 7
    assert value(m, "homing_peer_links") == 2
    assert value(m, "homing_relay_seconds_bucket", le="0.0005") == 1
    assert value(m, "homing_relay_seconds_bucket", le="0.00025") == 0
    ((labels, _),) = samples(m)["homing_build_info"]
    assert value(m, "homing_build_info", version=__version__, commit=labels["commit"], python=labels["python"]) == 1


def test_build_info_names_the_checkout_commit() -> None:
    """Run from this checkout, the commit label is git's HEAD (issue #19: `0.1.0` alone said nothing)."""
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True)
    if head.returncode != 0:
        pytest.skip("not a git checkout")
    ((labels, _),) = samples(NodeMetrics())["homing_build_info"]
    assert labels["commit"] == head.stdout.strip()



def test_relay_buckets_span_a_tenth_of_a_millisecond_to_a_second() -> None:
    assert RELAY_BUCKETS_S[0] == 0.0001 and RELAY_BUCKETS_S[-1] == 1.0
    assert list(RELAY_BUCKETS_S) == sorted(RELAY_BUCKETS_S)
    les = {labels["le"] for labels, _ in samples(NodeMetrics())["homing_relay_seconds_bucket"]}
    assert {"0.0001", "0.001", "0.01", "0.1", "1.0", "+Inf"} <= les


def test_unknown_label_values_collapse_into_other() -> None:
    m = NodeMetrics()
    for i in range(500):
        m.envelope(f"made_up_{i}", f"weird_{i}")
        m.swim_probe(f"r{i}")
    rendered = samples(m)
    assert value(m, "homing_envelopes_total", kind="other", outcome="other") == 500
    # refusals are enums (node/protocol/refusals.py): their label set is fixed by construction
    assert {(labels["layer"], labels["reason"]) for labels, _ in rendered["homing_packets_refused_total"]} == {
        (layer.value, reason.value) for layer in Layer for reason in Refusal
    }
    assert value(m, "homing_swim_probes_total", result="other") == 500
    assert len(rendered["homing_envelopes_total"]) == 5 * 5 + 1
    m.set_members({"alive": 1, "bogus": 9})
    assert {labels["state"] for labels, _ in samples(m)["homing_members"]} == {"alive", "suspect", "dead", "left"}


def test_two_nodes_in_one_process_have_separate_registries() -> None:
    a, b = NodeMetrics(), NodeMetrics()
    a.clients_connected.set(3)
    a.envelope("call_ice", "queued")
    assert value(a, "homing_clients_connected") == 3
    assert value(b, "homing_clients_connected") == 0
    assert value(b, "homing_envelopes_total", kind="call_ice", outcome="queued") == 0
    assert NodeMetrics.CONTENT_TYPE.startswith("text/plain")
