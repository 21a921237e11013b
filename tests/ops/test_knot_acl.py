"""deploy/dns/knot-homing-acl.conf in a real knotd: the registry's key may replace `_homing` TXT and nothing else."""

from __future__ import annotations

import shutil
import socket
import struct
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import dns.tsig
import dns.tsigkeyring
import dns.update
import pytest

from tests.fixtures.dns import free_port
from tests.helpers import REPO

pytestmark = pytest.mark.skipif(not shutil.which("knotd"), reason="needs Debian knot (knotd)")

ZONE = "example.org."
SECRET = "a25vdC1hY2wtdGVzdC1zZWNyZXQtZm9yLWhvbWluZyE="  # tests only
KEYRING = dns.tsigkeyring.from_text({"homing-registry": ("hmac-sha256", SECRET)})


SHIPPED = (REPO / "deploy" / "dns" / "knot-homing-acl.conf").read_text()
# what docs/operations.md said before: `update-owner: name` + `update-owner-match: equal`, no owner name
WITHOUT_OWNER_NAME = "\n".join(line for line in SHIPPED.splitlines() if "update-owner-name" not in line)
REFUSED = (dns.rcode.REFUSED, dns.rcode.NOTAUTH)  # knot answers NOTAUTH when the ACL denies a signed update


@pytest.fixture
def knot(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[str]:
    acl = getattr(request, "param", SHIPPED)
    assert "REPLACE_WITH_THE_BASE64_SECRET" in acl
    (tmp_path / "homing-acl.conf").write_text(acl.replace("REPLACE_WITH_THE_BASE64_SECRET", SECRET))
    (tmp_path / "db").mkdir()
    port = free_port()
    (tmp_path / f"{ZONE}zone").write_text(
        f"$ORIGIN {ZONE}\n$TTL 30\n@ SOA ns1 hostmaster 1 3600 600 86400 0\n@ NS ns1\n"
        "ns1 A 127.0.0.1\nwww A 127.0.0.1\n"
    )
    (tmp_path / "knot.conf").write_text(
        f'server:\n  rundir: "{tmp_path}"\n  listen: 127.0.0.1@{port}\n  udp-workers: 1\n  tcp-workers: 1\n'
        f'  background-workers: 1\ncontrol:\n  listen: "{tmp_path}/knot.sock"\ndatabase:\n  storage: "{tmp_path}/db"\n'
        f"include: {tmp_path}/homing-acl.conf\n"
        f'template:\n  - id: default\n    storage: "{tmp_path}"\n    file: "%s.zone"\n    zonefile-sync: -1\n'
        f"    zonefile-load: difference-no-serial\n    journal-content: all\n"
        f"zone:\n  - domain: {ZONE.rstrip('.')}\n    acl: [homing-publish]\n"
    )
    proc = subprocess.Popen(["knotd", "-c", str(tmp_path / "knot.conf")], stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else "knotd exited"
            try:
                r = dns.query.udp(dns.message.make_query(ZONE, dns.rdatatype.SOA), "127.0.0.1", port=port, timeout=1)
                if r.answer:
                    break
            except Exception:
                pass
            time.sleep(0.05)
        else:
            pytest.fail("knotd did not load the zone within 15 s")
        yield f"127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=5)
        if proc.stderr:
            proc.stderr.close()


def _update(server: str, name: str, rdtype: str, value: str) -> int:
    """Send a signed update; the answer's rcode read from its header (a refusal's TSIG is not ours to check)."""
    upd = dns.update.UpdateMessage(ZONE, keyring=KEYRING, keyalgorithm=dns.tsig.HMAC_SHA256)
    upd.replace(name, 30, rdtype, value)
    host, port = server.split(":")
    wire = upd.to_wire()
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(struct.pack("!H", len(wire)) + wire)
        (n,) = struct.unpack("!H", _read(sock, 2))
        answer = _read(sock, n)
    assert answer[:2] == wire[:2], "answer to another query id"
    return answer[3] & 0x0F


def _read(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        assert chunk, "knotd closed the connection"
        data += chunk
    return data


@pytest.mark.timeout(60)
def test_the_key_may_replace_the_homing_txt_record(knot: str) -> None:
    assert _update(knot, "_homing", "TXT", '"list"') == dns.rcode.NOERROR


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    ("name", "rdtype", "value"),
    [("www", "A", "192.0.2.1"), ("www", "TXT", '"x"'), ("_homing", "A", "192.0.2.1"), ("x._homing", "TXT", '"x"'),
     ("@", "TXT", '"x"')],
)  # fmt: skip
def test_the_key_may_change_nothing_else(knot: str, name: str, rdtype: str, value: str) -> None:
    assert _update(knot, name, rdtype, value) in REFUSED


@pytest.mark.timeout(60)
@pytest.mark.parametrize("knot", [WITHOUT_OWNER_NAME], indirect=True)
def test_without_the_owner_name_the_key_could_change_any_name(knot: str) -> None:
    """Why the shipped ACL names the owner: the earlier example let the key rewrite www (issue #19, point 1)."""
    assert _update(knot, "www", "TXT", '"x"') == dns.rcode.NOERROR
