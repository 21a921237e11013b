"""The registry application: binds the HTTP API (bootstrap.server) to the service (bootstrap.service) and runs it.

Layers inside the registry, each importing only those below it: `registry` (pure approval and list rules) <
`store` (SQLite) < `service` (the signing key, the cached signed list, writes in a worker thread) < `server`
(the HTTP API, docs/bootstrap.md) < `app` (this module: TLS, the listening socket, pruning) < `cli`.
"""

from __future__ import annotations

import logging
import ssl
import time
from collections.abc import Callable

import trio

from bootstrap.config import BootstrapConfig
from bootstrap.health import health_loop
from bootstrap.server import RegistryApi, make_handler
from bootstrap.service import RegistryService, load_identity
from node.client.files import write_json_atomic
from node.net.httpserver import serve_http
from node.protocol.errors import ConfigError
from node.protocol.forwarded import parse_networks
from node.protocol.settings import parse_hostport

log = logging.getLogger("homing.bootstrap")


def make_ssl_context(config: BootstrapConfig) -> ssl.SSLContext | None:
    if config.tls_cert is None or config.tls_key is None:
        return None
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(str(config.tls_cert), str(config.tls_key))
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError("--tls-cert", f"cannot load certificate/key: {exc}") from exc
    return ctx


async def run_bootstrap(
    config: BootstrapConfig,
    *,
    wall_clock: Callable[[], float] = time.time,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run the registry until cancelled. Reports the bound HTTP port and writes it to DATA_DIR/ports.json."""
    identity, _ = load_identity(config, create=False)
    host, port = parse_hostport(config.listen, key="--listen")
    ssl_ctx = make_ssl_context(config)
    service = RegistryService(config, identity, wall_clock=wall_clock)
    api = RegistryApi(service)
    try:
        async with trio.open_nursery() as nursery:
            bound: int = await nursery.start(
                lambda task_status: serve_http(
                    make_handler(service, api),
                    host,
                    port,
                    limits=config.http,
                    ssl_context=ssl_ctx,
                    trusted_proxies=parse_networks(config.trusted_proxies, key="--trusted-proxy"),
                    on_refused=api.metrics.http_refused,
                    key="--listen",
                    task_status=task_status,
                )
            )
            write_json_atomic(config.ports_path, {"http": bound})
            nursery.start_soon(_prune_loop, service)
            nursery.start_soon(health_loop, service)
            task_status.started(bound)
    finally:
        service.close()


async def _prune_loop(service: RegistryService) -> None:
    while True:
        await trio.sleep(service.config.prune_interval_s)
        try:
            deleted = await service.prune()
        except Exception:
            log.exception("event=prune_failed")
            continue
        if deleted:
            log.info("event=pruned rows=%d", deleted)
