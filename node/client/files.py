"""Files on disk that nodes, registries and clients share: key files (an Ed25519 seed, mode 0600) and atomic writes."""

from __future__ import annotations

import errno
import fcntl
import json
import os
import stat
import tempfile
from pathlib import Path
from typing import Any

from node.protocol.errors import ConfigError, HomingError, StorageError
from node.protocol.identity import Identity, b64u_decode, b64u_encode


def read_private_file(path: Path, *, what: str, others_mask: int = 0o077, bytes_max: int = 64 * 1024) -> bytes:
    """The bytes of a secret file, refused when group/others may access it beyond `others_mask` (ssh's rule for
    keys: 0o077; a secret shared with another daemon's group: 0o027) or when it is larger than `bytes_max`."""
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & others_mask:
            allowed = "600" if others_mask == 0o077 else "600 or 640"
            raise ConfigError(str(path), f"{what} is accessible by others (mode {mode:o}); chmod {allowed} it")
        with path.open("rb") as f:
            data = f.read(bytes_max + 1)
    except OSError as exc:
        raise ConfigError(str(path), f"cannot read the {what}: {exc.strerror or exc}") from exc
    if len(data) > bytes_max:
        raise ConfigError(str(path), f"{what} is too large")
    return data


def ensure_writable_dir(path: Path, *, key: str, mode: int = 0o777) -> None:
    """`path` is (made) a directory this process can create files in, or a ConfigError naming `key` says why.

    A node keeps its key, ports.json and boot epoch there; without this check a data directory owned by another
    user (`sudo homing node init`, then the service as `homing`) or a path that is a file ended the start in a
    traceback. A restart will not fix it, so it is a config error: exit 2, which the systemd unit does not retry.
    `mode` is the new directory's (less the umask), as for `Path.mkdir`."""
    try:
        path.mkdir(mode=mode, parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write-check.", dir=path)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        user = _user_name()
        raise ConfigError(
            key, f"{path}: {exc.strerror or exc}; it must be a directory that {user} can write"
        ) from exc


LOCK_NAME = "lock"


def lock_dir(path: Path, *, what: str) -> int:
    """Hold `path`/lock (an exclusive `flock`) for the rest of this process, or raise HomingError naming the
    process that holds it. Returns the lock's descriptor, which stays open (the kernel lets go of the lock when the
    process ends, by kill -9 too, so a stale file never locks anyone out).

    Two nodes started with one data dir (a manual `homing node run` beside the systemd service) would be one key,
    so one member, to the federation, each refuting the other's records, while the second overwrote the first's
    ports.json: the second is refused before it binds anything."""
    try:
        fd = os.open(path / LOCK_NAME, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise StorageError(str(path / LOCK_NAME), exc) from exc
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
        os.close(fd)
        if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
            raise ConfigError(str(path), f"cannot lock {path / LOCK_NAME}: {exc.strerror or exc}") from exc
        raise HomingError(
            f"another {what} (pid {holder}) is running with the data dir {path}: stop it first, or give this one "
            "its own --data-dir"
        ) from exc
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)  # the first write of a start: a full disk shows here
    except OSError as exc:
        os.close(fd)
        raise StorageError(str(path / LOCK_NAME), exc) from exc
    return fd


def _user_name() -> str:
    try:
        import pwd

        return f"the user {pwd.getpwuid(os.geteuid()).pw_name!r}"
    except (ImportError, KeyError):
        return "this user"


def create_private_file(path: Path, data: bytes) -> None:
    """Create `path` with mode 0600 holding `data`; never overwrites (a second creator gets FileExistsError).

    Whole or not at all: `data` goes to a temporary file (mkstemp: 0600 whatever the umask), is fsync'd, and is then
    hard-linked to `path`, which fails if `path` exists. A full disk or a crash mid-write leaves no `path`: a
    truncated key file would be refused at every start until an operator deleted it. Any other failure to write
    is a StorageError naming `path`."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.link(tmp, path)
        finally:
            os.unlink(tmp)
    except FileExistsError:
        raise
    except OSError as exc:
        raise StorageError(str(path), exc) from exc


def load_or_create_key(path: Path, *, create: bool = True) -> tuple[Identity, bool]:
    """Load the 32-byte seed at `path` (raw or base64url text), or create it with mode 0600.

    Returns (identity, created). Refuses a key file readable by group or others, as ssh does.
    """
    if path.exists():
        data = read_private_file(path, what="key file").strip()
        try:
            seed = data if len(data) == 32 else b64u_decode(data.decode("ascii"))
        except (ValueError, UnicodeDecodeError) as exc:
            raise ConfigError(str(path), "not a homing key file") from exc
        if len(seed) != 32:
            raise ConfigError(str(path), "not a homing key file")
        return Identity.from_seed(seed), False
    if not create:
        raise ConfigError(str(path), "key file does not exist (run `homing node init` first)")
    ident = Identity.generate()
    create_private_file(path, b64u_encode(ident.seed).encode("ascii") + b"\n")
    return ident, True


def write_atomic(path: Path, data: bytes, *, mode: int = 0o644) -> None:
    """Replace `path` with `data` so that a reader or a crash sees the old file or the new one, never a mix.

    A temporary file in the same directory (created with `mode`), written, fsync'd, then renamed over `path`.
    A failure to write (a full disk) leaves the old file as it was and is a StorageError naming `path`.
    """
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise StorageError(str(path), exc) from exc
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise StorageError(str(path), exc) from exc
        raise


def write_json_atomic(path: Path, obj: Any, *, mode: int = 0o644) -> None:
    """`write_atomic` of `obj` as one line of JSON (ports.json and the like)."""
    write_atomic(path, (json.dumps(obj) + "\n").encode(), mode=mode)
