"""Issue #11 findings 6, 7, 9, 10 against the registry and its clients: each test failed on the code before the fix.

6: a flood of maximum-length registrations cannot grow the signed list past what readers and DNS accept;
7: a list older than one already seen from the same registry key (a mirror serving the pre-ban list) is ignored;
9: an endless registry answer is cut at a byte cap, not buffered whole;
10: registrations name their registry; X-Forwarded-For from trusted proxies only; cards expire and say wss://.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import httpx2
import pytest
import trio

from bootstrap.registry import NodeRecord, Policy, build_list
from bootstrap.service import ISSUED_LEAD_MAX_S
from bootstrap.store import AUDIT_KEEP_ROWS, Store
from node.app.registry import ANSWER_BYTES_MAX, LIST_ANSWER_BYTES_MAX, TsClock, _send, learn_registry_key, make_client
from node.client.discovery import DiscoveryConfig, discover
from node.protocol.admission import Admission
from node.protocol.errors import Expired, RemoteProtocolError
from node.protocol.identity import SIGNED_DOC_MAX_BYTES, Identity, decode_document, encode_document
from node.protocol.nodelist import (
    LIST_BYTES_MAX,
    NodeEntry,
    build_node_list,
    build_registration,
    make_card,
    open_node_list,
    open_registration,
    parse_card,
)
from node.protocol.rotation import build_rotation, encode_rotation
from node.protocol.txt import PAYLOAD_MAX_BYTES, encode_txt
from node.protocol.wire import packb
from tests.bootstrap.util import evolve_http, init_registry, make_config, post, registration, running_registry
from tests.discovery.servers import serve_registry

NOW = 1_760_000_000
REG = Identity.from_seed(b"R" * 32)
PENDING = {"status": "pending", "ttl": 180}


# --- 6: field caps, list size cap, pruning, manual by default ----------------------------------------------


def test_registration_fields_are_capped() -> None:
    node = Identity.generate()
    long_ws = "wss://" + "a" * 400 + ".example/v1/client"  # under the list reader's 512, over a registration's cap
    doc = build_registration(node, ws=long_ws, swim="h:1", peer="h:2", ts=NOW, ttl=60, reg=REG.id)
    with pytest.raises(RemoteProtocolError, match="'ws'"):
        open_registration(doc)
    doc = build_registration(node, ws="wss://h/v1/client", swim="h" * 200 + ":1", peer="h:2", ts=NOW, ttl=60,
                             reg=REG.id)  # fmt: skip
    with pytest.raises(RemoteProtocolError, match="'swim'"):
        open_registration(doc)


def test_a_flood_of_maximum_length_nodes_keeps_the_list_readable_and_the_oldest_listed() -> None:
    """300 approved nodes with maximum-length fields (the finding's flood): the list stays under the cap, fits one
    DNS answer, and lists the nodes known longest: a flood of new nodes cannot push established ones out."""
    records = []
    for i in range(300):
        node_id = Identity.from_seed(i.to_bytes(4, "big") * 8).id
        host = f"{i:03d}" + "x" * 118
        records.append(NodeRecord(id=node_id, ws="wss://" + "w" * 240 + f"{i:03d}/c", swim=host + ":1",
                                  peer=host + ":2", ttl=600, last_ts=NOW, seen=NOW, approved=True,
                                  first_seen=NOW - 10_000 + i))  # fmt: skip
    doc, _ = build_list(REG, records, NOW, lifetime_s=3600)
    size = len(encode_document(doc))
    assert size <= LIST_BYTES_MAX < SIGNED_DOC_MAX_BYTES and LIST_BYTES_MAX + 6 <= PAYLOAD_MAX_BYTES
    assert encode_txt(doc)  # fits the DNS TXT ceiling (raised LocalProtocolError before the fix)
    listed = {n.id for n in open_node_list(doc, {REG.id}, now=NOW).nodes}
    oldest_first = [r.id for r in sorted(records, key=lambda r: r.first_seen)]
    assert listed == set(oldest_first[: len(listed)]) and 10 < len(listed) < 300


def test_manual_approval_is_the_default() -> None:
    assert Policy().approval == "manual"


def test_expired_approved_and_stale_pending_rows_are_pruned(tmp_path: Path) -> None:
    init_registry(tmp_path)
    store = Store.open(tmp_path)
    old, pending, banned = Identity.generate(), Identity.generate(), Identity.generate()
    store.put(NodeRecord(id=old.id, ws="wss://o/c", swim="o:1", peer="o:2", ttl=60, last_ts=NOW, seen=NOW,
                         approved=True, first_seen=NOW), bump=True, expect=None)  # fmt: skip
    store.put(NodeRecord(id=pending.id, ws="wss://p/c", swim="p:1", peer="p:2", ttl=60, last_ts=NOW, seen=NOW,
                         first_seen=NOW), bump=True, expect=None)  # fmt: skip
    store.set_banned(banned.id, NOW, who="test")
    day = 86_400
    assert store.prune(NOW + 2 * day, floor_keep_s=420, pending_keep_s=day, expired_keep_s=30 * day) == 1
    assert store.get(pending.id) is None and store.get(old.id) is not None
    assert store.prune(NOW + 31 * day, floor_keep_s=420, pending_keep_s=day, expired_keep_s=30 * day) == 1
    assert store.get(old.id) is None and store.get(banned.id) is not None  # a ban is never pruned
    store.close()


# --- 7: the newest list per signer --------------------------------------------------------------------------


def test_admission_takes_the_newest_list_per_signer_only() -> None:
    banned, honest = Identity.generate().id, Identity.generate().id
    adm = Admission(self_id=b"s" * 32, open_=False, allow=())
    assert adm.offer_list(REG.id, issued=NOW, expires=NOW + 3600, ids=[banned, honest])
    adm.refresh(NOW)
    assert adm.offer_list(REG.id, issued=NOW + 60, expires=NOW + 3660, ids=[honest])  # after the ban
    adm.refresh(NOW + 60)
    assert not adm.offer_list(REG.id, issued=NOW, expires=NOW + 3600, ids=[banned, honest])  # a mirror's old list
    adm.refresh(NOW + 61)
    assert not adm.admits(banned) and adm.admits(honest)
    adm.refresh(NOW + 3661)  # the newest list expired: nothing from it is admitted any more
    assert not adm.admits(honest)


def _entry(ident: Identity, port: int) -> NodeEntry:
    return NodeEntry(id=ident.id, ws=f"ws://127.0.0.1:{port}/v1/client", swim=f"127.0.0.1:{port + 1}",
                     peer=f"127.0.0.1:{port + 2}", seen=NOW)  # fmt: skip


def test_discovery_drops_rows_of_a_superseded_list_from_a_mirror() -> None:
    """The registry serves the list after the ban, a mirror the one before it: the banned node is not a result."""
    banned, honest = Identity.generate(), Identity.generate()
    now = time.time()
    before = build_node_list(REG, [_entry(banned, 7000), _entry(honest, 7010)], issued=int(now) - 60,
                             expires=int(now) + 3000)  # fmt: skip
    after = build_node_list(REG, [_entry(honest, 7010)], issued=int(now), expires=int(now) + 3600)

    async def main() -> None:
        with trio.fail_after(15):
            async with trio.open_nursery() as nursery:
                fresh = await serve_registry(nursery, lambda: after)
                mirror = await serve_registry(nursery, lambda: before)
                for order in ((fresh, mirror), (mirror, fresh)):
                    cfg = DiscoveryConfig(trust=frozenset([REG.id]), registries=order, race=False, deadline_s=5)
                    result = await discover(cfg)
                    assert {f.id for f in result.nodes} == {honest.id}, result
                    assert [(lst.signer, lst.issued) for lst in result.lists] == [(REG.id, int(now))]
                nursery.cancel_scope.cancel()

    trio.run(main)


# --- 9: streamed, capped registry answers -------------------------------------------------------------------


async def _endless_server(nursery: trio.Nursery, sent: list[int]) -> str:
    """An HTTP server that answers any request with 200 and a body that never ends; counts bytes it got out."""

    async def handle(stream: trio.SocketStream) -> None:
        try:
            await stream.receive_some(65536)
            await stream.send_all(b"HTTP/1.1 200 OK\r\ncontent-type: application/msgpack\r\n"
                                  b"transfer-encoding: chunked\r\n\r\n")  # fmt: skip
            chunk = b"8000\r\n" + b"\x00" * 0x8000 + b"\r\n"
            while True:
                await stream.send_all(chunk)
                sent[0] += 0x8000
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return

    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    nursery.start_soon(trio.serve_listeners, handle, listeners)
    return f"http://127.0.0.1:{listeners[0].socket.getsockname()[1]}"


SOCKET_BUFFERS_SLACK_BYTES = 8 * 1024 * 1024  # what loopback socket buffers may hold beyond what the client read


def test_an_endless_answer_is_cut_at_the_cap() -> None:
    node = Identity.generate()

    async def main() -> None:
        with trio.fail_after(30):
            async with trio.open_nursery() as nursery:
                sent = [0]
                base = await _endless_server(nursery, sent)
                async with make_client(timeout_s=20) as client:
                    got = await learn_registry_key(client, base, frozenset(), now=time.time(), timeout_s=20)
                    assert not isinstance(got, bytes) and f"exceeds {LIST_ANSWER_BYTES_MAX} bytes" in got.reason
                    assert sent[0] <= LIST_ANSWER_BYTES_MAX + SOCKET_BUFFERS_SLACK_BYTES
                    sent[0] = 0

                    def doc(t: int) -> dict[str, bytes]:
                        return build_registration(node, ws="wss://h/c", swim="h:1", peer="h:2", ts=t, ttl=60,
                                                  reg=REG.id)  # fmt: skip

                    result = await _send(client, "POST", base, "/v1/nodes", doc, TsClock(time.time), 20)
                    assert result.http_status == 0 and f"exceeds {ANSWER_BYTES_MAX} bytes" in result.reason
                    assert sent[0] <= ANSWER_BYTES_MAX + SOCKET_BUFFERS_SLACK_BYTES
                nursery.cancel_scope.cancel()

    trio.run(main)


# --- 10: registrations bound to the registry, trusted proxies, cards -----------------------------------------


def test_a_registration_for_another_registry_is_refused(tmp_path: Path) -> None:
    init_registry(tmp_path)
    node = Identity.generate()

    async def main() -> None:
        with trio.fail_after(15):
            async with running_registry(make_config(tmp_path)) as base, httpx2.AsyncClient() as c:
                status, answer = await post(c, base, registration(node, reg=Identity.generate().id))
                assert status == 400 and "another registry" in answer["reason"]
                assert (await post(c, base, registration(node)))[0] == 200

    trio.run(main)


def test_ports_that_only_look_like_numbers_are_refused_with_the_field_named(tmp_path: Path) -> None:
    """"²".isdigit() is True and int("²") raises: before node/protocol/numerals.py this registration got a 500
    from the registry's own error handler. "١٢" (Arabic-Indic digits) int() reads as 12: it was listed as is."""
    registry = init_registry(tmp_path)
    node = Identity.generate()

    async def main() -> None:
        with trio.fail_after(15):
            async with running_registry(make_config(tmp_path)) as base, httpx2.AsyncClient() as c:
                for swim in ["127.0.0.1:\u00b2", "127.0.0.1:\u0661\u0662", "127.0.0.1:"]:
                    doc = build_registration(node, ws="ws://127.0.0.1:7400/v1/client", swim=swim, peer="h:2",
                                             ts=int(time.time()), ttl=180, reg=registry.id)  # fmt: skip
                    status, answer = await post(c, base, encode_document(doc))
                    assert (status, answer["reason"]) == (400, "field 'swim' must be HOST:PORT with a port 1..65535")
                assert (await post(c, base, registration(node)))[0] == 200

    trio.run(main)


def test_per_address_write_limits_behind_a_trusted_proxy(tmp_path: Path) -> None:
    init_registry(tmp_path)

    async def statuses(base: str, forwarded: str, n: int) -> list[int]:
        out = []
        async with httpx2.AsyncClient() as c:
            for _ in range(n):
                status, _ = await post(c, base, registration(Identity.generate()), **{"X-Forwarded-For": forwarded})
                out.append(status)
        return out

    async def main() -> None:
        with trio.fail_after(20):
            config = make_config(tmp_path, write_burst=2, write_rate_per_ip_per_s=0.01,
                                 trusted_proxies=("127.0.0.0/8",))  # fmt: skip
            async with running_registry(config) as base:
                assert await statuses(base, "198.51.100.7", 3) == [200, 200, 429]
                # another client behind the same proxy has its own budget
                assert await statuses(base, "203.0.113.9", 2) == [200, 200]
                # a client cannot pick its budget: only the hop the trusted proxy added counts
                assert await statuses(base, "192.0.2.1, 198.51.100.7", 1) == [429]
            config = make_config(tmp_path, write_burst=2, write_rate_per_ip_per_s=0.01)
            async with running_registry(config) as base:
                # without trusted proxies the header is not believed: one budget for the socket's address
                assert await statuses(base, "198.51.100.8", 2) == [200, 200]
                assert await statuses(base, "203.0.113.10", 1) == [429]

    trio.run(main)


def test_cards_expire_and_must_say_wss_for_public_hosts() -> None:
    node = Identity.generate()
    card = make_card(node, ws="wss://n.example.org/v1/client", ts=NOW, exp=NOW + 60)
    assert parse_card(card, now=NOW + 60).exp == NOW + 60
    with pytest.raises(Expired):
        parse_card(card, now=NOW + 61)
    with pytest.raises(ValueError, match="wss"):
        make_card(node, ws="ws://n.example.org/v1/client", ts=NOW)
    plain = make_card(node, ws="ws://n.example.org/v1/client", ts=NOW, allow_plain_ws=True)
    with pytest.raises(RemoteProtocolError, match="wss"):
        parse_card(plain, now=NOW)
    assert parse_card(plain, now=NOW, allow_plain_ws=True).ws.startswith("ws://")
    for private in ("ws://127.0.0.1:7400/v1/client", "ws://10.1.2.3:7400/v1/client", "ws://[fd00::1]:1/c"):
        assert parse_card(make_card(node, ws=private, ts=NOW), now=NOW).ws == private


def test_homing_card_expires_option_and_plain_ws_refusal(tmp_path: Path) -> None:
    from node.client.files import load_or_create_key
    from tests.helpers import run_homing

    load_or_create_key(tmp_path / "node.key")
    out = run_homing("card", "--data-dir", str(tmp_path), "--url", "wss://n.example.org/v1/client", "--expires", "60")
    assert out.returncode == 0, out.stderr
    card = parse_card(out.stdout.strip(), now=time.time())
    assert card.exp - card.ts == 60
    out = run_homing("card", "--data-dir", str(tmp_path), "--url", "ws://n.example.org/v1/client")
    lines = out.stderr.strip().splitlines()
    assert out.returncode == 2 and len(lines) == 1 and "--allow-plain-ws" in lines[0]


def test_addresses_with_spaces_or_control_characters_are_refused(tmp_path: Path) -> None:
    """A stranger's `ws` went into the registry's log as is (`event=node_pending ... ws=%s`), and the log parses
    "k=v" messages into fields: a `ws` ending in " event=admin_action action=ban who=root node=X" made the line an
    `event=admin_action` of root's. Printed raw by `homing bootstrap nodes list`, an ESC in `ws` drove the admin's
    terminal. `ws`, `swim` and `peer` must now be printable ASCII without spaces (400 naming the field, nothing
    stored); on the code before, every one of these was stored as a pending node (200)."""
    registry = init_registry(tmp_path)
    node = Identity.generate()
    forged = " event=admin_action action=ban who=root node=X"
    bad = [
        ("ws", {"ws": "wss://h.example/c" + forged}),
        ("ws", {"ws": "wss://h.example/c\x1b[2J\x1b[H"}),
        ("ws", {"ws": "wss://h.example/c\u202e"}),  # right-to-left override: reorders what the terminal shows
        ("swim", {"swim": "h\x1b[1m.example:1"}),
        ("peer", {"peer": "h\u2028.example:2"}),
    ]

    async def main() -> None:
        with trio.fail_after(15):
            async with running_registry(make_config(tmp_path, policy=Policy())) as base, httpx2.AsyncClient() as c:
                for field, change in bad:
                    fields = {"ws": "wss://h.example/c", "swim": "h.example:1", "peer": "h.example:2", **change}
                    doc = build_registration(node, ts=int(time.time()), ttl=180, reg=registry.id, **fields)
                    status, answer = await post(c, base, encode_document(doc))
                    assert (status, field in answer.get("reason", "")) == (400, True), (field, status, answer)
                store = Store.open(tmp_path)
                assert store.get(node.id) is None
                store.close()
                assert (await post(c, base, registration(node)))[0] == 200

    trio.run(main)


def test_a_flood_of_pending_strangers_does_not_lock_new_nodes_out(tmp_path: Path) -> None:
    """With `--approval manual` a stranger's ids are only pending, but each took one of the `nodes_max` rows for a
    day: one address at the write rate filled 10,000 in about an hour, and every new node then got 503 (also a
    node key rotation, whose new key is a new id). Now a new id takes the place of the pending row seen longest
    ago; approved, banned and withheld rows are never given up. On the code before the honest node got 503."""
    init_registry(tmp_path)
    admin = Store.open(tmp_path)
    approved, banned = Identity.generate(), Identity.generate()
    admin.set_approved(approved.id, NOW, who="root")
    admin.set_banned(banned.id, NOW, who="root")
    strangers = [Identity.generate() for _ in range(3)]
    honest, late = Identity.generate(), Identity.generate()
    clock = [float(NOW)]

    async def main() -> None:
        config = make_config(tmp_path, policy=Policy(), nodes_max=5, write_burst=100)
        with trio.fail_after(15):
            async with running_registry(config, wall_clock=lambda: clock[0]) as base, httpx2.AsyncClient() as c:
                for node in strangers:  # seen at NOW+1, NOW+2, NOW+3: the table is full (5 rows)
                    clock[0] += 1
                    assert await post(c, base, registration(node, ts=int(clock[0]))) == (200, PENDING)
                clock[0] += 1
                assert await post(c, base, registration(strangers[0], ts=int(clock[0]))) == (200, PENDING)
                clock[0] += 1
                assert await post(c, base, registration(honest, ts=int(clock[0]))) == (200, PENDING)
                kept = {r.id for r in admin.all_known()}
                assert kept == {approved.id, banned.id, strangers[0].id, strangers[2].id, honest.id}
                admin.set_approved(strangers[0].id, NOW, who="root")
                admin.set_banned(strangers[2].id, NOW, who="root")
                admin.set_withheld(honest.id, True, NOW, who="root")
                clock[0] += 1  # nothing left to give up: only now is the registry full
                status, answer = await post(c, base, registration(late, ts=int(clock[0])))
                assert status == 503 and "full" in answer["reason"]

    trio.run(main)
    admin.close()


def test_strangers_audit_rows_do_not_push_out_what_admins_did(tmp_path: Path) -> None:
    """A new pending id writes an `api` audit row; with pending rows replaced when full (above), one address
    writes two a second. The trail used to be trimmed to its newest rows whoever wrote them, so a day of that
    pruned every admin action from it. Now only the service's own rows are trimmed."""
    init_registry(tmp_path)
    store = Store.open(tmp_path)
    store.set_banned(b"b" * 32, NOW, who="root")
    n = AUDIT_KEEP_ROWS + 50
    store.db.execute("BEGIN")
    store.db.executemany(
        "INSERT INTO audit (at, who, action, node) VALUES (?, 'api', 'pending', ?)",
        ((NOW + i, i.to_bytes(32, "big")) for i in range(n)),
    )
    store.db.execute("COMMIT")
    store.prune(NOW + n, floor_keep_s=420, pending_keep_s=86_400, expired_keep_s=86_400)
    rows = store.audit(limit=n + 10)
    assert [(e.who, e.action) for e in rows if e.who == "root"] == [("root", "ban")]
    assert [e.at for e in rows if e.who == "api"] == [NOW + i for i in range(50, n)]
    store.close()


async def _lying_registry(nursery: trio.Nursery, status: str, reason: str) -> str:
    """A registry that serves a valid signed list (so the node learns its key) and answers the first registration
    200 with `status`, every later one 400 with `reason`."""
    list_doc = encode_document(build_node_list(REG, [], issued=int(time.time()), expires=int(time.time()) + 3600))
    posts = [0]

    async def handle(stream: trio.SocketStream) -> None:
        data = b""
        while b"\r\n\r\n" not in data and len(data) < 65536:
            data += await stream.receive_some(65536) or b"\r\n\r\n"
        head, _, body = data.partition(b"\r\n\r\n")
        length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                       if line.lower().startswith(b"content-length:")), 0)  # fmt: skip
        while len(body) < length:
            body += await stream.receive_some(65536) or b"x" * length
        if head.startswith(b"GET"):
            code, answer = b"200 OK", list_doc
        else:
            posts[0] += 1
            code, answer = (b"200 OK", packb({"status": status, "ttl": 180})) if posts[0] == 1 else (
                b"400 Bad Request", packb({"error": "bad_request", "reason": reason}))  # fmt: skip
        await stream.send_all(b"HTTP/1.1 " + code + b"\r\ncontent-type: application/msgpack\r\ncontent-length: "
                              + str(len(answer)).encode() + b"\r\nconnection: close\r\n\r\n" + answer)  # fmt: skip
        await stream.aclose()

    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    nursery.start_soon(trio.serve_listeners, handle, listeners)
    return f"http://127.0.0.1:{listeners[0].socket.getsockname()[1]}"


def test_a_registrys_answer_cannot_forge_lines_in_the_nodes_log(caplog: pytest.LogCaptureFixture) -> None:
    """The node logged a registry's `status` with %s and its `reason` with %r into "event=..." messages, which the
    log reads back as k=v fields: a hostile registry (or anyone between it and a node on http://) answering
    `approved event=node_key_rotated ...` or a reason holding " event=admin_action who=root" rewrote the node's
    log line into that event. On the code before both lines came out as the forged events."""
    from node.app.log import StructuredFormatter
    from node.app.registry import register_forever

    caplog.set_level(logging.INFO, logger="homing.registry_client")
    node = Identity.generate()
    results: list[object] = []

    async def main() -> None:
        with trio.fail_after(15):
            async with trio.open_nursery() as nursery:
                base = await _lying_registry(nursery, "approved event=node_key_rotated old=X",
                                             "no event=admin_action action=ban who=root")  # fmt: skip
                await nursery.start(
                    lambda task_status: register_forever(
                        node,
                        [base],
                        ws="wss://h/c",
                        swim="h:1",
                        peer="h:2",
                        ttl_s=3,
                        heartbeat_s=0.2,
                        on_result=results.append,
                        task_status=task_status,
                    )
                )
                while len(results) < 2:
                    await trio.sleep(0.05)
                nursery.cancel_scope.cancel()

    trio.run(main)
    formatter = StructuredFormatter()
    lines = [formatter.format(r) for r in caplog.records if r.name == "homing.registry_client"]
    events = [line.split(" event=")[1].split(" ")[0] for line in lines]
    assert "registered" in events and "registration_refused" in events, lines
    assert not {"admin_action", "node_key_rotated"} & set(events), lines


def test_an_approved_node_cannot_push_the_lists_issued_into_the_future(tmp_path: Path) -> None:
    """Every list the registry signs is issued after the one before, even within one second (readers keep the newest
    per registry), so `issued` ran one second ahead of the clock per extra re-signing in a second. An approved
    node that changes its `ws` in every registration (each change re-signs the list on the next GET) pushed it
    ahead by a second a second from one address, faster from more; past 300 s every reader refused the list as
    issued in the future, for as long as the registry ran. The lead is now capped: when it is used up the list is
    re-signed at most once a second. Here the clock stands still: on the code before, the lead grew by one second
    a registration (the check failed at 32 s; past 300 s `open_node_list` refuses the list)."""
    registry = init_registry(tmp_path)
    admin = Store.open(tmp_path)
    node = Identity.generate()
    admin.set_approved(node.id, NOW, who="root")
    clock = [float(int(time.time()))]
    t0 = int(clock[0])

    async def main() -> None:
        config = evolve_http(make_config(tmp_path, policy=Policy(), write_burst=1000),
                             rate_per_ip_per_s=1000.0, rate_per_ip_burst=1000)  # fmt: skip
        with trio.fail_after(60):
            async with running_registry(config, wall_clock=lambda: clock[0]) as base, httpx2.AsyncClient() as c:

                async def read() -> tuple[int, set[str]]:
                    resp = await c.get(f"{base}/v1/nodes")
                    opened = open_node_list(decode_document(resp.content), {registry.id}, now=clock[0])
                    return opened.issued, {n.ws for n in opened.nodes}

                for i in range(320):
                    body = registration(node, ts=t0 - 290 + i, port=7400 + 10 * (i % 2))
                    assert (await post(c, base, body))[0] == 200
                    issued, _ = await read()
                    assert issued <= t0 + ISSUED_LEAD_MAX_S + 1
                clock[0] += 1  # a second later the last change is listed
                assert (await read())[1] == {"ws://127.0.0.1:7410/v1/client"}

    trio.run(main)
    admin.close()


def test_a_node_cannot_outrun_a_ban_by_rotating_its_key_again_and_again(tmp_path: Path) -> None:
    """A rotation statement moves a node's approval to its new key (docs/bootstrap.md "Rotating a node key"), and the
    new key could pass it on at once. A hostile approved node rotating on every registration (two a second from one
    address) was never where a ban landed: the admin bans the key `nodes list` shows, which has already handed its
    approval on, and the chain goes on. Now an approval that moved cannot move again for ROTATION_HOLD_S, so the
    key `nodes list` shows is the one the node has to keep using. On the code before K3 was approved at once (the
    first check failed)."""
    registry = init_registry(tmp_path)
    admin = Store.open(tmp_path)
    k1, k2, k3 = Identity.generate(), Identity.generate(), Identity.generate()
    admin.set_approved(k1.id, NOW, who="root")

    def rotated(old: Identity, new: Identity, ts: int) -> bytes:
        rot = encode_rotation(build_rotation(old, new, issued=ts))
        doc = build_registration(new, ws="ws://127.0.0.1:7400/v1/client", swim="127.0.0.1:7401",
                                 peer="127.0.0.1:7402", ts=ts, ttl=180, reg=registry.id, rot=rot)  # fmt: skip
        return encode_document(doc)

    async def main() -> None:
        with trio.fail_after(15):
            async with running_registry(make_config(tmp_path, policy=Policy())) as base, httpx2.AsyncClient() as c:
                now = int(time.time())
                assert (await post(c, base, rotated(k1, k2, now)))[1]["status"] == "approved"
                status, answer = await post(c, base, rotated(k2, k3, now + 1))  # at once: held
                assert (status, answer.get("status")) == (200, "pending")
                admin.set_banned(k2.id, time.time(), who="root")  # the key the admin saw listed
                assert (await post(c, base, rotated(k2, k3, now + 2)))[0] == 403
                resp = await c.get(f"{base}/v1/nodes")
                listed = open_node_list(decode_document(resp.content), {registry.id}, now=time.time()).nodes
                assert {n.id for n in listed} == set()

    trio.run(main)
    admin.close()


def test_plain_ws_cards_are_allowed_only_to_the_private_ranges_the_docs_list() -> None:
    """docs/discovery.md allows `ws://` in a card only to 127/8, ::1, 10/8, 172.16/12, 192.168/16, fc00::/7,
    link-local and localhost, and the browser reads it so; the Python reader used `ipaddress.is_private`, which also
    counts Teredo (2001::/32, public tunnelled hosts), all of 2001::/23, 198.18/15, 240/4 and the documentation nets:
    a card saying plain ws:// to such a host was accepted by `homing discover` and refused by the page."""
    node = Identity.generate()
    for public in ("ws://[2001:0:4136:e378:8000:63bf:3fff:fdd2]/v1/client", "ws://[2001:4:112::1]/v1/client",
                   "ws://198.18.0.1/v1/client", "ws://240.0.0.1/v1/client", "ws://192.0.2.1/v1/client",
                   "ws://[2001:db8::1]/v1/client", "ws://0.0.0.0/v1/client"):  # fmt: skip
        with pytest.raises(RemoteProtocolError, match="wss"):
            parse_card(make_card(node, ws=public, ts=NOW, allow_plain_ws=True), now=NOW)
    for private in ("ws://[::ffff:10.0.0.1]/v1/client", "ws://169.254.0.1/v1/client", "ws://[fe80::1]/v1/client",
                    "ws://localhost./v1/client", "ws://172.31.0.1/v1/client"):  # fmt: skip
        assert parse_card(make_card(node, ws=private, ts=NOW), now=NOW).ws == private
