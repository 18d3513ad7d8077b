"""Throwaway TLS material for tests that need a real handshake (openssl on PATH)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest


def self_signed(folder: Path, common_name: str, san: str) -> tuple[Path, Path]:
    """A self-signed EC certificate (its own trust anchor) and its key, in `folder`;
    skips the calling test when openssl is not installed. `san` as openssl writes it:
    "DNS:media.example" or "IP:127.0.0.1"."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-nodes", "-days", "2", "-newkey", "ec"),
            *("-pkeyopt", "ec_paramgen_curve:prime256v1", "-keyout", str(key), "-out", str(cert)),
            *("-subj", f"/CN={common_name}", "-addext", f"subjectAltName={san}"),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key
