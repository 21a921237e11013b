"""Fixtures for tests/ops: logging tests change process-wide logging state; put it back after each test."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    root, homing = logging.getLogger(), logging.getLogger("homing")
    saved = (list(root.handlers), root.level, homing.level)
    yield
    root.handlers[:] = saved[0]
    root.setLevel(saved[1])
    homing.setLevel(saved[2])
