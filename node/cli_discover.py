"""`homing discover`, `homing card`, `homing qr` (client-side discovery, CONTRACT §6)."""

from __future__ import annotations

from typing import Any


def register(sub: Any) -> None:
    """Filled in by the discovery work."""
