"""pytest configuration shared by every test."""

from __future__ import annotations

import os

import pytest

# The files that take longest, longest first (seconds of test time each, from `pytest --durations=0` on 2026-12-05,
# a slow host: faults 179, the browser calls about 90, fuzz 86 then, 35 since it forks its harnesses, ...). They run
# first, so that the two workers of `tests/run` (pytest-xdist, --dist loadfile: a file stays on one worker) finish
# together instead of one of them starting a long file when the other has nothing left. `tests/run` passes
# --no-loadscope-reorder so that xdist keeps this order: by default it sends the files with the most tests first,
# which put these files of few long tests last, and a fresh-clone run took 15 min 16 s. Every other file keeps its
# order after these; a file missing from the list only starts later, it still runs.
LONGEST_FIRST = (
    "tests/faults/test_scenarios.py",
    "tests/web/test_call_pages.py",
    "tests/adversarial/test_fuzz.py",
    "tests/sim/test_swim_sim.py",
    "tests/adversarial/hostile/test_hostile_node.py",
    "tests/web/test_hostile_callers.py",
    "tests/bench/test_bench_relay_ab_smoke.py",
    "tests/integration/test_admission_race.py",
    "tests/sim/test_swim_hostile.py",
    "tests/integration/test_cli_node.py",
    "tests/bootstrap/test_cli.py",
    "tests/bench/test_bench_swim_smoke.py",
    "tests/ops/test_operations_walk.py",
)


def _rank(item: pytest.Item) -> int:
    path = item.nodeid.split("::", 1)[0]
    return LONGEST_FIRST.index(path) if path in LONGEST_FIRST else len(LONGEST_FIRST)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    items.sort(key=_rank)  # stable: the tests of a file, and the files not listed, keep their order
    if os.geteuid() == 0:
        return
    skip = pytest.mark.skip(reason="needs root for network namespaces and nftables (CI runs as root)")
    for item in items:
        if "root" in item.keywords:
            item.add_marker(skip)
