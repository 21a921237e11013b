"""TSIG key files (bootstrap/tsig_key.py, through `dns_cli` as `publish-dns` uses it): every secret is read whole.

A base64 secret may hold `/` anywhere, so `//` (a BIND comment outside quotes) turns up in about one key in a
hundred; a parser that strips comments from the whole text cut such secrets short (issue #18).
"""

from __future__ import annotations

import base64
import string

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bootstrap import dns_cli
from node.protocol.errors import ConfigError

ALPHABET = string.ascii_uppercase + string.ascii_lowercase + string.digits + "+/"
BASE = "c2VjcmV0LWZvci1ob21pbmctdGVzdHMtb25seS0wMDA="  # 32 bytes: 43 data characters and one `=`
NAME = "update-key"


def knot_line(secret: str, name: str = NAME, alg: str = "hmac-sha256") -> str:
    return f"{alg}:{name}:{secret}\n"


def keymgr_output(secret: str, name: str = NAME, alg: str = "hmac-sha256") -> str:
    """What `keymgr -t NAME ALG` prints (Debian knot 3.2)."""
    return f"# {alg}:{name}:{secret}\nkey:\n  - id: {name}\n    algorithm: {alg}\n    secret: {secret}\n"


def bind_block(secret: str, name: str = NAME, alg: str = "hmac-sha256") -> str:
    """What `tsig-keygen -a ALG NAME` prints."""
    return f'key "{name}" {{\n\talgorithm {alg};\n\tsecret "{secret}";\n}};\n'


FORMATS = [knot_line, keymgr_output, bind_block]


def variants(char: str) -> list[str]:
    """BASE with `char` at each data position (the last one carries 2 padding bits; b64decode accepts any)."""
    return [BASE[:i] + char + BASE[i + len(char) :] for i in range(len(BASE) - len(char))]


def assert_round_trips(render: object, secrets: list[str]) -> None:
    assert callable(render)
    wrong = []
    for secret in secrets:
        try:
            key = dns_cli.parse_tsig_key(render(secret))
        except ConfigError as exc:
            wrong.append(f"{secret}: refused: {exc}")
            continue
        if key != dns_cli.TsigKey(name=NAME, algorithm="hmac-sha256", secret=secret):
            wrong.append(f"{secret}: read as {key.secret}")
    assert not wrong, f"{len(wrong)} of {len(secrets)} secrets not read whole, e.g. {wrong[:3]}"


@pytest.mark.parametrize("render", FORMATS, ids=lambda f: f.__name__)
@pytest.mark.parametrize("char", [*ALPHABET, "//", "///", "+/", "/+"])
def test_every_base64_character_at_every_position(render: object, char: str) -> None:
    assert_round_trips(render, variants(char))


@pytest.mark.parametrize("render", FORMATS, ids=lambda f: f.__name__)
def test_keyring_holds_the_decoded_secret(render: object) -> None:
    assert callable(render)
    secret = base64.b64encode(b"\xff" * 12 + b"homing//tests//!").decode()
    assert "//" in secret
    [tsig] = dns_cli.parse_tsig_key(render(secret)).keyring().values()
    assert tsig.secret == base64.b64decode(secret)


SECRET = base64.b64encode(b"ab" + b"\xff" * 9 + b"cd" * 10).decode()  # "YWL/////////…": valid base64 before `//`


@pytest.mark.parametrize(
    "text",
    [
        # comment markers after the secret, and around and inside the statement
        f'key "{NAME}" {{ algorithm hmac-sha256; secret "{SECRET}"; // old: secret "QUJD";\n}};',
        f'key "{NAME}" {{ algorithm hmac-sha256; secret "{SECRET}"; /* rotated 2026-01 */ }};',
        f'key "{NAME}" {{ algorithm hmac-sha256; secret "{SECRET}"; # "quoted" }} ;\n}};',
        f'key "{NAME}" {{ algorithm hmac-sha256; secret "{SECRET}"/* c */; }}; // trailing',
        f'# key "other" {{ algorithm hmac-md5; secret "QUJD"; }};\nkey {NAME} {{ algorithm "hmac-sha256"; '
        f'secret "{SECRET}"; }};',
        f'/* key "other" {{ secret "x"; }};\n*/ key "{NAME}" {{ algorithm HMAC-SHA256; secret "{SECRET}"; }};',
        f'key "{NAME}" {{\n algorithm hmac-sha256;\n secret "{SECRET[:20]}\n  {SECRET[20:]}";\n}};',
        # ddns-confgen's output: the key, then commented instructions that mention key names and braces
        f'# To activate this key, place the following in named.conf:\nkey "{NAME}" {{\n\talgorithm hmac-sha256;\n'
        f'\tsecret "{SECRET}";\n}};\n\n# Then, in the "zone" statement:\n# update-policy {{\n'
        f"#\t  grant {NAME} name _homing.example.org ANY;\n# }};\n",
        # a named.conf fragment with another statement next to the key
        f'options {{ directory "/var/cache/bind"; allow-update {{ none; }}; }};\n{bind_block(SECRET)}',
        # knot: the first line of keymgr -t, with or without the `# `, a trailing `#` note
        keymgr_output(SECRET),
        f"  hmac-sha256:{NAME}:{SECRET}   # made by keymgr -t\n",
        f"hmac-sha256:{NAME}:{SECRET}\r\n",
    ],
)
def test_comments_are_skipped_only_outside_the_secret(text: str) -> None:
    assert "//" in SECRET
    assert dns_cli.parse_tsig_key(text) == dns_cli.TsigKey(name=NAME, algorithm="hmac-sha256", secret=SECRET)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        (f"hmac-sha256:{NAME}:{SECRET[:-1]}", "not valid base64"),  # padding cut
        (f"hmac-sha256:{NAME}:{SECRET[:17]}//{SECRET[19:]}x", "not valid base64"),
        (f"hmac-sha256:{NAME}:{SECRET} // note", "not a TSIG key"),  # knot lines have no `//` comments
        (f"hmac-sha256:{NAME}:{SECRET}/* note */", "not a TSIG key"),  # nor `/* */` ones
        (f'key "{NAME}" {{ algorithm hmac-sha256; secret "{SECRET}" }};', "missing `;`"),
        (f'key "{NAME}" {{ algorithm hmac-sha256; secret "{SECRET}"; }}', "ends inside"),
        (f'key "{NAME}" {{ algorithm hmac-sha256; secret "{SECRET}; }};', "unterminated"),
        (f'key "{NAME}" {{ algorithm hmac-sha256; /* secret "{SECRET}"; }};', "unterminated"),
        # unquoted, `//` starts a comment (as in BIND): refused, not read as the part before it
        (f'key "{NAME}" {{ algorithm hmac-sha256; secret {SECRET}; }};', "ends inside"),
        (f'key "{NAME}" {{ algorithm hmac-sha256; secret "{SECRET[:10]}*{SECRET[10:]}"; }};', "not valid base64"),
        (f'key "{NAME}" {{ algorithm hmac-sha256; secret ""; }};', "empty|not valid"),
        (bind_block(SECRET) + bind_block(BASE, name="k2"), "exactly one key"),
        (f'key "{NAME}" {{ algorithm hmac-sha256; algorithm hmac-md5; secret "{SECRET}"; }};', "unexpected"),
        ('key "a b" { algorithm hmac-sha256; secret "QUJD"; };', "domain name"),
        ("hmac-sha256:a..b:QUJD", "domain name"),
        (f"hmac-sha256:{'a' * 64}.b:QUJD", "domain name"),
        ("{" * 20 + f'key "{NAME}" {{ }};' + "}" * 20, "deeper"),
    ],
)
def test_damaged_key_files_are_refused_not_read_as_another_key(text: str, reason: str) -> None:
    with pytest.raises(ConfigError, match=reason) as info:
        dns_cli.parse_tsig_key(text)
    assert info.value.key == "--tsig-key"


@pytest.mark.parametrize("secret", ["", "QUJD=", "QU JD", "QUJD//", "QUJ", "QQ=", "Q===", "QUJD\n"])
def test_a_key_cannot_be_built_with_a_secret_that_is_not_base64(secret: str) -> None:
    with pytest.raises(ValueError, match=r"base64|empty"):
        dns_cli.TsigKey(name=NAME, algorithm="hmac-sha256", secret=secret)


LABELS = st.from_regex(r"[A-Za-z0-9_]([A-Za-z0-9_-]{0,20}[A-Za-z0-9])?", fullmatch=True)
NAMES = st.lists(LABELS, min_size=1, max_size=4).map(".".join)
ALGORITHMS = st.sampled_from(["hmac-md5", "hmac-sha1", "hmac-sha224", "hmac-sha256", "hmac-sha384", "hmac-sha512"])
GAPS = st.lists(st.sampled_from([" ", "\t", "\n", "// c\n", "# c\n", "/* c */", '/* "}; */', "// ;}\n"]), max_size=3)


@settings(max_examples=300, deadline=None)
@given(raw=st.binary(min_size=1, max_size=128), name=NAMES, alg=ALGORITHMS, gaps=st.lists(GAPS, min_size=9, max_size=9))
def test_random_secrets_round_trip_in_both_formats(raw: bytes, name: str, alg: str, gaps: list[list[str]]) -> None:
    secret = base64.b64encode(raw).decode()
    want = dns_cli.TsigKey(name=name, algorithm=alg, secret=secret)
    assert dns_cli.parse_tsig_key(keymgr_output(secret, name, alg)) == want
    assert dns_cli.parse_tsig_key(knot_line(secret, name, alg)) == want
    g = ["".join(x) or " " for x in gaps]
    bind = (f'{g[0]}key{g[1]}"{name}"{g[2]}{{{g[3]}algorithm{g[4]}{alg};{g[5]}secret{g[6]}"{secret}"{g[7]};'
            f"{g[8]}}};{g[0]}")  # fmt: skip
    assert dns_cli.parse_tsig_key(bind) == want
    [tsig] = want.keyring().values()
    assert tsig.secret == raw
