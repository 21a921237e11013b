"""docs/configuration.md is generated from node/app/config.py and must match it; the operator docs name real things."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from node.app.config import reference_rows
from node.app.gen_docs import DOC_PATH, configuration_markdown
from tests.helpers import REPO, homing_env


def test_committed_configuration_reference_is_current() -> None:
    committed = DOC_PATH.read_text(encoding="utf-8")
    assert committed == configuration_markdown(), "docs/configuration.md is stale: run `python -m node.app.gen_docs`"


def test_every_setting_is_in_the_reference_with_a_reason() -> None:
    text = configuration_markdown()
    for key, default, reason in reference_rows():
        section, name = key.split(".", 1)
        assert f"## [{section}]" in text
        assert f"| `{name}` | `{default}` |" in text, key
        assert reason, f"{key} has no comment in node/app/config.py"
    assert "(undocumented)" not in text


def test_check_mode_reports_a_stale_file(tmp_path: object) -> None:
    ok = subprocess.run(
        [sys.executable, "-m", "node.app.gen_docs", "--check"],
        env=homing_env(),
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert ok.returncode == 0, ok.stderr
    out = subprocess.run(
        [sys.executable, "-m", "node.app.gen_docs", "--stdout"],
        env=homing_env(),
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0 and out.stdout == configuration_markdown()


def test_operations_guide_uses_contract_ports_and_commands() -> None:
    text = (REPO / "docs" / "operations.md").read_text(encoding="utf-8")
    for needle in (
        "7400/tcp",
        "7401/udp",
        "7402/tcp",
        "127.0.0.1:7403",
        "7480",
        "homing node init --data-dir",
        "homing node run",
        "--bootstrap",
        "--trust",
        "public_url",
        "homing bootstrap init",
        "homing bootstrap run",
        "homing bootstrap nodes approve",
        "homing bootstrap nodes ban",
        "homing bootstrap publish-dns",
        "SIGTERM",
        "/v1/client",
    ):
        assert needle in text, needle
    # every deploy/ file the guide links to exists
    for link in re.findall(r"\]\((\.\./deploy/[^)#]+)\)", text):
        assert (REPO / "docs" / link).resolve().exists(), link


def test_flag_table_matches_node_run_flags() -> None:
    """The flag table in the reference lists exactly the flags `homing node run` has (once that command exists)."""
    import argparse

    from node.cli import build_parser

    def sub(parser: argparse.ArgumentParser, name: str) -> argparse.ArgumentParser | None:
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction) and name in action.choices:
                return action.choices[name]
        return None

    node = sub(build_parser(), "node")
    run = sub(node, "run") if node else None
    if run is None:
        pytest.skip("`homing node run` is not registered in this checkout")
    flags = {s for a in run._actions for s in a.option_strings if s.startswith("--") and s != "--help"}
    documented = set(re.findall(r"^\| `(--[a-z-]+)", configuration_markdown(), re.M))
    assert flags == documented, f"missing from docs: {flags - documented}; not a flag: {documented - flags}"


def test_every_setting_has_its_own_description() -> None:
    """docs/configuration.md: each setting says what it alone does; no comment is copied to a neighbour (#19.5)."""
    rows = reference_rows()
    missing = [key for key, _default, reason in rows if not reason]
    assert not missing, f"settings without their own comment: {missing}"
    by_reason: dict[str, list[str]] = {}
    for key, _default, reason in rows:
        by_reason.setdefault(reason, []).append(key)
    shared = {reason[:60]: keys for reason, keys in by_reason.items() if len(keys) > 1}
    assert not shared, f"settings sharing one description: {shared}"
