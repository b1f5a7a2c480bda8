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

import errno
import hashlib
import json
import logging
import os
import re
import stat
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from proxy import credentials

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
    try:
        canonical = json.dumps(arguments, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=str)
    except (RecursionError, ValueError):
        canonical = repr(arguments)[:100_000]  # still a digest of what was asked, never a crash
    # surrogatepass: a lone surrogate a client sent is hashed, not an error in the audit itself.
    return hashlib.sha256(canonical.encode("utf-8", "surrogatepass")).hexdigest()


def digest_session(session: str) -> str:
    return hashlib.sha256(session.encode()).hexdigest()[:16]


def _free_text(value: str) -> str:
    # Before the cut, which could leave half a credential that no longer matches.
    value = credentials.withhold(value)  # an upstream's error text may quote our credential
    if len(value) > _MAX_TEXT:
        value = value[:_MAX_TEXT] + "…"
    return mask_phone(value)


class AuditLog:
    """Appends audit lines to a file, whole lines or nothing.

    Each line goes out in one `os.write` on an O_APPEND descriptor; a write that fails or comes up
    short (a full disk) is cut back to where the file ended, so no reader ever sees half a line.
    `write` answers whether the line is on disk, so the pipeline can refuse a consequential call
    whose decision could not be recorded (`audit.required`). A file removed or moved away (by an
    operator or logrotate) is reopened at its path; with `max_bytes` or `daily`, the log rotates
    itself to `<path>.1` … `<path>.<keep>` before a line that would cross the limit.
    """

    def __init__(
        self,
        path: Path | None,
        *,
        max_bytes: int | None = None,
        daily: bool = False,
        keep: int = 5,
        clock: Any = None,
    ) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.daily = daily
        self.keep = keep
        self._clock = clock or (lambda: datetime.now(UTC))
        self._lock = threading.Lock()
        self._fd: int | None = None
        self._day = self._clock().date()
        self.failing: str | None = None  # why the last line could not be written; None when healthy
        if path is not None:
            with self._lock:
                self._open()

    def write(self, **fields: Any) -> bool:
        """Write one line; True when it is on disk (or, without a file, handed to the log)."""
        now = self._clock()
        record: dict[str, Any] = {"time": now.isoformat(timespec="milliseconds").replace("+00:00", "Z")}
        for key, value in fields.items():
            record[key] = _free_text(value) if isinstance(value, str) and key not in _COMPUTED else value
        # ASCII only: a U+2028 in a model-chosen tool name must not split the line for line-based readers.
        line = json.dumps(record, ensure_ascii=True, separators=(",", ":"), default=str)
        if self.path is None:
            logger.info("%s", line)
            return True
        data = (line + "\n").encode("ascii")
        with self._lock:
            try:
                self._ready(now, len(data))
                assert self._fd is not None
                self._append(self._fd, data)
            except OSError as exc:
                self._failed(exc)
                return False
            if self.failing is not None:
                logger.warning("audit log %s is writable again", self.path)
                self.failing = None
            return True

    def _open(self) -> None:
        assert self.path is not None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        except OSError as exc:
            self._fd = None
            self._failed(exc)

    def _ready(self, now: datetime, size: int) -> None:
        """An open descriptor on the file that is at `path` now, rotated if this line calls for it."""
        assert self.path is not None
        if self._fd is not None:
            try:
                here = os.stat(self.path)
                mine = os.fstat(self._fd)
                moved = (here.st_ino, here.st_dev) != (mine.st_ino, mine.st_dev)
            except FileNotFoundError:
                moved = True
            if moved:  # removed or rotated by someone else: a line written to it would be lost
                self._close()
            elif stat.S_ISREG(mine.st_mode) and self._due(now, mine.st_size, size):
                self._close()
                self._rotate()
        self._day = now.date()
        if self._fd is None:
            self._open()
            if self._fd is None:
                raise OSError(self.failing or "cannot open the audit log")

    def _due(self, now: datetime, current: int, size: int) -> bool:
        # (Only a regular file gets here: a character device such as /dev/full is never rotated.)
        if current == 0:
            return False
        if self.max_bytes is not None and current + size > self.max_bytes:
            return True
        return self.daily and now.date() != self._day

    def _rotate(self) -> None:
        assert self.path is not None
        for n in range(self.keep - 1, 0, -1):
            older = self.path.with_name(f"{self.path.name}.{n}")
            if older.exists():
                os.replace(older, self.path.with_name(f"{self.path.name}.{n + 1}"))
        os.replace(self.path, self.path.with_name(f"{self.path.name}.1"))

    @staticmethod
    def _append(fd: int, data: bytes) -> None:
        try:
            start = os.lseek(fd, 0, os.SEEK_END)
        except OSError:
            start = None  # not seekable (a device): nothing to cut back
        try:
            written = os.write(fd, data)
        except OSError:
            if start is not None:
                _cut(fd, start)
            raise
        if written != len(data):
            if start is not None:
                _cut(fd, start)
            raise OSError(errno.ENOSPC, f"only {written} of {len(data)} bytes written")

    def _failed(self, exc: OSError) -> None:
        why = exc.strerror or str(exc)
        if self.failing != why:
            logger.error("audit log %s cannot be written (%s): gated and external calls are refused", self.path, why)
        self.failing = why
        self._close()

    def _close(self) -> None:
        if self._fd is not None:
            try:
                os.close(self._fd)
            except OSError:
                pass
            self._fd = None

    def close(self) -> None:
        with self._lock:
            self._close()


def _cut(fd: int, size: int) -> None:
    try:
        os.ftruncate(fd, size)
    except OSError:
        pass
