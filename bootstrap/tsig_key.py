"""TSIG key files for `homing bootstrap publish-dns` (docs/operations.md, "homing discover").

Two formats, each read by a parser that knows its grammar, so a secret is never cut short:

- knot's one-line form, as `keymgr -t NAME hmac-sha256` prints it: `ALGORITHM:NAME:BASE64SECRET`, a leading `# `
  allowed and the YAML that keymgr prints after it ignored. This form has no comments: every character after the
  second `:` up to the end of the line (or up to whitespace and a `#`, which base64 never contains) is the secret,
  so a secret holding `//` or `/+` is read whole.
- a BIND key statement, as `tsig-keygen` or `ddns-confgen` print it:
  `key "NAME" { algorithm ALGORITHM; secret "BASE64"; };`, with `//`, `#` and `/* */` comments anywhere outside
  quoted strings and other statements around it ignored. The secret is a quoted string; whitespace inside it is
  dropped, as BIND does.

The secret must be strict base64 (alphabet, padding), so a damaged key file is refused rather than read as another,
shorter key that the server would then refuse with BADSIG.
"""

from __future__ import annotations

import base64
import re
from pathlib import Path
from typing import Any

import attrs
import dns.exception
import dns.name
import dns.tsig
import dns.tsigkeyring

from node.protocol.errors import ConfigError

TSIG_ALGORITHMS = {
    "hmac-md5": dns.tsig.HMAC_MD5,
    "hmac-sha1": dns.tsig.HMAC_SHA1,
    "hmac-sha224": dns.tsig.HMAC_SHA224,
    "hmac-sha256": dns.tsig.HMAC_SHA256,
    "hmac-sha384": dns.tsig.HMAC_SHA384,
    "hmac-sha512": dns.tsig.HMAC_SHA512,
}
KEY_FILE_MAX_BYTES = 64 * 1024
SECRET_MAX_BYTES = 1024  # decoded; HMAC keys longer than the hash block are hashed anyway
BIND_NESTING_MAX = 8  # `{` levels in a BIND file (a key file has 1)

_NAME = r"[A-Za-z0-9._-]+"
_KNOT_RE = re.compile(
    rf"^[ \t]*(?:#[ \t]*)?(hmac-[A-Za-z0-9]+):({_NAME}):([A-Za-z0-9+/=]+)[ \t\r]*(?:#[^\n]*)?$", re.MULTILINE
)
_BASE64_RE = re.compile(r"(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?")
_BIND_TOKEN_RE = re.compile(
    r"""(?P<skip>\s+|//[^\n]*|\#[^\n]*|/\*.*?\*/)
      | (?P<string>"[^"\\]*")
      | (?P<punct>[{};])
      | (?P<word>(?:[^\s{};"\#/]|/(?![/*]))+)""",
    re.DOTALL | re.VERBOSE,
)


def _algorithm_known(_: object, __: object, value: str) -> None:
    if value not in TSIG_ALGORITHMS:
        raise ValueError(f"TSIG algorithm {value!r} unsupported (use one of {', '.join(TSIG_ALGORITHMS)})")


def _strict_base64(_: object, __: object, value: str) -> None:
    try:
        _check_secret(value, "secret")
    except ConfigError as exc:
        raise ValueError(str(exc)) from exc


@attrs.frozen(kw_only=True, slots=True)
class TsigKey:
    name: str = attrs.field(validator=attrs.validators.matches_re(_NAME))
    algorithm: str = attrs.field(validator=_algorithm_known)  # e.g. "hmac-sha256"
    secret: str = attrs.field(validator=_strict_base64)  # base64, as in the key file (whitespace removed)

    def keyring(self) -> dict[dns.name.Name, Any]:
        return dict(dns.tsigkeyring.from_text({self.name: (self.algorithm, self.secret)}))


def parse_tsig_key(text: str, *, source: str = "--tsig-key") -> TsigKey:
    """Parse knot's `keymgr -t` output or a BIND key statement (module docstring). Raises ConfigError naming
    `source` for anything else, including a secret that is not strict base64."""
    if "{" in text:  # a BIND statement block; knot's line and the YAML keymgr prints after it have no braces
        name, algorithm, secret = _parse_bind(text, source)
    else:
        match = _KNOT_RE.search(text)
        if match is None:
            raise ConfigError(source, 'not a TSIG key (expected ALGORITHM:NAME:SECRET or a BIND key "name" {…}; block)')
        algorithm, name, secret = match[1], match[2], match[3]
    algorithm = algorithm.lower()
    if algorithm not in TSIG_ALGORITHMS:
        raise ConfigError(source, f"TSIG algorithm {algorithm!r} unsupported (use one of {', '.join(TSIG_ALGORITHMS)})")
    _check_name(name, source)
    _check_secret(secret, source)
    return TsigKey(name=name, algorithm=algorithm, secret=secret)


def _check_name(name: str, source: str) -> None:
    try:
        if not re.fullmatch(_NAME, name):
            raise ValueError("only letters, digits, `.`, `-` and `_`")
        dns.name.from_text(name)
    except (ValueError, dns.exception.DNSException) as exc:
        raise ConfigError(source, f"TSIG key name {name[:80]!r} is not a domain name: {exc}") from exc


def _check_secret(secret: str, source: str) -> None:
    if not _BASE64_RE.fullmatch(secret):
        raise ConfigError(source, "TSIG secret is not valid base64: it needs groups of 4 of A-Z a-z 0-9 + /, `=` last")
    raw = base64.b64decode(secret, validate=True)
    if not raw:
        raise ConfigError(source, "TSIG secret is empty")
    if len(raw) > SECRET_MAX_BYTES:
        raise ConfigError(source, f"TSIG secret is longer than {SECRET_MAX_BYTES} bytes")


def _bind_tokens(text: str, source: str) -> list[str]:
    """The tokens of a BIND configuration text: `{`, `}`, `;`, quoted strings (with their quotes) and words."""
    tokens: list[str] = []
    pos = 0
    while pos < len(text):
        match = _BIND_TOKEN_RE.match(text, pos)
        if match is None:
            line = text.count("\n", 0, pos) + 1
            what = "comment" if text.startswith("/*", pos) else "string" if text[pos] == '"' else "character"
            raise ConfigError(source, f"BIND key file line {line}: unterminated or unexpected {what}")
        if match.lastgroup != "skip":
            tokens.append(match[0])
        pos = match.end()
    return tokens


def _statements(tokens: list[str], source: str) -> list[tuple[list[str], list[list[str]]]]:
    """Top-level statements as (words before the block, flat clauses of the block). Nested blocks (other
    statements' options) are skipped up to BIND_NESTING_MAX levels."""
    out: list[tuple[list[str], list[list[str]]]] = []
    words: list[str] = []
    clauses: list[list[str]] = []
    clause: list[str] = []
    depth = 0
    for tok in tokens:
        if tok == "{":
            depth += 1
            if depth > BIND_NESTING_MAX:
                raise ConfigError(source, f"BIND key file nests blocks deeper than {BIND_NESTING_MAX}")
        elif tok == "}":
            if depth == 0:
                raise ConfigError(source, "BIND key file has an unmatched `}`")
            if depth == 1 and clause:
                raise ConfigError(source, f"BIND key file: a missing `;` after `{' '.join(clause)[:80]}`")
            depth -= 1
        elif depth == 0 and tok == ";":
            out.append((words, clauses))
            words, clauses = [], []
        elif depth == 0:
            words.append(tok)
        elif depth == 1 and tok == ";":
            clauses.append(clause)
            clause = []
        elif depth == 1:
            clause.append(tok)
    if depth or words or clause:
        raise ConfigError(source, "BIND key file ends inside a statement (a missing `;` or `}`?)")
    return out


def _unquote(tok: str) -> str:
    return tok[1:-1] if tok.startswith('"') else tok


def _parse_bind(text: str, source: str) -> tuple[str, str, str]:
    statements = _statements(_bind_tokens(text, source), source)
    keys = [(words, clauses) for words, clauses in statements if words[:1] == ["key"]]
    if len(keys) != 1:
        raise ConfigError(source, f"BIND key file must hold exactly one key statement, not {len(keys)}")
    words, clauses = keys[0]
    if len(words) != 2:
        raise ConfigError(source, 'BIND key statement must be `key "NAME" { … };`')
    values: dict[str, str] = {}
    for clause in clauses:
        if len(clause) != 2 or clause[0] not in ("algorithm", "secret") or clause[0] in values:
            raise ConfigError(source, f"BIND key block: unexpected `{' '.join(clause)[:80]};`")
        values[clause[0]] = clause[1]
    if "algorithm" not in values or "secret" not in values:
        raise ConfigError(source, 'BIND key block needs `algorithm …;` and `secret "…";`')
    if not values["secret"].startswith('"'):
        raise ConfigError(source, 'BIND key block: the secret must be a quoted string, `secret "…";`')
    return _unquote(words[1]), _unquote(values["algorithm"]), re.sub(r"\s", "", _unquote(values["secret"]))


def load_tsig_key(path: Path) -> TsigKey:
    try:
        data = path.read_bytes()[: KEY_FILE_MAX_BYTES + 1]
    except OSError as exc:
        raise ConfigError("--tsig-key", f"cannot read {path}: {exc.strerror}") from exc
    if len(data) > KEY_FILE_MAX_BYTES:
        raise ConfigError("--tsig-key", f"{path} is larger than a key file can be")
    return parse_tsig_key(data.decode("utf-8", errors="replace"))
