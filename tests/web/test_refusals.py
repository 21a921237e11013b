"""The page and its node: impostors refused (docs/web.md, docs/client-protocol.md), goaway followed."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from node.cli.webdemo import page_link
from node.protocol.identity import Identity
from tests.integration.procs import NodeProcess
from tests.web.browser import chromium
from tests.web.impostor import impostor


@pytest.mark.timeout(90)
def test_page_refuses_a_node_that_cannot_sign_for_the_pinned_id(
    tmp_path: Path, web_base: str, federation3: list[NodeProcess]
) -> None:
    real = federation3[0]
    with impostor(real.id) as (url, events), chromium(tmp_path, "victim") as page:
        page.open(
            page_link(web_base, profile="victim", me=Identity.generate(), node_ws=url, node_id=real.id, cache="0")
        )
        v = page.wait(lambda v: v["conn"] == "refused", 20, "the page to refuse the impostor")
        assert "could not prove the id" in v["connDetail"], v
        assert "hello" in events  # it did get as far as the welcome: the signature is what gave it away
        time.sleep(1.0)
        assert page.view()["conn"] != "connected"
        assert "frame after welcome" not in events


@pytest.mark.timeout(90)
def test_page_refuses_a_real_node_pinned_under_another_id(
    tmp_path: Path, web_base: str, federation3: list[NodeProcess]
) -> None:
    real, other = federation3[0], federation3[1]
    with chromium(tmp_path, "pinned") as page:
        page.open(
            page_link(web_base, profile="p", me=Identity.generate(), node_ws=real.url, node_id=other.id, cache="0")
        )
        v = page.wait(lambda v: v["conn"] == "refused", 20, "the page to refuse the node")
        assert "not the expected" in v["connDetail"], v


@pytest.mark.timeout(90)
def test_goaway_moves_the_page_to_a_node_the_leaving_node_listed(
    tmp_path: Path, web_base: str, federation3: list[NodeProcess]
) -> None:
    home = federation3[0]
    with chromium(tmp_path, "mover") as page:
        page.open(
            page_link(web_base, profile="m", me=Identity.generate(), node_ws=home.url, node_id=home.id, cache="0")
        )
        page.wait(lambda v: v["conn"] == "connected", 20, "connected to its first node")
        home.proc.terminate()  # SIGTERM: goaway with the other nodes' signed cards, then close 1001
        others = {n.id_text for n in federation3[1:]}
        v = page.wait(
            lambda v: v["conn"] == "connected" and v["node"]["id"] in others, 20, "the page on a node from goaway"
        )
        assert v["node"]["source"] == "referral" and v["node"]["verified"] is True, v


@pytest.mark.timeout(90)
def test_a_killed_node_makes_the_page_reconnect_to_another_known_node(
    tmp_path: Path, web_base: str, federation3: list[NodeProcess]
) -> None:
    a, b = federation3[0], federation3[1]
    link = page_link(
        web_base, profile="r", me=Identity.generate(), node_ws=a.url, node_id=a.id, cache="0",
        node=f"{b.url}#{b.id_text}",
    )  # fmt: skip
    with chromium(tmp_path, "reconnect") as page:
        page.open(link)
        v = page.wait(lambda v: v["conn"] == "connected", 20, "connected")
        on, other = (a, b) if v["node"]["id"] == a.id_text else (b, a)
        on.proc.kill()  # no goaway: the connection just drops
        v = page.wait(lambda v: v["conn"] == "connected" and v["node"]["id"] == other.id_text, 20, "reconnected")
        assert page.js("return window.homing.connHistory").count("offline") >= 1
