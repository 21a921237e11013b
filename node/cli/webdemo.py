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

from node.protocol.identity import Identity, b64u_encode

WEB_ROOT: Final = Path(__file__).resolve().parent.parent.parent / "web"
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
    extensions_map = {
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

    def log_message(self, format: str, *args: Any) -> None:
        pass


def missing_packages(root: Path = WEB_ROOT) -> str | None:
    """Why the page cannot be served from `root` (its npm packages are not installed), or None."""
    if not (root / "node_modules" / "@msgpack" / "msgpack").is_dir():
        return f"{root}/node_modules is missing: run `npm ci` in {root}"
    return None


@contextmanager
def serve_web(root: Path = WEB_ROOT, host: str = "127.0.0.1", port: int = 0) -> Iterator[str]:
    """Serve `root` (the web/ folder, after `npm ci`) on host:port in a thread; yield the base URL."""
    problem = missing_packages(root)
    if problem:
        raise FileNotFoundError(problem)
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


async def run_web_demo(tmp: Path, *, web_port: int = 0, duration_s: float | None = None) -> None:
    """Registry + 3 nodes (as `homing demo`), the page on 127.0.0.1, two links; runs until Ctrl-C (or `duration_s`)."""
    import signal

    import trio

    from node.cli import demo

    async with trio.open_nursery() as nursery:
        url, key = await demo._start_registry(nursery, tmp)
        async with trio.open_nursery() as node_nursery:
            nodes = await demo._start_nodes(node_nursery, tmp, url, key)
            with serve_web(port=web_port) as base:
                _print_links(base, url, key, nodes)
                with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                    with trio.move_on_after(duration_s if duration_s is not None else float("inf")):
                        async for _ in signals:
                            break
                demo.say("\nstopping: the nodes say goaway to the pages, leave the federation and deregister")
                for h in nodes:
                    h.request_shutdown()
        nursery.cancel_scope.cancel()


def _print_links(base: str, registry_url: str, key: Identity, nodes: list[Any]) -> None:
    from node.cli import demo

    alice, bob = Identity.generate(), Identity.generate()
    common: dict[str, str | list[str]] = {"registry": registry_url, "trust": key.id_text}
    alice_link = page_link(
        base,
        profile="alice",
        me=alice,
        node_ws=demo._ws(nodes[0]),
        node_id=nodes[0].identity.id,
        contacts={"bob": bob.id},
        **common,
    )
    bob_link = page_link(
        base,
        profile="bob",
        me=bob,
        node_ws=demo._ws(nodes[2]),
        node_id=nodes[2].identity.id,
        contacts={"alice": alice.id},
        **common,
    )
    demo.say("homing demo --web: a registry, three nodes and the call page, all on 127.0.0.1\n")
    demo.say(f"  registry  {registry_url}   signing key {key.id_text}")
    for i, h in enumerate(nodes, 1):
        demo.say(f"  node-{i}    {demo._ws(h)}   id {h.identity.id_text}")
    demo.say(f"  page      {base}/app/   (served by this demo on loopback, not by a node)\n")
    demo.say("Open these two links in two tabs (or two browsers) and call yourself:")
    demo.say(f"  alice (homed on node-1): {alice_link}")
    demo.say(f"  bob   (homed on node-3): {bob_link}")
    demo.say("\nThe links carry throw-away demo keys in their #fragment, which the browser never sends to a server.")
    demo.say("Press Ctrl-C to stop.")
