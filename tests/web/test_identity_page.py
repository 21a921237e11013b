"""The page's identity: made in the browser, kept across reloads in IndexedDB, its signing key not extractable."""

from __future__ import annotations

from pathlib import Path

import pytest

from node.cli.webdemo import page_link
from node.protocol.identity import Identity
from tests.integration.procs import NodeProcess
from tests.web.browser import chromium


@pytest.mark.timeout(90)
def test_identity_survives_a_reload_and_its_signing_key_cannot_be_exported(
    tmp_path: Path, web_base: str, federation3: list[NodeProcess]
) -> None:
    node = federation3[0]
    link = page_link(web_base, profile="own", me=None, node_ws=node.url, node_id=node.id, cache="0")
    with chromium(tmp_path, "own") as page:
        page.open(link)
        first = page.wait(lambda v: v["conn"] == "connected", 20, "connected with a fresh identity")["id"]
        page.driver.refresh()
        second = page.wait(lambda v: v["conn"] == "connected", 20, "connected again after a reload")["id"]
        assert first == second and len(first) == 43
        result = page.driver.execute_async_script(
            """
            const done = arguments[arguments.length - 1];
            const req = indexedDB.open("homing", 1);
            req.onsuccess = () => {
              const get = req.result.transaction("identities").objectStore("identities").get("own");
              get.onsuccess = async () => {
                const key = get.result.privateKey;
                try { await crypto.subtle.exportKey("pkcs8", key); done("exported"); }
                catch (e) { done(`${key.constructor.name} extractable=${key.extractable}: ${e.name}`); }
              };
            };
            """
        )
        assert result == "CryptoKey extractable=false: InvalidAccessError", result


@pytest.mark.timeout(90)
def test_a_link_with_a_key_cannot_replace_the_identity_on_a_page_served_from_elsewhere(
    tmp_path: Path, web_base: str, federation3: list[NodeProcess]
) -> None:
    """A hostile link `https://<the page>/#key=<seed its author knows>` must not replace the user's identity: the
    author would then read every call to it, and the user's own (non-extractable) key would be gone for good. The page
    is served under a public-looking name here (mapped to 127.0.0.1; Chromium is told to treat it as a secure origin).
    On the code before, the page stored the link's key over the user's and came up as the attacker's id."""
    node = federation3[0]
    port = web_base.rsplit(":", 1)[1]
    public_base = f"http://homing-page.test:{port}"
    flags = (
        "--host-resolver-rules=MAP homing-page.test 127.0.0.1",
        f"--unsafely-treat-insecure-origin-as-secure={public_base}",
    )
    attacker = Identity.generate()
    with chromium(tmp_path, "victim", *flags) as page:
        page.open(page_link(public_base, profile="own", me=None, node_ws=node.url, node_id=node.id, cache="0"))
        mine = page.wait(lambda v: v["conn"] == "connected", 20, "connected with a fresh identity")["id"]
        page.open("about:blank")
        page.open(page_link(public_base, profile="own", me=attacker, node_ws=node.url, node_id=node.id, cache="0"))
        after = page.wait(lambda v: v["conn"] == "connected", 20, "connected after the hostile link")["id"]
        assert after == mine and after != attacker.id_text
        assert "key=" not in page.driver.current_url  # the seed does not stay in the address bar (or history)
        page.driver.refresh()
        assert page.wait(lambda v: v["conn"] == "connected", 20, "connected after a reload")["id"] == mine
