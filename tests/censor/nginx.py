"""A real nginx (Debian nginx-light) serving a directory on 127.0.0.1, for byte-for-byte comparisons with the decoy."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.fixtures.dns import free_port

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"

CONF = """daemon off;
{user}pid {dir}/nginx.pid;
error_log {dir}/error.log;
events {{}}
http {{
  access_log off;
  server_tokens off;
  types {{ {types} }}
  default_type application/octet-stream;
  server {{ listen 127.0.0.1:{port}; root {root}; }}
}}
"""


def have_nginx() -> bool:
    return Path(NGINX).exists()


@contextmanager
def running_nginx(root: Path, work: Path) -> Iterator[int]:
    """Start nginx serving `root`; yields its port. The types table is the decoy's (node/protocol/decoy.py)."""
    from node.protocol.decoy import TYPES

    by_type: dict[str, list[str]] = {}
    for ext, ctype in TYPES.items():
        by_type.setdefault(ctype, []).append(ext[1:])
    types = " ".join(f"{t} {' '.join(exts)};" for t, exts in by_type.items())
    port = free_port()
    work.mkdir(parents=True, exist_ok=True)
    conf = work / "nginx.conf"
    user = "user root root;\n" if os.geteuid() == 0 else ""  # workers must read pytest's 0700 tmp dirs
    conf.write_text(CONF.format(user=user, dir=work, types=types, port=port, root=root))
    proc = subprocess.Popen([NGINX, "-c", str(conf), "-p", str(work), "-e", str(work / "error.log")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        deadline = time.monotonic() + 5
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError(f"nginx did not start: {(work / 'error.log').read_text()[-500:]}") from None
                time.sleep(0.02)
        yield port
    finally:
        proc.terminate()
        proc.wait(timeout=5)


def exchange(port: int, request: bytes, *, wait_s: float = 0.25, first_s: float = 3.0) -> bytes:
    """Send `request` on a fresh connection; everything answered until the server closes or, after the first
    bytes (waited for up to `first_s`), `wait_s` of silence."""
    with socket.create_connection(("127.0.0.1", port), timeout=first_s) as s:
        s.sendall(request)
        out = b""
        try:
            while True:
                data = s.recv(65536)
                if not data:
                    return out + b"<closed>"
                out += data
                s.settimeout(wait_s)
        except TimeoutError:
            return out + b"<open>"


def masked(answer: bytes, port: int) -> bytes:
    """The answer with its Date headers and its own port (in a 301 Location) masked."""
    answer = re.sub(rb"Date: [^\r]+\r\n", b"Date: *\r\n", answer)
    return answer.replace(f":{port}/".encode(), b":PORT/")
