"""`homing discover`, `homing card`, `homing qr` as subprocesses (docs/discovery.md), and the QR round trip."""

from __future__ import annotations

import json
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import zxingcpp
from PIL import Image

from node.client.discovery import save_cache
from node.client.files import load_or_create_key
from node.protocol.identity import Identity
from node.protocol.nodelist import parse_card
from tests.helpers import REPO, homing_cmd, homing_env, run_homing

QR_ONLY = zxingcpp.BarcodeFormat.QRCode

NODE_SCRIPT = """
import sys, trio
from node.protocol.identity import Identity
from tests.discovery.servers import serve_node
async def main():
    async with trio.open_nursery() as n:
        url = await serve_node(n, Identity.from_seed(bytes.fromhex(sys.argv[1])))
        print(url, flush=True)
        await trio.sleep(60)
trio.run(main)
"""


@pytest.fixture
def node() -> Iterator[tuple[Identity, str]]:
    ident = Identity.generate()
    proc = subprocess.Popen([sys.executable, "-c", NODE_SCRIPT, ident.seed.hex()], stdout=subprocess.PIPE, text=True,
                            env=homing_env(), cwd=REPO)  # fmt: skip
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        assert url.startswith("ws://127.0.0.1:")
        yield ident, url
    finally:
        proc.kill()
        proc.wait(timeout=10)


def test_discover_json_with_a_manual_entry_and_cache(node: tuple[Identity, str], tmp_path: Path) -> None:
    ident, url = node
    cache = tmp_path / "c.json"
    r = run_homing("discover", "--add", f"{url}#{ident.id_text}", "--cache", str(cache), "--json", timeout=30)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert set(out) == {"nodes", "errors"}
    [row] = out["nodes"]
    assert set(row) == {"id", "ws", "source", "verified", "handshake_ms"}
    assert (row["id"], row["ws"], row["source"], row["verified"]) == (ident.id_text, url, "manual", True)
    assert isinstance(row["handshake_ms"], float) and row["handshake_ms"] > 0
    assert stat.S_IMODE(cache.stat().st_mode) == 0o600
    r = run_homing("discover", "--cache", str(cache), timeout=30)  # table mode, cache only
    assert r.returncode == 0
    assert r.stdout.splitlines()[0].split() == ["NODE", "WS", "SOURCE", "VERIFIED", "HANDSHAKE", "MS"]
    assert "cache" in r.stdout and "yes" in r.stdout


def test_discover_finds_nothing_exits_1(tmp_path: Path) -> None:
    r = run_homing("discover", "--no-cache", "--registry", "http://127.0.0.1:1", "--deadline", "3", "--json")
    assert r.returncode == 1
    out = json.loads(r.stdout)
    assert out["nodes"] == [] and "registry http://127.0.0.1:1/v1/nodes" in out["errors"][0]


@pytest.mark.parametrize(
    ("cache_argv", "cache_says"),
    [
        ([], "discovery-cache.json: absent"),  # the default cache under $XDG_DATA_HOME, never written
        (["--no-cache"], "cache: off (--no-cache)"),
        (["--cache", "EMPTY"], "empty.json: empty"),
    ],
)
def test_discover_with_no_source_says_what_it_tried_and_how_to_give_one(
    tmp_path: Path, cache_argv: list[str], cache_says: str
) -> None:
    save_cache(tmp_path / "empty.json", [])
    argv = [a.replace("EMPTY", str(tmp_path / "empty.json")) for a in cache_argv]
    env = homing_env(XDG_DATA_HOME=str(tmp_path / "xdg"))
    r = subprocess.run(homing_cmd("discover", *argv), env=env, capture_output=True, text=True, timeout=30, cwd=REPO)
    assert r.returncode == 1
    assert r.stdout == "no node found\n"
    said = r.stderr.splitlines()
    assert "homing discover: registry: none given (--registry URL)" in said
    assert "homing discover: DNS TXT over DoH: none given (--doh URL --name NAME)" in said
    assert "homing discover: referral cards and manual entries: none given (--add URI)" in said
    assert any(line.startswith("homing discover: cache") and cache_says in line for line in said), said
    [hint] = [line for line in said if "give a source" in line]
    assert all(flag in hint for flag in ("--registry URL", "--doh URL --name NAME", "--add URI"))
    r = subprocess.run(homing_cmd("discover", *argv, "--json"), env=env, capture_output=True, text=True, timeout=30,
                       cwd=REPO)  # fmt: skip
    assert r.returncode == 1
    out = json.loads(r.stdout)
    assert out["nodes"] == [] and any("give a source" in e for e in out["errors"])
    assert not (tmp_path / "xdg").exists()  # nothing found, nothing written


def test_discover_with_a_failing_source_says_it_was_tried(tmp_path: Path) -> None:
    r = run_homing("discover", "--no-cache", "--add", f"ws://127.0.0.1:1/v1/client#{Identity.generate().id_text}",
                   "--deadline", "5")  # fmt: skip
    assert r.returncode == 1
    said = r.stderr.splitlines()
    assert "homing discover: referral cards and manual entries: 1 tried, none answered" in said
    assert "homing discover: registry: none given (--registry URL)" in said
    assert not any("give a source" in line for line in said)


@pytest.mark.parametrize(
    ("argv", "flag"),
    [
        (["--trust", "nope"], "--trust"),
        (["--doh", "https://x/dns-query"], "--name"),
        (["--add", "wss://a:1"], "--add"),
        (["--ca", "/nonexistent"], "--ca"),
        (["--deadline", "0"], "--deadline"),
    ],
)
def test_discover_usage_errors_exit_2_naming_the_flag(argv: list[str], flag: str) -> None:
    r = run_homing("discover", "--no-cache", *argv)
    assert r.returncode == 2
    assert flag in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_card_uses_ports_json_then_public_url(tmp_path: Path) -> None:
    ident, _ = load_or_create_key(tmp_path / "node.key")
    (tmp_path / "ports.json").write_text(json.dumps({"ws": 17400, "swim": 1, "peer": 2, "metrics": 3}))
    r = run_homing("card", "--data-dir", str(tmp_path))
    assert r.returncode == 0, r.stderr
    card = parse_card(r.stdout.split()[-1], now=time.time())
    assert (card.id, card.ws) == (ident.id, "ws://127.0.0.1:17400/v1/client")
    (tmp_path / "homing-node.toml").write_text('[node]\npublic_url = "wss://sig.example.org/v1/client"\n')
    assert (
        parse_card(run_homing("card", "--data-dir", str(tmp_path)).stdout.strip(), now=time.time()).ws
        == "wss://sig.example.org/v1/client"
    )
    r = run_homing("card", "--data-dir", str(tmp_path), "--url", "wss://other.example/v1/client")
    assert parse_card(r.stdout.strip(), now=time.time()).ws == "wss://other.example/v1/client"
    r = run_homing("card", "--data-dir", str(tmp_path / "empty"))
    assert r.returncode == 2 and "homing node init" in r.stderr


def test_referral_card_from_another_node_through_the_cli(node: tuple[Identity, str], tmp_path: Path) -> None:
    ident, url = node
    (tmp_path / "node.key").write_text(__import__("base64").urlsafe_b64encode(ident.seed).decode().rstrip("=") + "\n")
    (tmp_path / "node.key").chmod(0o600)
    card = run_homing("card", "--data-dir", str(tmp_path), "--url", url).stdout.strip()
    r = run_homing("discover", "--no-cache", "--add", card, "--json", timeout=30)
    assert r.returncode == 0, r.stderr
    [row] = json.loads(r.stdout)["nodes"]
    assert (row["source"], row["verified"], row["id"]) == ("referral", True, ident.id_text)
    assert row["handshake_ms"] is not None


def test_qr_png_round_trip(tmp_path: Path) -> None:
    from node.protocol.nodelist import make_card

    card = make_card(Identity.generate(), ws="wss://sig.example.org:7400/v1/client", ts=int(time.time()))
    r = run_homing("qr", card, "--png", str(tmp_path / "card.png"))
    assert r.returncode == 0, r.stderr
    # only QR codes: the reader also tries 1-D formats and finds a spurious Codabar or UPC-E inside the
    # QR's modules for about 1 random card in 270 (15 of 4,000 measured), which failed CI once
    [decoded] = zxingcpp.read_barcodes(Image.open(tmp_path / "card.png"), formats=QR_ONLY)
    assert decoded.text == card
    assert parse_card(decoded.text, now=time.time()).ws == "wss://sig.example.org:7400/v1/client"


def test_qr_terminal_output_decodes(tmp_path: Path) -> None:
    from node.protocol.nodelist import make_card

    card = make_card(Identity.generate(), ws="ws://10.0.0.7:7400/v1/client", ts=int(time.time()))
    r = subprocess.run([*homing_cmd("qr", card)], env=homing_env(), capture_output=True, text=True, timeout=30)
    assert r.returncode == 0
    # rebuild the image from the half-block characters (each character is two modules stacked)
    rows = r.stdout.rstrip("\n").split("\n")
    top = {"█": (1, 1), "▀": (1, 0), "▄": (0, 1), " ": (0, 0)}
    pixels = []
    for line in rows:
        pairs = [top.get(ch, (0, 0)) for ch in line]
        pixels.append([p[0] for p in pairs])
        pixels.append([p[1] for p in pairs])
    width = max(len(p) for p in pixels)
    scale = 6
    img = Image.new("L", (width * scale + 40, len(pixels) * scale + 40), 0)
    for y, row in enumerate(pixels):
        for x, on in enumerate(row):
            if on:  # a lit terminal cell is the light module
                img.paste(255, (20 + x * scale, 20 + y * scale, 20 + (x + 1) * scale, 20 + (y + 1) * scale))
    results = zxingcpp.read_barcodes(img, formats=QR_ONLY) or zxingcpp.read_barcodes(
        Image.eval(img, lambda v: 255 - v), formats=QR_ONLY
    )
    assert [res.text for res in results] == [card]


def test_qr_refuses_a_forged_card() -> None:
    r = run_homing("qr", "homing://node/AAAA")
    assert r.returncode == 2 and "URI" in r.stderr
