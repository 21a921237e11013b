"""`record`: a frozen attrs class to the type checker, a plain slotted attrs class at run time.

Why: every relayed envelope builds a dozen small messages and commands (the client's envelope, its peer envelope,
the delivery, the result, the receipt, the commands that carry them). `attrs.frozen` sets each field of a new
instance through `object.__setattr__`, one call per field: a `PeerEnvelope` took 2.9-3.1 µs to build, its field
checks included, and takes 1.6 µs as a record; a delivery 1.3 µs, 0.8 as a record (this repository's 2-core machine
kind). In all, about a tenth of the relay path's CPU per envelope (docs/performance.md, "Ninth pass").

What holds:
- `mypy --strict` (run by CI on `node/` and `bootstrap/`) sees `attrs.frozen`: assigning to a field of a record is
  a type error, so no code of ours mutates one. That is the guarantee the code relies on (an envelope is shared
  by a pending entry, the loopback queue and the links' batches).
- At run time a record has `attrs.frozen`'s equality, hash (from its fields), slots, `attrs.evolve` and
  validators; only an assignment is not refused (no `FrozenInstanceError`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import attrs

__all__ = ["record"]

if TYPE_CHECKING:
    from attrs import frozen as record
else:

    def record(maybe_cls: Any = None, **kwargs: Any) -> Any:
        return attrs.define(maybe_cls, frozen=False, unsafe_hash=True, on_setattr=attrs.setters.NO_OP, **kwargs)
