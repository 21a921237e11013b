"""`homing demo --web`: the demo federation plus the browser call page served on 127.0.0.1 (docs/web.md).

A node never serves the app (a hostile node could serve hostile code): this module runs a separate, tiny static file
server for `web/` in a thread, bound to loopback only, and prints two links, one per demo identity. Each link's
fragment (never sent to a server) names the node that page uses (pinned id), the other identity as a contact and the
page's own demo key, so one person can call themselves between two browser tabs.
"""

from __future__ import annotations

import functools
import http.server
import threading
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Final

from node.identity import Identity, b64u_encode

WEB_ROOT: Final = Path(__file__).resolve().parent.parent / "web"
# What the page needs and nothing else: the app, the library and the few packages the import map names.
SERVED_PREFIXES: Final = (
    "/app/",
    "/lib/",
    "/node_modules/@msgpack/msgpack/dist.esm/",
    "/node_modules/@noble/curves/",
    "/node_modules/@noble/hashes/",
    "/node_modules/@noble/ciphers/",
)
PATH_MAX_CHARS: Final = 512


class _Handler(http.server.SimpleHTTPRequestHandler):
    extensions_map = {  # noqa: RUF012 - the stdlib declares it as a class attribute
        ".html": "text/html; charset=utf-8",
        ".js": "text/javascript; charset=utf-8",
        ".mjs": "text/javascript; charset=utf-8",
        ".css": "text/css; charset=utf-8",
        ".json": "application/json",
        ".png": "image/png",
        ".svg": "image/svg+xml",
    }

    def do_GET(self) -> None:
        path = urllib.parse.urlsplit(self.path).path
        if path == "/":
            self.send_response(302)
            self.send_header("Location", "/app/")
            self.end_headers()
            return
        if len(path) > PATH_MAX_CHARS or ".." in path or not path.startswith(SERVED_PREFIXES):
            self.send_error(404)
            return
        if path.endswith("/") and path != "/app/":
            self.send_error(404)  # no directory listings
            return
        super().do_GET()

    def do_HEAD(self) -> None:
        self.do_GET()

    def end_headers(self) -> None:
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Referrer-Policy", "no-referrer")
        super().end_headers()

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the stdlib's name
        pass


@contextmanager
def serve_web(root: Path = WEB_ROOT, host: str = "127.0.0.1", port: int = 0) -> Iterator[str]:
    """Serve `root` (the web/ folder, after `npm ci`) on host:port in a thread; yield the base URL."""
    if not (root / "node_modules" / "@msgpack" / "msgpack").is_dir():
        raise FileNotFoundError(f"{root}/node_modules is missing: run `npm ci` in {root}")
    handler = functools.partial(_Handler, directory=str(root))
    server = http.server.ThreadingHTTPServer((host, port), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, name="homing-web", daemon=True)
    thread.start()
    try:
        yield f"http://{host}:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def page_link(
    base: str,
    *,
    profile: str,
    me: Identity | None,
    node_ws: str | None = None,
    node_id: bytes | None = None,
    contacts: dict[str, bytes] | None = None,
    **extra: str | list[str],
) -> str:
    """A link to the call page; everything after `#` stays in the browser."""
    items: list[tuple[str, str]] = [("profile", profile)]
    if me is not None:
        items.append(("key", b64u_encode(me.seed)))
    if node_ws and node_id:
        items.append(("node", f"{node_ws}#{b64u_encode(node_id)}"))
    for name, cid in (contacts or {}).items():
        items.append(("contact", f"{name}:{b64u_encode(cid)}"))
    for key, value in extra.items():
        for v in [value] if isinstance(value, str) else value:
            items.append((key, v))
    return f"{base}/app/index.html#{urllib.parse.urlencode(items)}"
