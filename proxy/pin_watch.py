"""One team's pins, watched: each drifted or unpinned entry is logged and audited as soon as any
listing mcp-guard makes upstream shows it, not only when a client lists or calls it (SPEC §10)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, cast

from proxy.audit import AuditLog
from proxy.logs import printable
from proxy.pinning import KINDS, NOUN, Kind, PinCheck, Pins, read_lockfile
from proxy.policy import LoadedPolicy

logger = logging.getLogger(__name__)


class PinWatch:
    """`check` is the team's pin check, or None without a lockfile (pinning off)."""

    def __init__(self, loaded: LoadedPolicy, audit: AuditLog) -> None:
        self.team = loaded.policy.team
        self.audit = audit
        self.check: PinCheck | None = None
        if loaded.lockfile_path.exists():
            pinning = loaded.policy.pinning
            pins = Pins(read_lockfile(loaded.lockfile_path))
            self.check = PinCheck(pins, new_tools=pinning.new_tools, on_drift=pinning.on_drift, report=self._report)

    def listed(self, server: str, kind: str, entries: Mapping[str, Any]) -> None:
        """Every listing of an upstream's, checked against the pins."""
        if self.check is not None and kind in KINDS:
            for entry in entries.values():
                self.check.hides(server, entry, cast(Kind, kind))

    def _report(self, server: str, kind: Kind, name: str, status: str) -> None:
        assert self.check is not None
        hidden = (self.check.on_drift if status == "drifted" else self.check.new_tools) == "hide"
        what = "changed since it was pinned" if status == "drifted" else "is not pinned"
        noun = NOUN[kind]
        logger.warning(
            "upstream '%s': %s %s %s; %s",
            server, noun, printable(name[:200]), what, "hidden" if hidden else "allowed",
        )  # fmt: skip
        self.audit.write(
            team=self.team, principal="mcp-guard", session="-", server=server,
            tool=name if kind == "tools" else f"{noun}:{name}",
            decision="denied" if hidden else "allowed",
            reason=f"{noun} definition {status}: {what}; " + ("hidden and refused" if hidden else "policy warns only"),
            args_sha256=None, duration_ms=0.0,
        )  # fmt: skip
