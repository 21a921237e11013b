"""Who may be a federation member (docs/protocol.md, docs/discovery.md "Newest list per registry"). Pure.

A node id is admitted when any of these holds:
- `[federation] open = true` (private test clusters only);
- it is in `[federation] allow`;
- it is in the newest unexpired node list signed by a trusted registry key (`--trust`), in its `nodes` or its
  `members` (bridge ids, docs/discovery.md "Bridges": federation members that are never handed out to clients).
Ourselves are always admitted. With no trust keys, no allow list and open = false, a node admits only itself:
the CLI refuses that combination with a clear message unless there is nothing to join.

Newest list per signer: for each registry key only the list with the highest `issued` seen so far counts, never a
merge of old and new. A mirror, a stale DoH record or anyone on path serving a list from before a ban is ignored
once a newer list from the same key was seen, so a ban ends admission at the next refresh that sees the new list.
A list is dropped when it expires (`expires`); lists from different keys are united.
"""

from __future__ import annotations

from collections.abc import Iterable

import attrs


@attrs.frozen(kw_only=True, slots=True)
class SignerList:
    issued: int
    expires: int
    ids: frozenset[bytes]


class Admission:
    def __init__(self, *, self_id: bytes, open_: bool, allow: Iterable[bytes]) -> None:
        self.self_id = self_id
        self.open = open_
        self.allow = frozenset(allow)
        self.registry_listed: frozenset[bytes] = frozenset()
        self.lists: dict[bytes, SignerList] = {}  # registry key -> its newest list seen
        self.version = 0  # bumps whenever the admitted set may have shrunk or grown

    def offer_list(self, signer: bytes, *, issued: int, expires: int, ids: Iterable[bytes]) -> bool:
        """A verified list from `signer`: kept when it is newer than the one held (an older or equal `issued` is
        ignored). Returns True when it was taken. Call `refresh(now)` after offering a round of lists."""
        held = self.lists.get(signer)
        if held is not None and issued <= held.issued:
            return False
        self.lists[signer] = SignerList(issued=issued, expires=expires, ids=frozenset(ids))
        return True

    def refresh(self, now: float) -> bool:
        """Drop expired lists and recompute the registry-listed ids; True when the admitted set changed."""
        self.lists = {k: v for k, v in self.lists.items() if now <= v.expires}
        new = frozenset().union(*(v.ids for v in self.lists.values())) if self.lists else frozenset()
        if new == self.registry_listed:
            return False
        self.registry_listed = new
        self.version += 1
        return True

    def admits(self, node_id: bytes) -> bool:
        return self.open or node_id == self.self_id or node_id in self.allow or node_id in self.registry_listed

    def describe(self) -> str:
        if self.open:
            return "open"
        return f"allow={len(self.allow)} registry={len(self.registry_listed)}"
