"""docs/security.md names the test behind each claim: every `file::test` it cites must exist."""

from __future__ import annotations

import re

from tests.helpers import REPO


def test_every_test_the_threat_model_cites_exists() -> None:
    text = (REPO / "docs" / "security.md").read_text()
    cited = re.findall(r"`(tests/[\w/]+\.py)::(\w+)`", text)
    assert len(cited) >= 20
    missing = [f"{f}::{name}" for f, name in cited if not re.search(rf"def {name}\b", (REPO / f).read_text())]
    assert not missing, missing
