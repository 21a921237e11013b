"""Two browsers really talk through homing: real Chromium, real WebRTC, real node processes (docs/web.md).

Each test is hard-time-bounded (pytest-timeout) and polls the pages' `window.homing` state a bounded number of times.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from node.cli.webdemo import page_link
from node.protocol.identity import Identity
from tests.integration.procs import NodeProcess, wait_for
from tests.web.browser import Page, chromium, require_browser
from tests.web.conftest import start_federation

CONNECT_S = 20
RING_S = 15
MEDIA_S = 30


def _link(base: str, name: str, me: Identity, node: NodeProcess, peers: dict[str, Identity], **extra: str) -> str:
    return page_link(
        base,
        profile=name,
        me=me,
        node_ws=node.url,
        node_id=node.id,
        contacts={n: p.id for n, p in peers.items()},
        cache="0",
        **extra,
    )


def _dial(page: Page, callee: Identity, video: bool = True) -> None:
    cls = "call-video" if video else "call-audio"
    page.click_css(f'li[data-id="{callee.id_text}"] .{cls}')


def _media_flows(a: Page, b: Page) -> None:
    """getStats(): inbound audio and video packets on both sides, growing between two samples."""
    first = {p.name: p.stats() for p in (a, b)}
    deadline = time.monotonic() + MEDIA_S
    while time.monotonic() < deadline:
        time.sleep(1.0)
        now = {p.name: p.stats() for p in (a, b)}
        if all(now[n][k] > first[n][k] > 0 or now[n][k] > first[n][k] + 20 for n in now for k in ("audio", "video")):
            return
    raise AssertionError(f"inbound packets did not grow on both sides: before {first}, after {now}")


@pytest.mark.timeout(150)
def test_two_pages_on_different_nodes_call_connect_media_flows_hangup_ends_both(
    tmp_path: Path, web_base: str, federation3: list[NodeProcess]
) -> None:
    alice, bob = Identity.generate(), Identity.generate()
    with chromium(tmp_path, "alice") as a, chromium(tmp_path, "bob") as b:
        a.open(_link(web_base, "alice", alice, federation3[0], {"bob": bob}))
        b.open(_link(web_base, "bob", bob, federation3[2], {"alice": alice}, json="1"))  # JSON text frames
        for page, node in ((a, federation3[0]), (b, federation3[2])):
            v = page.wait(lambda v: v["conn"] == "connected", CONNECT_S, "connected to its node")
            assert v["node"]["id"] == node.id_text and v["node"]["source"] == "manual"
        _dial(a, bob)
        b.wait(lambda v: v["callState"] == "incoming", RING_S, "the incoming call")
        a.wait(lambda v: v["callState"] == "outgoing" and v["callDetail"] == "ringing", RING_S, "ringing")
        assert b.screenshot("web-ringing.png").read_bytes().startswith(b"\x89PNG")
        b.click("accept")
        for page in (a, b):
            page.wait(lambda v: v["callState"] == "connected", MEDIA_S, "connected")
        _media_flows(a, b)
        stats = a.stats()
        assert stats["local"] and stats["remote"], stats
        time.sleep(1.2)  # let the duration timer tick once for the screenshot
        assert a.screenshot("web-connected.png").read_bytes().startswith(b"\x89PNG")
        tracks = (
            "const s = window.homing.call.localStream;"
            " return [s.getAudioTracks()[0].enabled, s.getVideoTracks()[0].enabled]"
        )
        assert a.js(tracks) == [True, True]
        a.click("mute")
        a.click("camera")
        assert a.js(tracks) == [False, False]
        assert a.js(
            "return [document.getElementById('mute').textContent, document.getElementById('camera').textContent]"
        ) == [
            "Unmute",
            "Camera on",
        ]
        a.click("hangup")
        va = a.wait(lambda v: v["callState"] == "ended", RING_S, "ended")
        vb = b.wait(lambda v: v["callState"] == "ended", RING_S, "ended")
        assert va["callReason"] == "hangup" and vb["callReason"] == "hangup", (va, vb)


@pytest.mark.timeout(180)
def test_always_relay_goes_through_a_real_coturn_with_credentials_from_the_node(tmp_path: Path, web_base: str) -> None:
    """The nodes carry a `[turn]` section (this coturn's URL and secret file); the pages get no ICE servers from the
    test: each asks its node (`ice_servers`), and the call's selected pair is `relay` on both sides."""
    from tests.web.conftest import start_federation
    from tests.web.turn import allocations_by, coturn, turn_node_config

    alice, bob = Identity.generate(), Identity.generate()
    with coturn(tmp_path) as (port, secret):
        nodes = start_federation(tmp_path / "fed", 2, "--config", str(turn_node_config(tmp_path, port, secret)))
        try:
            with chromium(tmp_path, "alice") as a, chromium(tmp_path, "bob") as b:
                a.open(_link(web_base, "alice", alice, nodes[0], {"bob": bob}, relay="1"))
                b.open(_link(web_base, "bob", bob, nodes[1], {"alice": alice}, relay="1"))
                for page in (a, b):
                    page.wait(lambda v: v["conn"] == "connected", CONNECT_S, "connected to its node")
                _dial(a, bob)
                b.wait(lambda v: v["callState"] == "incoming", RING_S, "the incoming call")
                b.click("accept")
                for page in (a, b):
                    page.wait(lambda v: v["callState"] == "connected", MEDIA_S, "connected")
                _media_flows(a, b)
                for page in (a, b):
                    s = page.stats()
                    assert s["local"] == "relay" and s["remote"] == "relay", (page.name, s)
                    ice = page.js("return window.homing.call.ice")
                    assert ice == {
                        "from": "node",
                        "urls": [f"turn:127.0.0.1:{port}?transport=udp"],
                        "withCredential": True,
                    }, (page.name, ice)
                a.click("hangup")
                b.wait(lambda v: v["callState"] == "ended", RING_S, "ended")
        finally:
            for node in nodes:
                node.stop()
    # coturn allocated for usernames `<expiry>:<page id>`: credentials the nodes issued to these very clients
    for who in (alice, bob):
        assert allocations_by(tmp_path, who.id_text) >= 1, (tmp_path / "turnserver.log").read_text()[-3000:]


@pytest.mark.timeout(150)
def test_callee_offline_offer_waits_in_the_mailbox_then_rings_and_connects(
    tmp_path: Path, web_base: str, federation3: list[NodeProcess]
) -> None:
    alice, bob = Identity.generate(), Identity.generate()
    with chromium(tmp_path, "alice") as a, chromium(tmp_path, "bob") as b:
        a.open(_link(web_base, "alice", alice, federation3[0], {"bob": bob}))
        a.wait(lambda v: v["conn"] == "connected", CONNECT_S, "connected to its node")
        _dial(a, bob)
        a.wait(lambda v: "ringing via mailbox" in v["callDetail"], RING_S, "ringing via mailbox")
        time.sleep(1.0)
        b.open(_link(web_base, "bob", bob, federation3[2], {"alice": alice}))  # bob comes online on another node
        b.wait(lambda v: v["callState"] == "incoming", RING_S, "the offer from the mailbox to ring")
        b.click("accept")
        for page in (a, b):
            page.wait(lambda v: v["callState"] == "connected", MEDIA_S, "connected")
        _media_flows(a, b)
        b.click("hangup")
        a.wait(lambda v: v["callState"] == "ended" and v["callReason"] == "hangup", RING_S, "ended")


@pytest.mark.timeout(120)
def test_callee_offline_past_the_ring_timeout_caller_sees_missed_and_the_offer_is_withdrawn(
    tmp_path: Path, web_base: str, federation3: list[NodeProcess]
) -> None:
    alice, bob = Identity.generate(), Identity.generate()
    ring_s = 4  # the page setting; the real default is 60 s, the mailbox TTL
    with chromium(tmp_path, "alice") as a, chromium(tmp_path, "bob") as b:
        a.open(_link(web_base, "alice", alice, federation3[0], {"bob": bob}, ring=str(ring_s)))
        a.wait(lambda v: v["conn"] == "connected", CONNECT_S, "connected to its node")
        started = time.monotonic()
        _dial(a, bob)
        a.wait(lambda v: "ringing via mailbox" in v["callDetail"], RING_S, "ringing via mailbox")
        v = a.wait(lambda v: v["callState"] == "ended", ring_s + 10, "the ring timeout")
        assert v["callReason"] == "missed", v
        assert time.monotonic() - started >= ring_s - 0.5
        # the caller's hangup cancelled the queued offer: bob, coming online now, does not ring
        b.open(_link(web_base, "bob", bob, federation3[2], {"alice": alice}))
        b.wait(lambda v: v["conn"] == "connected", CONNECT_S, "connected to its node")
        time.sleep(2.0)
        assert b.view()["callState"] == "idle"


@pytest.mark.timeout(90)
def test_an_offer_that_expires_in_the_mailbox_ends_missed_and_the_page_withdraws_it(
    tmp_path: Path, web_base: str
) -> None:
    """`expired` is the first mailbox replica's word: the page withdraws the offer (hangup `timeout`) as at its ring
    timeout, so a replica that outlives it is cancelled and a ring that got through ends. On one node the hangup
    finds the offer gone and waits in the mailbox itself, which the node's mailbox gauge shows."""
    require_browser()
    config = tmp_path / "short-mailbox.toml"
    config.write_text("[relay]\nmailbox_ttl = 3.0\n")
    (node,) = start_federation(tmp_path / "fed", 1, "--config", str(config))
    try:
        alice, bob = Identity.generate(), Identity.generate()
        with chromium(tmp_path, "alice") as a:
            a.open(_link(web_base, "alice", alice, node, {"bob": bob}))  # the page's ring timeout: 60 s
            a.wait(lambda v: v["conn"] == "connected", CONNECT_S, "connected to its node")
            _dial(a, bob, video=False)
            a.wait(lambda v: "ringing via mailbox" in v["callDetail"], RING_S, "ringing via mailbox")
            v = a.wait(lambda v: v["callState"] == "ended", 15, "the offer's expired receipt")
            assert v["callReason"] == "missed" and "did not come online" in v["callDetail"], v
            wait_for(lambda: node.gauge("homing_mailbox_envelopes") == 1, 2.5, "the withdrawing hangup in the mailbox")
    finally:
        node.stop()


@pytest.mark.timeout(150)
@pytest.mark.parametrize(
    "second_home",
    [1, 2],  # devices on two nodes failed before the relay looked up a local recipient's other homes
    ids=["devices-on-one-node", "devices-on-two-nodes"],
)
def test_every_device_rings_and_the_others_stop_when_one_answers(
    tmp_path: Path, web_base: str, federation3: list[NodeProcess], second_home: int
) -> None:
    alice, bob = Identity.generate(), Identity.generate()
    with chromium(tmp_path, "alice") as a, chromium(tmp_path, "bob1") as b1, chromium(tmp_path, "bob2") as b2:
        a.open(_link(web_base, "alice", alice, federation3[0], {"bob": bob}))
        b1.open(_link(web_base, "bob", bob, federation3[1], {"alice": alice}))
        b2.open(_link(web_base, "bob", bob, federation3[second_home], {"alice": alice}))
        for page in (a, b1, b2):
            page.wait(lambda v: v["conn"] == "connected", CONNECT_S, "connected to its node")
        _dial(a, bob, video=False)
        for page in (b1, b2):
            page.wait(lambda v: v["callState"] == "incoming", RING_S, "ringing on every device")
        b1.click("accept")
        v2 = b2.wait(lambda v: v["callState"] == "ended", RING_S, "the other device to stop ringing")
        assert v2["callReason"] == "answered_elsewhere", v2
        for page in (a, b1):
            page.wait(lambda v: v["callState"] == "connected", MEDIA_S, "connected")
        a.click("hangup")
        b1.wait(lambda v: v["callState"] == "ended" and v["callReason"] == "hangup", RING_S, "ended")
