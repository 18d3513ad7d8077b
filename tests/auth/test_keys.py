"""The managed key format: generation, parsing, checksum, hashing."""

from __future__ import annotations

import hashlib
import re
import zlib

import pytest

from gateway.auth.keys import (
    BASE62,
    KEY_LENGTH,
    PREFIX,
    base62,
    checksum,
    format_key,
    hash_secret,
    new_key,
    parse_key,
    redacted,
)

KEY_RE = re.compile(r"sk-gw-[a-z0-9]{12}-[0-9A-Za-z]{49}")


def test_new_key_has_the_documented_shape() -> None:
    issued = new_key()
    assert KEY_RE.fullmatch(issued.full_key)
    assert len(issued.full_key) == KEY_LENGTH == 68
    assert issued.full_key.startswith(f"{PREFIX}{issued.key_id}-")
    parsed = parse_key(issued.full_key)
    assert parsed is not None
    key_id, secret = parsed
    assert key_id == issued.key_id
    assert len(secret) == 43
    assert issued.secret_hash == hashlib.sha256(secret.encode()).digest()


def test_the_checksum_is_crc32_of_id_and_secret_in_base62() -> None:
    key_id, secret = "abc123def456", "A" * 43
    crc = zlib.crc32((key_id + secret).encode())
    check = checksum(key_id, secret)
    assert len(check) == 6
    assert sum(BASE62.index(c) * 62**i for i, c in enumerate(reversed(check))) == crc
    assert format_key(key_id, secret) == f"sk-gw-{key_id}-{secret}{check}"


def test_keys_are_random_and_secrets_carry_256_bits() -> None:
    keys = [new_key() for _ in range(200)]
    assert len({k.key_id for k in keys}) == 200
    assert len({k.full_key for k in keys}) == 200
    # 43 base62 digits hold every 256-bit value, and nothing of the secret is lost.
    assert 62**43 > 2**256
    assert base62(2**256 - 1, 43) != base62(2**256 - 2, 43)
    # The top digit varies: the secret is not a short number zero-padded.
    assert len({parse_key(k.full_key)[1][:1] for k in keys}) > 1  # type: ignore[index]


def test_repr_never_shows_the_key() -> None:
    issued = new_key()
    assert issued.full_key not in repr(issued)
    assert issued.secret_hash.hex() not in repr(issued)


def test_new_key_with_a_chosen_id_and_bad_ids() -> None:
    assert new_key("000000000000").key_id == "000000000000"
    for bad in ("short", "ABCDEFGHIJKL", "abcdefghijk-", "abcdefghijklm"):
        with pytest.raises(ValueError):
            new_key(bad)


def test_every_single_character_change_is_caught() -> None:
    """A CRC32 detects every error confined to 32 bits: any one substituted character
    of the id, the secret or the check makes the key invalid."""
    key = new_key().full_key
    start = len(PREFIX)
    for i in range(start, len(key)):
        if key[i] == "-":
            continue
        alphabet = "0123456789abcdefghijklmnopqrstuvwxyz" if i < start + 12 else BASE62
        for c in alphabet:
            if c != key[i]:
                assert parse_key(key[:i] + c + key[i + 1 :]) is None, (i, c)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "sk-gw-",
        "sk-gw-abc",
        "Bearer sk-gw-x",
        "sk-test-all-0123456789",
        " " * KEY_LENGTH,
    ],
)
def test_malformed_text_is_not_a_key(text: str) -> None:
    assert parse_key(text) is None


def test_near_misses_of_a_valid_key_are_rejected() -> None:
    key = new_key().full_key
    assert parse_key(key) is not None
    variants = [
        key + "\n",
        key + " ",
        " " + key,
        key[:-1],
        key + "a",
        key.upper(),
        "SK-GW-" + key[6:],
        "sk_gw-" + key[6:],
        key.replace("-", "_", 2),
        key[:18] + "_" + key[19:],  # the id separator
        key[:6] + key[6:18].upper() + key[18:],  # the id is lower case only
        key[:20] + "\u0131" + key[21:],  # a non-ASCII letter in the secret
        key[:7] + "\uff41" + key[8:],  # a full-width "a" in the id
    ]
    for text in variants:
        assert parse_key(text) is None, text


def test_hash_secret_is_sha256() -> None:
    assert hash_secret("abc") == hashlib.sha256(b"abc").digest()
    assert hash_secret("abc") != hash_secret("abd")


def test_redacted_shows_only_the_id() -> None:
    issued = new_key()
    shown = redacted(issued.key_id)
    assert shown == f"sk-gw-{issued.key_id}-..."
    assert parse_key(issued.full_key)[1] not in shown  # type: ignore[index]


def test_base62_bounds() -> None:
    assert base62(0, 3) == "000"
    assert base62(61, 1) == "z"
    assert base62(62, 2) == "10"
    for bad in (-1, 62**2):
        with pytest.raises(ValueError):
            base62(bad, 2)
