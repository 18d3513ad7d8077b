"""Tool-call ids that carry Gemini's call id and thought signature (docs/providers.md).

`<head>` or `<head>__sig_<signature>`: the head is `gid_<id>` for an id Gemini gave, or
`call_<24 hex>` derived from the request id, choice and call ordinal; the signature is
the part's `thoughtSignature` bytes in unpadded base64url. Ids stay in `[A-Za-z0-9_-]`.

Pure module: no I/O.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from typing import Final

SKIP_SIGNATURE: Final = "skip_thought_signature_validator"
MAX_SIGNATURE_CHARS: Final = 8192
MAX_GEMINI_ID_CHARS: Final = 128

_SIG_SEP: Final = "__sig_"
_GEMINI_ID: Final = "gid_"
_GEMINI_ID_SHAPE = re.compile(r"[A-Za-z0-9-]+(?:_[A-Za-z0-9-]+)*")
_B64URL = re.compile(r"[A-Za-z0-9_-]+")


def encode_call_id(head: str, signature: str | None) -> str:
    """The OpenAI tool-call id carrying `head` and, if it fits, the thought signature."""
    if not signature:
        return head
    try:  # Gemini sends standard base64; the altchars also admit the url-safe alphabet
        raw = base64.b64decode(signature + "=" * (-len(signature) % 4), altchars=b"-_")
    except (binascii.Error, ValueError):
        return head
    packed = base64.urlsafe_b64encode(raw).rstrip(b"=").decode()
    if not packed or len(packed) > MAX_SIGNATURE_CHARS:
        return head
    return head + _SIG_SEP + packed


def decode_call_id(call_id: str) -> tuple[str | None, str | None]:
    """(Gemini's own call id or None, thought signature in standard base64 or None)."""
    head, sep, packed = call_id.partition(_SIG_SEP)
    signature = None
    if sep and packed and _B64URL.fullmatch(packed) is not None:
        try:
            raw = base64.urlsafe_b64decode(packed + "=" * (-len(packed) % 4))
        except (binascii.Error, ValueError):
            raw = b""
        if raw:
            signature = base64.b64encode(raw).decode()
    gemini_id = head[len(_GEMINI_ID) :] if head.startswith(_GEMINI_ID) else None
    return gemini_id or None, signature


def call_head(gemini_id: object, request_id: str, choice: int, ordinal: int) -> str:
    """`gid_<id>` for a usable id from Gemini, else one derived from the request."""
    if (
        isinstance(gemini_id, str)
        and len(gemini_id) <= MAX_GEMINI_ID_CHARS
        and _GEMINI_ID_SHAPE.fullmatch(gemini_id) is not None
    ):
        return _GEMINI_ID + gemini_id
    key = f"{request_id}:{choice}:{ordinal}".encode()
    return "call_" + hashlib.blake2b(key, digest_size=12).hexdigest()
