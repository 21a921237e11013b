"""The Prometheus text exposition of the node's own metrics: counters, gauges and histograms with fixed label names.

A node used prometheus-client for this; importing it costs ~3 MiB and ~20 ms at every start (it brings http.server,
wsgiref, urllib.request and email, none of which a node uses), and every update takes a lock the single-threaded
node does not need (issue #17). What the node uses of it is small, so it is here: `Registry.render()` writes
exactly what prometheus-client's `generate_latest` writes for the same metrics (version 0.26: `_total` on counter
names, `_created` series as gauges after each family, Go-style floats), checked against it in
tests/ops/test_promtext.py. The registry (bootstrap/server.py) still uses prometheus-client.

    r = Registry()
    c = Counter("homing_x", "Help text.", ["kind"], registry=r)
    c.labels(kind="a").inc()          # a labelled metric: one child per label values, created on first use
    c.labels(kind="a").advance_to(7)  # not in prometheus-client: mirror a running total kept elsewhere
    g = Gauge("homing_y", "Help.", registry=r); g.set(3)      # a metric without labels is its own only child
    h = Histogram("homing_z", "Help.", buckets=(0.1, 1.0), registry=r); h.observe(0.2)
    r.render() -> bytes               # sent with CONTENT_TYPE

Not thread-safe (nothing in a node updates metrics from another thread); `PROMETHEUS_DISABLE_CREATED_SERIES`
(true, 1, t) turns the `_created` series off, as it does for prometheus-client.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Iterable, Sequence
from typing import Generic, TypeVar

# prometheus-client 0.26's CONTENT_TYPE_LATEST, which the node sent with this same body
CONTENT_TYPE = "text/plain; version=1.0.0; charset=utf-8"
USE_CREATED = os.environ.get("PROMETHEUS_DISABLE_CREATED_SERIES", "False").lower() not in ("true", "1", "t")
INF = math.inf


def go_float(value: float) -> str:
    """A sample value as Prometheus (Go) writes it: +Inf, -Inf, NaN, exponents from 1e+06 up (floatToGoString)."""
    d = float(value)
    if d == INF:
        return "+Inf"
    if d == -INF:
        return "-Inf"
    if math.isnan(d):
        return "NaN"
    s = repr(d)
    dot = s.find(".")
    if d > 0 and dot > 6:
        mantissa = f"{s[0]}.{s[1:dot]}{s[dot + 1 :]}".rstrip("0.")
        return f"{mantissa}e+{dot - 1:02d}"
    return s


def _escape(value: str) -> str:
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


def _sample(name: str, labels: Iterable[tuple[str, str]], value: float) -> str:
    pairs = ",".join(f'{k}="{_escape(v)}"' for k, v in sorted(labels))
    return f"{name}{{{pairs}}} {go_float(value)}\n" if pairs else f"{name} {go_float(value)}\n"


class _Child:
    __slots__ = ("created", "labels")

    def __init__(self, labels: tuple[tuple[str, str], ...]) -> None:
        self.labels = labels
        self.created = time.time()


class CounterChild(_Child):
    __slots__ = ("value",)

    def __init__(self, labels: tuple[tuple[str, str], ...]) -> None:
        super().__init__(labels)
        self.value = 0.0

    def inc(self, amount: float = 1) -> None:
        if amount < 0:
            raise ValueError("Counters can only be incremented by non-negative amounts.")
        self.value += amount

    def advance_to(self, total: float) -> None:
        """Raise the value to `total`, a running total kept elsewhere (never lowered: counters only grow)."""
        self.value = max(self.value, float(total))


class GaugeChild(_Child):
    __slots__ = ("value",)

    def __init__(self, labels: tuple[tuple[str, str], ...]) -> None:
        super().__init__(labels)
        self.value = 0.0

    def set(self, value: float) -> None:
        self.value = float(value)

    def inc(self, amount: float = 1) -> None:
        self.value += amount

    def dec(self, amount: float = 1) -> None:
        self.value -= amount


class HistogramChild(_Child):
    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, labels: tuple[tuple[str, str], ...], bounds: tuple[float, ...]) -> None:
        super().__init__(labels)
        self.bounds = bounds
        self.counts = [0.0] * len(bounds)
        self.sum = 0.0

    def observe(self, amount: float) -> None:
        self.sum += amount
        for i, bound in enumerate(self.bounds):
            if amount <= bound:
                self.counts[i] += 1
                break


C = TypeVar("C", bound=_Child)


class Registry:
    """The metrics of one node, rendered in registration order."""

    def __init__(self) -> None:
        self._families: list[_Family[_Child]] = []
        self._names: set[str] = set()

    def register(self, family: _Family[C]) -> None:
        names = family.series_names()
        if names & self._names:
            raise ValueError(f"Duplicated timeseries in Registry: {sorted(names & self._names)}")
        self._names |= names
        self._families.append(family)  # type: ignore[arg-type]

    def render(self) -> bytes:
        out: list[str] = []
        for family in self._families:
            family.render(out)
        return "".join(out).encode("utf-8")


class _Family(Generic[C]):
    kind = ""
    suffixes: tuple[str, ...] = ("",)

    def __init__(self, name: str, documentation: str, labelnames: Sequence[str], registry: Registry) -> None:
        self.name = name
        self.documentation = documentation
        self.labelnames = tuple(labelnames)
        self._children: dict[tuple[str, ...], C] = {}
        self._only: C | None = None if self.labelnames else self._child(())
        registry.register(self)

    def series_names(self) -> set[str]:
        return {self.name + suffix for suffix in self.suffixes}

    def _child(self, labels: tuple[tuple[str, str], ...]) -> C:
        raise NotImplementedError

    def labels(self, *values: object, **named: object) -> C:
        """The child of these label values (created, at zero, on first use)."""
        if not self.labelnames:
            raise ValueError(f"No label names were set when constructing {self.name}")
        if values and named:
            raise ValueError("Can't pass both *args and **kwargs")
        if named:
            if sorted(named) != sorted(self.labelnames):
                raise ValueError("Incorrect label names")
            key = tuple(str(named[n]) for n in self.labelnames)
        else:
            if len(values) != len(self.labelnames):
                raise ValueError("Incorrect label count")
            key = tuple(str(v) for v in values)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = self._child(tuple(zip(self.labelnames, key, strict=True)))
        return child

    def _one(self) -> C:
        if self._only is None:
            raise ValueError(f"{self.name} has labels: use .labels(...)")
        return self._only

    def _all(self) -> Iterable[C]:
        return self._children.values() if self._only is None else (self._only,)

    def _head(self, out: list[str], name: str, kind: str) -> None:
        doc = self.documentation.replace("\\", r"\\").replace("\n", r"\n")
        out.append(f"# HELP {name} {doc}\n# TYPE {name} {kind}\n")

    def render(self, out: list[str]) -> None:
        raise NotImplementedError

    def _render_created(self, out: list[str]) -> None:
        """prometheus-client writes each child's creation time as a gauge family of its own after the family."""
        lines = [_sample(f"{self.name}_created", c.labels, c.created) for c in self._all()] if USE_CREATED else []
        if lines:
            self._head(out, f"{self.name}_created", "gauge")
            out.extend(lines)


class Counter(_Family[CounterChild]):
    suffixes = ("", "_total", "_created")

    def __init__(self, name: str, documentation: str, labelnames: Sequence[str] = (), *, registry: Registry) -> None:
        super().__init__(name, documentation, labelnames, registry)

    def _child(self, labels: tuple[tuple[str, str], ...]) -> CounterChild:
        return CounterChild(labels)

    def inc(self, amount: float = 1) -> None:
        self._one().inc(amount)

    def advance_to(self, total: float) -> None:
        self._one().advance_to(total)

    def render(self, out: list[str]) -> None:
        self._head(out, f"{self.name}_total", "counter")
        out.extend(_sample(f"{self.name}_total", c.labels, c.value) for c in self._all())
        self._render_created(out)


class Gauge(_Family[GaugeChild]):
    def __init__(self, name: str, documentation: str, labelnames: Sequence[str] = (), *, registry: Registry) -> None:
        super().__init__(name, documentation, labelnames, registry)

    def _child(self, labels: tuple[tuple[str, str], ...]) -> GaugeChild:
        return GaugeChild(labels)

    def set(self, value: float) -> None:
        self._one().set(value)

    def inc(self, amount: float = 1) -> None:
        self._one().inc(amount)

    def dec(self, amount: float = 1) -> None:
        self._one().dec(amount)

    def render(self, out: list[str]) -> None:
        self._head(out, self.name, "gauge")
        out.extend(_sample(self.name, c.labels, c.value) for c in self._all())


class Histogram(_Family[HistogramChild]):
    suffixes = ("", "_bucket", "_count", "_sum", "_created")

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str] = (),
        *,
        buckets: Sequence[float],
        registry: Registry,
    ) -> None:
        bounds = [float(b) for b in buckets]
        if bounds != sorted(bounds):
            raise ValueError("Buckets not in sorted order")
        if bounds and bounds[-1] != INF:
            bounds.append(INF)
        if len(bounds) < 2:
            raise ValueError("Must have at least two buckets")
        self.bounds = tuple(bounds)
        super().__init__(name, documentation, labelnames, registry)

    def _child(self, labels: tuple[tuple[str, str], ...]) -> HistogramChild:
        return HistogramChild(labels, self.bounds)

    def observe(self, amount: float) -> None:
        self._one().observe(amount)

    def render(self, out: list[str]) -> None:
        self._head(out, self.name, "histogram")
        for c in self._all():
            acc = 0.0
            for bound, count in zip(c.bounds, c.counts, strict=True):
                acc += count
                out.append(_sample(f"{self.name}_bucket", (*c.labels, ("le", go_float(bound))), acc))
            out.append(_sample(f"{self.name}_count", c.labels, acc))
            if c.bounds[0] >= 0:
                out.append(_sample(f"{self.name}_sum", c.labels, c.sum))
        self._render_created(out)
