"""Racing against the real client server (node/net/clients.py `serve_clients`) with the client library's handshake."""

from __future__ import annotations

import time

import trio

from node.client.discovery import DiscoveryConfig, Source, discover, parse_entry
from node.net.clients import serve_clients
from node.protocol.identity import Identity
from node.protocol.nodelist import make_card
from node.protocol.settings import ClientsSection


class _NoRelay:
    def client_online(self, session: object) -> None:
        pass

    def client_offline(self, session: object) -> None:
        pass

    def client_envelope(self, session: object, env: object) -> None:
        pass


def test_discovery_races_real_client_servers_and_pins_ids() -> None:
    async def main() -> None:
        with trio.fail_after(20):
            async with trio.open_nursery() as nursery:
                a, b = Identity.generate(), Identity.generate()
                urls = []
                for ident in (a, b):
                    port = await nursery.start(
                        lambda task_status, i=ident: serve_clients(
                            identity=i,
                            host="127.0.0.1",
                            port=0,
                            config=ClientsSection(),
                            relay=_NoRelay(),
                            task_status=task_status,
                        )
                    )
                    urls.append(f"ws://127.0.0.1:{port}/v1/client")
                extra = (
                    parse_entry(make_card(a, ws=urls[0], ts=int(time.time()))),
                    parse_entry(f"{urls[1]}#{b.id_text}"),
                    parse_entry(f"{urls[1]}#{a.id_text}"),  # B cannot prove A's id: dropped
                )
                result = await discover(DiscoveryConfig(extra=extra, deadline_s=8.0, settle_s=2.0))
                nursery.cancel_scope.cancel()
        rows = {(f.source, f.verified) for f in result.proven}
        assert rows == {(Source.REFERRAL, True), (Source.MANUAL, True)}
        assert len(result.nodes) == 2
        assert len(result.errors) == 1 and "skipped" in result.errors[0]

    trio.run(main)
