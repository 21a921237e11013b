"""Prometheus metrics of one node (docs/operations.md), on a registry of its own.

Several nodes run in one process (tests, `homing demo`), so there is no global registry: each `NodeMetrics()` owns
a `Registry` (node/app/promtext.py, the node's own text exposition, identical to prometheus-client's), and
`render()` serialises only that.

Public API:

    m = NodeMetrics(version=node.__version__)        # one per node instance
    m.render() -> bytes                              # Prometheus text format 0.0.4 for GET /metrics
    NodeMetrics.CONTENT_TYPE                          # the Content-Type header to send with it

    m.set_members({"alive": 3, "suspect": 1})        # homing_members{state}; states not given are set to 0
    m.member_changed("suspect")                       # homing_member_changes_total{state}: a member entered state
    m.clients_connected.set(n) / .inc() / .dec()      # homing_clients_connected
    m.envelope("call_offer", "delivered"[, count])    # homing_envelopes_total{kind,outcome}
    m.relay_seconds.observe(seconds)                  # homing_relay_seconds (histogram)
    m.mailbox_envelopes.set(n)                        # homing_mailbox_envelopes
    m.swim_probe("ack")                               # homing_swim_probes_total{result}
    m.packet_refused(Layer.SWIM, Refusal.FORGED[, n]) # homing_packets_refused_total{layer,reason}
    m.peer_links.set(n)                               # homing_peer_links
    m.set_peer_time(handled_s, throttled_s)           # homing_peer_{handle,throttled}_seconds_total, from totals
    m.set_swim_drops(total)                           # homing_swim_receive_drops_total, from the kernel's count
    m.push_result("sent" | reason)                    # homing_pushes_sent_total / homing_pushes_failed_total{reason}
    m.push_subscriptions.set(n)                       # homing_push_subscriptions

Label values come from fixed tables below; a value outside its table is counted under `other`, so a peer that
sends made-up message kinds cannot grow the number of time series (cardinality is bounded by construction).

What to count where (so dashboards and the alert rules in deploy/prometheus/ mean the same thing on every node):
- `envelope(kind, outcome)`: on the sender's node, once per receipt sent to the sender (`queued` and the later
  terminal status both count); `outcome` is the receipt status (delivered, queued, expired, cancelled, rejected).
- `relay_seconds`: from an envelope's arrival on the sender's node to its `delivered` receipt being queued.
- `swim_probe(result)`: once per probe round: `ack` (direct ack in time), `indirect_ack` (only an indirect probe
  answered), `failed` (no ack: the member becomes suspect).
- `packet_refused(layer, reason)`: every input dropped at a trust boundary; layer in swim, peer, client, registry,
  http (what the node's metrics/health HTTP server refuses itself: node/net/httpserver.py).
- `mailbox_envelopes`: envelopes currently held in this node's mailboxes (replicas included).
- `set_peer_time(handled_s, throttled_s)`: the peer links' running totals (node/net/peers.py), read when metrics
  are rendered: CPU seconds spent decrypting, decoding and handling what peer links sent, and seconds links were
  left unread because they had spent their budget (`[peers] handle_cpu_per_s`). Throttled seconds that grow mean a
  member sends more than an honest one does.
- `set_swim_drops(total)`: the kernel's count of datagrams it dropped for the SWIM socket with its receive buffer
  full (node/net/listen.py `udp_drops`), read when metrics are rendered. Growth means the node did not read fast
  enough: a stalled or starved process, or a flood (docs/swim.md, "Receive buffer").
- `push_result`: once per push the relay decided to send (on the one owner that sends it): `sent`, or why it was
  not (docs/operations.md, "Push wake-up"); `push_subscriptions`: subscriptions held as a rendezvous owner.
"""

from __future__ import annotations

import platform
from collections.abc import Mapping

from node import __version__
from node.app.buildinfo import git_commit
from node.app.promtext import CONTENT_TYPE, Counter, Gauge, Histogram, Registry
from node.protocol.refusals import Layer, Refusal

# push wake-up (node/net/push.py FAIL_REASONS; kept here as data so metrics import nothing from the drivers)
PUSH_FAIL_REASONS = (
    "refused_scheme",
    "refused_host",
    "refused_address",
    "unresolvable",
    "redirect",
    "gone",
    "rejected",
    "server_error",
    "network",
    "queue_full",
    "rate_limited",
)

MEMBER_STATES = ("alive", "suspect", "dead", "left")
ENVELOPE_KINDS = ("call_offer", "call_answer", "call_reject", "call_hangup", "call_ice")
ENVELOPE_OUTCOMES = ("delivered", "queued", "expired", "cancelled", "rejected")
PROBE_RESULTS = ("ack", "indirect_ack", "failed")
OTHER = "other"
# 0.1 ms .. 1 s: a same-node relay is well under a millisecond, a cross-node hop a few ms, a slow path 100s of ms.
RELAY_BUCKETS_S = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)

# Every metric name as it appears in the rendered text (counters get `_total`), for tests and docs.
METRIC_NAMES = (
    "homing_members",
    "homing_member_changes_total",
    "homing_clients_connected",
    "homing_envelopes_total",
    "homing_relay_seconds",
    "homing_mailbox_envelopes",
    "homing_swim_probes_total",
    "homing_packets_refused_total",
    "homing_peer_links",
    "homing_peer_handle_seconds_total",
    "homing_peer_throttled_seconds_total",
    "homing_build_info",
    "homing_pushes_sent_total",
    "homing_pushes_failed_total",
    "homing_push_subscriptions",
)


def _label(value: str, allowed: tuple[str, ...]) -> str:
    return value if value in allowed else OTHER


class NodeMetrics:
    """Every metric of one node, registered on its own Registry."""

    CONTENT_TYPE = CONTENT_TYPE

    def __init__(self, *, version: str = __version__, registry: Registry | None = None) -> None:
        self.registry = registry if registry is not None else Registry()
        r = self.registry
        self.members = Gauge("homing_members", "Members this node knows, by SWIM state.", ["state"], registry=r)
        self.member_changes = Counter(
            "homing_member_changes", "Member state changes this node observed, by new state.", ["state"], registry=r
        )
        self.clients_connected = Gauge(
            "homing_clients_connected", "Client WebSocket connections past the handshake.", registry=r
        )
        self.envelopes = Counter(
            "homing_envelopes", "Receipts sent to senders, by kind and status.", ["kind", "outcome"], registry=r
        )
        self.relay_seconds = Histogram(
            "homing_relay_seconds",
            "Seconds from an envelope's arrival to its delivered receipt.",
            buckets=RELAY_BUCKETS_S,
            registry=r,
        )
        self.mailbox_envelopes = Gauge(
            "homing_mailbox_envelopes", "Envelopes waiting in this node's mailboxes (replicas included).", registry=r
        )
        self.swim_probes = Counter("homing_swim_probes", "SWIM probe rounds, by result.", ["result"], registry=r)
        self.packets_refused = Counter(
            "homing_packets_refused",
            "Inputs dropped at a trust boundary (HTTP requests the server refuses itself too), by layer and reason.",
            ["layer", "reason"],
            registry=r,
        )
        self.peer_links = Gauge("homing_peer_links", "Open node-to-node peer links.", registry=r)
        self.peer_handle_seconds = Counter(
            "homing_peer_handle_seconds",
            "CPU seconds spent decrypting, decoding and handling what peer links sent.",
            registry=r,
        )
        self.peer_throttled_seconds = Counter(
            "homing_peer_throttled_seconds",
            "Seconds peer links were not read because they had spent their CPU budget.",
            registry=r,
        )
        self.swim_receive_drops = Counter(
            "homing_swim_receive_drops",
            "SWIM datagrams the kernel dropped because the socket's receive buffer was full (Linux).",
            registry=r,
        )
        self.build_info = Gauge(
            "homing_build_info",
            "Always 1; labels name the running build (commit: the git commit when run from a checkout).",
            ["version", "commit", "python"],
            registry=r,
        )
        self.build_info.labels(version=version, commit=git_commit(), python=platform.python_version()).set(1)
        self.pushes_sent = Counter("homing_pushes_sent", "Wake-up pushes accepted by a push service.", registry=r)
        self.pushes_failed = Counter(
            "homing_pushes_failed", "Wake-up pushes not sent or refused, by reason.", ["reason"], registry=r
        )
        self.push_subscriptions = Gauge(
            "homing_push_subscriptions", "Push subscriptions held as a rendezvous owner.", registry=r
        )
        self._preset_labels()

    def _preset_labels(self) -> None:
        """Create the known series at 0, so rate() and alert rules see them before the first event."""
        for state in MEMBER_STATES:
            self.members.labels(state=state).set(0)
            self.member_changes.labels(state=state)
        for kind in ENVELOPE_KINDS:
            for outcome in ENVELOPE_OUTCOMES:
                self.envelopes.labels(kind=kind, outcome=outcome)
        for result in PROBE_RESULTS:
            self.swim_probes.labels(result=result)
        for reason in PUSH_FAIL_REASONS:
            self.pushes_failed.labels(reason=reason)
        # every (layer, reason) child (the one vocabulary: node/protocol/refusals.py) made once: a refusal is counted
        # per refused packet, during a flood too, and the label lookup made it ~7 µs here, the two enums' ~2 µs
        self._refused = {
            (layer, reason): self.packets_refused.labels(layer=layer.value, reason=reason.value)
            for layer in Layer
            for reason in Refusal
        }

    def set_members(self, counts: Mapping[str, int]) -> None:
        """Set homing_members{state} from a state -> count map; states missing from it become 0, unknown ones
        are ignored (the four SWIM states are fixed by docs/operations.md)."""
        for state in MEMBER_STATES:
            self.members.labels(state=state).set(counts.get(state, 0))

    def set_peer_time(self, handled_s: float, throttled_s: float) -> None:
        """Bring the peer-link time counters up to the links' running totals (node/net/peers.py)."""
        self.peer_handle_seconds.advance_to(handled_s)
        self.peer_throttled_seconds.advance_to(throttled_s)

    def set_swim_drops(self, total: int) -> None:
        """Bring homing_swim_receive_drops up to the kernel's running count for the SWIM socket (node/net/listen.py
        `udp_drops`)."""
        self.swim_receive_drops.advance_to(total)

    def member_changed(self, state: str) -> None:
        self.member_changes.labels(state=_label(state, MEMBER_STATES)).inc()

    def envelope(self, kind: str, outcome: str, count: int = 1) -> None:
        self.envelopes.labels(kind=_label(kind, ENVELOPE_KINDS), outcome=_label(outcome, ENVELOPE_OUTCOMES)).inc(count)

    def swim_probe(self, result: str) -> None:
        self.swim_probes.labels(result=_label(result, PROBE_RESULTS)).inc()

    def packet_refused(self, layer: Layer, reason: Refusal, count: int = 1) -> None:
        self._refused[layer, reason].inc(count)

    def push_result(self, outcome: str) -> None:
        if outcome == "sent":
            self.pushes_sent.inc()
        else:
            self.pushes_failed.labels(reason=_label(outcome, PUSH_FAIL_REASONS)).inc()

    def render(self) -> bytes:
        """This node's metrics in the Prometheus text format (for `GET /metrics`)."""
        return self.registry.render()
