"""The calls of `homing demo` (node/cli/demo.py): real end-to-end encrypted bodies through the Call layer.

alice (node-1) asks her node for ICE servers, calls bob (node-3) with an SDP-shaped offer, trickles candidates,
bob answers, both reach `connected`, alice hangs up; then alice calls carol, who is offline: the offer waits in
carol's mailbox and rings when carol connects to node-2. Every envelope's receipt and latency is printed, and at
the end the body sizes the nodes saw (ciphertext padded to a few fixed sizes, docs/e2ee.md).
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import subprocess
import sys
import time
from collections.abc import Callable

import trio

from node.client.call import CallClient, call_client
from node.client.connection import ClientConnection, connect_client
from node.protocol.call import Changed, Command, Description, End, Send, State
from node.protocol.e2ee import Ice
from node.protocol.identity import Identity, short_id
from node.protocol.wire.client import Receipt

WAIT_S = 10.0


def say(text: str) -> None:
    print(text, flush=True)


def sdp(ufrag: str, setup: str) -> str:
    """An SDP shaped like a browser's audio offer/answer (the demo has no media stack: docs/client-protocol.md)."""
    return (
        "v=0\r\no=- 4611731400430051336 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0\r\n"
        "a=msid-semantic: WMS\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 0.0.0.0\r\na=rtcp:9 IN IP4 0.0.0.0\r\n"
        f"a=ice-ufrag:{ufrag}\r\na=ice-pwd:{ufrag * 6}\r\na=ice-options:trickle\r\n"
        "a=fingerprint:sha-256 0F:1E:2D:3C:4B:5A:69:78:87:96:A5:B4:C3:D2:E1:F0:0F:1E:2D:3C:4B:5A:69:78:87:96:A5:B4"
        f":C3:D2:E1:F0\r\na=setup:{setup}\r\na=mid:0\r\na=sendrecv\r\na=rtcp-mux\r\na=rtpmap:111 opus/48000/2\r\n"
    )


def candidate(n: int, port: int, ufrag: str) -> Ice:
    return Ice(cand=f"candidate:{n} 1 udp 2122260223 127.0.0.1 {port} typ host", mid="0", mline=0, ufrag=ufrag)


class Narrator:
    """A CallObserver: prints each envelope's route, body size, receipt and latency."""

    def __init__(self, names: dict[bytes, str], homes: dict[bytes, str]) -> None:
        self.names, self.homes = names, homes
        self.sent_at: dict[tuple[int, int], tuple[float, Send, bytes]] = {}
        self.sizes: dict[int, int] = {}
        self.delivered = 0

    def sent(self, conn: ClientConnection, send: Send, ref: int) -> None:
        self.sent_at[(id(conn), ref)] = (time.perf_counter(), send, conn.identity.id)
        self.sizes[len(send.body)] = self.sizes.get(len(send.body), 0) + 1

    def receipt(self, conn: ClientConnection, receipt: Receipt) -> None:
        entry = self.sent_at.get((id(conn), receipt.ref))
        if entry is None:
            return
        start, send, sender = entry
        status = receipt.status.value
        if status == "queued":
            self._line(sender, send, status, None)
            say("               (the callee is offline: the envelope waits in its mailbox at its rendezvous owners)")
            return
        del self.sent_at[(id(conn), receipt.ref)]
        self.delivered += status == "delivered"
        self._line(sender, send, status, (time.perf_counter() - start) * 1000)

    def _line(self, sender: bytes, send: Send, status: str, ms: float | None) -> None:
        a, b = self.names[sender], self.names.get(send.to, "?")
        ha, hb = self.homes[sender], self.homes.get(send.to, "?")
        route = f"{a} → {ha} ⇒ {hb} → {b}" if ha != hb else f"{a} → {ha} → {b}"
        latency = f"{ms:6.1f} ms" if ms is not None else ""
        say(f"  {send.kind:<12} {route:<36} {len(send.body):>5} B  receipt {status:<10} {latency}".rstrip())


async def _next(calls: CallClient, pred: Callable[[Command], bool]) -> Command:
    with trio.fail_after(WAIT_S):
        while True:
            event = await calls.events.receive()
            if pred(event):
                return event


async def _state(calls: CallClient, state: State, call: bytes) -> Changed:
    event = await _next(calls, lambda e: isinstance(e, Changed) and e.state is state and e.call == call)
    assert isinstance(event, Changed)
    return event


async def _description(calls: CallClient) -> Description:
    event = await _next(calls, lambda e: isinstance(e, Description))
    assert isinstance(event, Description)
    return event


async def run_calls(urls: list[str], *, media: bool = False) -> None:
    alice, bob, carol = Identity.generate(), Identity.generate(), Identity.generate()
    names = {alice.id: "alice", bob.id: "bob", carol.id: "carol"}
    homes = {alice.id: "node-1", bob.id: "node-3", carol.id: "node-2"}
    n = Narrator(names, homes)
    async with (
        connect_client(urls[0], alice) as ac,
        connect_client(urls[2], bob) as bc,
        call_client(ac, observer=n) as a,
        call_client(bc, observer=n) as b,
    ):
        for who, conn in (("alice", ac), ("bob", bc)):
            say(
                f"  {who:<5} connected to {homes[conn.identity.id]} and proved its id; the node proved"
                f" {short_id(conn.node_id)}…  ({conn.handshake_ms:.1f} ms)"
            )
        await _ice_servers(a)
        await _call_bob(a, b, bob)
        await _call_carol(a, n, carol, urls[1])
        if media:
            await media_call(a, b, bob)
    sizes = ", ".join(f"{count} of {size} B" for size, count in sorted(n.sizes.items()))
    say(
        f"\n  the nodes relayed only ciphertext, of {len(n.sizes)} fixed sizes: {sizes}"
        "\n  (Noise KK per call; SDPs padded to 8 KiB, candidates and hangups to 512 B: docs/e2ee.md)"
    )


async def _ice_servers(a: CallClient) -> None:
    reply = await a.ice_servers()
    say(f"\n  alice asks node-1 for ICE servers (valid {reply.ttl} s):")
    for server in reply.servers:
        cred = f"  username {server.username}  credential {(server.credential or '')[:8]}…" if server.username else ""
        say(f"    {' '.join(server.urls)}{cred}")
    say("    (coturn's REST-API scheme: a coturn sharing the node's secret would relay for this credential)")


async def _call_bob(a: CallClient, b: CallClient, bob: Identity) -> None:
    say("\ncall 1: alice calls bob (different nodes; every body is end-to-end encrypted for bob's key)")
    call = await a.start_call(bob.id, sdp=sdp("alic", "actpass"), video=False)
    await _state(b, State.INCOMING, call)
    offer = await _description(b)
    say(f"  bob's phone rings: an {'video' if offer.video else 'audio'} offer of {len(offer.sdp)} characters of SDP")
    for i in range(3):
        await a.candidate(call, candidate(i + 1, 50000 + i, "alic"))
    await a.gathering_done(call)
    await b.accept(call, sdp=sdp("bobb", "active"), video=False)
    await _state(a, State.CONNECTING, call)
    await _description(a)
    for i in range(2):
        await b.candidate(call, candidate(i + 1, 51000 + i, "bobb"))
    await a.connected(call)
    await b.connected(call)
    await _state(a, State.CONNECTED, call)
    await _state(b, State.CONNECTED, call)
    say("  both sides: outgoing/incoming → connecting → connected (here the app would play audio)")
    await a.hangup(call)
    ended = await _state(b, State.ENDED, call)
    assert ended.end is End.HANGUP
    await trio.sleep(0.2)  # the hangup's receipt
    say(f"  bob's call ended: {ended.end.value}")


async def _call_carol(a: CallClient, n: Narrator, carol: Identity, url: str) -> None:
    say("\ncall 2: alice calls carol, who is offline")
    call = await a.start_call(carol.id, sdp=sdp("alc2", "actpass"), video=False)
    await trio.sleep(0.3)  # the queued receipt
    start = time.perf_counter()
    async with connect_client(url, carol) as cc, call_client(cc, observer=n) as c:
        say(f"  carol connected to node-2 {(time.perf_counter() - start) * 1000:.1f} ms later")
        await _state(c, State.INCOMING, call)
        say("  carol's phone rings with alice's offer from the mailbox")
        await c.reject(call, "declined")
        ended = await _state(a, State.ENDED, call)
        say(f"  carol declines; alice's call ended: {ended.end.value if ended.end else '?'}")
        await trio.sleep(0.2)


MEDIA_WAIT_S = 30.0


class _Peer:
    """A media_peer helper process (aiortc on asyncio) and its JSON lines."""

    def __init__(self, proc: trio.Process) -> None:
        self.proc = proc
        self._buf = b""

    async def send(self, obj: dict[str, object]) -> None:
        assert self.proc.stdin is not None
        await self.proc.stdin.send_all((json.dumps(obj) + "\n").encode())

    async def receive(self) -> dict[str, object]:
        assert self.proc.stdout is not None
        while b"\n" not in self._buf:
            chunk = await self.proc.stdout.receive_some(65536)
            if not chunk:
                raise RuntimeError("the media helper process ended early")
            self._buf += chunk
        line, _, self._buf = self._buf.partition(b"\n")
        obj: dict[str, object] = json.loads(line)
        return obj


async def _peer(role: str) -> _Peer:
    proc = await trio.lowlevel.open_process(
        [sys.executable, "-m", "node.cli.media_peer", role], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    return _Peer(proc)


def media_available() -> bool:
    return importlib.util.find_spec("aiortc") is not None


async def media_call(a: CallClient, b: CallClient, bob: Identity) -> None:
    """A real audio call: each client's SDP comes from an aiortc peer in a helper process, travels end-to-end
    encrypted through homing (Call layer), and the peers exchange audio frames directly."""
    say("\ncall 3 (--media): alice calls bob with real WebRTC audio (aiortc in two helper processes)")
    offerer, answerer = await _peer("offer"), await _peer("answer")
    try:
        with trio.fail_after(MEDIA_WAIT_S):
            offer = str((await offerer.receive())["sdp"])
            call = await a.start_call(bob.id, sdp=offer, video=False)
            got = await _description(b)
            await answerer.send({"sdp": got.sdp})
            answer = str((await answerer.receive())["sdp"])
            await b.accept(call, sdp=answer, video=False)
            await offerer.send({"sdp": (await _description(a)).sdp})
            results = [await offerer.receive(), await answerer.receive()]
        for who, res in zip(("alice", "bob"), results, strict=True):
            if res.get("connected"):
                say(
                    f"  {who}'s peer: ICE connected ({res.get('ice')}),"
                    f" {res.get('frames')} audio frames of 20 ms received"
                )
            else:
                say(f"  {who}'s peer: ICE did not connect")
        if all(r.get("connected") for r in results):
            await a.connected(call)
            await b.connected(call)
        await a.hangup(call)
        await _state(b, State.ENDED, call)
    finally:
        for p in (offerer, answerer):
            with contextlib.suppress(ProcessLookupError):
                p.proc.kill()
            await p.proc.wait()
