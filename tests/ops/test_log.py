"""node/app/log.py: one structured line per event, quoting, JSON mode, redaction of bodies and full ids, rate limits."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from node.app.log import REDACTED, VALUE_CHARS_MAX, EventRateLimiter, get_logger, quote, setup_logging
from node.protocol.identity import Identity, id_text, short_id


@pytest.fixture
def out() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    setup_logging("info", False, stream)
    yield stream
    setup_logging("info", False, io.StringIO())


def parse_kv(line: str) -> dict[str, str]:
    """A small key=value parser for the format (bare or double-quoted values with backslash escapes)."""
    fields: dict[str, str] = {}
    i = 0
    while i < len(line):
        eq = line.index("=", i)
        key = line[i:eq]
        j = eq + 1
        if j < len(line) and line[j] == '"':
            j += 1
            chars: list[str] = []
            while line[j] != '"':
                if line[j] == "\\":
                    j += 1
                    chars.append({"n": "\n", "r": "\r", "t": "\t"}.get(line[j], line[j]))
                else:
                    chars.append(line[j])
                j += 1
            value = "".join(chars)
            j += 1
        else:
            end = line.find(" ", j)
            end = len(line) if end < 0 else end
            value = line[j:end]
            j = end
        fields[key] = value
        i = j + 1
    return fields


def lines(stream: io.StringIO) -> list[str]:
    return stream.getvalue().splitlines()


def test_one_key_value_line_per_event(out: io.StringIO) -> None:
    get_logger("swim").info("member_suspect", member="n2", incarnation=3, rtt_s=0.0123, ok=True, none=None)
    (line,) = lines(out)
    f = parse_kv(line)
    assert line.startswith("ts=")
    assert f["level"] == "info" and f["component"] == "swim" and f["event"] == "member_suspect"
    assert f["member"] == "n2" and f["incarnation"] == "3" and f["rtt_s"] == "0.0123"
    assert f["ok"] == "true" and f["none"] == "null"
    assert f["ts"].endswith("Z") and "T" in f["ts"]


def test_values_are_quoted_when_needed_and_stay_on_one_line(out: io.StringIO) -> None:
    tricky = 'a b="c"\nd\\e'
    get_logger("clients").warning("bad_frame", reason=tricky, empty="", eq="k=v", ctl="\x00\x1b")
    (line,) = lines(out)
    f = parse_kv(line)
    assert f["reason"] == tricky
    assert 'ctl="\\x00\\x1b"' in line
    assert f["empty"] == "" and f["eq"] == "k=v"
    assert quote("plain-value_1.2") == "plain-value_1.2"
    assert quote("") == '""'


def test_json_mode_is_one_json_object_per_line() -> None:
    stream = io.StringIO()
    setup_logging("debug", True, stream)
    try:
        log = get_logger("relay", node="abc")
        log.debug("forwarded", kind="call_offer", bytes_=12)
        log.error("stuck", peer="n3")
    finally:
        setup_logging("info", False, io.StringIO())
    docs = [json.loads(x) for x in lines(stream)]
    assert [d["event"] for d in docs] == ["forwarded", "stuck"]
    assert docs[0]["level"] == "debug" and docs[0]["component"] == "relay" and docs[0]["node"] == "abc"
    assert docs[0]["kind"] == "call_offer" and docs[0]["bytes_"] == 12


@pytest.mark.parametrize("json_mode", [False, True])
@pytest.mark.parametrize("level", ["debug", "info", "error"])
def test_body_is_never_logged(level: str, json_mode: bool) -> None:
    stream = io.StringIO()
    setup_logging("debug", json_mode, stream)
    secret = b"SECRET-BODY-BYTES" * 3
    try:
        log = get_logger("relay")
        getattr(log, level)("envelope", body=secret, BODY="SECRET-BODY-TEXT", nested={"body": "SECRET-NESTED"})
    finally:
        setup_logging("info", False, io.StringIO())
    text = stream.getvalue()
    assert "SECRET" not in text
    assert REDACTED in text


def test_bytes_ids_are_short_prefixes_and_other_bytes_only_a_size(out: io.StringIO) -> None:
    cid = Identity.generate().id
    get_logger("clients").info("connected", client=cid, eid=b"\x01" * 16)
    (line,) = lines(out)
    f = parse_kv(line)
    assert f["client"] == short_id(cid) and len(f["client"]) == 8
    assert f["eid"] == "<16 bytes>"
    assert id_text(cid) not in line


def test_full_id_text_is_cut_at_info_but_kept_at_debug() -> None:
    cid = id_text(Identity.generate().id)
    stream = io.StringIO()
    setup_logging("debug", False, stream)
    try:
        log = get_logger("clients")
        log.info("hello", client=cid, note=f"from {cid} via x")
        log.debug("hello_detail", client=cid)
    finally:
        setup_logging("info", False, io.StringIO())
    info, debug = lines(stream)
    assert cid not in info and parse_kv(info)["client"] == cid[:8]
    assert parse_kv(info)["note"] == f"from {cid[:8]} via x"
    assert parse_kv(debug)["client"] == cid


def test_levels_filter_and_bind_adds_context(out: io.StringIO) -> None:
    log = get_logger("swim", node="n1").bind(conn=7)
    log.debug("hidden")
    log.info("shown", x=1)
    (line,) = lines(out)
    f = parse_kv(line)
    assert f["event"] == "shown" and f["node"] == "n1" and f["conn"] == "7"
    assert not log.is_enabled("debug") and log.is_enabled("warning")


def test_exception_is_one_line_with_error_and_traceback(out: io.StringIO) -> None:
    try:
        raise ValueError("broken\nthing")
    except ValueError:
        get_logger("peers").exception("link_failed", peer="n2")
    (line,) = lines(out)
    f = parse_kv(line)
    assert f["level"] == "error" and f["error"] == "ValueError: broken"
    assert "Traceback" in f["traceback"] and "ValueError" in f["traceback"]


def test_long_values_are_truncated_and_reserved_keys_renamed(out: io.StringIO) -> None:
    get_logger("x").info("big", value="y" * 10_000, level="sneaky", event="other")
    (line,) = lines(out)
    f = parse_kv(line)
    assert len(f["value"]) == VALUE_CHARS_MAX and f["value"].endswith("…")
    assert f["level"] == "info" and f["event"] == "big"
    assert f["x_level"] == "sneaky" and f["x_event"] == "other"


def test_unprintable_values_do_not_raise(out: io.StringIO) -> None:
    class Bad:
        def __str__(self) -> str:
            raise RuntimeError("no")

    get_logger("x").info("odd", thing=Bad())
    assert parse_kv(lines(out)[0])["thing"] == "<unprintable>"


def test_library_records_are_formatted_too(out: io.StringIO) -> None:
    logging.getLogger("trio-websocket").warning("peer %s went away", "1.2.3.4")
    logging.getLogger("trio-websocket").info("too chatty for info")
    (line,) = lines(out)
    f = parse_kv(line)
    assert f["component"] == "trio-websocket" and f["event"] == "library"
    assert f["message"] == "peer 1.2.3.4 went away"


def test_setup_twice_installs_one_handler() -> None:
    a, b = io.StringIO(), io.StringIO()
    setup_logging("info", False, a)
    setup_logging("info", False, b)
    try:
        get_logger("x").info("once")
    finally:
        setup_logging("info", False, io.StringIO())
    assert a.getvalue() == "" and len(lines(b)) == 1


def test_bad_level_is_refused() -> None:
    with pytest.raises(ValueError, match="log level"):
        setup_logging("verbose", False, io.StringIO())


def test_event_flood_is_rate_limited_and_reports_suppressed() -> None:
    now = [0.0]
    stream = io.StringIO()
    setup_logging("info", False, stream)
    root = logging.getLogger()
    (handler,) = [h for h in root.handlers if getattr(h, "_homing_handler", False)]
    handler.filters = [EventRateLimiter(rate_per_s=2.0, burst=5, clock=lambda: now[0])]
    try:
        log = get_logger("swim")
        for _ in range(100):
            log.warning("packet_refused", reason="forged")
        log.info("other_event")
        now[0] = 1.0
        log.warning("packet_refused", reason="forged")
    finally:
        setup_logging("info", False, io.StringIO())
    got = [parse_kv(x) for x in lines(stream)]
    refused = [f for f in got if f["event"] == "packet_refused"]
    assert len(refused) == 6
    assert refused[-1]["suppressed"] == "95"
    assert any(f["event"] == "other_event" for f in got)


def test_stdlib_records_written_as_event_key_value_get_real_fields(out: io.StringIO) -> None:
    cid = id_text(Identity.generate().id)
    stdlib = logging.getLogger("homing.bootstrap")
    stdlib.info("event=node_registered node=%s status=%s note=%s", cid, "approved", "two words")
    stdlib.info("event=leaked body=%s", "SECRET")
    stdlib.info("plain prose from homing code")
    first, second, third = (parse_kv(x) for x in lines(out))
    assert first["component"] == "bootstrap" and first["event"] == "node_registered"
    assert first["node"] == cid[:8] and first["status"] == "approved" and first["note"] == "two words"
    assert second["body"] == REDACTED and "SECRET" not in out.getvalue()
    assert third["event"] == "log" and third["message"] == "plain prose from homing code"


def test_stdlib_exception_records_carry_the_traceback(out: io.StringIO) -> None:
    try:
        raise KeyError("k")
    except KeyError:
        logging.getLogger("homing.http").exception("event=http_handler_error method=%s", "GET")
    (line,) = lines(out)
    f = parse_kv(line)
    assert f["event"] == "http_handler_error" and f["method"] == "GET"
    assert f["error"] == "KeyError: 'k'" and "Traceback" in f["traceback"]


def test_kv_messages_keep_numbers_and_booleans_typed() -> None:
    from node.app.log import parse_kv_message

    assert parse_kv_message('event=x port=7400 ratio=0.5 tls=false name="7400" id=abc neg=-3 big=00012') == (
        "x",
        {"port": 7400, "ratio": 0.5, "tls": False, "name": "7400", "id": "abc", "neg": -3, "big": "00012"},
    )


def test_text_arguments_of_event_messages_cannot_add_fields(out: io.StringIO) -> None:
    """An "event=NAME k=%s" message is read back into fields, and its text arguments often come from the network
    (a registry's answer, a request path, an error's text). Each is quoted now: before, an argument such as
    'x event=admin_action who=root' turned the line into that event (the last `event=` won), in every such call
    of the code, not only the ones quoted by hand."""
    stdlib = logging.getLogger("homing.http")
    forged = "x event=admin_action who=root"
    stdlib.info("event=http_request path=%s reason=%r ascii=%a n=%d%% ok=%s", forged, forged, "é", 7, True)
    stdlib.info("event=plain_text note=%s", "bare")
    first, second = (parse_kv(x) for x in lines(out))
    assert first["event"] == "http_request" and "who" not in first
    assert first["path"] == forged and first["reason"] == repr(forged) and first["ascii"] == ascii("é")
    assert first["n"] == "7%" and first["ok"] == "True"
    assert second == {**second, "event": "plain_text", "note": "bare"}
    stdlib.info("event=terminal text=%s", "\x1b[31mred")
    assert "\x1b" not in out.getvalue()  # an escape sequence never reaches the operator's terminal raw
