"""A local RFC 8030 push service for tests: HTTPS on 127.0.0.1 with a test CA (trustme), h11, records requests.

Every request is decrypted by the subscriber's key with `http_ece` and its VAPID token verified (tests/push/
webpush_check.py) by the test, not here: the service only records what arrived and answers what it is told to.
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import attrs
import h11
import trio
import trustme

BODY_MAX = 8192


@attrs.define
class Arrival:
    at: float  # trio.current_time() when the request was complete
    target: str
    headers: dict[str, str]
    body: bytes


@attrs.define
class PushService:
    port: int
    ca_file: Path
    arrivals: list[Arrival] = attrs.field(factory=list)
    # target -> (status, extra headers); default 201 Created
    answer: Callable[[str], tuple[int, list[tuple[str, str]]]] = lambda target: (201, [])
    changed: trio.Event = attrs.field(factory=trio.Event)

    def url(self, path: str) -> str:
        return f"https://127.0.0.1:{self.port}{path}"

    async def wait_for(self, count: int, timeout: float) -> None:
        with trio.fail_after(timeout):
            while len(self.arrivals) < count:
                self.changed = trio.Event()
                await self.changed.wait()


async def _handle(stream: trio.SSLStream[trio.SocketStream], service: PushService) -> None:
    conn = h11.Connection(h11.SERVER)
    target, headers, body = "", {}, b""
    with trio.move_on_after(5):
        try:
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    data = await stream.receive_some(4096)
                    conn.receive_data(data)
                    continue
                if isinstance(event, h11.Request):
                    target = event.target.decode()
                    headers = {k.decode().lower(): v.decode() for k, v in event.headers}
                elif isinstance(event, h11.Data):
                    body += event.data
                    assert len(body) <= BODY_MAX
                elif isinstance(event, h11.EndOfMessage):
                    break
                else:
                    return
            service.arrivals.append(Arrival(at=trio.current_time(), target=target, headers=headers, body=body))
            service.changed.set()
            status, extra = service.answer(target)
            out = conn.send(h11.Response(status_code=status, headers=[("content-length", "0"), *extra]))
            out += conn.send(h11.EndOfMessage())
            await stream.send_all(out)
        except (trio.BrokenResourceError, h11.ProtocolError, ssl.SSLError):
            return
        finally:
            await trio.aclose_forcefully(stream)


@asynccontextmanager
async def push_service(tmp: Path) -> AsyncIterator[PushService]:
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(ctx)
    ca_file = tmp / "push-ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    service = PushService(port=listeners[0].socket.getsockname()[1], ca_file=ca_file)

    async def serve() -> None:
        async with trio.open_nursery() as conns:
            while True:
                tcp = await listeners[0].accept()
                conns.start_soon(_handle, trio.SSLStream(tcp, ctx, server_side=True), service)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(serve)
        try:
            yield service
        finally:
            nursery.cancel_scope.cancel()
