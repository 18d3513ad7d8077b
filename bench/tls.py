"""Throwaway TLS for the fake upstream: a self-signed certificate and who trusts it.

``python -m bench compare --upstream-tls`` puts the fake upstream behind HTTPS to see
what TLS to the upstream costs each target. `self_signed` makes an EC P-256
certificate for 127.0.0.1 (openssl on PATH), its own trust anchor; `server_context`
is what the fake serves it with; `trust_env` is the environment that makes a child
process (Python's `ssl.create_default_context`, requests, Node) trust it.
"""

from __future__ import annotations

import shutil
import ssl
import subprocess
from dataclasses import dataclass
from pathlib import Path

__all__ = ["TlsFiles", "client_context", "self_signed", "server_context", "trust_env"]


@dataclass(frozen=True)
class TlsFiles:
    """A certificate (PEM, also the CA file clients trust) and its private key."""

    cert: Path
    key: Path


def self_signed(folder: Path, host: str = "127.0.0.1", san: str | None = None) -> TlsFiles:
    """A self-signed EC P-256 certificate for `host` (its common name), valid two days,
    written to `folder` (made if missing); RuntimeError without openssl. `san` as
    openssl writes it, "IP:127.0.0.1" or "DNS:media.example"; by default `host` as an IP
    address."""
    openssl = shutil.which("openssl")
    if openssl is None:
        raise RuntimeError("openssl is not on PATH: needed to make the upstream's certificate")
    folder.mkdir(parents=True, exist_ok=True)
    files = TlsFiles(folder / "upstream-cert.pem", folder / "upstream-key.pem")
    done = subprocess.run(
        [
            *(openssl, "req", "-x509", "-nodes", "-days", "2", "-newkey", "ec"),
            *("-pkeyopt", "ec_paramgen_curve:prime256v1"),
            *("-keyout", str(files.key), "-out", str(files.cert)),
            *("-subj", f"/CN={host}", "-addext", f"subjectAltName={san or f'IP:{host}'}"),
        ],
        capture_output=True,
        check=False,
        timeout=30,
    )
    if done.returncode != 0:
        raise RuntimeError(f"openssl req failed: {done.stderr.decode(errors='replace')}")
    return files


def server_context(cert: Path, key: Path) -> ssl.SSLContext:
    """A server-side context for `cert` and `key`, offering HTTP/1.1 by ALPN."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    context.set_alpn_protocols(["http/1.1"])
    return context


def client_context(ca_file: Path | str | None) -> ssl.SSLContext:
    """A client context trusting `ca_file` only, or the system's CAs when None."""
    return ssl.create_default_context(cafile=str(ca_file) if ca_file is not None else None)


def trust_env(ca_file: Path) -> dict[str, str]:
    """Environment variables that make a child process trust `ca_file`: OpenSSL's
    default verify paths (Python's default context, so the gateway; httpx, aiohttp),
    requests' bundle, and Node's extra CAs (Portkey)."""
    path = str(ca_file.resolve())
    return {"SSL_CERT_FILE": path, "REQUESTS_CA_BUNDLE": path, "NODE_EXTRA_CA_CERTS": path}
