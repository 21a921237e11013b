"""node/protocol/numerals.py and the parsers that read numbers from outside through it."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from node.protocol.errors import ConfigError
from node.protocol.numerals import DIGITS_MAX, decimal, decimal_at_most
from node.protocol.settings import parse_hostport
from node.protocol.turn import check_url

LOOK_ALIKES = ["\u00b2", "7\u00b2", "\u2460", "\u0661\u0662", "\uff11", "1_000", " 1", "1 ", "+1", "-1", "", "9" * 5000]


@given(st.text(max_size=40) | st.from_regex(r"[0-9]{1,25}", fullmatch=True))
def test_decimal_is_the_value_of_ascii_digits_and_none_for_anything_else(text: str) -> None:
    expected = int(text) if re.fullmatch(f"[0-9]{{1,{DIGITS_MAX}}}", text) else None
    assert decimal(text) == expected


@pytest.mark.parametrize("text", LOOK_ALIKES)
def test_decimal_takes_no_look_alike(text: str) -> None:
    assert decimal(text) is None


@pytest.mark.parametrize("port", LOOK_ALIKES)
def test_addresses_and_stun_urls_refuse_look_alike_ports_with_a_config_error(port: str) -> None:
    """Before, "h:²" raised ValueError (the fuzz harness `entry` found it) and "h:١٢" was read as port 12."""
    with pytest.raises(ConfigError, match="port"):
        parse_hostport(f"h:{port}")
    if port and port.isprintable() and len(port) < 20 and " " not in port:
        with pytest.raises(ConfigError):
            check_url(f"stun:h:{port}")


@given(st.text(max_size=40) | st.from_regex(r"[0-9]{1,500}", fullmatch=True))
def test_decimal_at_most_takes_any_number_of_digits_up_to_its_cap(text: str) -> None:
    expected = min(int(text), 3600) if re.fullmatch("[0-9]+", text) else None
    assert decimal_at_most(text, 3600) == expected
