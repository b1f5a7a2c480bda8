"""Every log line as mcp-guard writes it: secrets redacted, and nothing in it that acts on a terminal.

`install()` (called by proxy.cli) wraps the log record factory, so every record is cleaned the
moment it exists, whichever handler later writes it: uvicorn configures its own handlers when a
server starts and does not propagate to the root, so a filter on the root handler alone would
miss its tracebacks. The same cleaning is also a `logging.Filter` on the root handlers, for
records made some other way. A record is cleaned only once a logger decided to emit it, so at
the default WARNING level debug chatter costs nothing. Cleaning never raises: if it fails, the
whole message is replaced by `WITHHELD`.

Cleaning is the secret redaction of `proxy.redact`, then `printable`: log lines also carry text
mcp-guard did not write (a tool name a model chose, an upstream's error words), so control and
invisible characters are written as escapes (`\\x1b`, `\\u202e`): such text can neither forge a
second log line nor drive the operator's terminal (ANSI and OSC sequences). A traceback keeps its
line breaks. `printable` is also what every command prints of text it did not write.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from proxy.redact import REGISTRY, WITHHELD, SecretRegistry

_MARK_ATTR = "_mcp_guard_redacted"
_EXC_FORMATTER = logging.Formatter()


def _escape_char(char: str) -> str:
    if char in "\n\r\t":
        return {"\n": "\\n", "\r": "\\r", "\t": "\\t"}[char]
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def printable(text: str, *, lines: bool = False) -> str:
    """`text` with every control, format, private, unassigned and separator character but the space
    written as an escape (`str.isprintable`'s rule); line breaks are kept when `lines`.

    For what lands in a log or on a terminal: text nobody vetted can neither start a line of its own
    nor carry an escape sequence or a bidirectional override."""
    if text.isprintable():
        return text
    if lines:
        return "\n".join(printable(line) for line in text.split("\n"))
    return "".join(ch if ch.isprintable() else _escape_char(ch) for ch in text)


def scrub(record: logging.LogRecord, registry: SecretRegistry | None = None) -> None:
    """Clean a record in place: message (with its %-args), traceback and stack; never raises."""
    if getattr(record, _MARK_ATTR, False):
        return
    reg = registry or REGISTRY
    try:
        # Frozen into text now: an argument's str() could differ by the time a handler formats it.
        message = printable(reg.redact(record.getMessage()))
        exc_text = record.exc_text
        if record.exc_info and not exc_text:
            exc_text = _EXC_FORMATTER.formatException(record.exc_info)
        exc_text = printable(reg.redact(exc_text), lines=True) if exc_text else None
        stack = printable(reg.redact(record.stack_info), lines=True) if record.stack_info else None
    except Exception:
        message, exc_text, stack = WITHHELD, None, None
    record.msg = message
    record.args = None
    # Formatters print exc_text when set; dropping exc_info keeps any of them from rendering the raw one.
    record.exc_info = None
    record.exc_text = exc_text
    record.stack_info = stack
    setattr(record, _MARK_ATTR, True)


class RedactingFilter(logging.Filter):
    """Put on a handler: every record it writes is cleaned first. Always lets the record through."""

    def __init__(self, registry: SecretRegistry | None = None) -> None:
        super().__init__()
        self.registry = registry

    def filter(self, record: logging.LogRecord) -> bool:
        scrub(record, self.registry)
        return True


def install(registry: SecretRegistry | None = None) -> Callable[[], None]:
    """Clean every log record from now on; returns a function that undoes it (for tests)."""
    previous = logging.getLogRecordFactory()

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        scrub(record, registry)
        return record

    logging.setLogRecordFactory(factory)
    flt = RedactingFilter(registry)
    handlers = list(logging.getLogger().handlers)
    for handler in handlers:
        handler.addFilter(flt)

    def undo() -> None:
        logging.setLogRecordFactory(previous)
        for handler in handlers:
            handler.removeFilter(flt)

    return undo
