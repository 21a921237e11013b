"""The boot epoch's file, DATA_DIR/swim-epoch (node/app/service.py `next_epoch_ms`, docs/swim.md "Boot epochs and
replays"): it never goes back, and a file homing did not write neither stops a start in a traceback nor is trusted."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pytest

from node.app.log import get_logger
from node.app.service import EPOCH_FILE, EPOCH_MAX, next_epoch_ms
from node.protocol.errors import ConfigError

LOG = get_logger("node")


def test_the_epoch_never_goes_back_even_when_the_clock_is_behind_the_last_start(tmp_path: Path) -> None:
    ahead = int(time.time() * 1000) + 3_600_000  # the last start's clock was an hour ahead
    (tmp_path / EPOCH_FILE).write_text(f"{ahead}\n")
    assert next_epoch_ms(tmp_path, LOG) == ahead + 1
    assert next_epoch_ms(tmp_path, LOG) == ahead + 2
    assert (tmp_path / EPOCH_FILE).read_text() == f"{ahead + 2}\n"


@pytest.mark.parametrize("content", ["garbage\n", "", "-5\n", "12 34\n", "\u0661\u0662\n", "\xff" * 10_000])
def test_a_damaged_file_starts_from_the_clock_with_a_warning(
    tmp_path: Path, content: str, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / EPOCH_FILE).write_bytes(content.encode("utf-8", "surrogateescape"))
    before = int(time.time() * 1000)
    with caplog.at_level(logging.WARNING):
        epoch = next_epoch_ms(tmp_path, LOG)
    assert before <= epoch <= int(time.time() * 1000)
    assert (tmp_path / EPOCH_FILE).read_text() == f"{epoch}\n"
    assert "swim_epoch_damaged" in caplog.text, caplog.text


@pytest.mark.parametrize("content", [str(EPOCH_MAX), "9" * 20, "9" * 60])
def test_an_epoch_too_large_to_start_from_is_a_config_error_naming_the_file(tmp_path: Path, content: str) -> None:
    """On the code before, `Swim` refused it (`boot incarnation out of range`) and the start ended in a traceback."""
    path = tmp_path / EPOCH_FILE
    path.write_text(content + "\n")
    with pytest.raises(ConfigError) as err:
        next_epoch_ms(tmp_path, LOG)
    assert err.value.key == str(path)
    assert "delete the file and start again" in err.value.reason
    assert path.read_text() == content + "\n"  # left as it was, for the operator to look at


def test_the_largest_epoch_is_still_taken(tmp_path: Path) -> None:
    (tmp_path / EPOCH_FILE).write_text(f"{EPOCH_MAX - 1}\n")
    assert next_epoch_ms(tmp_path, LOG) == EPOCH_MAX
