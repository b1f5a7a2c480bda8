"""The audit log: one JSON line per decision, flushed as it is written.

Lines carry digests, never values: the arguments are hashed, the principal is a digest (or
`stdio`/`anonymous`), the session key is hashed (a handshake-era session id is a bearer
handle for its principal), and any phone number in free text (tool names, reasons) is masked.
Read it with `jq -c . FILE`.

Fields: time (UTC, ms), team, principal, session, server, tool, decision (allowed | denied |
confirmed | declined | blocked | error | pending: a 2026-07-28 confirmation was asked for),
reason, args_sha256, duration_ms, and recipients for tools with a recipient count.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

logger = logging.getLogger("mcp_guard.audit")

# 7+ digits, optionally with + and separators: phone numbers in any format SMS APIs accept.
_PHONE = re.compile(r"\+?\d(?:[\d \-.()]{5,}\d)")
_NON_DIGIT = re.compile(r"\D")
# Values the proxy computes itself (digests, enums): never rewritten, or a digest could be "masked".
_COMPUTED = frozenset({"time", "team", "principal", "session", "decision", "args_sha256"})
_MAX_TEXT = 300


def _mask(m: re.Match[str]) -> str:
    digits = _NON_DIGIT.sub("", m.group())
    if len(digits) < 7:
        return m.group()
    return digits[:2] + "*" * (len(digits) - 5) + digits[-3:]


def mask_phone(text: str) -> str:
    """Every run of 7+ digits (with phone separators) keeps its first two and last three digits."""
    return _PHONE.sub(_mask, text)


def digest_arguments(arguments: dict[str, Any]) -> str:
    canonical = json.dumps(arguments, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


def digest_session(session: str) -> str:
    return hashlib.sha256(session.encode()).hexdigest()[:16]


def _free_text(value: str) -> str:
    if len(value) > _MAX_TEXT:
        value = value[:_MAX_TEXT] + "…"
    return mask_phone(value)


class AuditLog:
    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._file: TextIO | None = None
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._file = path.open("a", encoding="utf-8")

    def write(self, **fields: Any) -> None:
        record: dict[str, Any] = {"time": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")}
        for key, value in fields.items():
            record[key] = _free_text(value) if isinstance(value, str) and key not in _COMPUTED else value
        # ASCII only: a U+2028 in a model-chosen tool name must not split the line for line-based readers.
        line = json.dumps(record, ensure_ascii=True, separators=(",", ":"))
        if self._file is None:
            logger.info("%s", line)
            return
        with self._lock:
            self._file.write(line + "\n")
            self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
