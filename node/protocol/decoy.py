"""The decoy web server: what the client port answers to anything but a WebSocket upgrade at `[clients] path` (pure).

A prober that knows a node's address but not its client path must learn nothing homing-specific
(docs/security.md, "Censorship"). So every other request is answered the way a stock nginx (`server_tokens off`)
serving the static site in `[clients] decoy_dir` answers it, byte for byte apart from the `Date` header (an empty
site when no directory is set: `/` is 403, anything else 404). tests/censor/test_decoy.py compares the answers
with a real nginx serving the same directory.

Rules copied from nginx's behaviour (measured, not from its source):
- a request line that is not `METHOD SP /target SP HTTP/1.x` with an upper-case method, a target that climbs
  above `/`, or HTTP/1.1 without `Host` -> 400 and `Connection: close`; HTTP/2+ in the request line -> 505;
- a method other than GET, HEAD, POST -> 405; a missing file -> 404 (any method); a directory without its trailing
  slash -> 301 to `http://HOST:PORT/dir/` (the port left out when 80); a directory -> its index.html, else 403;
  POST to a file -> 405; GET/HEAD of a file -> 200 with Last-Modified, ETag `"<mtime hex>-<size hex>"` and
  Accept-Ranges;
- HTTP/1.0 (or `Connection: close`) closes after the answer, HTTP/1.1 keeps the connection open.

This module parses and formats; the driver (node/net/decoy.py) reads files and the socket. Time is passed in.
"""

from __future__ import annotations

import posixpath
from urllib.parse import unquote

import attrs

from node.protocol.numerals import decimal

SERVER = "nginx"
HEAD_BYTES_MAX = 8192
BODY_SKIP_BYTES_MAX = 64 * 1024  # a request body beyond this (or chunked) ends the connection after the answer
HEADERS_MAX = 100
INDEX = "index.html"

REASONS = {
    200: "OK",
    301: "Moved Permanently",
    400: "Bad Request",
    403: "Forbidden",
    404: "Not Found",
    405: "Not Allowed",
    505: "HTTP Version Not Supported",
}

# The content types of a small site; anything else is application/octet-stream (nginx `default_type`).
TYPES = {
    ".html": "text/html",
    ".htm": "text/html",
    ".css": "text/css",
    ".js": "application/javascript",
    ".txt": "text/plain",
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".gif": "image/gif",
    ".svg": "image/svg+xml",
    ".ico": "image/x-icon",
    ".json": "application/json",
    ".xml": "text/xml",
    ".woff2": "font/woff2",
}


@attrs.frozen(kw_only=True, slots=True)
class Head:
    """A parsed request head. `bad` is the status to answer at once (400, 505), 0 when it parsed."""

    method: str = ""
    path: str = ""  # percent-decoded, normalised, always starting with "/"
    target: str = ""  # the request line's target as sent (path and query)
    version: str = ""
    headers: tuple[tuple[str, str], ...] = ()  # lower-case names
    bad: int = 0

    def header(self, name: str) -> str:
        for key, value in self.headers:
            if key == name:
                return value
        return ""

    @property
    def keep_alive(self) -> bool:
        if self.bad == 400 or self.version != "HTTP/1.1":
            return False
        return "close" not in self.header("connection").lower()

    @property
    def is_upgrade(self) -> bool:
        return "websocket" in self.header("upgrade").lower()


@attrs.frozen(kw_only=True, slots=True)
class FileInfo:
    """What the driver found at a path under the site's root."""

    kind: str  # "file", "dir", "missing"
    size: int = 0
    mtime: int = 0
    index: FileInfo | None = None  # for a directory: its index.html, when it exists


def split_head(buf: bytes) -> tuple[bytes, bytes] | None:
    """(head, rest) once `buf` holds a whole request head (ending in a blank line), else None."""
    end = buf.find(b"\r\n\r\n")
    if end < 0:
        return None
    return buf[: end + 4], buf[end + 4 :]


def parse_head(raw: bytes) -> Head:
    try:
        text = raw.decode("latin-1")
    except UnicodeDecodeError:  # pragma: no cover - latin-1 decodes every byte
        return Head(bad=400)
    lines = text.split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3:
        return Head(bad=400)
    method, target, version = parts
    if not method.isalpha() or not method.isupper() or not version.startswith("HTTP/"):
        return Head(bad=400)
    if version not in ("HTTP/1.0", "HTTP/1.1"):
        major = version[5:].partition(".")[0]
        number = decimal(major)
        return Head(bad=505 if number is not None and number >= 2 else 400)
    headers: list[tuple[str, str]] = []
    for line in lines[1:]:
        if not line:
            continue
        name, sep, value = line.partition(":")
        if not sep or not name or name != name.strip() or len(headers) >= HEADERS_MAX:
            return Head(bad=400)
        headers.append((name.lower(), value.strip()))
    path = _normalise(target)
    if path is None:
        return Head(bad=400)
    head = Head(method=method, path=path, target=target, version=version, headers=tuple(headers))
    if version == "HTTP/1.1" and not head.header("host"):
        return Head(bad=400)
    if any(name == "content-length" for name, _ in headers) and not _content_length_ok(head.header("content-length")):
        return Head(bad=400)
    return head


def body_bytes(head: Head) -> int | None:
    """Bytes of request body to skip, or None when it cannot be skipped (chunked, too big, malformed)."""
    if head.header("transfer-encoding"):
        return None
    length = decimal(head.header("content-length") or "0")
    if length is None or length > BODY_SKIP_BYTES_MAX:
        return None
    return length


def _content_length_ok(text: str) -> bool:
    """nginx answers 400 to a Content-Length that is not a decimal number below 2**63 (ngx_atoof): "", "abc",
    "²" (which str.isdigit() takes for a digit) and 5,000 nines alike."""
    length = decimal(text)
    return length is not None and length < 2**63


def _normalise(target: str) -> str | None:
    """The decoded path of a request target, or None when it is malformed or climbs above the root."""
    path = target.partition("?")[0].partition("#")[0]
    if not path.startswith("/"):
        return None
    try:
        path = unquote(path, errors="strict") if "%" in path else path
    except UnicodeDecodeError:
        return None
    if "\x00" in path:
        return None
    depth = 0
    for seg in path.split("/"):
        if seg == "..":
            depth -= 1
            if depth < 0:
                return None
        elif seg not in ("", "."):
            depth += 1
    norm = posixpath.normpath(path)
    norm = "/" + norm.lstrip("/") if norm != "/" else "/"
    return norm + "/" if path.endswith("/") and norm != "/" else norm


def route(head: Head, info: FileInfo) -> int:
    """The status nginx answers `head` with, given what is at its path."""
    if head.bad:
        return head.bad
    if head.method not in ("GET", "HEAD", "POST"):
        return 405
    if info.kind == "missing":
        return 404
    if info.kind == "dir":
        if not head.path.endswith("/"):
            return 301
        if info.index is None:
            return 403
        info = info.index
    return 405 if head.method == "POST" else 200


def http_date(unix: float) -> str:
    import email.utils  # on the first decoy answer only: email is ~3 ms and ~0.4 MiB a node rarely needs (issue #17)

    return email.utils.formatdate(unix, usegmt=True)


def content_type(path: str) -> str:
    return TYPES.get(posixpath.splitext(path)[1].lower(), "application/octet-stream")


def error_body(status: int) -> bytes:
    title = f"{status} {REASONS[status]}"
    return (
        f"<html>\r\n<head><title>{title}</title></head>\r\n<body>\r\n<center><h1>{title}</h1></center>\r\n"
        f"<hr><center>{SERVER}</center>\r\n</body>\r\n</html>\r\n"
    ).encode()


def error_response(status: int, head: Head, *, now: float, port: int) -> bytes:
    """The whole answer for an error status (and 301), head-only for HEAD."""
    body = error_body(status)
    lines = [f"HTTP/1.1 {status} {REASONS[status]}", f"Server: {SERVER}", f"Date: {http_date(now)}",
             "Content-Type: text/html", f"Content-Length: {len(body)}"]  # fmt: skip
    if status == 301:
        host = _host_without_port(head.header("host"))
        lines.append(f"Location: http://{host}{'' if port == 80 else f':{port}'}{head.path}/")
    lines.append(f"Connection: {'keep-alive' if head.keep_alive else 'close'}")
    raw = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    return raw if head.method == "HEAD" else raw + body


def _host_without_port(host: str) -> str:
    """The Host header up to its first ":" outside an IPv6 literal's brackets, as nginx cuts it (whatever follows:
    "example.org:²", ":1a" and ":" alike) before it writes a redirect's Location."""
    bracket = host.find("]") if host.startswith("[") else 0
    colon = host.find(":", bracket) if bracket >= 0 else -1  # "[::1" without its "]": nginx cuts nothing
    return host if colon < 0 else host[:colon]


def file_header(head: Head, info: FileInfo, path: str, *, now: float) -> bytes:
    """The head of a 200 answer for a file of `info` at `path` (the body follows unless HEAD)."""
    lines = [
        "HTTP/1.1 200 OK",
        f"Server: {SERVER}",
        f"Date: {http_date(now)}",
        f"Content-Type: {content_type(path)}",
        f"Content-Length: {info.size}",
        f"Last-Modified: {http_date(info.mtime)}",
        f"Connection: {'keep-alive' if head.keep_alive else 'close'}",
        f'ETag: "{info.mtime:x}-{info.size:x}"',
        "Accept-Ranges: bytes",
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
