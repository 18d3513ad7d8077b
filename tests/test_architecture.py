"""Design rules that keep the code easy to change, checked on the source itself."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

GATEWAY = Path(__file__).parent.parent / "gateway"
PURE = [
    "providers",
    "sse.py",
    "validate.py",
    "tokens.py",
    "router.py",
    "auth.py",
    "config.py",
    "errors.py",
    "limits.py",
    "spend.py",
    "keys.py",
    "tokenizer_files.py",
]
IO_MODULES = {"trio", "httpx", "quart", "quart_trio", "hypercorn", "anyio", "socket", "sqlite3"}


def pure_files() -> list[Path]:
    out: list[Path] = []
    for name in PURE:
        path = GATEWAY / name
        out.extend(sorted(path.glob("*.py")) if path.is_dir() else [path])
    return out


def imported_roots(path: Path) -> set[str]:
    roots: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            roots.add(node.module.split(".")[0])
    return roots


@pytest.mark.parametrize("path", pure_files(), ids=lambda p: str(p.relative_to(GATEWAY)))
def test_pure_modules_do_no_io(path: Path) -> None:
    assert not imported_roots(path) & IO_MODULES


VENDOR_KINDS = {"openai", "anthropic", "gemini", "mock"}


def kind_branches(path: Path) -> list[int]:
    """Lines comparing something's `.kind` with a provider kind name."""
    lines = []
    for node in ast.walk(ast.parse(path.read_text())):
        if (
            isinstance(node, ast.Compare)
            and isinstance(node.left, ast.Attribute)
            and node.left.attr == "kind"
            and any(
                isinstance(c, ast.Constant) and c.value in VENDOR_KINDS for c in node.comparators
            )
        ):
            lines.append(node.lineno)
    return lines


def test_no_vendor_branches_outside_providers() -> None:
    """Per-vendor differences are provider methods, not `if x.kind == "..."` branches."""
    for path in GATEWAY.rglob("*.py"):
        assert not kind_branches(path), f"{path}: {kind_branches(path)}"
