"""`record` (node/protocol/records.py) and the pooled msgpack packer (node/protocol/wire/__init__.py): what the
relay's hot path was made cheaper with, and what must still hold."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import attrs
import msgpack
import pytest

from node.protocol.relay.claims import HomeClaim
from node.protocol.wire import packb
from tests.helpers import REPO
from tests.relay.test_rendezvous import env


def test_a_record_keeps_what_frozen_gave_at_run_time() -> None:
    """Equality and hash by value, slots, evolve, and the field checks in __attrs_post_init__."""
    a, b = env(1), env(1)
    assert a == b and hash(a) == hash(b) and len({a, b}) == 1
    assert a != env(1, body=b"other")
    assert not hasattr(a, "__dict__")
    assert attrs.evolve(a, body=b"x").body == b"x" and a.body == b"x1"
    with pytest.raises(ValueError):
        attrs.evolve(a, eid=b"short")
    with pytest.raises(ValueError):
        HomeClaim(client=b"c" * 32, home=b"h" * 32, nonce=b"n" * 31, sig=b"s" * 64)


def test_the_type_checker_refuses_an_assignment_to_a_record(tmp_path: Path) -> None:
    """The guarantee the relay relies on (a shared envelope is never changed) is mypy's: it must see `frozen`."""
    src = tmp_path / "mutates.py"
    src.write_text(
        textwrap.dedent(
            """
            from node.protocol.wire.peer import EnvelopeResult, ResultStatus

            r = EnvelopeResult(eid=b"e" * 16, status=ResultStatus.DELIVERED)
            r.status = ResultStatus.NOT_HERE
            """
        )
    )
    out = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-incremental", "--follow-imports=silent", str(src)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "MYPYPATH": str(REPO)},
    )
    assert out.returncode == 1, out.stdout + out.stderr
    assert 'Property "status" defined in "EnvelopeResult" is read-only' in out.stdout, out.stdout


def test_packb_matches_msgpack_after_a_failed_pack_and_across_threads() -> None:
    good = {"t": "call_ice", "body": b"x" * 1000, "n": [1, 2, 3]}
    with pytest.raises(TypeError):
        packb({"bad": object()})
    assert packb(good) == msgpack.packb(good, use_bin_type=True)

    errors: list[str] = []

    def worker(i: int) -> None:
        obj = {"i": i, "body": bytes([i]) * (100 + i * 37)}
        want = msgpack.packb(obj, use_bin_type=True)
        for _ in range(2_000):
            if packb(obj) != want:
                errors.append(f"thread {i} got another thread's bytes")
                return

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors and not any(t.is_alive() for t in threads)
