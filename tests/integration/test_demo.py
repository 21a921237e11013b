"""`homing demo` is the README's first command: it must show the whole flow and exit 0."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
from collections.abc import Iterator

import pytest

from tests.helpers import homing_cmd, homing_env, run_homing


@pytest.mark.timeout(120)
def test_demo_shows_the_flow_and_exits_0() -> None:
    result = run_homing("demo", timeout=100)
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    for kind in ("call_offer", "call_ice", "call_answer", "call_hangup"):
        assert kind in out
    assert "alice → node-1 ⇒ node-3 → bob" in out, "the call crosses nodes"
    assert out.count("receipt delivered") >= 9
    assert "receipt queued" in out and "carol connected to node-2" in out
    assert "demo finished" in out
    assert "alice asks node-1 for ICE servers (valid 3600 s)" in out and "turn:127.0.0.1:3478" in out
    assert "carol declines; alice's call ended: rejected" in out and "bob's call ended: hangup" in out
    assert "the nodes relayed only ciphertext" in out
    # every SDP body is padded to the same size, whatever the SDP's length (docs/e2ee.md)
    offer_sizes = {line.split(" B ")[0].split()[-1] for line in out.splitlines() if "call_offer" in line}
    assert offer_sizes == {"8242"}, offer_sizes


@contextlib.contextmanager
def private_netns() -> Iterator[str]:
    """A network namespace of this test's own: loopback plus a veth pair inside it (10.213.x.1 and .2/24).

    aiortc gathers host candidates only from non-loopback interfaces; inside this namespace the only ones are the
    pair's, so the media never leaves addresses this test created (tests may not talk to the machine's own address).
    """
    name = f"homing-media-{os.getpid()}"
    sub = os.getpid() % 250 + 1
    subprocess.run(["ip", "netns", "add", name], check=True, capture_output=True)
    try:
        for cmd in (
            ["ip", "link", "set", "lo", "up"],
            ["ip", "link", "add", "v0", "type", "veth", "peer", "name", "v1"],
            ["ip", "addr", "add", f"10.213.{sub}.1/24", "dev", "v0"],
            ["ip", "addr", "add", f"10.213.{sub}.2/24", "dev", "v1"],
            ["ip", "link", "set", "v0", "up"],
            ["ip", "link", "set", "v1", "up"],
        ):
            subprocess.run(["ip", "netns", "exec", name, *cmd], check=True, capture_output=True)
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], capture_output=True)


@pytest.mark.timeout(150)
@pytest.mark.root
@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("ip"), reason="needs root and iproute2 for a private netns")
def test_demo_media_places_a_real_audio_call() -> None:
    """`homing demo --media`: aiortc peers in helper processes exchange audio after SDPs went through homing."""
    pytest.importorskip("aiortc", reason="homing[media] (aiortc) is not installed")
    with private_netns() as ns:
        result = subprocess.run(
            ["ip", "netns", "exec", ns, *homing_cmd("demo", "--media")],
            env=homing_env(), capture_output=True, text=True, timeout=120,
        )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    frames = re.findall(r"(alice|bob)'s peer: ICE connected \(.*\), (\d+) audio frames", result.stdout)
    assert {who for who, _ in frames} == {"alice", "bob"}, result.stdout
    assert all(int(n) > 0 for _, n in frames), frames
