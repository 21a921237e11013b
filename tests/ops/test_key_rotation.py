"""Issue #19.9: key rotation end to end, with a real registry and real node processes on 127.0.0.1.

- registry key: `homing bootstrap rotate-key` switches the running registry to a new key; nodes configured with the
  old key keep registering, a node started after the rotation with only the old key registers and is admitted by
  peers configured only with the old key; `homing discover --trust OLD` verifies the new list and keeps the
  statement in its cache; a forged statement (countersigned by the wrong key) is not followed.
- node key: `homing node rotate-key` gives the node a new id and the registry moves its approval (audit trail).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx2
import pytest

from node.client.discovery.sources import followed
from node.protocol.errors import BadSignature
from node.protocol.identity import Identity, decode_document, id_text, parse_id
from node.protocol.nodelist import open_node_list
from node.protocol.rotation import build_rotation, encode_rotation, unpack_chain
from tests.bootstrap.test_cli import admin, init, running
from tests.helpers import run_homing
from tests.integration.procs import wait_for
from tests.ops.test_registration_state import Node, approve


def _listed(base: str, trust: set[bytes]) -> set[str]:
    doc = decode_document(httpx2.get(f"{base}/v1/nodes", timeout=10).content)
    _, served = unpack_chain(doc.get("rot"), now=time.time())
    keys = followed(frozenset(trust), served, (), time.time())
    return {id_text(n.id) for n in open_node_list(doc, keys, now=time.time()).nodes}


def _alive(node: Node, other: str) -> bool:
    return any(m["id"] == other and m["state"] == "alive" for m in node.get("/v1/members")["members"])


def test_registry_and_node_key_rotation_end_to_end(tmp_path: Path) -> None:
    reg_dir = tmp_path / "registry"
    old = init(reg_dir)
    old_text = id_text(old)
    with running(reg_dir, "--write-rate", "50") as (_proc, base):  # four nodes heartbeat every second
        flags = ("--bootstrap", base, "--trust", old_text)
        a, b = Node(tmp_path, "a", *flags), Node(tmp_path, "b", *flags)
        nodes = [a, b]
        try:
            for n in (a, b):
                approve(reg_dir, n.id)
            wait_for(lambda: _alive(a, b.id) and _alive(b, a.id), 30, "a and b federated")

            out = run_homing("bootstrap", "rotate-key", "--data-dir", str(reg_dir))
            assert out.returncode == 0, out.stderr
            new = parse_id(out.stdout.split()[-1])
            assert new != old
            rotated_at = time.time()
            doc = decode_document(httpx2.get(f"{base}/v1/nodes", timeout=10).content)
            assert doc["key"] == new, "the running registry signs with the new key at once"
            with pytest.raises(BadSignature):
                open_node_list(doc, {old}, now=time.time())  # old key alone does not verify the new list ...
            assert _listed(base, {old}) == {a.id, b.id}  # ... but following the statement does
            rot = httpx2.get(f"{base}/v1/rotation", headers={"Accept": "application/json"}, timeout=10).json()
            assert rot["key"] == id_text(new) and rot["rot"]

            # nodes configured with OLD keep registering (the heartbeat after the rotation is accepted)
            wait_for(lambda: (a.registration()["last_success"] or 0) > rotated_at + 1, 20, "a heartbeat after")
            assert a.registration()["state"] == "approved"

            # a node that only knows OLD, started after the rotation, registers and federates with a and b
            c = Node(tmp_path, "c", *flags)
            nodes.append(c)
            wait_for(lambda: c.registration()["state"] == "pending", 20, "c registered with the new key")
            approve(reg_dir, c.id)
            wait_for(lambda: _alive(a, c.id) and _alive(c, a.id) and _alive(c, b.id), 40, "c admitted both ways")

            # a client that trusts only OLD verifies the new list and keeps the statement
            cache = tmp_path / "cache.json"
            out = run_homing("discover", "--registry", base, "--trust", old_text, "--cache", str(cache), "--json")
            assert out.returncode == 0, out.stderr
            found = json.loads(out.stdout)
            assert {f["id"] for f in found["nodes"] if f["verified"]} >= {a.id, b.id, c.id}, found
            assert json.loads(cache.read_text())["rotations"], "the statement is kept in the cache"

            # node key rotation: stop b, rotate, start again: the registry moves the approval
            b.proc.terminate()
            b.proc.wait(15)
            b.log.close()
            out = run_homing("node", "rotate-key", "--data-dir", str(b.dir))
            assert out.returncode == 0, out.stderr
            b_new = out.stdout.split()[-1]
            assert b_new != b.id
            (b.dir / "ports.json").unlink()
            b2 = Node(tmp_path, "b", *flags)
            nodes.append(b2)
            assert b2.id == b_new
            wait_for(lambda: b2.registration()["state"] == "approved", 20, "the approval moved to the new key")
            listing = {r["id"]: r["state"] for r in json.loads(admin(reg_dir, "list", "--json").stdout)["nodes"]}
            assert listing[b_new] == "listed" and listing.get(b.id) != "listed", listing
            audit = admin(reg_dir, "audit").stdout.splitlines()
            assert any("key_rotated" in line and b_new in line for line in audit), audit
            assert any("key_retired" in line and b.id in line for line in audit), audit
            assert any("rotate_key" in line and id_text(new) in line for line in audit), audit
            wait_for(lambda: _alive(a, b_new), 30, "the rotated node is admitted by its peers")
        finally:
            for n in nodes:
                n.stop()


def test_a_statement_countersigned_by_another_key_is_not_followed() -> None:
    old, new, thief = Identity.generate(), Identity.generate(), Identity.generate()
    forged = build_rotation(old, new, issued=1000)
    forged["sig2"] = thief.sign(b"x" * 10)
    from node.protocol.rotation import pack_chain

    rotations, _ = unpack_chain(pack_chain([encode_rotation(forged)]), now=1000)
    assert rotations == []
    honest = encode_rotation(build_rotation(old, new, issued=1000))
    stolen = encode_rotation(build_rotation(old, thief, issued=2000))
    # a reader that pinned the honest statement ignores a later one from the same old key
    assert followed(frozenset([old.id]), [stolen], (honest,), 2001) == {old.id, new.id}


def test_a_compromised_statement_drops_the_old_key_at_once_and_grace_ends() -> None:
    old, new = Identity.generate(), Identity.generate()
    from node.protocol.rotation import GRACE_S, open_rotation

    plain = open_rotation(build_rotation(old, new, issued=1000), now=1000)
    stolen = open_rotation(build_rotation(old, new, issued=1000, compromised=True), now=1000)
    from node.protocol.rotation import follow

    assert follow(frozenset([old.id]), [plain], 1001) == {old.id, new.id}
    assert follow(frozenset([old.id]), [plain], 1001 + GRACE_S) == {new.id}
    assert follow(frozenset([old.id]), [stolen], 1001) == {new.id}
    assert follow(frozenset([new.id]), [plain], 1001) == {new.id}, "a statement never adds the OLD key"


def _reg_doc(node: Identity, rot: bytes) -> dict[str, bytes]:
    from node.protocol.nodelist import build_registration

    return build_registration(node, ws="ws://127.0.0.1:1/v1/client", swim="127.0.0.1:2", peer="127.0.0.1:3", ts=1,
                              ttl=60, reg=b"r" * 32, rot=rot)  # fmt: skip


def test_an_approval_cannot_be_taken_with_a_statement_for_someone_else() -> None:
    """The registry moves an approval only for a statement signed by the approved key that names the registrant."""
    from bootstrap.registry import NodeRecord, Policy, decide_registration
    from node.protocol.errors import RemoteProtocolError
    from node.protocol.nodelist import open_registration

    victim, heir, thief = Identity.generate(), Identity.generate(), Identity.generate()
    honest = encode_rotation(build_rotation(victim, heir, issued=1))
    # the thief replays the victim's honest statement (it names the heir, not the thief)
    with pytest.raises(RemoteProtocolError, match="does not name this node"):
        open_registration(_reg_doc(thief, honest))
    # the thief writes its own statement naming the victim as OLD: not signed by the victim's key
    forged = build_rotation(Identity.generate(), thief, issued=1)
    forged["key"] = victim.id
    with pytest.raises(RemoteProtocolError):
        open_registration(_reg_doc(thief, encode_rotation(forged)))
    # ... or signed by the thief's own key, with the victim as `old` in the body
    from node.protocol.identity import SIGN_PREFIX, sign_document
    from node.protocol.rotation import KEY_ROTATION, KEY_ROTATION_NEW

    own = sign_document(thief, KEY_ROTATION, {"v": 1, "old": victim.id, "new": thief.id, "issued": 1})
    own["sig2"] = thief.sign(SIGN_PREFIX + KEY_ROTATION_NEW.encode() + own["body"])
    with pytest.raises(RemoteProtocolError, match="not signed by the old key"):
        open_registration(_reg_doc(thief, encode_rotation(own)))
    # the heir's own registration moves the approval; a banned victim bans the heir
    reg = open_registration(_reg_doc(heir, honest))
    assert reg.rotated_from == victim.id
    approved = NodeRecord(id=victim.id, approved=True, first_seen=1)
    decision = decide_registration(reg, None, now=1, policy=Policy(), registry_key=b"r" * 32, rotated_from=approved)
    assert getattr(decision, "status", "") == "approved" and getattr(decision, "moved", False)
    banned = NodeRecord(id=victim.id, approved=True, banned=True, first_seen=1)
    decision = decide_registration(reg, None, now=1, policy=Policy(), registry_key=b"r" * 32, rotated_from=banned)
    assert getattr(decision, "status", 0) == 403


def test_a_backup_keeps_the_rotation_statements(tmp_path: Path) -> None:
    """Moving a rotated registry to a new host (backup/restore) keeps what old-key readers need to follow it."""
    reg_dir = tmp_path / "registry"
    init(reg_dir)
    assert run_homing("bootstrap", "rotate-key", "--data-dir", str(reg_dir)).returncode == 0
    out = run_homing("bootstrap", "backup", "--data-dir", str(reg_dir), "--to", str(tmp_path / "copy"))
    assert out.returncode == 0, out.stderr
    copied = tmp_path / "copy" / "key-rotations.msgpack"
    assert copied.read_bytes() == (reg_dir / "key-rotations.msgpack").read_bytes()


@pytest.mark.parametrize("damage", ["cut", "garbage", "not a list"])
@pytest.mark.parametrize("who", ["node", "bootstrap"])
def test_rotate_key_refuses_a_damaged_statements_file_and_writes_nothing(tmp_path: Path, who: str, damage: str) -> None:
    """The statements file is the chain clients and the registry follow from a key to the next: rotating again over a
    damaged one must not replace it with a file holding only the new statement. Exit 2 with one line naming it; the
    key, the file and the directory are as they were. On the code before, the rotation went ahead (exit 0) and the
    earlier statements were gone."""
    d = tmp_path / "d"
    if who == "node":
        assert run_homing("node", "init", "--data-dir", str(d)).returncode == 0
        key, statements = d / "node.key", d / "node-key-rotations.msgpack"
    else:
        init(d)
        key, statements = d / "registry.key", d / "key-rotations.msgpack"
    assert run_homing(who, "rotate-key", "--data-dir", str(d)).returncode == 0
    whole = statements.read_bytes()
    bad = {"cut": whole[: len(whole) // 2], "garbage": b"\xc1" * 40, "not a list": b"\xa5hello"}[damage]
    statements.write_bytes(bad)
    before = {p.name: p.read_bytes() for p in d.iterdir() if p.is_file() and not p.name.startswith("registry.sqlite")}
    result = run_homing(who, "rotate-key", "--data-dir", str(d))
    assert result.returncode == 2, result.stdout + result.stderr
    line = result.stderr.strip()
    assert line.startswith(f"homing: config error: {statements}: damaged: not a list of key rotation statements"), line
    after = {p.name: p.read_bytes() for p in d.iterdir() if p.is_file() and not p.name.startswith("registry.sqlite")}
    assert after == before
    assert key.read_bytes() == before[key.name]


def test_a_registry_with_a_damaged_statements_file_serves_its_list_and_says_why_it_has_no_statements(
    tmp_path: Path,
) -> None:
    """Logged as an error (`key_rotations_damaged`) at start; the list is served, signed by the key in use."""
    d = tmp_path / "d"
    init(d)
    assert run_homing("bootstrap", "rotate-key", "--data-dir", str(d)).returncode == 0
    (d / "key-rotations.msgpack").write_bytes(b"\xc1")
    with running(d) as (proc, base):
        doc = decode_document(httpx2.get(f"{base}/v1/nodes", timeout=10).content)
        assert "rot" not in doc or not doc["rot"]
        proc.terminate()
        _, err = proc.communicate(timeout=15)
    assert "event=key_rotations_damaged" in err, err
