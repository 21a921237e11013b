"""`export-txt` and `publish-dns` against a real knotd (RFC 2136 + TSIG) behind a real unbound DoH front."""

from __future__ import annotations

import argparse
import ssl
from collections.abc import Iterator
from pathlib import Path

import dns.message
import dns.query
import dns.rdatatype
import pytest

from bootstrap import dns_cli
from node.protocol import txt
from node.protocol.errors import ConfigError, HomingError
from node.protocol.identity import Identity, encode_document
from node.protocol.nodelist import open_node_list
from tests.discovery.lists import NOW, entries, signed_list
from tests.fixtures.dns import (
    TSIG_NAME,
    TSIG_SECRET,
    TSIG_SLASH_NAME,
    TSIG_SLASH_SECRET,
    DnsStack,
    dns_stack,
    have_dns_tools,
)
from tests.helpers import run_homing

pytestmark = pytest.mark.skipif(
    not have_dns_tools(), reason="needs knotd, unbound and openssl (tests/run installs them)"
)
REGISTRY = Identity.from_seed(b"p" * 32)
NAME = "_homing.example.test"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DnsStack]:
    with dns_stack(tmp_path_factory.mktemp("dnspub")) as s:
        yield s


def doh_records(stack: DnsStack, name: str = NAME) -> list[list[bytes]]:
    q = dns.message.make_query(name, dns.rdatatype.TXT, use_edns=0, pad=128)
    r = dns.query.https(q, stack.doh_url, verify=ssl.create_default_context(cafile=stack.ca_file), timeout=5)
    return [list(rd.strings) for rrset in r.answer for rd in rrset]


def test_knot_and_bind_key_files_parse_to_the_same_key(stack: DnsStack) -> None:
    a, b = dns_cli.load_tsig_key(stack.key_file), dns_cli.load_tsig_key(stack.bind_key_file)
    assert a == b == dns_cli.TsigKey(name=TSIG_NAME, algorithm="hmac-sha256", secret=TSIG_SECRET)


def test_full_keymgr_output_parses() -> None:
    text = f"# hmac-sha512:k1:{TSIG_SECRET}\nkey:\n  - id: k1\n    algorithm: hmac-sha512\n    secret: {TSIG_SECRET}\n"
    assert dns_cli.parse_tsig_key(text).algorithm == "hmac-sha512"


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("nonsense", "not a TSIG key"),
        (f"hmac-foo:k:{TSIG_SECRET}", "unsupported"),
        ('key "k" { algorithm hmac-sha256; };', "secret"),
        ("hmac-sha256:k:@@@", "not a TSIG key"),
    ],
)
def test_bad_key_files_name_the_flag(text: str, reason: str) -> None:
    with pytest.raises(ConfigError, match=reason) as info:
        dns_cli.parse_tsig_key(text)
    assert info.value.key == "--tsig-key"


def test_publish_then_read_back_through_doh(stack: DnsStack) -> None:
    doc = signed_list(REGISTRY, entries(250))
    count = dns_cli.publish_dns(
        doc, name=NAME, zone="example.test", server=stack.auth, key=dns_cli.load_tsig_key(stack.bind_key_file)
    )
    assert count == len(txt.encode_txt(doc)) > 1
    got = open_node_list(txt.decode_txt(doh_records(stack)), {REGISTRY.id}, now=NOW)
    assert len(got.nodes) == 250
    # a second publish replaces the RRset atomically: no chunk of the old list survives
    smaller = signed_list(REGISTRY, entries(3))
    dns_cli.publish_dns(
        smaller, name=NAME, zone="example.test.", server=stack.auth, key=dns_cli.load_tsig_key(stack.key_file)
    )
    assert txt.decode_txt(doh_records(stack)) == smaller


@pytest.mark.parametrize(
    "key_text",
    [
        f"# hmac-sha256:{TSIG_SLASH_NAME}:{TSIG_SLASH_SECRET}\nkey:\n  - id: {TSIG_SLASH_NAME}\n",
        f'key "{TSIG_SLASH_NAME}" {{\n\talgorithm hmac-sha256;\n\tsecret "{TSIG_SLASH_SECRET}"; // rotated\n}};\n',
    ],
    ids=["keymgr", "bind"],
)
def test_knotd_accepts_an_update_signed_with_a_secret_holding_slashes(
    stack: DnsStack, tmp_path: Path, capsys: pytest.CaptureFixture[str], key_text: str
) -> None:
    """Issue #18: the part of this secret before `//` is valid base64 on its own; read as the key, knotd says
    BADSIG. The whole command line runs: key file, update, read-back through knotd and unbound's DoH."""
    assert "//" in TSIG_SLASH_SECRET
    (tmp_path / "slash.key").write_text(key_text)
    doc = signed_list(REGISTRY, entries(5))
    (tmp_path / "list.msgpack").write_bytes(encode_document(doc))
    argv = ["publish-dns", "--name", NAME, "--zone", "example.test", "--server", stack.auth,
            "--tsig-key", str(tmp_path / "slash.key"), "--from-file", str(tmp_path / "list.msgpack")]  # fmt: skip
    args = _parser().parse_args(argv)
    assert args.func(args) == 0
    assert "read back and verified" in capsys.readouterr().out
    assert txt.decode_txt(doh_records(stack)) == doc


def test_wrong_tsig_secret_is_refused_clearly(stack: DnsStack) -> None:
    key = dns_cli.TsigKey(
        name=TSIG_NAME, algorithm="hmac-sha256", secret="d3Jvbmctc2VjcmV0LXdyb25nLXNlY3JldC13cm9uZyE="
    )
    with pytest.raises(HomingError, match="refused"):
        dns_cli.publish_dns(signed_list(REGISTRY, []), name=NAME, zone="example.test", server=stack.auth, key=key)


def test_name_outside_zone_is_a_usage_error(stack: DnsStack) -> None:
    with pytest.raises(ConfigError, match="not inside zone"):
        dns_cli.publish_dns(
            signed_list(REGISTRY, []), name="_homing.example.org", zone="example.test", server=stack.auth,
            key=dns_cli.load_tsig_key(stack.key_file),
        )  # fmt: skip


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="homing bootstrap")
    dns_cli.register(parser.add_subparsers())
    return parser


def test_export_txt_prints_zone_lines_that_decode(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    doc = signed_list(REGISTRY, entries(60))
    (tmp_path / "list.msgpack").write_bytes(encode_document(doc))
    args = _parser().parse_args(["export-txt", "--name", NAME, "--from-file", str(tmp_path / "list.msgpack")])
    assert args.func(args) == 0
    lines = capsys.readouterr().out.splitlines()
    records = [[s.encode() for s in line.split('"')[1::2]] for line in lines]
    assert all(line.startswith(f"{NAME}. 300 IN TXT ") for line in lines)
    assert txt.decode_txt(records) == doc


def test_publish_dns_command_line(stack: DnsStack, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    doc = signed_list(REGISTRY, entries(7))
    (tmp_path / "list.msgpack").write_bytes(encode_document(doc))
    list_file = str(tmp_path / "list.msgpack")
    argv = ["publish-dns", "--name", NAME, "--zone", "example.test", "--server", stack.auth,
            "--tsig-key", str(stack.key_file), "--from-file", list_file, "--ttl", "60"]  # fmt: skip
    args = _parser().parse_args(argv)
    assert args.func(args) == 0
    assert "read back and verified" in capsys.readouterr().out
    assert txt.decode_txt(doh_records(stack)) == doc


def test_bootstrap_subcommands_when_registered() -> None:
    """Once `homing bootstrap` registers these commands, a missing key file is exit 2 naming the flag."""
    r = run_homing("bootstrap", "publish-dns", "--name", NAME, "--zone", "example.test", "--server", "127.0.0.1:1",
                   "--tsig-key", "/nonexistent/key")  # fmt: skip
    if "invalid choice" in r.stderr:
        pytest.skip("homing bootstrap does not register dns_cli yet (bootstrap/cli.py is another branch's)")
    assert r.returncode == 2
    assert "--tsig-key" in r.stderr
