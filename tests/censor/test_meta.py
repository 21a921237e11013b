"""Member meta says whether a member is listed; `goaway` referrals skip bridges (node/app/service.py referrals)."""

from __future__ import annotations

from node.protocol.wire import packb
from node.protocol.wire.seed import Meta, decode_meta, encode_meta, member_listed


def test_a_bridge_says_so_in_its_meta_and_old_meta_reads_as_listed() -> None:
    bridge = encode_meta(Meta(peer_port=7402, url="wss://b.example/s3cret", listed=False))
    listed = encode_meta(Meta(peer_port=7402, url="wss://a.example/v1/client"))
    assert not decode_meta(bridge).listed and not member_listed(bridge)
    assert decode_meta(listed).listed and member_listed(listed)
    assert b"\xa1l" not in listed  # a listed node's meta is what it was before bridges existed
    assert member_listed(packb({"p": 7402, "h": "", "u": "wss://old.example/v1/client"}))  # an older node's meta
    assert not member_listed(b"\xff garbage")  # unreadable meta: never named in goaway
