"""Log lines: JSON (one object per line) or text, each naming its request.

Every line carries the current request's id (`record.CURRENT`) when it is written on
behalf of one, and the structured `fields` its caller gave (`log.info(msg,
extra={"fields": {...}})`): the access line, the operator events. Lines go to stderr
(stdout has the start banner only), JSON unless stderr is a terminal, at the level
chosen by `--log-format`/`--log-level`, then `GATEWAY_LOG_FORMAT`/`GATEWAY_LOG_LEVEL`,
then `[server] log_format`/`log_level`.

Nothing here writes a prompt, a completion or a key: the fields are what the callers
put in them, and `RequestRecord.fields` holds ids, counts and codes only
(docs/reliability.md R22).
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Mapping
from typing import IO, Any, Final

import orjson

from gateway.config import LOG_FORMATS, LOG_LEVELS, LogFormat, LogLevel
from gateway.observability.record import CURRENT, RequestRecord

FORMAT_ENV: Final = "GATEWAY_LOG_FORMAT"
LEVEL_ENV: Final = "GATEWAY_LOG_LEVEL"
ACCESS: Final = logging.getLogger("gateway.access")
LEVELS: Final = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}
_QUIET_LOGGERS = ("httpx", "httpcore", "hpack", "opentelemetry")  # chatty at INFO or DEBUG


_second: list[Any] = [None, ""]  # the last second formatted, and its text


def _timestamp(created: float) -> str:
    """ISO 8601 in UTC with milliseconds: `2026-12-07T10:15:02.120Z`."""
    second = int(created)
    if _second[0] != second:
        _second[:] = [second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))]
    return f"{_second[1]}.{int(created * 1000) % 1000:03d}Z"


def _base(record: logging.LogRecord) -> dict[str, Any]:
    out: dict[str, Any] = {
        "time": _timestamp(record.created),
        "level": record.levelname.lower(),
        "logger": record.name,
        "message": record.getMessage(),
        "pid": record.process,
    }
    request = CURRENT.get()
    if request is not None:
        out["request_id"] = request.request_id
    fields: Mapping[str, Any] | None = getattr(record, "fields", None)
    if fields:
        out.update(fields)
    return out


class JsonFormatter(logging.Formatter):
    """One JSON object per line."""

    def format(self, record: logging.LogRecord) -> str:
        out = _base(record)
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(out, default=str).decode()


def _text_value(value: Any) -> str:
    text = value if isinstance(value, str) else orjson.dumps(value, default=str).decode()
    if not text or any(c in text for c in ' "=\n'):
        return orjson.dumps(text).decode()
    return text


class TextFormatter(logging.Formatter):
    """`time pid LEVEL logger: message key=value ...`, for people at a terminal."""

    def format(self, record: logging.LogRecord) -> str:
        out = _base(record)
        head = f"{out.pop('time')} {out.pop('pid')} {out.pop('level').upper()} {out.pop('logger')}"
        message = out.pop("message")
        pairs = " ".join(f"{k}={_text_value(v)}" for k, v in out.items() if v is not None)
        line = f"{head}: {message}" + (f" {pairs}" if pairs else "")
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def resolve(
    cli_format: str | None,
    cli_level: str | None,
    config_format: LogFormat | None,
    config_level: LogLevel,
    env: Mapping[str, str],
    stream: IO[str] | None = None,
) -> tuple[LogFormat, LogLevel]:
    """The format and level in force: the command line, then the environment, then
    the config; the default format is JSON unless `stream` (stderr) is a terminal.
    ValueError names a bad environment value."""
    fmt = cli_format or env.get(FORMAT_ENV) or config_format
    level = cli_level or env.get(LEVEL_ENV) or config_level
    if fmt is not None and fmt not in LOG_FORMATS:
        raise ValueError(f"{FORMAT_ENV}: must be one of {', '.join(LOG_FORMATS)}; got {fmt!r}")
    if level not in LOG_LEVELS:
        raise ValueError(f"{LEVEL_ENV}: must be one of {', '.join(LOG_LEVELS)}; got {level!r}")
    if fmt is None:
        stream = sys.stderr if stream is None else stream
        fmt = "text" if _is_terminal(stream) else "json"
    return fmt, level  # type: ignore[return-value]


def _is_terminal(stream: IO[str]) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


class _GatewayHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Marks the handler this module installed, so that configuring again replaces it."""


def configure(fmt: LogFormat, level: LogLevel, stream: IO[str] | None = None) -> None:
    """Send every log line to `stream` (stderr) in `fmt` at `level`; may be called
    again (the last call wins). A process whose logging someone else set up already
    (a test runner, an embedding program) keeps its handlers."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        if isinstance(handler, _GatewayHandler):
            root.removeHandler(handler)
    if not root.handlers:
        handler = _GatewayHandler(sys.stderr if stream is None else stream)
        handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
        root.addHandler(handler)
    root.setLevel(LEVELS[level])
    for name in _QUIET_LOGGERS:
        logging.getLogger(name).setLevel(max(logging.WARNING, LEVELS[level]))
    # Each record would otherwise look up the caller's frame, thread and process
    # names: work for every access line that nobody reads.
    logging.logThreads = False
    logging.logMultiprocessing = False


def configure_from_env(config_format: LogFormat | None, config_level: LogLevel) -> None:
    """What a process that was given no command line (a worker) configures."""
    fmt, level = resolve(None, None, config_format, config_level, os.environ)
    configure(fmt, level)


def access(request: RequestRecord) -> None:
    """The request's access line, once it has ended (DEBUG for probes and scrapes)."""
    level = logging.DEBUG if request.quiet else logging.INFO
    if not ACCESS.isEnabledFor(level):
        return
    record = ACCESS.makeRecord(
        ACCESS.name,
        level,
        "",
        0,
        "%s %s %d",
        (request.method, request.path, request.status),
        None,
        extra={"fields": request.fields()},
    )
    ACCESS.handle(record)  # skips findCaller: no frame walk per request


def event(log: logging.Logger, level: int, message: str, **fields: Any) -> None:
    """An operator event: one line with its context as fields."""
    if log.isEnabledFor(level):
        log.log(level, message, extra={"fields": fields})
