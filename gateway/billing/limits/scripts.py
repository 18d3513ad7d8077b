"""The Lua scripts of the Redis limit backend, read once from the package's `lua/` files.

The scripts are kept as `.lua` files (package data) so that they read, diff and lint
as Lua. Admission, settlement and status share the helpers of `common.lua`, which is
prepended to each. The numbers the Lua arithmetic shares with Python (the window and
the debt cap of `gateway.billing.limits.gcra`) are written in the files as
`${NAME}` and filled in here from the Python constants, so each has one home (a
placeholder naming no constant is an error at import).
"""

from __future__ import annotations

import re
from importlib.resources import files
from typing import Final

from gateway.billing.limits.gcra import MAX_DEBT_WINDOWS, WINDOW_MS

__all__ = [
    "ADMIT_LUA",
    "CONSTANTS",
    "LOAD_LUA",
    "RECONCILE_LUA",
    "SETTLE_LUA",
    "STATUS_LUA",
    "TOPUP_LUA",
    "lua_file",
    "render",
]

CONSTANTS: Final[dict[str, int]] = {"WINDOW_MS": WINDOW_MS, "MAX_DEBT_WINDOWS": MAX_DEBT_WINDOWS}
"""What `${NAME}` stands for in the Lua files: the Python side's own constants."""

_PACKAGE: Final = "gateway.billing.limits"
PLACEHOLDER: Final = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def lua_file(name: str) -> str:
    """The text of `lua/<name>.lua` as shipped in the package, placeholders and all."""
    return (files(_PACKAGE) / "lua" / f"{name}.lua").read_text(encoding="utf-8")


def render(text: str) -> str:
    """`text` with each `${NAME}` replaced by `CONSTANTS[NAME]` written as an integer
    (Lua reads it exactly: every constant is far below 2**53)."""

    def value(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in CONSTANTS:
            raise ValueError(f"Lua placeholder ${{{name}}} names no constant in CONSTANTS")
        return str(int(CONSTANTS[name]))

    return PLACEHOLDER.sub(value, text)


def _script(name: str, *, common: bool) -> str:
    """A script ready for EVALSHA: `common.lua` (when it uses the helpers) then its own."""
    parts = [lua_file("common"), lua_file(name)] if common else [lua_file(name)]
    return render("\n".join(parts))


ADMIT_LUA: Final = _script("admit", common=True)
SETTLE_LUA: Final = _script("settle", common=True)
STATUS_LUA: Final = _script("status", common=True)
RECONCILE_LUA: Final = _script("reconcile", common=True)
LOAD_LUA: Final = _script("load", common=False)
TOPUP_LUA: Final = _script("topup", common=False)
