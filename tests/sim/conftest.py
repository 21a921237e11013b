"""Seeds for simulations: `HOMING_SIM_SEED=123 python -m pytest tests/sim/...` reruns a failure exactly."""

from __future__ import annotations

import os

import pytest


@pytest.fixture
def sim_seed() -> int:
    return int(os.environ.get("HOMING_SIM_SEED", "1"))
