"""Discovery in the page: with the registry black-holed, the page finds its node through DNS-over-HTTPS
(knotd + unbound, tests/fixtures/dns.py) and connects (docs/web.md, docs/discovery.md)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from bootstrap.dns_cli import load_tsig_key, publish_dns
from node.cli.webdemo import page_link
from node.protocol.identity import Identity, encode_document
from node.protocol.nodelist import NodeEntry, build_node_list
from tests.fixtures.dns import dns_stack, have_dns_tools
from tests.integration.procs import NodeProcess
from tests.web.browser import chromium
from tests.web.doh_front import black_hole, doh_cors_front, list_server, spki_sha256_b64

NAME = "_homing.example.test"


@pytest.mark.timeout(120)
def test_page_finds_a_node_through_doh_when_the_registry_is_black_holed(
    tmp_path: Path, web_base: str, federation3: list[NodeProcess]
) -> None:
    if not have_dns_tools():
        pytest.skip("knotd, unbound or openssl missing (tests/run installs knot and unbound as root)")
    registry = Identity.generate()
    now = int(time.time())
    entries = [
        NodeEntry(id=n.id, ws=n.url, swim=n.swim, peer=f"127.0.0.1:{n.ports['peer']}", seen=now) for n in federation3
    ]
    doc = build_node_list(registry, entries, issued=now, expires=now + 600)
    with dns_stack(tmp_path) as stack, black_hole() as hole:
        publish_dns(doc, name=NAME, zone="example.test", server=stack.auth, key=load_tsig_key(stack.key_file))
        cert, key = stack.dir / "server.pem", stack.dir / "server.key"
        with doh_cors_front(stack.doh_url, stack.ca_file, cert, key) as doh:
            spki = spki_sha256_b64(cert)
            with chromium(tmp_path, "doh", f"--ignore-certificate-errors-spki-list={spki}") as page:
                page.open(
                    page_link(
                        web_base,
                        profile="doh",
                        me=Identity.generate(),
                        registry=f"http://127.0.0.1:{hole}",
                        trust=registry.id_text,
                        doh=doh,
                        name=NAME,
                        cache="0",
                    )
                )
                v = page.wait(lambda v: v["conn"] == "connected", 20, "a node found through DoH")
                assert v["node"]["source"] == "doh", v
                assert v["node"]["verified"] is True, v
                assert v["node"]["id"] in {n.id_text for n in federation3}


@pytest.mark.timeout(120)
def test_page_takes_only_the_newest_list_of_a_registry_key(
    tmp_path: Path, web_base: str, federation3: list[NodeProcess]
) -> None:
    """The registry banned node B and signed a list without it; a mirror still serves the list from before the ban.
    The page reads the newer list first (it names one node, which does not answer), then the older one: it must
    refuse the older list and never connect to B. Before, the page raced the rows of every list that verified, and
    connected to B (docs/discovery.md, "Newest list per registry"; the Python client already did this)."""
    registry = Identity.generate()
    now = int(time.time())
    banned = federation3[0]
    row = NodeEntry(id=banned.id, ws=banned.url, swim=banned.swim, peer=f"127.0.0.1:{banned.ports['peer']}", seen=now)
    old = encode_document(build_node_list(registry, [row], issued=now - 60, expires=now + 600))
    with black_hole() as hole:
        silent = Identity.generate()
        entry = NodeEntry(
            id=silent.id, ws=f"ws://127.0.0.1:{hole}/v1/client", swim="127.0.0.1:9", peer="127.0.0.1:9", seen=now
        )
        new = encode_document(build_node_list(registry, [entry], issued=now, expires=now + 600))
        with list_server(new, 0.0) as newer, list_server(old, 1.5) as older, chromium(tmp_path, "newest") as page:
            page.open(
                page_link(
                    web_base, profile="newest", me=Identity.generate(), registry=[newer, older],
                    trust=registry.id_text, cache="0",
                )
            )  # fmt: skip
            v = page.wait(lambda v: v["conn"] == "offline", 30, "discovery to give up")
            assert v["node"] is None, f"the page connected through a list older than one it had read: {v}"
            assert "older" in v["connDetail"], v
