"""What one sender id and one source address may hold at an origin node, pure (docs/protocol.md, "Budgets").

The origin node (the sender's node) is the only node that knows a sender's connection address, so the budgets
that must hold across fresh keys and reconnects are kept here, keyed by the connection's address key (/32 IPv4,
/64 IPv6, node/protocol/ratelimit.address_key):
- envelopes awaiting their terminal receipt, per sender id (`pending_per_id_max`) and per address
  (`pending_per_address_max`);
- envelopes in the mailbox path (stored at the owners) per address, by count (`mailbox_per_address_max`) and body
  bytes (`mailbox_bytes_per_address_max`), so one address cannot make the owners store more than that; and per
  address and recipient (`mailbox_per_address_per_id_max`), so fresh sender ids minted at one address cannot take
  a callee's whole mailbox between them (the owners' per-sender share of one mailbox does not see addresses).
Owners bound what each origin node may store with them (node/protocol/relay/owner.py), so a hostile member is
bounded there the same way.
"""

from __future__ import annotations

from typing import TypeVar

from node.protocol.relay.rendezvous import ENTRY_OVERHEAD_BYTES
from node.protocol.settings import RelaySection

K = TypeVar("K")


def _bump(counter: dict[K, int], key: K, n: int) -> None:
    total = counter.get(key, 0) + n  # plain dict operations: Counter's are Python-level (per-envelope path)
    if total > 0:
        counter[key] = total
    else:
        counter.pop(key, None)


class OriginBudgets:
    def __init__(self, config: RelaySection) -> None:
        self.config = config
        self._pending_by_id: dict[bytes, int] = {}
        self._pending_by_addr: dict[str, int] = {}
        self._mail_by_addr: dict[str, int] = {}
        self._mail_bytes_by_addr: dict[str, int] = {}
        self._mail_by_addr_to: dict[tuple[str, bytes], int] = {}  # (address, recipient) -> envelopes

    def pending_admit(self, sender: bytes, addr: str) -> bool:
        c = self.config
        return self._pending_by_id.get(sender, 0) < c.pending_per_id_max and self._pending_by_addr.get(addr, 0) < (
            c.pending_per_address_max
        )

    def pending(self, sender: bytes, addr: str, sign: int) -> None:
        _bump(self._pending_by_id, sender, sign)
        _bump(self._pending_by_addr, addr, sign)

    def mail_admit(self, addr: str, to: bytes, body_bytes: int, *, hangup: bool = False) -> bool:
        """May one more envelope from `addr` to `to` enter the mailbox path? A call_hangup (`hangup`) fits one over
        the share of one recipient, so a caller whose call took all of it can still end it (cancel by hangup)."""
        c = self.config
        size = body_bytes + ENTRY_OVERHEAD_BYTES
        return (
            self._mail_by_addr.get(addr, 0) < c.mailbox_per_address_max
            and self._mail_bytes_by_addr.get(addr, 0) + size <= c.mailbox_bytes_per_address_max
            and self._mail_by_addr_to.get((addr, to), 0) < c.mailbox_per_address_per_id_max + hangup
        )

    def mail(self, addr: str, to: bytes, body_bytes: int, sign: int) -> None:
        """An envelope from `addr` to `to` entered (`sign` 1) or left (-1) the mailbox path (its terminal receipt)."""
        _bump(self._mail_by_addr, addr, sign)
        _bump(self._mail_bytes_by_addr, addr, sign * (body_bytes + ENTRY_OVERHEAD_BYTES))
        _bump(self._mail_by_addr_to, (addr, to), sign)
