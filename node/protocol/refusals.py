"""One vocabulary for refused input: why something from the network was dropped at a trust boundary.

Rules
1. Every drop at a trust boundary (SWIM datagram, peer-link frame or handshake, client frame or connection,
   registry request, a request the HTTP server node/net/httpserver.py refuses on its own) is named by one
   `Refusal`. Exceptions carry it (`RemoteProtocolError.refusal`), drivers report it through their metrics port
   (the HTTP server through its `on_refused`), metrics label it, logs name it: nobody recovers a reason from text.
2. The values are the `reason` label of `homing_packets_refused_total{layer,reason}` (docs/operations.md), so
   adding a member adds a label value; renaming one breaks dashboards and alerts.
3. `Layer` says where: the label `layer` of the same metric.
4. The client protocol has its own, smaller vocabulary on the wire (`error.code`, `receipt.reason`,
   docs/client-protocol.md); `for_client_code` maps those codes into this one.
"""

from __future__ import annotations

import enum


class Layer(enum.Enum):
    """Where an input was refused (the metric's `layer` label)."""

    SWIM = "swim"
    PEER = "peer"
    CLIENT = "client"
    REGISTRY = "registry"
    HTTP = "http"  # the node's own HTTP server (metrics and health: node/app/ops.py), before a handler sees a request


class Refusal(enum.Enum):
    """Why an input was refused (the metric's `reason` label)."""

    FORGED = "forged"  # authentication failed: a bad box, signature or handshake proof
    REPLAYED = "replayed"  # authentic but seen before, or older than what was seen
    MALFORMED = "malformed"  # not decodable, wrong schema, unknown type, a protocol step out of order or too late
    OVERSIZED = "oversized"  # over a size limit
    RATE_LIMITED = "rate_limited"  # over a budget: rate, connections, queue (a slow reader), quota
    UNADMITTED = "unadmitted"  # from a key that is not a federation member


_CLIENT_CODES = {
    "bad_request": Refusal.MALFORMED,
    "unknown_type": Refusal.MALFORMED,
    "too_large": Refusal.OVERSIZED,
    "rate_limited": Refusal.RATE_LIMITED,
    "auth_failed": Refusal.FORGED,
}


def for_client_code(code: str) -> Refusal:
    """The refusal behind a client-protocol error code (docs/client-protocol.md); unknown codes are malformed."""
    return _CLIENT_CODES.get(code, Refusal.MALFORMED)
