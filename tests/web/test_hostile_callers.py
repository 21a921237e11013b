"""Hostile callers against a real page: valid offers (any key pair can make them) sent faster than anyone calls.

The attacker is a real client (node/client) with real e2ee offers (node/protocol/e2ee.py) on a real node; the victim is
the call page in Chromium. What is asserted is what the page does: what it sends back, whether its node closes it,
how many calls it rings for.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import trio

from node.cli.webdemo import page_link
from node.client.connection import connect_client
from node.protocol.e2ee import IncomingCall, OutgoingCall
from node.protocol.e2ee_plaintext import Answer, Hangup, Offer
from node.protocol.e2ee_replay import OfferReplayCache
from node.protocol.identity import Identity
from node.protocol.wire.client import Deliver
from tests.integration.procs import NodeProcess
from tests.web.browser import Page, chromium

SDP = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n"


async def _flood(url: str, node_id: bytes, victim: bytes, attackers: int, offers_each: int, listen_s: float) -> int:
    """`attackers` clients (own keys) each send `offers_each` fresh offers to `victim` at once, then listen for
    `listen_s`; returns how many `call_reject` envelopes the victim sent back to them."""
    rejects = 0

    async def one() -> None:
        nonlocal rejects
        me = Identity.generate()
        async with connect_client(url, me, expected_node_id=node_id) as conn:
            for _ in range(offers_each):
                call = os.urandom(16)
                out = OutgoingCall(identity=me, callee=victim, call=call, random_bytes=os.urandom)
                body = out.offer(Offer(sdp=SDP, video=False, ts=int(time.time())))
                await conn.send_envelope("call_offer", victim, call, body)
            with trio.move_on_after(listen_s):
                while True:
                    msg = await conn.receive()
                    if isinstance(msg, Deliver) and msg.kind == "call_reject":
                        rejects += 1

    async with trio.open_nursery() as nursery:
        for _ in range(attackers):
            nursery.start_soon(one)
    return rejects


def _victim(
    page: Page, web_base: str, node: NodeProcess, me: Identity, contacts: dict[str, bytes], **extra: str
) -> None:
    link = page_link(web_base, profile="v", me=me, node_ws=node.url, node_id=node.id, contacts=contacts, **extra)
    page.open(link + "&cache=0")
    page.wait(lambda v: v["conn"] == "connected", 20, "connected to its node")


@pytest.mark.timeout(120)
def test_a_flood_of_offers_during_a_call_does_not_make_the_page_flood_its_node_with_busy_answers(
    tmp_path: Path, web_base: str, federation3: list[NodeProcess]
) -> None:
    """While in a call the page answers an offer `busy` on its own. Before, it answered every one: three attacker
    connections sending 60 offers each made the page send a `call_reject` per offer (76 reached the attackers
    within 4 s on the code before), spending its own connection's envelope budget (60 back to back, then 20 a
    second), which its own call's signalling (hangup, renegotiation) shares, and costing it a Noise message each."""
    node = federation3[0]
    me, offline = Identity.generate(), Identity.generate()
    with chromium(tmp_path, "victim") as page:
        _victim(page, web_base, node, me, {"offline": offline.id})
        page.click_css(f'li[data-id="{offline.id_text}"] .call-audio')  # a call that stays outgoing (mailbox)
        page.wait(lambda v: v["callState"] == "outgoing", 15, "the page in an outgoing call")
        rejects = trio.run(_flood, node.url, node.id, me.id, 3, 60, 4.0)
        history = page.js("return window.homing.connHistory")
        assert "offline" not in history, f"the page lost its connection during the flood: {history}"
        assert rejects <= 10, f"the page answered {rejects} of 180 offers busy"
        assert page.view()["callState"] == "outgoing"


@pytest.mark.timeout(120)
def test_a_flood_of_offers_rings_a_bounded_number_of_calls(
    tmp_path: Path, web_base: str, federation3: list[NodeProcess]
) -> None:
    """Every valid offer from a new call id made a ringing call, kept (with its SDP, up to 60 kB) until its 60 s ring
    timeout: only ended calls were ever pruned, so the page's table of calls grew with whatever strangers sent
    (two connections' 120 offers rang 120 calls at once on the code before)."""
    node = federation3[0]
    me = Identity.generate()
    with chromium(tmp_path, "victim") as page:
        _victim(page, web_base, node, me, {})
        trio.run(_flood, node.url, node.id, me.id, 2, 60, 3.0)
        ringing = page.js("return window.homing.history.filter((h) => h === 'incoming').length")
        assert 1 <= ringing <= 16, f"{ringing} calls rang at once"
        assert page.view()["conn"] == "connected"


async def _answer_with(url: str, node_id: bytes, me: Identity, dial: Callable[[], None], sdp: str) -> None:
    """Be the callee: let the page `dial`, answer its offer (a valid e2ee answer carrying `sdp`), then stay silent."""
    async with connect_client(url, me, expected_node_id=node_id) as conn:
        await trio.to_thread.run_sync(dial)
        with trio.fail_after(15):
            while True:
                msg = await conn.receive()
                if isinstance(msg, Deliver) and msg.kind == "call_offer":
                    break
        dev, offer = IncomingCall.from_offer(
            identity=me, sender=msg.sender, call=msg.call, kind=msg.kind, body=msg.body, now_s=int(time.time()),
            replay=OfferReplayCache(), random_bytes=os.urandom,
        )  # fmt: skip
        body = dev.answer(Answer(sdp=sdp, video=offer.video))
        await conn.send_envelope("call_answer", msg.sender, msg.call, body)
        await trio.sleep(1.0)


@pytest.mark.timeout(120)
def test_an_answer_whose_sdp_the_browser_refuses_ends_the_call_instead_of_leaving_it_connecting(
    tmp_path: Path, web_base: str, federation3: list[NodeProcess]
) -> None:
    """The callee's answer is authenticated, but its SDP is the callee's to choose. Before, the page's
    setRemoteDescription failed unnoticed and the call stayed `connecting` for good (the ring timer was cleared, the
    media path never started, so no timer ended it): the page then answered every other caller `busy` and could not
    dial until its user hung up."""
    node = federation3[0]
    me, callee = Identity.generate(), Identity.generate()
    with chromium(tmp_path, "caller") as page:
        _victim(page, web_base, node, me, {"callee": callee.id})
        dial = lambda: page.click_css(f'li[data-id="{callee.id_text}"] .call-audio')  # noqa: E731
        trio.run(_answer_with, node.url, node.id, callee, dial, "v=0\r\nnot an answer")
        v = page.wait(lambda v: v["callState"] == "ended", 10, "the call to end")
        assert v["callReason"] == "failed", v


@pytest.mark.timeout(150)
def test_a_callee_that_answers_and_goes_silent_cannot_keep_the_page_connecting_for_good(
    tmp_path: Path, web_base: str, federation3: list[NodeProcess]
) -> None:
    """A valid answer with no candidate behind it, then nothing: no media path ever starts, so neither the ICE
    gathering timeout (the page has candidates) nor the reconnect window (the path never dropped) ends the call.
    Before, the page stayed `connecting` (busy to every other caller, unable to dial) until its user hung up; now a
    call that has not connected within 30 s of its answer ends `failed` (5 s here: the page's `connect` setting)."""
    node = federation3[0]
    me, callee = Identity.generate(), Identity.generate()
    with chromium(tmp_path, "caller") as page:
        _victim(page, web_base, node, me, {"callee": callee.id}, connect="5")
        sdp = page.driver.execute_async_script(
            """
            const done = arguments[arguments.length - 1];
            const offerer = new RTCPeerConnection(), answerer = new RTCPeerConnection();
            offerer.addTransceiver("audio");
            offerer.createOffer().then(async (o) => {
              await answerer.setRemoteDescription(o);
              const a = await answerer.createAnswer();
              offerer.close(); answerer.close();
              done(a.sdp);
            });
            """
        )
        dial = lambda: page.click_css(f'li[data-id="{callee.id_text}"] .call-audio')  # noqa: E731
        trio.run(_answer_with, node.url, node.id, callee, dial, sdp)
        page.wait(lambda v: v["callState"] == "connecting", 10, "the call connecting")
        v = page.wait(lambda v: v["callState"] == "ended", 15, "the call to end")
        assert v["callReason"] == "failed", v


async def _send_offer_twice(url: str, node_id: bytes, me: Identity, victim: bytes, between: Callable[[], None]) -> None:
    """Send one offer, run `between` (the page reloads), then send the very same envelope again: what a node that
    relayed (or recorded) the offer can do at any time within the offer's 300 s window."""
    async with connect_client(url, me, expected_node_id=node_id) as conn:
        call = os.urandom(16)
        out = OutgoingCall(identity=me, callee=victim, call=call, random_bytes=os.urandom)
        body = out.offer(Offer(sdp=SDP, video=False, ts=int(time.time())))
        await conn.send_envelope("call_offer", victim, call, body)
        await trio.to_thread.run_sync(between)
        await conn.send_envelope("call_offer", victim, call, body)
        await trio.sleep(2.0)


@pytest.mark.timeout(120)
def test_an_offer_replayed_after_the_page_reloads_does_not_ring_again(
    tmp_path: Path, web_base: str, federation3: list[NodeProcess]
) -> None:
    """The offer replay cache (docs/e2ee.md, step 2) lived in the page's memory only, so a reload forgot it: the
    same offer, delivered again within its 300 s window, rang again as a call from its caller (on the code before,
    the reloaded page showed the replayed call `incoming`)."""
    node = federation3[0]
    me, caller = Identity.generate(), Identity.generate()
    with chromium(tmp_path, "victim") as page:
        _victim(page, web_base, node, me, {"caller": caller.id})

        def reload() -> None:
            page.wait(lambda v: v["callState"] == "incoming", 10, "the first delivery to ring")
            page.driver.refresh()
            page.wait(lambda v: v["conn"] == "connected", 20, "connected again after the reload")

        trio.run(_send_offer_twice, node.url, node.id, caller, me.id, reload)
        v = page.view()
        assert "incoming" not in v["history"], v
        assert any("Replayed" in r for r in v["refused"]), v


async def _ring_then_cancel_under(
    url: str, node_id: bytes, stranger: Identity, friend: Identity, victim: bytes
) -> None:
    """The stranger's call rings, then the friend's, then the stranger cancels its own."""
    async with (
        connect_client(url, stranger, expected_node_id=node_id) as s,
        connect_client(url, friend, expected_node_id=node_id) as f,
    ):
        calls = []
        for conn, me in ((s, stranger), (f, friend)):
            call = os.urandom(16)
            out = OutgoingCall(identity=me, callee=victim, call=call, random_bytes=os.urandom)
            await conn.send_envelope(
                "call_offer", victim, call, out.offer(Offer(sdp=SDP, video=False, ts=int(time.time())))
            )
            calls.append((call, out))
            await trio.sleep(1.0)
        call, out = calls[0]
        await s.send_envelope("call_hangup", victim, call, out.early(Hangup(reason="cancelled")))
        await trio.sleep(1.0)


@pytest.mark.timeout(120)
def test_a_caller_that_gives_up_does_not_hide_another_callers_ringing(
    tmp_path: Path, web_base: str, federation3: list[NodeProcess]
) -> None:
    """Two calls ring; the overlay shows the newest (the friend's). The other caller hanging up its own call must not
    hide the friend's: before, any ringing call that ended hid the overlay, so a stranger could ring and cancel to
    make the page's user miss a friend's call that went on ringing unseen until its timeout."""
    node = federation3[0]
    me, stranger, friend = Identity.generate(), Identity.generate(), Identity.generate()
    with chromium(tmp_path, "victim") as page:
        _victim(page, web_base, node, me, {"friend": friend.id})
        trio.run(_ring_then_cancel_under, node.url, node.id, stranger, friend, me.id)
        shown = page.js(
            "return [document.getElementById('incoming').hidden, document.getElementById('incoming-id').textContent]"
        )
        assert shown == [False, friend.id_text], shown
