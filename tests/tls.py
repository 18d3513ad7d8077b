"""Throwaway TLS material for tests that need a real handshake (openssl on PATH)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from bench import tls


def self_signed(folder: Path, common_name: str, san: str) -> tuple[Path, Path]:
    """A self-signed EC certificate (its own trust anchor) and its key, in `folder`
    (bench/tls.py's); skips the calling test when openssl is not installed. `san` as
    openssl writes it: "DNS:media.example" or "IP:127.0.0.1"."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    files = tls.self_signed(folder, common_name, san)
    return files.cert, files.key
