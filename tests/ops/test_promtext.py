"""node/app/promtext.py writes what prometheus-client's generate_latest writes for the same metrics, byte for byte
(the node's /metrics did not change when it stopped importing prometheus-client, issue #17)."""

from __future__ import annotations

import math
import time
from typing import Any

import prometheus_client
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from node.app import metrics as node_metrics
from node.app import promtext
from node.app.metrics import NodeMetrics
from node.protocol.refusals import Layer, Refusal

FIXED_NOW = 1_796_000_000.123456


def _exercise(m: NodeMetrics) -> None:
    m.set_members({"alive": 3, "suspect": 1})
    m.member_changed("suspect")
    m.member_changed("made-up")
    m.clients_connected.set(19_000)
    m.clients_connected.inc()
    m.clients_connected.dec(2)
    m.envelope("call_offer", "delivered")
    m.envelope("call_ice", "queued")
    for seconds in (0.00004, 0.0001, 0.0031, 0.2, 7.5):
        m.relay_seconds.observe(seconds)
    m.mailbox_envelopes.set(12)
    m.swim_probe("ack")
    m.packet_refused(Layer.SWIM, Refusal.FORGED)
    m.peer_links.set(4)
    m.push_result("sent")
    m.push_result("gone")
    m.push_subscriptions.set(1_234_567)


def test_node_metrics_render_as_prometheus_client_renders_them(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(time, "time", lambda: FIXED_NOW)  # the _created series: both read time.time()
    ours = NodeMetrics()
    with monkeypatch.context() as patch:
        for name in ("Counter", "Gauge", "Histogram"):
            patch.setattr(node_metrics, name, getattr(prometheus_client, name))
        theirs = NodeMetrics(registry=prometheus_client.CollectorRegistry(auto_describe=True))  # type: ignore[arg-type]
    _exercise(ours)
    _exercise(theirs)
    expected = prometheus_client.generate_latest(theirs.registry).decode()  # type: ignore[arg-type]
    assert "_created" in expected and "homing_relay_seconds_bucket" in expected
    assert ours.render().decode() == expected
    assert NodeMetrics.CONTENT_TYPE == CONTENT_TYPE_LATEST


def _pair(kind: str, labelnames: list[str]) -> tuple[Any, Any, Any, Any]:
    ours, theirs = promtext.Registry(), prometheus_client.CollectorRegistry(auto_describe=True)
    doc = 'Help with a back\\slash, a "quote"\nand a new line.'
    extra: dict[str, Any] = {"buckets": (-1.0, 0.5, 1e7)} if kind == "Histogram" else {}
    a = getattr(promtext, kind)("homing_t", doc, labelnames, registry=ours, **extra)
    b = getattr(prometheus_client, kind)("homing_t", doc, labelnames, registry=theirs, **extra)
    return ours, theirs, a, b


values = st.floats(allow_nan=True, allow_infinity=True) | st.integers(-(10**12), 10**12)
label_values = st.text(st.characters(codec="utf-8"), max_size=6)


@settings(max_examples=60, deadline=None)
@example(kind="Counter", labelled=False, ops=[("", math.nan)])  # CI once drew it: the test took NaN for negative
@given(
    kind=st.sampled_from(["Counter", "Gauge", "Histogram"]),
    labelled=st.booleans(),
    ops=st.lists(st.tuples(label_values, values), max_size=8),
)
def test_random_updates_render_identically(kind: str, labelled: bool, ops: list[tuple[str, float]]) -> None:
    real_time = time.time
    time.time = lambda: FIXED_NOW  # type: ignore[assignment]  # (hypothesis and monkeypatch do not mix)
    try:
        ours, theirs, a, b = _pair(kind, ["route", "code"] if labelled else [])
        for label, value in ops:
            for metric in (a, b):
                target = metric.labels(route=label, code="x\\y") if labelled else metric
                if kind == "Counter":
                    if value < 0:  # both refuse negative increments (and take NaN, which is not < 0)
                        with pytest.raises(ValueError):
                            target.inc(value)
                    else:
                        target.inc(value)
                elif kind == "Gauge":
                    target.set(value)
                    target.inc(1)
                else:
                    target.observe(value)
        assert ours.render() == prometheus_client.generate_latest(theirs)
    finally:
        time.time = real_time  # type: ignore[method-assign]


def test_labels_are_checked_like_prometheus_client() -> None:
    r = promtext.Registry()
    c = promtext.Counter("homing_c", "C.", ["a", "b"], registry=r)
    assert c.labels("1", 2) is c.labels(a="1", b="2")
    for bad in (lambda: c.labels("1"), lambda: c.labels(a="1"), lambda: c.labels("1", b="2"), c.inc):
        with pytest.raises(ValueError):
            bad()
    with pytest.raises(ValueError):
        promtext.Gauge("homing_c_total", "Clashes with the counter's series.", registry=r)
    with pytest.raises(ValueError):
        promtext.Gauge("homing_g", "G.", registry=r).labels("x")


def test_advance_to_mirrors_a_running_total_and_never_lowers_a_counter() -> None:
    r = promtext.Registry()
    c = promtext.Counter("homing_x", "Help.", registry=r)
    c.inc(2)
    c.advance_to(5)
    c.advance_to(3)  # a total read late, or twice: the counter keeps what it showed
    assert b"homing_x_total 5.0\n" in r.render()
