"""The decoy web server's driver: answers a connection that is not a client upgrade like nginx would (docs/security.md).

The rules and the bytes are in node/protocol/decoy.py; this reads the request heads from the socket and the files
from `[clients] decoy_dir`. Bounded: head bytes, requests per connection, seconds idle, bytes of a file and of a
request body skipped. A file outside the root (a symlink out of it) is a 404, as for a missing one.
"""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path

import attrs
import trio

from node.protocol.decoy import (
    HEAD_BYTES_MAX,
    INDEX,
    FileInfo,
    Head,
    body_bytes,
    error_response,
    file_header,
    parse_head,
    route,
    split_head,
)


@attrs.frozen(kw_only=True, slots=True)
class DecoySite:
    root: Path | None  # None: an empty site
    port: int  # the port the client reached (for a directory's 301 Location)
    idle_timeout_s: float = 75.0  # nginx keepalive_timeout
    requests_max: int = 100  # answers per connection
    file_bytes_max: int = 1024 * 1024  # a bigger file is answered 404 (files are read on the event loop)


def look_up(site: DecoySite, path: str) -> tuple[FileInfo, Path | None]:
    """What is at the request `path` under the site's root, and the file to send for a 200."""
    if site.root is None:
        return (FileInfo(kind="dir") if path == "/" else FileInfo(kind="missing")), None
    root = site.root.resolve()
    target = (root / path.lstrip("/")).resolve()
    if target != root and root not in target.parents:
        return FileInfo(kind="missing"), None
    try:
        st = target.stat()
    except OSError:
        return FileInfo(kind="missing"), None
    if target.is_dir():
        index = target / INDEX
        try:
            ist = index.stat()
        except OSError:
            return FileInfo(kind="dir"), None
        if not index.is_file() or ist.st_size > site.file_bytes_max:
            return FileInfo(kind="dir"), None
        return FileInfo(kind="dir", index=FileInfo(kind="file", size=ist.st_size, mtime=int(ist.st_mtime))), index
    if not target.is_file() or st.st_size > site.file_bytes_max:
        return FileInfo(kind="missing"), None
    return FileInfo(kind="file", size=st.st_size, mtime=int(st.st_mtime)), target


def answer(site: DecoySite, head: Head, now: float) -> bytes:
    """The whole answer to one parsed request."""
    info, path = look_up(site, head.path) if not head.bad else (FileInfo(kind="missing"), None)
    status = route(head, info)
    if status != 200 or path is None:
        return error_response(status, head, now=now, port=site.port)
    shown = info.index if info.index is not None else info
    try:
        with open(path, "rb") as fh:
            body = fh.read(site.file_bytes_max + 1)
    except OSError:
        return error_response(404, head, now=now, port=site.port)
    shown = FileInfo(kind="file", size=len(body), mtime=shown.mtime)
    header = file_header(head, shown, str(path), now=now)
    return header if head.method == "HEAD" else header + body


async def serve_decoy(stream: trio.abc.Stream, buf: bytes, site: DecoySite) -> None:
    """Answer requests on `stream` (`buf`: bytes already read) until the client closes or a limit is reached."""
    for _ in range(site.requests_max):
        got = split_head(buf)
        with trio.move_on_after(site.idle_timeout_s):
            while got is None:
                if len(buf) > HEAD_BYTES_MAX:
                    return
                data = await _receive(stream)
                if not data:
                    return
                buf += data
                got = split_head(buf)
        if got is None:
            return
        raw, buf = got
        head = parse_head(raw)
        skip = 0 if head.bad else body_bytes(head)
        await _send(stream, answer(site, head, time.time()))
        if head.bad or not head.keep_alive or skip is None:
            return
        while len(buf) < skip:
            data = b""
            with trio.move_on_after(site.idle_timeout_s):
                data = await _receive(stream)
            if not data:
                return
            buf += data
        buf = buf[skip:]


async def read_head(stream: trio.abc.Stream, head: bytes, bytes_max: int) -> tuple[bytes, bytes] | None:
    """(a whole request head, the bytes after it), or None when the stream ends or the head exceeds `bytes_max`.
    The client port reads every request's head with this before it decides: upgrade at its path, or the decoy."""
    buf = head
    while True:
        got = split_head(buf)
        if got is not None:
            return got
        if len(buf) > bytes_max:
            return None
        try:
            data = bytes(await stream.receive_some(bytes_max))
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return None
        if not data:
            return None
        buf += data


async def _receive(stream: trio.abc.Stream) -> bytes:
    try:
        return bytes(await stream.receive_some(HEAD_BYTES_MAX))
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        return b""


async def _send(stream: trio.abc.Stream, data: bytes) -> None:
    with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
        await stream.send_all(data)


def site_root(decoy_dir: str) -> Path | None:
    return Path(os.path.expanduser(decoy_dir)) if decoy_dir else None
