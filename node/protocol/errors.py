"""One error hierarchy for homing.

Boundary strategy (after h11): a *Local* protocol error means we were asked to do something illegal
(a bug on our side); a *Remote* protocol error means a peer sent something illegal. Drivers catch
RemoteProtocolError at the boundary, answer with the error's `code` where the protocol has one, count it,
and carry on: an illegal input changes no state.
"""

from __future__ import annotations

import errno

from node.protocol.refusals import Refusal


class HomingError(Exception):
    """Base of every error homing raises on purpose."""


class ConfigError(HomingError):
    """A bad config key, value or flag. The CLI prints it on one line and exits 2."""

    def __init__(self, key: str, reason: str) -> None:
        super().__init__(f"{key}: {reason}")
        self.key = key
        self.reason = reason


class ListenError(HomingError):
    """A port this process was configured to listen on could not be opened (node/net/listen.py). The CLI prints
    it on one line and exits 1."""

    def __init__(self, address: str, key: str, reason: str) -> None:
        super().__init__(f"cannot listen on {address} ({key}): {reason}")
        self.address = address
        self.key = key
        self.reason = reason


class StorageError(HomingError):
    """A file this process keeps could not be written: a full disk, a quota, a read-only mount (node/client/files.py).
    The CLI prints it on one line and exits 1, so that a service restarts once the disk has room again; before,
    a full disk ended `homing node run` and `homing bootstrap run` in a traceback at the first file they wrote."""

    HINTS: dict[int, str] = {
        errno.ENOSPC: "the disk is full: free space on it, then start again",
        errno.EDQUOT: "this user's disk quota is used up: free space or raise the quota, then start again",
        errno.EROFS: "the file system is mounted read-only",
    }

    def __init__(self, path: str, exc: OSError) -> None:
        hint = self.HINTS.get(exc.errno or 0)
        super().__init__(f"cannot write {path}: {exc.strerror or exc}" + (f" ({hint})" if hint else ""))
        self.path = path
        self.errno = exc.errno


class ProtocolError(HomingError):
    """Something about a protocol exchange is wrong. `code` is the wire error code, when there is one."""

    code: str = "bad_request"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code


class LocalProtocolError(ProtocolError):
    """We tried to do something the protocol forbids."""


class RemoteProtocolError(ProtocolError):
    """The peer sent something the protocol forbids (malformed, oversized, unauthenticated...).

    `refusal` names it in the one vocabulary of node/protocol/refusals.py (metrics, logs)."""

    refusal: Refusal = Refusal.MALFORMED


class TooLarge(RemoteProtocolError):
    code = "too_large"
    refusal = Refusal.OVERSIZED


class BadSignature(RemoteProtocolError):
    """A signature did not verify, or the signer is not trusted."""

    code = "bad_signature"
    refusal = Refusal.FORGED


class Expired(RemoteProtocolError):
    """A signed document is outside its validity window."""

    code = "expired"
    refusal = Refusal.REPLAYED


class Replayed(RemoteProtocolError):
    """A packet or document was seen before (or is older than what was seen)."""

    code = "replayed"
    refusal = Refusal.REPLAYED


class OverBudget(RemoteProtocolError):
    """The input does not fit a budget (bytes held, a rate): refused without waiting."""

    code = "rate_limited"
    refusal = Refusal.RATE_LIMITED


class NotAdmitted(RemoteProtocolError):
    """The other side holds a key that is not a federation member."""

    code = "not_admitted"
    refusal = Refusal.UNADMITTED


class TransportError(HomingError):
    """A connection or socket failed (closed, reset, timed out). Drivers raise this instead of trio's errors."""
