"""Issue 11 end to end: one hostile admitted node process against five honest `homing node run` processes.

One test per numbered finding that a node can act on (the table in docs/security.md, "Hostile volunteers", links
the findings that other suites cover). The federation is shared by the module (starting six processes costs
~7 s); tests run in file order, the ones that change membership last. Each asserts what honest clients and honest
nodes show from outside: receipts, deliveries, /v1/members, resident memory.
"""

from __future__ import annotations

import os
import socket
import time
import urllib.request
from collections.abc import Callable, Iterator
from functools import partial
from typing import Any

import msgpack
import pytest
import trio

from tests.adversarial.hostile.compat import (
    KIND_WHOIS_REPLY,
    Deliver,
    Identity,
    Kind,
    Receipt,
    connect_client,
    encode_whois,
)
from tests.adversarial.hostile.harness import (
    FLOOD_SRC,
    PEER_FLOOD_SRC,
    Federation,
    call,
    cpu_s,
    receipt,
    rss_bytes,
    wait_quiet,
)
from tests.helpers import refused_by_reason
from tests.integration.procs import wait_for

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def fed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Federation]:
    f: Federation | None = None
    try:
        f = Federation(tmp_path_factory.mktemp("hostile"))
        yield f
    finally:
        if f is not None:
            f.stop()


def hostile_do(fed: Federation, name: str, timeout: float = 60, **args: Any) -> Callable[[], dict[str, Any]]:
    assert fed.hostile is not None
    return lambda: fed.hostile.do(name, timeout, **args)  # type: ignore[union-attr]


async def _no_deliver_from(conn: Any, sender: bytes, within_s: float) -> list[Any]:
    got: list[Any] = []
    with trio.move_on_after(within_s):
        while True:
            msg = await conn.receive()
            if isinstance(msg, Deliver) and msg.sender == sender:
                got.append(msg)
    return got


def test_finding_3_a_member_cannot_forge_an_envelope_from_a_client_of_another_node(fed: Federation) -> None:
    alice, bob = Identity.generate(), Identity.generate()

    async def main() -> None:
        async with connect_client(fed.nodes[1].url, alice) as ca, connect_client(fed.nodes[1].url, bob) as cb:
            await trio.sleep(0.5)
            r = await trio.to_thread.run_sync(hostile_do(fed, "forge", frm=alice.id.hex(), to=bob.id.hex(), n=3))
            assert r["sent"] > 0, r
            assert await _no_deliver_from(cb, alice.id, 2.0) == [], "bob got an offer 'from alice' alice never sent"
            ref = await ca.send_envelope(Kind.CALL_OFFER, bob.id, b"real", b"real")  # bob was listening all along
            with trio.fail_after(10):
                while not isinstance(msg := await cb.receive(), Deliver):
                    pass
            assert msg.sender == alice.id and msg.body == b"real", ref

    trio.run(main)


def test_finding_3_a_member_cannot_move_a_clients_lease_to_itself(fed: Federation) -> None:
    alice, bob = Identity.generate(), Identity.generate()

    async def main() -> None:
        async with connect_client(fed.nodes[2].url, bob) as cb, connect_client(fed.nodes[1].url, alice) as ca:
            await trio.sleep(0.5)
            await trio.to_thread.run_sync(hostile_do(fed, "steal", id=bob.id.hex()))
            await trio.sleep(0.5)
            for i in range(3):
                ref = await ca.send_envelope(Kind.CALL_OFFER, bob.id, b"c%d" % i, b"after-theft-%d" % i)
                with trio.fail_after(10):
                    while not (isinstance(m := await ca.receive(), Receipt) and m.ref == ref):
                        pass
                assert m.status.value == "delivered", f"offer {i} after the lease theft: {m.status.value}"
                with trio.fail_after(10):
                    while not isinstance(d := await cb.receive(), Deliver):
                        pass
                assert d.body == b"after-theft-%d" % i

    trio.run(main)


def test_finding_3_a_lease_flood_does_not_hide_a_newly_connected_client(fed: Federation) -> None:
    r = hostile_do(fed, "lease_flood", timeout=90, n=204_800)()
    assert r["frames"] > 0, r
    wait_quiet([n.proc.pid for n in fed.nodes])  # the honest nodes have read what was sent
    for i in (0, 4):  # found at once: no `queued` first (a refused lease leaves only the mailbox path)
        statuses = trio.run(
            partial(call, settle_s=1.0), fed.nodes[i].url, Identity.generate(), fed.nodes[3].url, Identity.generate()
        )
        assert statuses == ["delivered"], (
            f"a client connected after the flood of {r['frames']} LEASE frames: {statuses}"
        )


def _refused(node: Any) -> tuple[float, float]:
    """The node's peer-layer refusals `forged` and `rate_limited`, from one read of its /metrics."""
    with urllib.request.urlopen(f"http://127.0.0.1:{node.ports['metrics']}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    counts = refused_by_reason(text, "peer")
    for reason in ("forged", "rate_limited"):
        assert reason in counts, f"no peer {reason} series in /metrics"
    return counts["forged"], counts["rate_limited"]


def test_a_member_cannot_make_a_node_check_unbounded_forged_claims(fed: Federation) -> None:
    """Signature checks are budgeted per peer (node/protocol/relay/claims.py, PeerChecks): after a handful of
    failures, a member's claims are refused unchecked. Before: every one of the 5,120 claims was an Ed25519 check
    at the victim (`forged` grew by 5,120, about 0.8 s of its CPU), and a flood of them held its loop."""
    victim = fed.nodes[2]
    forged_before, limited_before = _refused(victim)
    cpu_before = cpu_s(victim.proc.pid)
    r = hostile_do(fed, "claim_flood", timeout=90, victim=victim.id.hex(), n=5_120)()
    assert r.get("claims") == 5_120 and r["frames"] == 20, r

    # Until every claim is counted or the counts have stood still for 3 s (at most 30 s), not until the victim's CPU
    # is quiet: quiet is not done (a link whose CPU budget holds its last frames unread is quiet too, docs/security.md
    # "Malicious node operator"). A fresh clone's run once counted 4,608 of the 5,120 after the quiet wait.
    def counted() -> tuple[float, float]:
        forged, limited = _refused(victim)
        return forged - forged_before, limited - limited_before

    deadline, last, still_since = time.monotonic() + 30, -1.0, time.monotonic()
    while time.monotonic() < deadline and (total := sum(counted())) < 5_120:
        if total != last:
            last, still_since = total, time.monotonic()
        elif time.monotonic() - still_since >= 3:
            break
        time.sleep(0.2)
    checked, limited = counted()
    cpu = cpu_s(victim.proc.pid) - cpu_before
    # the forgery budget: 5 at once, then one per 5 s (the whole flood and the wait take well under a minute)
    assert checked <= 5 + 12, f"the victim checked {checked:.0f} forged claims ({limited:.0f} refused unchecked)"
    # The flood reached the claim checks: without the budget, `checked` would be at least this. Not all 5,120: in two
    # fresh-clone runs the counts fell short (4,608 in one, 18 whole frames of 20). A relay frame from a sender the
    # victim does not hold as a member is ignored whole (RelayCore.peer_message), and the victim's log of the other
    # run has the busy hostile suspect, then dead, then alive again while this module ran.
    view = victim.states().get(fed.hostile.id_text, "unknown")
    assert limited + checked >= 5_120 // 2, (
        f"{limited:.0f} claims refused unchecked, {checked:.0f} checked; the victim holds the hostile {view}"
    )
    caller, callee = Identity.generate(), Identity.generate()
    statuses = trio.run(partial(call, settle_s=1.0), fed.nodes[0].url, caller, victim.url, callee)
    assert statuses == ["delivered"], f"a call to the victim after the flood ({cpu:.2f} s of its CPU): {statuses}"


def test_finding_4_one_address_with_fresh_keys_cannot_fill_the_mailboxes(fed: Federation) -> None:
    r = hostile_do(
        fed, "mailbox_flood", timeout=90, ws=fed.nodes[1].ports["ws"], keys=300, offers=80, body_bytes=64, src=FLOOD_SRC
    )()
    assert r["sent"] + r["refused_connections"] > 0, r
    for node in (fed.nodes[1], fed.nodes[2]):  # the flooded node, and another origin
        status = trio.run(receipt, node.url, Identity.generate(), os.urandom(32))
        assert status == "queued", f"an honest offer to an unused offline id at {node.dir.name}: {status} ({r})"


def test_finding_5_pongs_count_in_the_send_queue_and_the_node_stays_small(fed: Federation) -> None:
    node = fed.nodes[2]
    before = rss_bytes(node.proc.pid)
    r = hostile_do(fed, "pings", timeout=90, ws=node.ports["ws"], size_bytes=96 * 2**20, src=FLOOD_SRC)()
    grown = rss_bytes(node.proc.pid) - before
    assert r["closed"], f"{r['sent_bytes']} bytes of pings never read and the node did not close ({grown} B grown)"
    assert grown < 48 * 2**20, f"node grew by {grown / 2**20:.0f} MiB under {r['sent_bytes'] / 2**20:.0f} MiB of pings"
    assert trio.run(call, node.url, Identity.generate(), fed.nodes[0].url, Identity.generate())[-1] == "delivered"


def test_finding_5_empty_continuation_frames_are_counted_and_closed(fed: Federation) -> None:
    node = fed.nodes[2]
    r = hostile_do(fed, "fragments", timeout=90, ws=node.ports["ws"], frames=1_000_000, src=FLOOD_SRC)()
    assert r["close_code"] == 1009 and r["sent_frames"] <= 100_000, r
    assert trio.run(call, node.url, Identity.generate(), fed.nodes[0].url, Identity.generate())[-1] == "delivered"


def test_finding_8_idle_peer_port_connections_do_not_keep_a_new_member_out(fed: Federation) -> None:
    target = fed.nodes[3]
    assert fed.hostile is not None
    fed.hostile.start(
        "peer_idle", host="127.0.0.1", port=target.ports["peer"], n=1100, duration_s=15.0, src=PEER_FLOOD_SRC
    )
    time.sleep(3)  # the flood holds what the node lets it hold
    newcomer = fed.add_node("n5")
    everyone = {n.id_text for n in fed.nodes}
    wait_for(lambda: everyone <= {k for k, s in target.states().items() if s == "alive"}, 30, "the newcomer to join")
    status = trio.run(call, newcomer.url, Identity.generate(), target.url, Identity.generate())
    held = fed.hostile.result("peer_idle", 40)
    assert status[-1] == "delivered", f"a call from the new member to the flooded one: {status} (flood {held})"


def test_finding_8_a_whois_flood_does_not_starve_an_honest_seed_lookup(fed: Federation) -> None:
    """An honest joiner asks a seed a few times a second at most (node/net/udp.py resolve_seed); each source network
    has its own budget (docs/swim.md, "Seed lookup"), so a flood from other addresses leaves it its answers."""
    target = fed.nodes[1]
    assert fed.hostile is not None
    fed.hostile.start(
        "whois", host="127.0.0.1", port=target.ports["swim"], rate_per_s=1000, duration_s=6.0, src=FLOOD_SRC
    )
    time.sleep(1.0)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    asked: set[bytes] = set()
    answered: set[bytes] = set()

    def take_replies(until: float) -> None:
        # Replies are matched to asks by nonce, so one that comes late (a loaded host) still counts for its ask.
        while len(answered) < len(asked) and (left := until - time.monotonic()) > 0:
            sock.settimeout(left)
            try:
                data = sock.recv(2048)
            except TimeoutError:
                return
            if data[:1] == bytes([KIND_WHOIS_REPLY]):
                nonce = msgpack.unpackb(data[2:]).get("nonce")
                answered.update({nonce} & asked)

    try:
        for _ in range(8):  # one ask every 0.5 s for 4 s, within the 6 s flood (a joiner asks a seed 3 times)
            start = time.monotonic()
            nonce = os.urandom(16)
            asked.add(nonce)
            sock.sendto(encode_whois(os.urandom(32), nonce), ("127.0.0.1", target.ports["swim"]))
            take_replies(start + 0.5)
            time.sleep(max(0.0, 0.5 - (time.monotonic() - start)))
        # The node reads each ask behind the flood's packets that came before it: an answer given late was still
        # given while the flood ran. 5 s more for those, bounded.
        take_replies(time.monotonic() + 5.0)
    finally:
        sock.close()
    fed.hostile.result("whois", 30)
    answers = len(answered)
    assert answers >= 7, f"an honest asker got {answers} of 8 WHOIS answers under a flood from another address"


def test_honest_members_stay_alive_after_everything(fed: Federation) -> None:
    """After every attack above (the eviction test comes after this one), no honest node lists an honest member as
    dead, left or missing, and every view is all alive within 15 s. `suspect` is allowed on the way: it is SWIM's
    question, not a verdict. A fresh-clone CI run saw one honest node list the WHOIS flood's target (the test just
    before) as not alive at the moment of the check, state not recorded; a suspect refutes, one that cannot turns
    dead, and a failure here now says which state it saw."""
    deadline = time.monotonic() + 15.0
    while True:
        views = fed.honest_views()
        verdicts = {node: {k: s for k, s in v.items() if s != "suspect"} for node, v in views.items()}
        assert not any(verdicts.values()), f"honest members declared dead, left or missing: {views}"
        if not any(views.values()):
            return
        assert time.monotonic() < deadline, f"honest members still suspect after 15 s: {views}"
        time.sleep(0.1)


def test_finding_2_a_member_cannot_evict_another(fed: Federation) -> None:
    victim = fed.nodes[4]
    assert fed.hostile is not None
    fed.hostile.start("evict", victim=victim.id.hex(), duration_s=8.0)
    declared_dead: list[tuple[str, str]] = []
    deadline = time.monotonic() + 12.0
    while time.monotonic() < deadline:
        for n in fed.nodes[:4]:
            state = n.states().get(victim.id_text)
            if state in ("dead", "left"):
                declared_dead.append((n.dir.name, state))
        time.sleep(0.2)
    fed.hostile.result("evict", 20)
    assert declared_dead == [], f"honest nodes declared a live member gone: {declared_dead[:5]}"
