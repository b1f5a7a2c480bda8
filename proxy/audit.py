"""The audit log: one JSON line per decision, flushed as it is written.

Lines carry digests, never values: the arguments are hashed, the principal is a digest or
a key label, and anything that looks like a phone number is masked. Read it with jq.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import threading
import time
from pathlib import Path
from typing import Any, TextIO

logger = logging.getLogger("mcp_guard.audit")

# 7+ digits, optionally with + and separators: phone numbers in any format SMS APIs accept.
_PHONE = re.compile(r"\+?\d(?:[\d \-.()]{5,}\d)")


def mask_phone(text: str) -> str:
    def mask(m: re.Match[str]) -> str:
        digits = re.sub(r"\D", "", m.group())
        if len(digits) < 7:
            return m.group()
        return digits[:2] + "*" * (len(digits) - 5) + digits[-3:]

    return _PHONE.sub(mask, text)


def digest_arguments(arguments: dict[str, Any]) -> str:
    canonical = json.dumps(arguments, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


class AuditLog:
    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._file: TextIO | None = None
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._file = path.open("a", encoding="utf-8")

    def write(self, **fields: Any) -> None:
        record: dict[str, Any] = {"time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()) + "Z"}
        for key, value in fields.items():
            record[key] = mask_phone(value) if isinstance(value, str) else value
        line = json.dumps(record, ensure_ascii=False, separators=(",", ":"))
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
