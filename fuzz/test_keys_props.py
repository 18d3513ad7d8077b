"""Property tests of the managed key parser (gateway.auth.keys.parse_key).

- On any text, `parse_key` returns None or (id, secret) and never raises.
- It accepts exactly the well-formed keys with a valid checksum, judged against an
  independent reference written here from the format's definition.
- Every generated key round-trips; every single-character edit of one is refused.
- Every file in `corpus/keys/` gives its expected outcome (valid-*, invalid-*).
"""

from __future__ import annotations

import string
import zlib
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from gateway.auth.keys import format_key, new_key, parse_key

CORPUS = Path(__file__).parent / "corpus" / "keys"
PROPS = settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])

ID_CHARS = string.digits + string.ascii_lowercase
B62 = string.digits + string.ascii_uppercase + string.ascii_lowercase


def reference(text: str) -> tuple[str, str] | None:
    """The format's definition, spelled out without regular expressions."""
    if not text.startswith("sk-gw-") or len(text) != 6 + 12 + 1 + 43 + 6:
        return None
    key_id, sep, rest = text[6:18], text[18], text[19:]
    secret, check = rest[:43], rest[43:]
    if sep != "-" or any(c not in ID_CHARS for c in key_id):
        return None
    if any(c not in B62 for c in rest):
        return None
    crc = zlib.crc32((key_id + secret).encode())
    digits = ""
    for _ in range(6):
        crc, r = divmod(crc, 62)
        digits = B62[r] + digits
    return (key_id, secret) if digits == check else None


def check(text: str) -> tuple[str, str] | None:
    result = parse_key(text)
    assert result == reference(text)
    if result is not None:
        assert format_key(*result) == text
    return result


# Key-shaped text: the prefix and the right alphabets, lengths near the real ones.
_near_keys = st.builds(
    lambda prefix, key_id, sep, body: prefix + key_id + sep + body,
    st.sampled_from(["sk-gw-", "sk-gw", "SK-GW-", "sk-gw--", ""]),
    st.text(ID_CHARS + "A_", min_size=11, max_size=13),
    st.sampled_from(["-", "_", "", "--"]),
    st.text(B62 + "-_=\n\u0663\uff41", min_size=47, max_size=51),
)

_valid_parts = st.tuples(
    st.text(ID_CHARS, min_size=12, max_size=12), st.text(B62, min_size=43, max_size=43)
)


@PROPS
@given(st.text())
def test_any_text_is_handled(text: str) -> None:
    check(text)


@PROPS
@given(_near_keys)
def test_key_shaped_text_is_judged_like_the_reference(text: str) -> None:
    check(text)


@PROPS
@given(_valid_parts)
def test_well_formed_keys_round_trip(parts: tuple[str, str]) -> None:
    assert check(format_key(*parts)) == parts


@PROPS
@given(
    _valid_parts,
    st.integers(min_value=0, max_value=67),
    st.sampled_from(["replace", "insert", "delete"]),
    st.characters(codec="utf-8"),
)
def test_one_edit_of_a_valid_key_is_refused(
    parts: tuple[str, str], index: int, edit: str, char: str
) -> None:
    key = format_key(*parts)
    if edit == "replace":
        mutated = key[:index] + char + key[index + 1 :]
    elif edit == "insert":
        mutated = key[:index] + char + key[index:]
    else:
        mutated = key[:index] + key[index + 1 :]
    assume(mutated != key)
    assert check(mutated) is None


def test_fresh_keys_parse() -> None:
    for _ in range(100):
        issued = new_key()
        result = check(issued.full_key)
        assert result is not None and result[0] == issued.key_id


def corpus_files() -> list[Path]:
    return sorted(CORPUS.glob("*.txt"))


def test_corpus_has_both_outcomes() -> None:
    names = [path.name for path in corpus_files()]
    assert any(name.startswith("valid-") for name in names)
    assert any(name.startswith("invalid-") for name in names)


@pytest.mark.parametrize("path", corpus_files(), ids=lambda path: path.name)
def test_corpus_outcome(path: Path) -> None:
    text = path.read_bytes().decode("utf-8")
    if path.name.startswith("valid-"):
        assert check(text) is not None
    else:
        assert path.name.startswith("invalid-"), "corpus files are valid-* or invalid-*"
        assert check(text) is None
