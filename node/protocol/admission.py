"""Who may be a federation member (docs/protocol.md). Pure.

A node id is admitted when any of these holds:
- `[federation] open = true` (private test clusters only);
- it is in `[federation] allow`;
- it is in the newest node list signed by a trusted registry key (`--trust`), as last fetched.
Ourselves are always admitted. With no trust keys, no allow list and open = false, a node admits only itself:
the CLI refuses that combination with a clear message unless there is nothing to join.
"""

from __future__ import annotations

from collections.abc import Iterable


class Admission:
    def __init__(self, *, self_id: bytes, open_: bool, allow: Iterable[bytes]) -> None:
        self.self_id = self_id
        self.open = open_
        self.allow = frozenset(allow)
        self.registry_listed: frozenset[bytes] = frozenset()
        self.version = 0  # bumps whenever the admitted set may have shrunk or grown

    def update_registry_list(self, ids: Iterable[bytes]) -> bool:
        """Replace the ids from trusted registry lists; True when the set changed."""
        new = frozenset(ids)
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
