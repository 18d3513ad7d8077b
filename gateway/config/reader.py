"""Reads one TOML table, checking types and rejecting keys nobody asked for.

Every key of the config goes through a `Table`, so an unknown or mistyped key is an
error naming its full path (`providers.local.developer_rol`), never silently ignored.
"""

from __future__ import annotations

from typing import Any


class ConfigError(ValueError):
    """The configuration is invalid; the message names the key path. Several problems
    found together (`problems`) read as one message joined by "; "."""

    def __init__(self, *problems: str) -> None:
        super().__init__("; ".join(problems))
        self.problems = list(problems)


class Table:
    """Reads one TOML table, checking types and rejecting keys nobody asked for."""

    def __init__(self, data: object, path: str) -> None:
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: expected a table")
        self.data: dict[str, Any] = data
        self.path = path
        self.seen: set[str] = set()

    def at(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def _get(self, key: str, types: tuple[type, ...], what: str, required: bool) -> Any:
        self.seen.add(key)
        if key not in self.data:
            if required:
                raise ConfigError(f"{self.at(key)}: missing required key")
            return None
        value = self.data[key]
        if isinstance(value, bool) and bool not in types:
            raise ConfigError(f"{self.at(key)}: expected {what}, got a boolean")
        if not isinstance(value, types):
            raise ConfigError(f"{self.at(key)}: expected {what}, got {type(value).__name__}")
        return value

    def text(self, key: str, *, required: bool = False, choices: tuple[str, ...] = ()) -> Any:
        value = self._get(key, (str,), "a string", required)
        if value is not None and choices and value not in choices:
            raise ConfigError(f"{self.at(key)}: must be one of {', '.join(choices)}; got {value!r}")
        if value is not None and not value:
            raise ConfigError(f"{self.at(key)}: must not be empty")
        return value

    def flag(self, key: str) -> Any:
        return self._get(key, (bool,), "a boolean", False)

    def integer(self, key: str, *, minimum: int, maximum: int) -> Any:
        value = self._get(key, (int,), "an integer", False)
        if value is not None and not minimum <= value <= maximum:
            raise ConfigError(f"{self.at(key)}: must be between {minimum} and {maximum}")
        return value

    def number(self, key: str, *, minimum: float = 0.0, maximum: float | None = None) -> Any:
        value = self._get(key, (int, float), "a number", False)
        if value is not None and value < minimum:
            raise ConfigError(f"{self.at(key)}: must be >= {minimum}")
        if value is not None and maximum is not None and value > maximum:
            raise ConfigError(f"{self.at(key)}: must be <= {maximum}")
        return None if value is None else float(value)

    def table(self, key: str) -> Table | None:
        self.seen.add(key)
        if key not in self.data:
            return None
        return Table(self.data[key], self.at(key))

    def str_list(self, key: str) -> tuple[str, ...] | None:
        value = self._get(key, (list,), "a list of strings", False)
        if value is None:
            return None
        for i, item in enumerate(value):
            if not isinstance(item, str) or not item:
                raise ConfigError(f"{self.at(key)}[{i}]: expected a non-empty string")
        return tuple(value)

    def done(self) -> None:
        """Reject every key that no reader asked for."""
        for key in self.data:
            if key not in self.seen:
                raise ConfigError(f"{self.at(key)}: unknown key")
