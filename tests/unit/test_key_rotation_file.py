"""A node's key rotation statements file (node/app/keyrotation.py, docs/bootstrap.md "Rotating a node key")."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pytest

from node.app.keyrotation import NODE_ROTATIONS_NAME, own_rotation, rotate_key_file
from node.app.log import get_logger
from node.client.files import load_or_create_key

LOG = get_logger("node")


def test_own_rotation_finds_the_statement_naming_the_key_in_use(tmp_path: Path) -> None:
    load_or_create_key(tmp_path / "node.key")
    _, new, statement = rotate_key_file(tmp_path / "node.key", tmp_path / NODE_ROTATIONS_NAME, time.time())
    assert own_rotation(tmp_path / NODE_ROTATIONS_NAME, new.id, LOG) == statement


def test_a_damaged_file_gives_no_statement_and_logs_an_error(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """On the code before, the damage was silent: the registry then took the node's key for a new node."""
    load_or_create_key(tmp_path / "node.key")
    _, new, _ = rotate_key_file(tmp_path / "node.key", tmp_path / NODE_ROTATIONS_NAME, time.time())
    path = tmp_path / NODE_ROTATIONS_NAME
    path.write_bytes(path.read_bytes()[:-10])
    with caplog.at_level(logging.ERROR):
        assert own_rotation(path, new.id, LOG) is None
    assert "key_rotations_damaged" in caplog.text, caplog.text
