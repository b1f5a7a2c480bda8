"""The sandbox account and its tool registry: SMSAPI errors, SMS arithmetic, the tables, and `@tool`.

Each `sandbox_*` module registers its tools into `TOOLS` when imported; `sandbox` serves them.
"""

from __future__ import annotations

import itertools
import math
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import mcp_types as types

from proxy.backends import sandbox_data

Json = dict[str, Any]


POINTS_PER_PART = 0.16
HLR_PRICE = 0.1
MAX_PARTS = 10


# --------------------------------------------------------------------------- errors


class SmsapiError(Exception):
    """An SMSAPI error body; becomes an `isError` result carrying that JSON."""

    def __init__(self, body: Json) -> None:
        super().__init__(str(body.get("message")))
        self.body = body


def sms_error(code: int, message: str, **extra: Any) -> SmsapiError:
    return SmsapiError({**extra, "error": code, "message": message})


def rest_error(status: int, kind: str, message: str) -> SmsapiError:
    return SmsapiError({"message": message, "error": kind, "code": status, "errors": []})


def not_found(what: str, ident: str) -> SmsapiError:
    return rest_error(404, "not_found_error", f"{what} {ident} not found")


# --------------------------------------------------------------------------- SMS arithmetic

_GSM_BASIC = set(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿"
    "abcdefghijklmnopqrstuvwxyzäöñüà"
)
_GSM_EXTENDED = set("^{}\\[~]|€")
_NUMBER_STRIP = re.compile(r"[\s+\-]")
_DIGITS = re.compile(r"[0-9]{9,15}")


def sms_parts(message: str) -> int:
    """Message parts as an operator bills them: GSM-7 160/153, otherwise UCS-2 70/67."""
    if all(c in _GSM_BASIC or c in _GSM_EXTENDED for c in message):
        length, single, multi = len(message) + sum(c in _GSM_EXTENDED for c in message), 160, 153
    else:
        length, single, multi = len(message.encode("utf-16-le")) // 2, 70, 67
    return 1 if length <= single else math.ceil(length / multi)


def normalise_number(raw: str) -> str | None:
    """9–15 digits after stripping spaces, '+' and '-'; a bare 9-digit number is Polish."""
    digits = _NUMBER_STRIP.sub("", raw)
    if not _DIGITS.fullmatch(digits):
        return None
    return "48" + digits if len(digits) == 9 else digits


def split_list(raw: str) -> list[str]:
    """A comma-separated argument (recipients, ids) as its non-empty items."""
    return [part.strip() for part in raw.split(",") if part.strip()]


def invalid_number(raw: str, message: str = "Invalid phone number") -> Json:
    return {"number": raw, "submitted_number": raw, "message": message}


def send_date(value: str | None) -> tuple[int, bool]:
    """(unix time, scheduled?) for sms.do's `date`: a unix timestamp or ISO 8601."""
    now = int(time.time())
    if value is None or value == "":
        return now, False
    try:
        when = int(value) if value.strip().isdigit() else int(datetime.fromisoformat(value).timestamp())
    except ValueError:
        raise sms_error(40, f"Invalid date: {value}") from None
    return max(when, now), when > now


# --------------------------------------------------------------------------- state


class Sandbox:
    """The mutable account: every tool reads and writes these tables."""

    def __init__(self) -> None:
        tables = sandbox_data.fresh()
        self.profile: Json = tables["profile"]
        self.sendernames: list[Json] = tables["sendernames"]
        self.contacts: list[Json] = tables["contacts"]
        self.groups: list[Json] = tables["groups"]
        self.memberships: dict[str, list[str]] = tables["memberships"]
        self.custom_fields: list[Json] = tables["custom_fields"]
        self.sms: list[Json] = tables["sms"]
        self.blacklist: list[Json] = tables["blacklist"]
        self.subusers: list[Json] = tables["subusers"]
        self.short_urls: list[Json] = tables["short_urls"]
        self.short_url_clicks: list[Json] = tables["short_url_clicks"]
        self._ids = itertools.count(1)

    def new_id(self, width: int = 24) -> str:
        return f"68{next(self._ids):0{width - 2}X}"

    def find(self, table: list[Json], ident: str, what: str, key: str = "id") -> Json:
        for row in table:
            if row[key] == ident:
                return row
        raise not_found(what, ident)

    def group(self, ident: str) -> Json:
        """A group by id or by name, rendered with its live member count."""
        for row in self.groups:
            if ident in (row["id"], row["name"]):
                return {**row, "contacts_count": len(self.memberships.get(row["id"], []))}
        raise not_found("Group", ident)

    def blacklisted(self, number: str) -> bool:
        return any(b["phone_number"] == number and not expired(b["expire_at"]) for b in self.blacklist)

    def charge(self, points: float) -> None:
        if points > self.profile["points"] + 1e-9:
            raise sms_error(103, "Not enough points")
        self.profile["points"] = round(self.profile["points"] - points, 4)

    def default_sender(self) -> str:
        return next((s["sender"] for s in self.sendernames if s["is_default"]), "SMSAPI")

    def sender(self, requested: str | None) -> str:
        if not requested:
            return self.default_sender()
        if any(s["sender"] == requested and s["status"] == "ACTIVE" for s in self.sendernames):
            return requested
        raise sms_error(14, "Invalid sender field")


def expired(expire_at: str | None) -> bool:
    """Whether a blacklist entry has lapsed; unparseable dates count as still in force."""
    if expire_at is None:
        return False
    try:
        return datetime.fromisoformat(expire_at).timestamp() < time.time()
    except ValueError:
        return False


def collection(rows: list[Json], total: int | None = None) -> Json:
    return {"size": len(rows) if total is None else total, "collection": rows}


def page(rows: list[Json], args: Json, default_limit: int = 50) -> list[Json]:
    offset = args.get("offset", 0)
    return rows[offset : offset + args.get("limit", default_limit)]


def matches(row: Json, needle: str, fields: Iterable[str]) -> bool:
    return any(needle.casefold() in str(row.get(f) or "").casefold() for f in fields)


# --------------------------------------------------------------------------- tool registry

Handler = Callable[[Sandbox, Json], Any]


@dataclass(frozen=True)
class ToolDef:
    tool: types.Tool
    run: Handler


TOOLS: dict[str, ToolDef] = {}

_DESTRUCTIVE_PREFIXES = ("delete_", "remove_", "clear_")
_DESTRUCTIVE_NAMES = frozenset({"send_sms", "send_group_sms"})
_IDEMPOTENT_PREFIXES = ("delete_", "remove_", "clear_", "update_", "set_")


def _annotations(name: str, title: str, open_world: bool) -> types.ToolAnnotations:
    """Hints as the hosted server sets them: outbound and deleting tools are destructive."""
    if name.startswith("get_"):
        return types.ToolAnnotations(title=title, read_only_hint=True, idempotent_hint=True, open_world_hint=open_world)
    destructive = name in _DESTRUCTIVE_NAMES or name.startswith(_DESTRUCTIVE_PREFIXES)
    return types.ToolAnnotations(
        title=title,
        read_only_hint=False,
        destructive_hint=destructive,
        idempotent_hint=name.startswith(_IDEMPOTENT_PREFIXES),
        open_world_hint=open_world,
    )


def tool(
    name: str,
    title: str,
    description: str,
    properties: Json | None = None,
    required: tuple[str, ...] = (),
    *,
    open_world: bool = False,
    output_schema: Json | None = None,
) -> Callable[[Handler], Handler]:
    schema: Json = {"type": "object", "properties": properties or {}, "additionalProperties": False}
    if required:
        schema["required"] = list(required)

    def register(fn: Handler) -> Handler:
        tool = types.Tool(
            name=name,
            title=title,
            description=description,
            input_schema=schema,
            output_schema=output_schema,
            annotations=_annotations(name, title, open_world),
        )
        TOOLS[name] = ToolDef(tool, fn)
        return fn

    return register


def str_prop(description: str, **extra: Any) -> Json:
    return {"type": "string", "description": description, **extra}


def int_prop(description: str, **extra: Any) -> Json:
    return {"type": "integer", "description": description, **extra}


def bool_prop(description: str) -> Json:
    return {"type": "boolean", "description": description}


def num_prop(description: str) -> Json:
    return {"type": "number", "description": description}


PAGING: Json = {"limit": int_prop("Page size", minimum=1, maximum=500), "offset": int_prop("Rows to skip", minimum=0)}
STR_OR_NULL: Json = {"type": ["string", "null"]}
