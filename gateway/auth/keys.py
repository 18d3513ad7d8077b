"""The managed key format: `sk-gw-<id>-<secret><check>`.

- `id`: 12 characters `[a-z0-9]`, public; the store looks a key up by it.
- `secret`: 43 base62 characters encoding 256 random bits from `secrets`.
- `check`: 6 base62 characters of CRC32(id + secret), so that a secret scanner can
  tell a real leaked key from a look-alike offline, with no call to us (the unique
  `sk-gw-` prefix alone gives about 0.5% false positives, docs/reliability.md R18).

Only SHA-256(secret) is ever stored; a presented key is parsed, found by id, and its
secret's hash compared with `hmac.compare_digest`. A slow KDF adds nothing for 256-bit
random secrets. `parse_key` rejects anything malformed or with a bad checksum before
any storage is touched, so a mistyped or forged key costs a regex and a CRC.

Pure module: no I/O.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import zlib
from typing import Final

from gateway.store.records import IssuedKey

PREFIX: Final = "sk-gw-"
ID_LENGTH: Final = 12
SECRET_LENGTH: Final = 43  # 62**43 > 2**256: 256 random bits fit in 43 base62 digits
CHECK_LENGTH: Final = 6  # 62**6 > 2**32: a CRC32 fits in 6 base62 digits
KEY_LENGTH: Final = len(PREFIX) + ID_LENGTH + 1 + SECRET_LENGTH + CHECK_LENGTH

BASE62: Final = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
ID_ALPHABET: Final = "0123456789abcdefghijklmnopqrstuvwxyz"

_KEY_RE: Final = re.compile(
    rf"sk-gw-([a-z0-9]{{{ID_LENGTH}}})-([0-9A-Za-z]{{{SECRET_LENGTH}}})([0-9A-Za-z]{{{CHECK_LENGTH}}})",
    re.ASCII,
)


def base62(value: int, width: int) -> str:
    """`value` in base62, left-padded with "0" to exactly `width` digits."""
    if value < 0 or value >= 62**width:
        raise ValueError(f"{value} does not fit in {width} base62 digits")
    digits = []
    for _ in range(width):
        value, rem = divmod(value, 62)
        digits.append(BASE62[rem])
    return "".join(reversed(digits))


def checksum(key_id: str, secret: str) -> str:
    """The 6-character check suffix: base62 of CRC32 over id and secret."""
    return base62(zlib.crc32((key_id + secret).encode("ascii")), CHECK_LENGTH)


def hash_secret(secret: str) -> bytes:
    """SHA-256 of a key's secret part: the only form in which it is stored."""
    return hashlib.sha256(secret.encode("utf-8")).digest()


def format_key(key_id: str, secret: str) -> str:
    """The full key text for an id and a secret."""
    return f"{PREFIX}{key_id}-{secret}{checksum(key_id, secret)}"


def new_key_id() -> str:
    return "".join(secrets.choice(ID_ALPHABET) for _ in range(ID_LENGTH))


def new_key(key_id: str | None = None) -> IssuedKey:
    """A new key with 256 random bits of secret (and a random id unless one is given)."""
    kid = new_key_id() if key_id is None else key_id
    if not re.fullmatch(rf"[a-z0-9]{{{ID_LENGTH}}}", kid, re.ASCII):
        raise ValueError("a key id is 12 characters of [a-z0-9]")
    secret = base62(secrets.randbits(256), SECRET_LENGTH)
    return IssuedKey(key_id=kid, full_key=format_key(kid, secret), secret_hash=hash_secret(secret))


def parse_key(text: str) -> tuple[str, str] | None:
    """(key_id, secret) of a well-formed key with a valid checksum, else None. Never raises."""
    if len(text) != KEY_LENGTH or not text.startswith(PREFIX):
        return None
    m = _KEY_RE.fullmatch(text)
    if m is None:
        return None
    key_id, secret, check = m.groups()
    if checksum(key_id, secret) != check:
        return None
    return key_id, secret


def redacted(key_id: str) -> str:
    """How a key is shown after creation: its public id, never its secret."""
    return f"{PREFIX}{key_id}-..."
