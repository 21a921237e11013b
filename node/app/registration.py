"""What this node knows about its own registrations (docs/operations.md "Registration state").

`RegistrationStatus.on_result` is the callback `register_forever` reports every attempt to. Per registry URL it
keeps the last state, the last successful heartbeat and the last refusal, for `homing node status` (the
`registrations` field of GET /v1/members) and for two metrics:

- `homing_registration_state{registry,state}`: 1 for the registry's current state, 0 for the others;
- `homing_registration_last_success_timestamp_seconds{registry}`: unix time of the last accepted heartbeat.

States: `approved` and `pending` (the registry's answer), `banned` (403), `refused` (400: a registry refusing the
document), `untrusted` (the registry's list is not signed by a `--trust` key: the node does not register there),
`unreachable` (no answer, 5xx, 429) and `unknown` (no attempt yet). The `registry` label is one of the configured
`[federation] bootstrap` URLs, so the series are bounded by the config.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import attrs

from node.app.promtext import Gauge, Registry
from node.app.registry import Result

REGISTRATION_STATES = ("approved", "pending", "banned", "refused", "untrusted", "unreachable", "unknown")
UNTRUSTED_PREFIX = "registry key not learnt"  # node/app/registry.py learn_registry_key


def state_of(result: Result) -> str:
    """The registration state one attempt's result shows."""
    if result.ok:
        return result.status if result.status in ("approved", "pending") else "refused"
    if result.http_status == 403:
        return "banned"
    if result.http_status == 400:
        return "refused"
    if result.reason.startswith(UNTRUSTED_PREFIX):
        return "untrusted"
    return "unreachable"


@attrs.define(kw_only=True, slots=True)
class _Entry:
    state: str = "unknown"
    last_success: float | None = None  # unix seconds of the last accepted registration
    last_attempt: float | None = None
    reason: str = ""  # the last refusal or failure, as the registry or the network said it


class RegistrationStatus:
    """Registration state per configured registry URL, with its metrics on `registry` (the node's registry)."""

    def __init__(self, urls: Sequence[str], registry: Registry, *, wall_clock: Callable[[], float] = time.time) -> None:
        self.wall_clock = wall_clock
        self._entries: dict[str, _Entry] = {url: _Entry() for url in dict.fromkeys(urls)}
        self.state_gauge = Gauge(
            "homing_registration_state",
            "1 for this node's registration state at each registry (approved, pending, banned, refused, ...).",
            ["registry", "state"],
            registry=registry,
        )
        self.last_success_gauge = Gauge(
            "homing_registration_last_success_timestamp_seconds",
            "Unix time of the last registration (heartbeat) a registry accepted; 0 before the first.",
            ["registry"],
            registry=registry,
        )
        for url in self._entries:
            self._export(url)

    def on_result(self, result: Result) -> None:
        entry = self._entries.get(result.url)
        if entry is None:
            return  # not a configured registry: never a new label value
        now = self.wall_clock()
        entry.state = state_of(result)
        entry.last_attempt = now
        if result.ok:
            entry.last_success = now
            entry.reason = ""
        else:
            entry.reason = result.reason[:200]
        self._export(result.url)

    def _export(self, url: str) -> None:
        entry = self._entries[url]
        for state in REGISTRATION_STATES:
            self.state_gauge.labels(registry=url, state=state).set(1 if state == entry.state else 0)
        self.last_success_gauge.labels(registry=url).set(entry.last_success or 0)

    def document(self) -> list[dict[str, Any]]:
        """The `registrations` field of GET /v1/members."""
        return [
            {
                "registry": url,
                "state": e.state,
                "last_success": None if e.last_success is None else int(e.last_success),
                "last_attempt": None if e.last_attempt is None else int(e.last_attempt),
                "reason": e.reason,
            }
            for url, e in self._entries.items()
        ]
