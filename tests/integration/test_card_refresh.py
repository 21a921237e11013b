"""A client refreshes the referral card of the node it is connected to (`{"t":"card"}`; cards expire)."""

from __future__ import annotations

import time
from pathlib import Path

from node.client.connection import connect_client
from node.protocol.identity import Identity
from node.protocol.nodelist import parse_card
from tests.integration.cluster import federation, url


async def test_a_client_gets_a_freshly_signed_card_of_its_node(tmp_path: Path) -> None:
    async with federation(tmp_path, 1) as nodes, connect_client(url(nodes[0]), Identity.generate()) as conn:
        uri = await conn.fresh_card()
        card = parse_card(uri, now=time.time(), allow_plain_ws=True)  # refuses a forged or expired card
        assert card.id == conn.node_id
        assert card.ws == url(nodes[0])
        assert card.exp > time.time() + 86_400, "a fresh card is good for days, not seconds"
        later = await conn.fresh_card()
        assert parse_card(later, now=time.time(), allow_plain_ws=True).id == card.id
