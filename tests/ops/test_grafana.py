"""deploy/grafana/homing.json: up to date with its generator, valid, and querying only metrics the code exports."""

from __future__ import annotations

import importlib.util
import json
import re

from bootstrap.server import RegistryMetrics
from tests.helpers import REPO
from tests.ops.test_deploy import PROMETHEUS_BUILTINS, rendered_metric_names

DASHBOARD = REPO / "deploy" / "grafana" / "homing.json"


def _generator() -> object:
    spec = importlib.util.spec_from_file_location("make_dashboard", REPO / "deploy" / "grafana" / "make_dashboard.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def registry_metric_names() -> set[str]:
    m = RegistryMetrics()
    m.requests.labels(route="x", status="200").inc()
    text = __import__("prometheus_client").generate_latest(m.registry).decode()
    return {line.split("{")[0].split(" ")[0] for line in text.splitlines() if not line.startswith("#")}


def test_committed_dashboard_is_what_the_generator_writes() -> None:
    assert DASHBOARD.read_text() == _generator().render(), "run `python deploy/grafana/make_dashboard.py`"  # type: ignore[attr-defined]


def test_every_panel_queries_metrics_that_exist() -> None:
    doc = json.loads(DASHBOARD.read_text())
    known = rendered_metric_names() | registry_metric_names() | PROMETHEUS_BUILTINS
    known |= {n + "_bucket" for n in known} | {n + "_count" for n in known} | {n + "_sum" for n in known}
    assert doc["panels"], "no panels"
    for panel in doc["panels"]:
        for target in panel["targets"]:
            used = set(re.findall(r"\b(homing_[a-z_]+|up)\b", target["expr"]))
            assert used, panel["title"]
            assert used <= known, f"{panel['title']} queries {used - known}"


def test_panels_do_not_overlap_and_ids_are_unique() -> None:
    panels = json.loads(DASHBOARD.read_text())["panels"]
    assert len({p["id"] for p in panels}) == len(panels)
    cells = set()
    for p in panels:
        g = p["gridPos"]
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                assert (x, y) not in cells, p["title"]
                cells.add((x, y))
        assert g["x"] + g["w"] <= 24
