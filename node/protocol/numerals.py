"""Decimal numbers in untrusted text: HTTP headers, ports in addresses and settings, counts on a command line.

`str.isdigit()` is not the test for them. It is True for "²" and "①", which `int()` then refuses with ValueError,
and for "١٢" (Arabic-Indic digits), which `int()` reads as 12: a header or address that no peer would send
arrives as an exception in the task that read it, or as a number nobody wrote. `int()` also refuses more than
4,300 digits (`sys.get_int_max_str_digits()`), another ValueError. So a number from outside is 1 to
`DIGITS_MAX` ASCII digits, or it is not a number.
"""

from __future__ import annotations

DIGITS_MAX = 19
"""Enough for any count, size or port we read (2**63 has 19 digits); a longer run is not a number we take."""


def decimal(text: str) -> int | None:
    """The value of `text` when it is 1..DIGITS_MAX ASCII digits "0"-"9", else None."""
    if not 0 < len(text) <= DIGITS_MAX or not text.isascii() or not text.isdigit():
        return None
    return int(text)


def decimal_at_most(text: str, cap: int) -> int | None:
    """Like `decimal`, but any number of ASCII digits is a number, at most `cap`: for a field the sender may write
    as long as it likes, such as an HTTP Retry-After in delta-seconds (RFC 9110 §10.2.3)."""
    if len(text) > DIGITS_MAX and text.isascii() and text.isdigit():
        return cap
    value = decimal(text)
    return None if value is None else min(value, cap)
