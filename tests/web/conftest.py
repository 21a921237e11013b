"""Fixtures for the browser client's tests: the static page server and a 3-node federation of real processes."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from node.cli.webdemo import serve_web
from tests.integration.procs import NodeProcess, wait_for
from tests.web.browser import WEB, require_browser


@pytest.fixture
def web_base() -> Iterator[str]:
    require_browser()
    with serve_web(WEB) as base:
        yield base


def start_federation(tmp: Path, n: int = 3, *extra: str) -> list[NodeProcess]:
    nodes: list[NodeProcess] = []
    tmp.mkdir(parents=True, exist_ok=True)
    try:
        nodes.append(NodeProcess(tmp, "node0", [], *extra))
        nodes += [NodeProcess(tmp, f"node{i}", [nodes[0].swim], *extra, wait=False) for i in range(1, n)]
        for node in nodes[1:]:
            node.started()  # the others start side by side, each joining the first
        for node in nodes:
            wait_for(
                lambda node=node: sum(s == "alive" for s in node.states().values()) >= n,  # type: ignore[misc]
                20,
                f"{node.dir.name} to see {n} alive members",
            )
    except BaseException:
        for node in nodes:
            node.stop()
        raise
    return nodes


@pytest.fixture
def federation3(tmp_path: Path) -> Iterator[list[NodeProcess]]:
    require_browser()
    nodes = start_federation(tmp_path / "fed")
    try:
        yield nodes
    finally:
        for node in nodes:
            node.stop()
