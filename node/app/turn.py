"""The node's ICE-server port (docs/operations.md, "TURN"): reads the secret shared with coturn, answers `ice_servers`.

The secret file is checked like a key file (refused when others may read it) and re-read when its mtime, size or
inode changes, at most every SECRET_CHECK_S, so rotating the secret (write a new file, then reload coturn) needs no
node restart. A file that becomes unreadable or invalid keeps the last good secret and logs a warning; with no good
secret at all clients get the STUN URLs only. The credential arithmetic is pure: node/protocol/turn.py.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from node.app.log import Logger
from node.client.files import read_private_file
from node.protocol.errors import ConfigError
from node.protocol.settings import TurnSection
from node.protocol.turn import IceIssuer, check_secret
from node.protocol.wire.client import IceServerEntry, IceServers

SECRET_CHECK_S = 5.0  # how often (at most) a request looks at the secret file again


def read_secret(path: Path) -> tuple[bytes, float]:
    """The secret in `path` (surrounding whitespace stripped) and the file's mtime. Raises ConfigError."""
    data = read_private_file(path, what="TURN secret file", others_mask=0o027, bytes_max=4096)
    try:
        mtime = path.stat().st_mtime
    except OSError as exc:
        raise ConfigError(str(path), f"cannot read the TURN secret file: {exc.strerror or exc}") from exc
    try:
        return check_secret(data.strip()), mtime
    except ConfigError as exc:
        raise ConfigError(str(path), exc.reason) from exc


class TurnService:
    """Implements node.net.clients.IceServersPort. `now` is the trio clock, `wall` the unix clock."""

    def __init__(
        self,
        config: TurnSection,
        *,
        now: Callable[[], float],
        wall: Callable[[], float] = time.time,
        log: Logger | None = None,
    ) -> None:
        self.config = config
        self._now, self._wall, self._log = now, wall, log
        self._issuer = IceIssuer(
            urls=config.urls,
            ttl_s=config.ttl_s,
            rate_per_s=config.request_rate_per_s,
            burst=config.request_burst,
            ids_per_address_max=config.ids_per_address_max,
        )
        self._path = Path(config.secret_file) if config.secret_file else None
        self._secret: bytes | None = None
        self._stamp: tuple[float, int, int] | None = None
        self.secret_changed_s: float | None = None  # the mtime of the secret file we use
        self._checked = -float("inf")
        if self._path is not None:
            self._secret, self.secret_changed_s = read_secret(self._path)  # at start a bad file is fatal
            self._stamp = self._file_stamp()
            self._checked = now()

    def _file_stamp(self) -> tuple[float, int, int] | None:
        assert self._path is not None
        try:
            st = self._path.stat()
        except OSError:
            return None
        return (st.st_mtime, st.st_size, st.st_ino)

    def refresh(self) -> None:
        """Re-read the secret file if it changed (rotation); keep the last good secret if the new one is bad."""
        if self._path is None:
            return
        self._checked = self._now()
        stamp = self._file_stamp()
        if stamp == self._stamp:
            return
        try:
            secret, mtime = read_secret(self._path)
        except ConfigError as exc:
            if self._log is not None:
                self._log.warning("turn_secret_unusable", path=str(self._path), error=exc.reason)
            return
        self._stamp = stamp
        if secret != self._secret and self._log is not None:
            self._log.info("turn_secret_changed", path=str(self._path))
        self._secret, self.secret_changed_s = secret, mtime

    def ice_servers(self, conn_id: int, client_id: bytes, address_key: str) -> IceServers | None:
        if self._now() - self._checked >= SECRET_CHECK_S:
            self.refresh()
        servers = self._issuer.request(
            conn_id=conn_id,
            client_id=client_id,
            address=address_key,
            secret=self._secret,
            now=self._now(),
            wall_s=self._wall(),
        )
        if servers is None:
            return None
        # a credential lasts ttl_s; the STUN URLs alone (no secret, or rule T1) carry nothing to renew: 0, ask again
        ttl = self.config.ttl_s if any(s.credential is not None for s in servers) else 0
        entries = tuple(IceServerEntry(urls=s.urls, username=s.username, credential=s.credential) for s in servers)
        return IceServers(ttl=ttl, servers=entries)

    def status(self) -> dict[str, Any]:
        """The `turn` field of /v1/members (`homing node status`)."""
        return {
            "configured": self._secret is not None,
            "urls": list(self.config.urls),
            "realm": self.config.realm,
            "ttl_s": self.config.ttl_s,
            "secret_changed": None if self.secret_changed_s is None else int(self.secret_changed_s),
            "ids_per_address_max": self.config.ids_per_address_max,
            # refused `ice_servers` requests since start, by what refused them (node/protocol/turn.py)
            "refused": {k: self._issuer.refused[k] for k in ("connection", "id", "address")},
        }
