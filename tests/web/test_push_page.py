"""Push wake-ups in a real browser (docs/web.md, "Push wake-ups"): the page's `subscribePush()` registers its
service worker and sends a valid `push_register` to a real node, which answers `ok` with its VAPID key.

Headless Debian Chromium has no push service to subscribe with (no network, no vendor push keys): its
`pushManager.subscribe` fails, so the browser part ends there; the test checks everything up to that point and that
the page then withdraws its throw-away registration. The library's whole flow runs in `web/test/push.test.js`.
"""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path
from typing import Any

import pytest

from node.app.vapid import load_or_create_vapid_key
from node.cli.webdemo import page_link
from node.protocol.identity import Identity
from node.protocol.webpush import public_point
from tests.integration.procs import NodeProcess
from tests.web.browser import chromium
from tests.web.conftest import start_federation

SETTLE_S = 30.0
SW_JS = """
const done = arguments[arguments.length - 1];
navigator.serviceWorker.getRegistration().then(
  (r) => done(JSON.stringify({script: r && r.active ? r.active.scriptURL : null, scope: r ? r.scope : null})),
  (e) => done(JSON.stringify({error: String(e)})));
"""

NOTIFICATIONS_JS = """
const done = arguments[arguments.length - 1];
navigator.serviceWorker.ready.then((r) => r.getNotifications()).then(
  (ns) => done(JSON.stringify(ns.map((n) => ({title: n.title, tag: n.tag})))),
  (e) => done(JSON.stringify([{error: String(e)}])));
"""


def _held(node: NodeProcess) -> float:
    """homing_push_subscriptions: the subscriptions the node holds as a rendezvous owner."""
    return node.gauge("homing_push_subscriptions")


def _b64u(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@pytest.mark.timeout(120)
def test_subscribe_push_sends_a_valid_push_register_and_gets_the_nodes_vapid_key(tmp_path: Path, web_base: str) -> None:
    nodes = start_federation(tmp_path / "fed", 1)
    node = nodes[0]
    try:
        me = Identity.generate()
        # push_wait: headless Chromium has no push service, and its subscribe() never settles; wait 2 s, not 15
        link = page_link(
            web_base, profile="push", me=me, node_ws=node.url, node_id=node.id, cache="0", push="1", push_wait="2"
        )
        with chromium(tmp_path, "push") as page:
            page.driver.execute_cdp_cmd(
                "Browser.grantPermissions", {"origin": web_base, "permissions": ["notifications"]}
            )
            page.open(link)
            page.wait(lambda v: v["conn"] == "connected", 20, "connected to its node")
            connected = time.monotonic()
            push: dict[str, Any] = {}
            held_max = 0  # subscriptions the node held meanwhile (it is its own rendezvous owner)
            for _ in range(int(SETTLE_S / 0.2)):
                push = page.js("return window.homing.push")
                if push.get("state") in ("registered", "failed") and push.get("vapid"):
                    break
                held_max = max(held_max, _held(node))
                time.sleep(0.2)
            settled_s = time.monotonic() - connected
            vapid = _b64u(push.get("vapid", ""))
            want = public_point(load_or_create_vapid_key(node.dir / "vapid.key"))
            assert vapid == want, push  # the node answered `ok` to the page's push_register with its own key
            sw = json.loads(page.driver.execute_async_script(SW_JS))
            assert sw["script"] == f"{web_base}/app/sw.js" and sw["scope"] == f"{web_base}/app/", sw
            # the service worker's side: a wake-up push (delivered by DevTools, as a push service would) shows
            # "incoming call" and tells the open page, which would connect now if it were between attempts
            page.driver.execute_cdp_cmd("ServiceWorker.enable", {})
            shown: list[Any] = []
            for _attempt in range(int(SETTLE_S / 2)):  # redelivered every 2 s: the first may race the worker's start
                page.driver.execute_cdp_cmd(
                    "ServiceWorker.deliverPushMessage",
                    {"origin": web_base, "registrationId": "0", "data": '{"t":"wake","v":1}'},  # a fresh profile's
                )
                for _ in range(20):
                    time.sleep(0.1)
                    shown = json.loads(page.driver.execute_async_script(NOTIFICATIONS_JS))
                    if shown and page.js("return window.homing.wakes") >= 1:
                        break
                if shown:
                    break
            assert shown == [{"title": "incoming call", "tag": "homing-wake"}], shown
            assert page.js("return window.homing.wakes") >= 1
            if push["state"] == "registered":  # a browser with a push service: the real subscription is registered
                assert push["endpoint"].startswith("https://"), push
            else:  # headless Chromium here: no push service; the throw-away registration was withdrawn
                assert push["state"] == "failed" and push["probed"], push
                assert settled_s < 10, settled_s  # push_wait=2 was heeded: the library's own wait is 15 s
                assert "Error" in push["detail"], push
                assert held_max == 1, held_max  # the throw-away subscription was registered...
                for _ in range(50):
                    if _held(node) == 0:
                        break
                    time.sleep(0.1)
                assert _held(node) == 0  # ...and withdrawn (push_unregister) when subscribe() gave up
    finally:
        for n in nodes:
            n.stop()
