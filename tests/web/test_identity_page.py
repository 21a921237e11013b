"""The page's identity: made in the browser, kept across reloads in IndexedDB, its signing key not extractable."""

from __future__ import annotations

from pathlib import Path

import pytest

from node.cli.webdemo import page_link
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
