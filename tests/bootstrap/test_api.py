"""The registry HTTP API (docs/bootstrap.md) over real loopback sockets, with the real store in a temp dir."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx2
import msgpack
import trio

from bootstrap.registry import Policy
from bootstrap.store import Store
from node.protocol.identity import (
    Identity,
    decode_document,
    document_from_json,
    encode_document,
    id_text,
    sign_document,
)
from node.protocol.nodelist import build_registration, open_node_list
from tests.bootstrap.util import (
    LAST_REGISTRY_KEY,
    MSGPACK,
    init_registry,
    leave,
    make_config,
    post,
    registration,
    running_registry,
)

A = Identity.from_seed(b"a" * 32)
B = Identity.from_seed(b"b" * 32)


def run(fn, *args):  # type: ignore[no-untyped-def]
    async def main() -> None:
        with trio.fail_after(20):
            await fn(*args)

    trio.run(main)


async def listed(client: httpx2.AsyncClient, base: str, registry: Identity) -> set[bytes]:
    resp = await client.get(f"{base}/v1/nodes")
    assert resp.status_code == 200 and resp.headers["content-type"] == MSGPACK
    nodes = open_node_list(decode_document(resp.content), {registry.id}, now=time.time())
    return {n.id for n in nodes.nodes}


def test_register_list_json_etag_and_leave(tmp_path: Path) -> None:
    registry = init_registry(tmp_path)

    async def body() -> None:
        async with running_registry(make_config(tmp_path)) as base, httpx2.AsyncClient() as c:
            assert (await c.get(f"{base}/healthz")).status_code == 200
            assert await listed(c, base, registry) == set()
            status, answer = await post(c, base, registration(A))
            assert (status, answer["status"]) == (200, "approved")
            assert await listed(c, base, registry) == {A.id}

            first = await c.get(f"{base}/v1/nodes")
            etag = first.headers["etag"]
            again = await c.get(f"{base}/v1/nodes", headers={"If-None-Match": etag})
            assert again.status_code == 304 and again.content == b"" and again.headers["etag"] == etag
            as_json = await c.get(f"{base}/v1/nodes", headers={"Accept": "application/json"})
            assert as_json.headers["content-type"] == "application/json" and as_json.headers["etag"] != etag
            doc = document_from_json(json.loads(as_json.content))
            assert {n.id for n in open_node_list(doc, {registry.id}, now=time.time()).nodes} == {A.id}

            resp = await c.request(
                "DELETE", f"{base}/v1/nodes/{id_text(A.id)}", content=leave(A, ts=int(time.time()) + 1)
            )
            assert resp.status_code == 200 and msgpack.unpackb(resp.content)["status"] == "removed"
            assert await listed(c, base, registry) == set()
            gone = await c.get(f"{base}/v1/nodes", headers={"If-None-Match": etag})
            assert gone.status_code == 200

    run(body)


def test_json_registration_gets_a_json_answer(tmp_path: Path) -> None:
    init_registry(tmp_path)
    from node.protocol.identity import document_to_json

    doc = build_registration(
        A,
        ws="wss://a.example/v1/client",
        swim="a.example:7401",
        peer="a.example:7402",
        ts=int(time.time()),
        ttl=120,
        reg=LAST_REGISTRY_KEY[0],
    )

    async def body() -> None:
        async with running_registry(make_config(tmp_path)) as base, httpx2.AsyncClient() as c:
            resp = await c.post(f"{base}/v1/nodes", json=document_to_json(doc))
            assert resp.status_code == 200 and resp.json()["status"] == "approved"

    run(body)


def test_forged_replayed_stale_future_and_malformed(tmp_path: Path) -> None:
    init_registry(tmp_path)
    now = int(time.time())
    forged = decode_document(registration(A, ts=now))
    forged["sig"] = B.sign(b"homing/v1/node-register" + forged["body"])  # signed by B, claims A
    wrong_purpose = sign_document(A, "node-card", {"id": A.id, "ws": "ws://x/v1/client", "ts": now})
    someone_else = registration(A, ts=now)  # body id A
    doc_b = decode_document(someone_else)
    doc_b["key"] = B.id  # key swapped: signature no longer verifies

    async def body() -> None:
        async with running_registry(make_config(tmp_path)) as base, httpx2.AsyncClient() as c:
            cases = [
                (encode_document(forged), 400),
                (encode_document(wrong_purpose), 400),
                (encode_document(doc_b), 400),
                (b"\xc1not msgpack", 400),
                (msgpack.packb([1, 2, 3]), 400),
                (b"", 400),
                (registration(A, ts=now - 3600), 409),
                (registration(A, ts=now + 3600), 400),
            ]
            for raw, want in cases:
                status, answer = await post(c, base, raw)
                assert status == want, (raw[:40], answer)
                assert answer["error"] and answer["reason"]
            ok = registration(A, ts=now)
            assert (await post(c, base, ok))[0] == 200
            status, answer = await post(c, base, ok)
            assert status == 409 and "replayed" in answer["reason"]
            json_bad = await c.post(f"{base}/v1/nodes", content=b"{", headers={"Content-Type": "application/json"})
            assert json_bad.status_code == 400 and json_bad.json()["error"] == "bad_request"
            big = await c.post(f"{base}/v1/nodes", content=b"x" * 100_000, headers={"Content-Type": MSGPACK})
            assert big.status_code == 413
            bad_leave = await c.request("DELETE", f"{base}/v1/nodes/{id_text(B.id)}", content=leave(A, ts=now + 1))
            assert bad_leave.status_code == 400
            assert (await c.request("DELETE", f"{base}/v1/nodes/nope", content=leave(A, ts=now + 1))).status_code == 400

    run(body)


def test_ban_takes_effect_on_the_next_request(tmp_path: Path) -> None:
    registry = init_registry(tmp_path)

    async def body() -> None:
        async with running_registry(make_config(tmp_path)) as base, httpx2.AsyncClient() as c:
            assert (await post(c, base, registration(A)))[0] == 200
            assert (await post(c, base, registration(B, port=8400)))[0] == 200
            assert await listed(c, base, registry) == {A.id, B.id}
            admin = Store.open(tmp_path)  # what `homing bootstrap nodes ban` does, from "another process"
            admin.set_banned(A.id, time.time(), who="test")
            assert await listed(c, base, registry) == {B.id}
            status, answer = await post(c, base, registration(A, ts=int(time.time()) + 1))
            assert status == 403 and answer["error"] == "banned"
            admin.set_approved(A.id, time.time(), who="test")  # approve lifts the ban
            assert (await post(c, base, registration(A, ts=int(time.time()) + 2)))[0] == 200
            assert await listed(c, base, registry) == {A.id, B.id}
            admin.remove(B.id, time.time(), who="test")
            assert await listed(c, base, registry) == {A.id}
            admin.close()

    run(body)


def test_every_list_is_issued_after_the_one_before_even_within_a_second(tmp_path: Path) -> None:
    """Readers keep only the newest list per registry (by `issued`): a ban re-signed in the same second as the list
    before it must still win, or a node that knocked just then keeps the pre-ban list (tests/integration/
    test_admission_race.py was flaky for this reason)."""
    registry = init_registry(tmp_path)

    async def issued(c: httpx2.AsyncClient, base: str) -> tuple[int, set[bytes]]:
        resp = await c.get(f"{base}/v1/nodes")
        opened = open_node_list(decode_document(resp.content), {registry.id}, now=time.time())
        return opened.issued, {n.id for n in opened.nodes}

    async def body() -> None:
        async with running_registry(make_config(tmp_path)) as base, httpx2.AsyncClient() as c:
            assert (await post(c, base, registration(A)))[0] == 200
            admin = Store.open(tmp_path)
            seen = [await issued(c, base)]
            for _ in range(3):  # three changes, each read at once: well within one second
                admin.set_banned(A.id, time.time(), who="test")
                seen.append(await issued(c, base))
                admin.set_approved(A.id, time.time(), who="test")
                seen.append(await issued(c, base))
            admin.close()
            times = [t for t, _ in seen]
            assert times == sorted(set(times)), times
            assert [A.id in ids for _, ids in seen] == [True, False, True, False, True, False, True]

    run(body)


def test_manual_approval(tmp_path: Path) -> None:
    registry = init_registry(tmp_path)

    async def body() -> None:
        config = make_config(tmp_path, policy=Policy(approval="manual"))
        async with running_registry(config) as base, httpx2.AsyncClient() as c:
            status, answer = await post(c, base, registration(A))
            assert (status, answer["status"]) == (200, "pending")
            assert await listed(c, base, registry) == set()
            admin = Store.open(tmp_path)
            admin.set_approved(A.id, time.time(), who="test")
            admin.close()
            assert await listed(c, base, registry) == {A.id}
            status, answer = await post(c, base, registration(A, ts=int(time.time()) + 1))
            assert answer["status"] == "approved"

    run(body)


def test_write_rate_limit_per_ip(tmp_path: Path) -> None:
    init_registry(tmp_path)

    async def body() -> None:
        config = make_config(tmp_path, write_rate_per_ip_per_s=0.01, write_burst=3)
        async with running_registry(config) as base, httpx2.AsyncClient() as c:
            statuses = []
            for i in range(5):
                status, _ = await post(c, base, registration(A, ts=int(time.time()) + i))
                statuses.append(status)
            assert statuses == [200, 200, 200, 429, 429]
            resp = await c.post(f"{base}/v1/nodes", content=registration(A), headers={"Content-Type": MSGPACK})
            assert int(resp.headers["retry-after"]) >= 1
            assert (await c.get(f"{base}/v1/nodes")).status_code == 200  # reads have their own budget

    run(body)


def test_lease_expiry_unlists(tmp_path: Path) -> None:
    registry = init_registry(tmp_path)
    clock = [time.time()]

    async def body() -> None:
        config = make_config(tmp_path, policy=Policy(approval="auto", ttl_min_s=30))
        async with running_registry(config, wall_clock=lambda: clock[0]) as base, httpx2.AsyncClient() as c:
            assert (await post(c, base, registration(A, ts=int(clock[0]), ttl=30)))[0] == 200
            resp = await c.get(f"{base}/v1/nodes")
            nodes = open_node_list(decode_document(resp.content), {registry.id}, now=clock[0])
            assert [n.id for n in nodes.nodes] == [A.id] and nodes.expires - nodes.issued == 3600
            clock[0] += 31
            resp = await c.get(f"{base}/v1/nodes")
            assert open_node_list(decode_document(resp.content), {registry.id}, now=clock[0]).nodes == ()

    run(body)
