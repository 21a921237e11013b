"""Structured logging: one line per event, `key=value` by default, JSON with `--log-json` (docs/operations.md).

Public API (a thin wrapper over stdlib `logging`):

    setup_logging(level: str = "info", json: bool = False, stream: TextIO | None = None,
                  *, lines_per_event_per_s: float = 20.0, burst: int = 100) -> None
        Installs one handler on the root logger (replacing one installed before, so calling it twice is safe).
        `level` is debug|info|warning|error; homing's loggers log at `level`, third-party libraries at warning
        or above. `stream` defaults to sys.stderr. Each event name is rate-limited per logger (a token bucket of
        `lines_per_event_per_s` with `burst`): a flood of refused packets cannot fill the disk; the next line
        of that event that is let through carries `suppressed=N`.

    get_logger(component: str, **context: object) -> Logger
        `log = get_logger("swim", node=short_id(my_id))`; `log.info("member_suspect", member=peer_id, inc=3)`.
        `log.bind(conn=7)` returns a logger with more context (several nodes share one process in tests and the
        demo: bind `node=` so their lines can be told apart). Methods: debug, info, warning, error, exception
        (exception adds `error="Type: message"` and a one-line `traceback`).

Plain stdlib calls work too: `logging.getLogger("homing.http").info("event=handler_error path=%s", p)` is parsed
into event and fields (same privacy rules); each text argument (`%s`, `%r`, `%a`) is quoted first, so a remote
string cannot add fields or another `event=`. Any other message becomes `event=log message="..."` (homing loggers)
or `event=library` (third-party loggers such as trio-websocket).

Line format (key=value):  ts=2025-01-02T03:04:05.678Z level=info component=swim event=member_suspect node=AbC…
    Values with spaces, quotes, `=`, control characters or nothing at all are double-quoted with backslash escapes,
    so every event is exactly one line. JSON: {"ts": …, "level": …, "component": …, "event": …, fields…}.

Privacy rules, enforced here rather than trusted to callers:
- a field named in REDACTED_KEYS (`body`, `sig`, `seed`, `secret`, `nonce`, …) is written as `<redacted>`;
  bodies are opaque client-encrypted bytes and never appear in a log at any level;
- `bytes` values of an id's size are rendered as `identity.short_id` (8 characters); other bytes as `<N bytes>`;
- at info level and above, any string that looks like a full id (43 base64url characters) is cut to its
  8-character prefix; at debug level full id strings are kept (debug is for a developer's own machine);
- values are cut to VALUE_CHARS_MAX characters, and at most FIELDS_MAX fields are written per line.
Logging never raises into the caller: a value that cannot be rendered is written as `<unprintable>`.
"""

from __future__ import annotations

import json as _json
import logging
import re
import sys
import time
import traceback
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, TextIO

from node.protocol.identity import ID_BYTES, short_id
from node.protocol.ratelimit import TokenBucket

LEVELS: dict[str, int] = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}
REDACTED_KEYS = frozenset({"body", "sig", "seed", "secret", "private_key", "nonce", "password", "token", "tsig"})
REDACTED = "<redacted>"
VALUE_CHARS_MAX = 512
FIELDS_MAX = 32
TRACEBACK_CHARS_MAX = 8192
RESERVED_KEYS = frozenset({"ts", "level", "component", "event"})
_EVENTS_TRACKED_MAX = 4096
_ROOT = "homing"
_FULL_ID_RE = re.compile(r"[A-Za-z0-9_-]{43}")
_NEEDS_QUOTES_RE = re.compile(r'[\s="\\\x00-\x1f\x7f]')
_FIELDS_ATTR = "homing_fields"
_EVENT_ATTR = "homing_event"
_COMPONENT_ATTR = "homing_component"
_HANDLER_MARK = "_homing_handler"


class Logger:
    """Structured logger for one component, with bound context fields."""

    __slots__ = ("_context", "_logger", "component")

    def __init__(self, component: str, context: Mapping[str, object] | None = None) -> None:
        self.component = component
        self._logger = logging.getLogger(f"{_ROOT}.{component}")
        self._context: dict[str, object] = dict(context or {})

    def bind(self, **context: object) -> Logger:
        return Logger(self.component, {**self._context, **context})

    def is_enabled(self, level: str) -> bool:
        return self._logger.isEnabledFor(LEVELS[level])

    def debug(self, event: str, /, **fields: object) -> None:
        self._log(logging.DEBUG, event, fields)

    def info(self, event: str, /, **fields: object) -> None:
        self._log(logging.INFO, event, fields)

    def warning(self, event: str, /, **fields: object) -> None:
        self._log(logging.WARNING, event, fields)

    def error(self, event: str, /, **fields: object) -> None:
        self._log(logging.ERROR, event, fields)

    def exception(self, event: str, /, **fields: object) -> None:
        """Log at error level with the exception being handled (call it from an `except` block)."""
        exc = sys.exc_info()[1]
        if exc is not None:
            fields = {**fields, "error": _exc_line(exc), "traceback": _traceback_text(exc)}
        self._log(logging.ERROR, event, fields)

    def _log(self, level: int, event: str, fields: Mapping[str, object]) -> None:
        if not self._logger.isEnabledFor(level):
            return
        merged = {**self._context, **fields} if self._context else dict(fields)
        self._logger.log(
            level,
            event,
            extra={_FIELDS_ATTR: merged, _EVENT_ATTR: event, _COMPONENT_ATTR: self.component},
        )


def get_logger(component: str, **context: object) -> Logger:
    """A structured logger named `homing.<component>` with optional bound context fields."""
    return Logger(component, context)


def _exc_line(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _traceback_text(exc: BaseException) -> str:
    text = "".join(traceback.format_exception(exc)).rstrip()
    return text[-TRACEBACK_CHARS_MAX:]


# ---------------------------------------------------------------------------------------------------------------
# rendering


def render_value(key: str, value: object, *, full_ids: bool = False) -> object:
    """The loggable form of one field value (str, int, float, bool or None), after the privacy rules."""
    if key.lower() in REDACTED_KEYS:
        return REDACTED
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, bytes | bytearray | memoryview):
        raw = bytes(value)
        return short_id(raw) if len(raw) == ID_BYTES else f"<{len(raw)} bytes>"
    try:
        if isinstance(value, Mapping | list | tuple | set | frozenset):
            text = _json.dumps(_sanitize(value, full_ids, 0), ensure_ascii=False, separators=(",", ":"))
        else:
            text = value if isinstance(value, str) else str(value)
    except Exception:
        return "<unprintable>"
    if not full_ids:
        text = _FULL_ID_RE.sub(lambda m: m.group(0)[:8], text) if len(text) >= 43 else text
    if len(text) > VALUE_CHARS_MAX:
        text = text[: VALUE_CHARS_MAX - 1] + "…"
    return text


def _sanitize(value: object, full_ids: bool, depth: int) -> object:
    """Containers inside a field get the same rules as fields (a dict holding a `body` is redacted too)."""
    if depth >= 4:
        return "…"
    if isinstance(value, Mapping):
        items = list(value.items())[:FIELDS_MAX]
        return {str(k): _sanitize_item(str(k), v, full_ids, depth) for k, v in items}
    if isinstance(value, list | tuple | set | frozenset):
        return [_sanitize_item("", v, full_ids, depth) for v in list(value)[:FIELDS_MAX]]
    return render_value("", value, full_ids=full_ids)


def _sanitize_item(key: str, value: object, full_ids: bool, depth: int) -> object:
    if key.lower() in REDACTED_KEYS:
        return REDACTED
    return _sanitize(value, full_ids, depth + 1)


def quote(text: str) -> str:
    """`text` as a key=value value: bare when safe, else double-quoted with escapes (always one line)."""
    if text and not _NEEDS_QUOTES_RE.search(text):
        return text
    out = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\r", "\\r").replace("\t", "\\t")
    out = re.sub(r"[\x00-\x1f\x7f]", lambda m: f"\\x{ord(m.group(0)):02x}", out)
    return f'"{out}"'


_KV_TOKEN_RE = re.compile(r'([A-Za-z0-9_.-]+)=("(?:[^"\\]|\\.)*"|\S*)(?:\s+|$)')
_UNESCAPES = {"n": "\n", "r": "\r", "t": "\t"}


def parse_kv_message(text: str) -> tuple[str, dict[str, object]] | None:
    """Parse "event=NAME k=v k2=\"quoted value\"" into (NAME, fields); None when the text is not in that form."""
    pos = 0
    fields: dict[str, object] = {}
    while pos < len(text) and len(fields) <= FIELDS_MAX:
        m = _KV_TOKEN_RE.match(text, pos)
        if m is None:
            return None
        key, raw = m.group(1), m.group(2)
        if raw.startswith('"'):
            fields[key] = re.sub(r"\\(.)", lambda e: _UNESCAPES.get(e.group(1), e.group(1)), raw[1:-1])
        else:
            fields[key] = _typed(raw)
        pos = m.end()
    event = fields.pop("event", None)
    return (str(event), fields) if event else None


_INT_RE = re.compile(r"-?(?:0|[1-9][0-9]{0,17})")
_FLOAT_RE = re.compile(r"-?(?:0|[1-9][0-9]{0,17})\.[0-9]{1,17}")


def _typed(raw: str) -> object:
    """An unquoted value as JSON would have it: integers, decimals and booleans typed, everything else text, so a
    port is 7400 in every JSON line whether it was logged with the structured logger or in "k=v" form."""
    if _INT_RE.fullmatch(raw):
        return int(raw)
    if _FLOAT_RE.fullmatch(raw):
        return float(raw)
    if raw in ("true", "false"):
        return raw == "true"
    return raw


def _kv_value(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:.6g}"
    return quote(str(value))


def _safe_key(key: str) -> str:
    clean = re.sub(r"[^A-Za-z0-9_.-]", "_", key)[:64] or "_"
    return f"x_{clean}" if clean in RESERVED_KEYS else clean


def _iso(created: float) -> str:
    return datetime.fromtimestamp(created, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


# one %-conversion of a format string (printf-style, as `logging` uses): `%%`, or flags, width, precision, type
_CONVERSION_RE = re.compile(r"%(?:%|[#0\- +]*(?:\*|\d+)?(?:\.(?:\*|\d+))?[hlL]?([diouxXeEfFgGcrsa]))")


def _is_event_text(msg: object) -> bool:
    return isinstance(msg, str) and msg.startswith("event=")


def _kv_message(record: logging.LogRecord) -> str:
    """`record.getMessage()` for an "event=NAME k=%s ..." message, with each text argument (`%s`, `%r`, `%a`)
    `quote()`d: the message is read back into fields, so an argument with a space, `=` or a quote, often from the
    network (a registry's answer, a request path, an error text), could otherwise add fields, `event=` among them
    (tests/ops/test_log.py). Mapping arguments (`%(name)s`) and a format that does not match its arguments are
    formatted as logging would."""
    args = record.args
    if not args or not isinstance(args, tuple):
        return record.getMessage()
    msg = str(record.msg)
    safe: list[object] = []
    parts: list[str] = []
    at = i = 0
    for m in _CONVERSION_RE.finditer(msg):
        kind = m.group(1)
        if kind is None:  # %%
            continue
        if "*" in m.group(0) or i >= len(args):
            return record.getMessage()
        arg = args[i]
        i += 1
        if kind in "rsa" and not isinstance(arg, (int, float)):
            text = repr(arg) if kind == "r" else ascii(arg) if kind == "a" else str(arg)
            parts.append(msg[at : m.start()] + "%s")
            safe.append(quote(text))
        else:
            parts.append(msg[at : m.end()])
            safe.append(arg)
        at = m.end()
    if i != len(args):
        return record.getMessage()
    return ("".join(parts) + msg[at:]) % tuple(safe)


class StructuredFormatter(logging.Formatter):
    """Formats homing records (and any third-party record) as one key=value or JSON line."""

    def __init__(self, *, json: bool = False) -> None:
        super().__init__()
        self.json = json

    def format(self, record: logging.LogRecord) -> str:
        head, fields = self._parts(record)
        full_ids = record.levelno < logging.INFO
        items: list[tuple[str, object]] = []
        for key, value in list(fields.items())[:FIELDS_MAX]:
            items.append((_safe_key(str(key)), render_value(str(key), value, full_ids=full_ids)))
        if len(fields) > FIELDS_MAX:
            items.append(("fields_dropped", len(fields) - FIELDS_MAX))
        if self.json:
            doc: dict[str, object] = dict(head)
            doc.update(items)
            return _json.dumps(doc, ensure_ascii=False, separators=(",", ":"))
        pairs = [f"{k}={_kv_value(v)}" for k, v in head] + [f"{k}={_kv_value(v)}" for k, v in items]
        return " ".join(pairs)

    def _parts(self, record: logging.LogRecord) -> tuple[list[tuple[str, object]], dict[str, object]]:
        level = logging.getLevelName(record.levelno).lower()
        event = getattr(record, _EVENT_ATTR, None)
        if event is not None:
            component = getattr(record, _COMPONENT_ATTR, record.name)
            fields = dict(getattr(record, _FIELDS_ATTR, {}))
            head: list[tuple[str, object]] = [("ts", _iso(record.created)), ("level", level)]
            head += [("component", render_value("component", component)), ("event", render_value("event", event))]
            return head, fields
        # a plain stdlib record: homing code that writes "event=NAME key=value ..." as its message gets the same
        # fields as a structured call; anything else (trio-websocket, httpx...) keeps its message as one field
        try:
            message = _kv_message(record) if _is_event_text(record.msg) else record.getMessage()
        except Exception:
            message = str(record.msg)
        component = record.name.removeprefix(f"{_ROOT}.")
        parsed = parse_kv_message(message) if message.startswith("event=") else None
        if parsed is not None:
            event, fields = parsed
        else:
            event = "log" if record.name.startswith(f"{_ROOT}.") else "library"
            fields = {"message": message}
        if record.exc_info and record.exc_info[1] is not None:
            fields["error"] = _exc_line(record.exc_info[1])
            fields["traceback"] = _traceback_text(record.exc_info[1])
        head = [("ts", _iso(record.created)), ("level", level), ("component", component)]
        head.append(("event", render_value("event", event)))
        return head, fields


class EventRateLimiter(logging.Filter):
    """Token bucket per (logger, event): at most `rate_per_s` lines a second after a burst of `burst`."""

    def __init__(self, rate_per_s: float, burst: int, clock: Any = time.monotonic) -> None:
        super().__init__()
        self.rate_per_s = rate_per_s
        self.burst = burst
        self._clock = clock
        self._buckets: dict[tuple[str, str], TokenBucket] = {}
        self._suppressed: dict[tuple[str, str], int] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        key = (record.name, str(getattr(record, _EVENT_ATTR, record.msg))[:128])
        now = float(self._clock())
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) >= _EVENTS_TRACKED_MAX:
                self._buckets.clear()
                self._suppressed.clear()
            bucket = self._buckets[key] = TokenBucket(self.rate_per_s, self.burst, now)
        if not bucket.take(now):
            self._suppressed[key] = self._suppressed.get(key, 0) + 1
            return False
        suppressed = self._suppressed.pop(key, 0)
        if suppressed:
            fields = getattr(record, _FIELDS_ATTR, None)
            if isinstance(fields, dict):
                setattr(record, _FIELDS_ATTR, {**fields, "suppressed": suppressed})
        return True


def setup_logging(
    level: str = "info",
    json: bool = False,
    stream: TextIO | None = None,
    *,
    lines_per_event_per_s: float = 20.0,
    burst: int = 100,
) -> None:
    """Send every log record to `stream` (default stderr), one structured line each. See the module docstring."""
    if level not in LEVELS:
        raise ValueError(f"log level must be one of {', '.join(LEVELS)}, got {level!r}")
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, _HANDLER_MARK, False)]:
        root.removeHandler(old)
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    setattr(handler, _HANDLER_MARK, True)
    handler.setFormatter(StructuredFormatter(json=json))
    handler.addFilter(EventRateLimiter(lines_per_event_per_s, burst))
    root.addHandler(handler)
    root.setLevel(max(LEVELS[level], logging.WARNING))
    logging.getLogger(_ROOT).setLevel(LEVELS[level])
