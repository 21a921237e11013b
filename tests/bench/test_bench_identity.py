"""The load generators' identities (bench/relay/common.mjs) must not deadlock Node.js.

A storm's generator hung at random (5 of about 50 storms in one session): gdb showed Node.js's main thread in
`ExportJWKEdKey`, holding the new key's mutex while it allocated a string; the allocation ran a garbage collection,
whose weak callback `~KeyGenJob` (the job that had just made that key) took the same mutex (docs/performance.md,
"Sixth pass"). With this test's command, bench/relay/identity_stress.mjs on the code before hung in 5 of 6 runs;
the key is now encoded inside `generateKeyPairSync`, while its job is still alive, and 9 of 9 runs finished."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from tests.helpers import REPO

RELAY = REPO / "bench" / "relay"


@pytest.mark.skipif(shutil.which("node") is None, reason="needs Node.js")
@pytest.mark.timeout(90)
def test_making_identities_under_gc_pressure_does_not_deadlock_node() -> None:
    cmd = ["node", "--max-old-space-size=16", "--max-semi-space-size=1", "identity_stress.mjs", "100000"]
    try:
        out = subprocess.run(cmd, cwd=RELAY, capture_output=True, text=True, timeout=60)
    except subprocess.TimeoutExpired:
        pytest.fail("node hung making identities (the deadlock of docs/performance.md, 'Sixth pass')")
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["done", "100000"]
