"""The SWIM driver: a trio UDP socket around the sans-IO SWIM core (node/protocol/swim/protocol.py).

One task receives datagrams, one sleeps until the core's next deadline (woken early when a datagram may have
moved it). Every datagram on the SWIM port is one of (node/protocol/wire/seed.py): a sealed SWIM packet (opened with the
node keys, replay-checked, decoded, then given to the core), a WHOIS request (answered, rate-limited), or a
WHOIS reply (matched to a pending seed resolution). Anything else, or anything that fails a check, is counted
and dropped: it changes nothing. Push-pull syncs run over the peer port (node/net/peers.py) in their own tasks.
"""

from __future__ import annotations

import contextlib
import functools
import ipaddress
import os
import socket
from collections.abc import Callable, Iterable

import trio

from node.net.peerconn import push_pull, stream_ping
from node.net.timer import CoreTimer
from node.protocol.crypto import DatagramSealer
from node.protocol.errors import RemoteProtocolError, TransportError
from node.protocol.identity import ID_BYTES, Identity
from node.protocol.ratelimit import KeyedBuckets, TokenBucket, address_key
from node.protocol.refusals import Layer, Refusal
from node.protocol.swim.messages import Ack, Refused
from node.protocol.swim.protocol import MemberChanged, ProbeResult, PushPull, Send, StreamPing, Swim
from node.protocol.wire import Limits
from node.protocol.wire.seed import (
    KIND_SEALED,
    KIND_WHOIS,
    KIND_WHOIS_REPLY,
    NONCE_BYTES,
    decode_meta,
    decode_whois,
    decode_whois_reply,
    encode_whois,
    encode_whois_reply,
)
from node.protocol.wire.swim import decode_datagram, decode_push_pull, encode_datagram, encode_push_pull

Address = tuple[str, int]
# WHOIS answers (docs/swim.md "Seed lookup"): each source network (address_key: /32 IPv4, /64 IPv6) gets its own
# small budget, so a flood from some addresses cannot starve an asker elsewhere; a global cap bounds the signing
# work (one Ed25519 signature per answer) whatever the number of sources. Answers are never larger than requests.
WHOIS_PER_SOURCE_PER_S = 2.0
WHOIS_PER_SOURCE_BURST = 6
WHOIS_SOURCES_MAX = 4096
WHOIS_REPLIES_PER_S = 200.0
WHOIS_REPLIES_BURST = 200
PUSH_PULL_CONCURRENCY = 4
# Push-pull syncs one member may have merged here: a sync of a few MiB costs ~0.1 s of CPU to decode, merge and
# answer, and a member could dial one per handshake its address may make (10 a second: most of a core). An honest
# member syncs with us at most once per `join_retry_s` while it joins, else once per push-pull or reconnect interval.
SYNCS_PER_PEER_BURST = 10
SYNCS_PER_PEER_PER_JOIN_RETRY = 2.0  # the sustained rate, in syncs per `join_retry_s`
SYNC_PEERS_MAX = 4096
# How long the set of hosts where members are known (`member_host`) is kept before it is rebuilt from the table:
# it is asked for only while the peer port's strangers' budget is empty, and a member's address rarely changes.
MEMBER_HOSTS_TTL_S = 1.0


# Members' SWIM hosts may be DNS names (`[node] advertise_host`). A name is resolved here, off the event loop (trio's
# resolver, in a worker thread), and kept: `socket.sendto` to a name resolved it synchronously on the loop for every
# datagram, so a member whose name resolves slowly (its own DNS server, answering late) stalled the whole node at
# each send. Until a name is resolved, datagrams to it are dropped, as UDP may.
RESOLVED_TTL_S = 60.0  # seconds a resolved name is used before it is resolved again (the old address meanwhile)
UNRESOLVED_TTL_S = 10.0  # seconds before a name that did not resolve is tried again
RESOLVE_TIMEOUT_S = 5.0
RESOLVING_MAX = 4  # names resolved at once (worker threads)
RESOLVED_NAMES_MAX = 4096  # names kept; the oldest is forgotten first


@functools.lru_cache(maxsize=8192)
def _is_ip_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


class SyncRateLimited(RemoteProtocolError):
    refusal = Refusal.RATE_LIMITED


class SwimDriver:
    def __init__(
        self,
        *,
        identity: Identity,
        core: Swim,
        sock: socket.socket,
        epoch_ms: int,
        admit: Callable[[bytes], bool],
        on_change: Callable[[MemberChanged], None] = lambda c: None,
        on_probe: Callable[[str], None] = lambda r: None,
        on_refused: Callable[[Layer, Refusal], None] = lambda layer, reason: None,
        push_pull_timeout_s: float = 5.0,
    ) -> None:
        self.identity = identity
        self.core = core
        sock.setblocking(False)
        self._raw = sock  # sends are synchronous and never block: a full buffer drops the datagram, as UDP may
        self.sock = trio.socket.from_stdlib_socket(sock)
        self.admit = admit
        self.on_change = on_change
        self.on_probe = on_probe
        self.on_refused = on_refused
        self.push_pull_timeout_s = push_pull_timeout_s
        self.sealer = DatagramSealer(identity, epoch_ms=epoch_ms)
        self._timer = CoreTimer(tick=core.tick, next_deadline=core.next_deadline, flush=self._flush)
        self._seed_peers: dict[bytes, Address] = {}  # peer-link address of seeds, from their WHOIS meta
        self._pending_whois: dict[bytes, trio.MemorySendChannel[tuple[bytes, bytes]]] = {}
        self._whois_sources: KeyedBuckets[str] = KeyedBuckets(
            WHOIS_PER_SOURCE_PER_S, WHOIS_PER_SOURCE_BURST, WHOIS_SOURCES_MAX
        )
        self._whois_all = TokenBucket(WHOIS_REPLIES_PER_S, WHOIS_REPLIES_BURST, trio.current_time())
        # key agreements with senders neither keyed nor members (SwimConfig.new_keys_per_s): one for all of them
        self._new_keys = TokenBucket(core.config.new_keys_per_s, core.config.new_keys_burst, trio.current_time())
        self._pp_limit = trio.CapacityLimiter(PUSH_PULL_CONCURRENCY)
        self._syncs: KeyedBuckets[bytes] = KeyedBuckets(
            SYNCS_PER_PEER_PER_JOIN_RETRY / core.config.join_retry_s, SYNCS_PER_PEER_BURST, SYNC_PEERS_MAX
        )
        self._nursery: trio.Nursery | None = None
        self._member_hosts: frozenset[str] = frozenset()
        self._member_hosts_until = -1.0
        self._listed_hosts: frozenset[str] = frozenset()  # set_listed_hosts: the registry lists' nodes
        self._names: dict[str, tuple[str | None, float]] = {}  # DNS name -> (address or None, trio time to renew)
        self._resolving: set[str] = set()

    # --- running -------------------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            nursery.start_soon(self._receive_loop)
            nursery.start_soon(self._timer.run)
            task_status.started()

    def poke(self) -> None:
        """Something outside gave the core input: flush its output and re-arm the timer."""
        self._flush()
        self._timer.wake()

    async def _receive_loop(self) -> None:
        while True:
            try:
                data, addr = await self.sock.recvfrom(Limits.SWIM_DATAGRAM_MAX + 1)
            except OSError:  # e.g. ICMP port unreachable surfaced on Linux as ECONNREFUSED: not fatal
                continue
            self._handle_datagram(data, (addr[0], addr[1]))

    def _handle_datagram(self, data: bytes, addr: Address) -> None:
        if len(data) > Limits.SWIM_DATAGRAM_MAX:
            self.on_refused(Layer.SWIM, Refusal.OVERSIZED)
            return
        kind = data[0] if data else -1
        try:
            if kind == KIND_SEALED:
                # the sender id is in the clear: refuse strangers before spending a key agreement on them, and
                # pace key agreements with admitted senders that are neither keyed nor members (an open
                # federation admits every made-up id)
                sender_id = bytes(data[1 : 1 + ID_BYTES])
                if not self.admit(sender_id):
                    self.on_refused(Layer.SWIM, Refusal.UNADMITTED)
                    return
                if (
                    not self.sealer.keyed(sender_id)
                    and self.core.member(sender_id) is None
                    and not self._new_keys.take(trio.current_time())
                ):
                    self.on_refused(Layer.SWIM, Refusal.RATE_LIMITED)
                    return
                sender, plaintext = self.sealer.open(data)
                msg = decode_datagram(plaintext)
                self.core.receive(sender, addr, msg, trio.current_time())
                self.poke()
            elif kind == KIND_WHOIS:
                self._answer_whois(data, addr)
            elif kind == KIND_WHOIS_REPLY:
                self._take_whois_reply(data)
            else:
                self.on_refused(Layer.SWIM, Refusal.MALFORMED)
        except RemoteProtocolError as exc:
            self.on_refused(Layer.SWIM, exc.refusal)

    def _flush(self) -> None:
        for cmd in self.core.drain():
            if isinstance(cmd, Send):
                self._send(cmd)
            elif isinstance(cmd, PushPull):
                if self._nursery is not None:
                    self._nursery.start_soon(self._push_pull, cmd)
            elif isinstance(cmd, MemberChanged):
                self.on_change(cmd)
            elif isinstance(cmd, ProbeResult):
                self.on_probe(cmd.result)
            elif isinstance(cmd, Refused):
                self.on_refused(Layer.SWIM, cmd.refusal)
            elif isinstance(cmd, StreamPing) and self._nursery is not None:
                self._nursery.start_soon(self._stream_ping, cmd)

    def _send(self, cmd: Send) -> None:
        to = cmd.to_addr
        if not _is_ip_literal(to[0]):
            address = self._resolved(to[0])
            if address is None:
                return  # not resolved (yet): dropped, as UDP may
            to = (address, to[1])
        packet = self.sealer.seal(cmd.to_id, encode_datagram(cmd.msg))
        with contextlib.suppress(OSError):  # BlockingIOError (buffer full), unreachable: UDP may drop
            self._raw.sendto(packet, to)

    def _resolved(self, name: str) -> str | None:
        """The address of a member's host name, resolved in the background (see RESOLVED_TTL_S); None until known."""
        now = trio.current_time()
        known = self._names.get(name)
        due = known is None or now >= known[1]
        if due and name not in self._resolving and len(self._resolving) < RESOLVING_MAX and self._nursery is not None:
            self._resolving.add(name)
            self._nursery.start_soon(self._resolve, name)
        return None if known is None else known[0]

    async def _resolve(self, name: str) -> None:
        address: str | None = None
        try:
            with trio.move_on_after(RESOLVE_TIMEOUT_S):
                infos = await trio.socket.getaddrinfo(name, None, family=self._raw.family, type=socket.SOCK_DGRAM)
                address = str(infos[0][4][0]) if infos else None
        except (OSError, UnicodeError):
            address = None
        finally:
            self._resolving.discard(name)
        known = self._names.get(name)
        if address is None and known is not None and known[0] is not None:
            address = known[0]  # a failed renewal keeps the last good address until the next try
        self._names.pop(name, None)
        while len(self._names) >= RESOLVED_NAMES_MAX:
            self._names.pop(next(iter(self._names)))
        self._names[name] = (address, trio.current_time() + (RESOLVED_TTL_S if address else UNRESOLVED_TTL_S))

    # --- push-pull -----------------------------------------------------------------------------------

    def peer_address(self, member_id: bytes) -> Address | None:
        """The peer-link address of a live (or suspect) member, from its SWIM address and meta."""
        m = self.core.member(member_id)
        if m is None:
            return self._seed_peers.get(member_id)
        if m.state.value not in ("alive", "suspect"):
            return None
        return _peer_address(m.addr, m.meta)

    def set_listed_hosts(self, hosts: Iterable[str]) -> None:
        """The hosts (IP addresses; a name matches nothing) of the nodes the registry lists name: `member_host`
        counts them as members', so an approved newcomer not yet in the table is not charged to strangers."""
        self._listed_hosts = frozenset(address_key(h) for h in hosts)
        self._member_hosts_until = -1.0

    def member_host(self, key: str) -> bool:
        """Whether a member of the table (in any state), a resolved seed or a node the registry lists name is
        known at the address `key` (node/protocol/ratelimit.py `address_key`): the peer port does not charge such
        hosts to its strangers' budget (node/net/peerconn.py `serve_peers`). The set is rebuilt at most once per
        MEMBER_HOSTS_TTL_S."""
        now = trio.current_time()
        if now >= self._member_hosts_until:
            hosts = {address_key(a[0]) for a in self._seed_peers.values()} | self._listed_hosts
            for m in self.core.members():
                hosts.add(address_key(m.addr[0]))
                peer = _peer_address(m.addr, m.meta)
                if peer is not None:
                    hosts.add(address_key(peer[0]))
            self._member_hosts = frozenset(hosts)
            self._member_hosts_until = now + MEMBER_HOSTS_TTL_S
        return key in self._member_hosts

    def sync_address(self, member_id: bytes) -> Address | None:
        """The peer-link address for a push-pull the core asked for, whatever the member's state: the core
        also syncs with DEAD members (reconnect_interval_s) so the halves of a healed partition find each other
        again; relay links (peer_address) stay limited to live members."""
        m = self.core.member(member_id)
        if m is None:
            return self._seed_peers.get(member_id)
        return _peer_address(m.addr, m.meta)

    async def _push_pull(self, cmd: PushPull) -> None:
        addr = self.sync_address(cmd.to_id)
        if addr is None:
            return
        async with self._pp_limit:
            state = encode_push_pull(self.core.push_pull_state())
            try:
                reply = await push_pull(
                    addr,
                    self.identity,
                    cmd.to_id,
                    self.admit,
                    state,
                    join=cmd.join,
                    timeout_s=self.push_pull_timeout_s,
                )
                remote = decode_push_pull(reply)
            except RemoteProtocolError as exc:
                self.on_refused(Layer.PEER, exc.refusal)
                return
            except (TransportError, trio.TooSlowError):
                self.on_refused(Layer.PEER, Refusal.MALFORMED)  # no answer in time, or the link broke
                return
            self.core.merge_push_pull(remote, trio.current_time(), cmd.to_id)
            self.poke()

    async def _stream_ping(self, cmd: StreamPing) -> None:
        addr = self.peer_address(cmd.to_id)
        if addr is None:
            return
        timeout_s = self.core.config.probe_interval_s  # the probe's own deadline ends the round anyway
        if await stream_ping(addr, self.identity, cmd.to_id, self.admit, timeout_s=timeout_s):
            self.core.receive(cmd.to_id, cmd.to_addr, Ack(seq=cmd.seq), trio.current_time())
            self.poke()

    def on_sync(self, peer_id: bytes, state: bytes, join: bool) -> bytes:
        """Server side of a push-pull (called by node/net/peers.py's listener). Over the peer's sync budget it is
        refused before its state is decoded (the connection closes unanswered)."""
        if not self._syncs.take(peer_id, trio.current_time()):
            raise SyncRateLimited("push-pull over the peer's budget")
        remote = decode_push_pull(state)
        self.core.merge_push_pull(remote, trio.current_time(), peer_id)
        self.poke()
        return encode_push_pull(self.core.push_pull_state())

    # --- seeds (WHOIS) -------------------------------------------------------------------------------

    def _answer_whois(self, data: bytes, addr: Address) -> None:
        asker, nonce = decode_whois(data)
        now = trio.current_time()
        # the source's own budget first: a flooding source spends its tokens, not the global ones
        if not self._whois_sources.take(address_key(addr[0]), now) or not self._whois_all.take(now):
            self.on_refused(Layer.SWIM, Refusal.RATE_LIMITED)
            return
        me = self.core.member(self.identity.id)
        assert me is not None  # a core always holds itself
        reply = encode_whois_reply(self.identity, asker, nonce, me.meta)
        if len(reply) > len(data):  # never amplify (requests are padded to WHOIS_BYTES >= any reply)
            self.on_refused(Layer.SWIM, Refusal.OVERSIZED)
            return
        with contextlib.suppress(OSError):
            self._raw.sendto(reply, addr)

    def _take_whois_reply(self, data: bytes) -> None:
        for nonce, chan in list(self._pending_whois.items()):
            try:
                node_id, meta = decode_whois_reply(data, asker=self.identity.id, nonce=nonce)
            except RemoteProtocolError:
                continue
            with contextlib.suppress(trio.WouldBlock, trio.ClosedResourceError, trio.BrokenResourceError):
                chan.send_nowait((node_id, meta))
            return
        self.on_refused(Layer.SWIM, Refusal.MALFORMED)  # a reply nobody asked for

    async def resolve_seed(self, addr: Address, *, timeout_s: float = 3.0, tries: int = 3) -> bytes | None:
        """Ask which node listens at `addr`; on success add it to the core as a seed and return its id."""
        nonce = os.urandom(NONCE_BYTES)
        send, recv = trio.open_memory_channel[tuple[bytes, bytes]](1)
        self._pending_whois[nonce] = send
        try:
            for _ in range(tries):
                with contextlib.suppress(OSError):
                    await self.sock.sendto(encode_whois(self.identity.id, nonce), addr)
                with trio.move_on_after(timeout_s / tries):
                    node_id, meta = await recv.receive()
                    if node_id == self.identity.id:
                        return None
                    if not self.admit(node_id):
                        self.on_refused(Layer.SWIM, Refusal.UNADMITTED)
                        return None
                    peer = _peer_address(addr, meta)
                    if peer is None:
                        self.on_refused(Layer.SWIM, Refusal.MALFORMED)
                        return None
                    self._seed_peers[node_id] = peer
                    self.core.add_seed(node_id, addr, trio.current_time())
                    self.poke()
                    return node_id
            return None
        finally:
            del self._pending_whois[nonce]

    async def join(self, seeds: list[Address], *, timeout_s: float = 3.0) -> list[bytes]:
        """Resolve every seed concurrently; return the ids that answered."""
        found: list[bytes] = []

        async def one(addr: Address) -> None:
            node_id = await self.resolve_seed(addr, timeout_s=timeout_s)
            if node_id is not None:
                found.append(node_id)

        async with trio.open_nursery() as nursery:
            for addr in seeds:
                nursery.start_soon(one, addr)
        return found


def _peer_address(swim_addr: Address, meta: bytes) -> Address | None:
    try:
        decoded = decode_meta(meta)
    except RemoteProtocolError:
        return None
    return (decoded.host or swim_addr[0], decoded.peer_port)
