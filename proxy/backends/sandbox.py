"""An in-memory SMSAPI sandbox: an MCP server with the hosted SMSAPI server's tool catalogue.

It never touches the network. Results are SMSAPI REST JSON passed through as text, like the
hosted server does; `get_sms`, `get_contacts` and `get_groups` also return the same object as
`structuredContent` and declare an `outputSchema`. REST calls that answer `204 No Content`
are rendered as a small JSON acknowledgement (`{"deleted": true, ...}`) so the model sees
something. Errors are SMSAPI error JSON with `isError: true`.

The call record (`build_sandbox(record_path)`) appends one JSON line per `tools/call`
*before* the call runs, so tests can prove the upstream never saw a call the proxy refused:
`{"ts", "method": "tools/call", "tool", "arguments", "auth_sha256", "era"}` (plus
`"input_responses": [keys]` on a 2026-07-28 retry, and `"asked": ["logs", "progress"]` for what the
caller opted into on that call). `auth_sha256` is the sha256 of the HTTP
Authorization header (null on stdio/in memory); raw header values are never written.

Run: `python -m proxy.backends.sandbox [--host H] [--port N | --stdio] [--record FILE]`.
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import math
import os
import re
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import jsonschema
import mcp_types as types
from mcp.server import Server, ServerRequestContext
from mcp.server.stdio import stdio_server
from mcp.shared.exceptions import MCPError
from mcp_types.jsonrpc import INVALID_PARAMS

from proxy.backends import sandbox_data
from proxy.netutil import bind, run_until_signalled, serve_asgi

Json = dict[str, Any]

SERVER_NAME = "smsapi-sandbox"
POINTS_PER_PART = 0.16
HLR_PRICE = 0.1
MAX_PARTS = 10
RECORD_ENV = "MCP_GUARD_SANDBOX_RECORD"


# --------------------------------------------------------------------------- call record


def auth_digest(ctx: ServerRequestContext[Any, Any]) -> str | None:
    """sha256 of the HTTP Authorization header, so records prove identity without holding secrets."""
    headers = getattr(ctx.request, "headers", None)
    value = headers.get("authorization") if headers is not None else None
    return hashlib.sha256(value.encode()).hexdigest() if value is not None else None


# The SDK hands a request's `_meta` on with the progress token under its Python name.
_ASKED = {"progress_token": "progress", "progressToken": "progress", "io.modelcontextprotocol/logLevel": "logs"}


class CallRecorder:
    """Appends one JSON line per event to a file; a no-op without a path.

    Each line is written and closed (hence flushed) synchronously before the caller goes on,
    so a reader never misses a call that was received, even if the server is killed next.
    """

    def __init__(self, path: str | os.PathLike[str] | None) -> None:
        self.path = Path(path) if path else None

    def write(self, entry: Json) -> None:
        if self.path is None:
            return
        line = json.dumps({"ts": time.time(), **entry}, ensure_ascii=False)
        with self.path.open("a", encoding="utf-8") as fh:
            fh.write(line + "\n")

    def request(self, ctx: ServerRequestContext[Any, Any], method: str, **fields: Any) -> None:
        self.write({"method": method, **fields, "auth_sha256": auth_digest(ctx), "era": ctx.protocol_version})

    def tool_call(self, ctx: ServerRequestContext[Any, Any], params: types.CallToolRequestParams) -> None:
        fields: Json = {"tool": params.name, "arguments": params.arguments or {}}
        metas = [m for m in (ctx.meta, params.meta) if isinstance(m, Mapping)]
        if asked := sorted({name for key, name in _ASKED.items() if any(key in meta for meta in metas)}):
            fields["asked"] = asked  # what the caller opted into: progress, log lines
        if params.input_responses:
            # A 2026-07-28 retry: note which answers came back, never their content.
            fields["input_responses"] = sorted(params.input_responses)
        self.request(ctx, "tools/call", **fields)


# --------------------------------------------------------------------------- errors


class SmsapiError(Exception):
    """An SMSAPI error body; becomes an `isError` result carrying that JSON."""

    def __init__(self, body: Json) -> None:
        super().__init__(str(body.get("message")))
        self.body = body


def _sms_error(code: int, message: str, **extra: Any) -> SmsapiError:
    return SmsapiError({**extra, "error": code, "message": message})


def _rest_error(status: int, kind: str, message: str) -> SmsapiError:
    return SmsapiError({"message": message, "error": kind, "code": status, "errors": []})


def _not_found(what: str, ident: str) -> SmsapiError:
    return _rest_error(404, "not_found_error", f"{what} {ident} not found")


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


def _invalid(raw: str, message: str = "Invalid phone number") -> Json:
    return {"number": raw, "submitted_number": raw, "message": message}


def _send_date(value: str | None) -> tuple[int, bool]:
    """(unix time, scheduled?) for sms.do's `date`: a unix timestamp or ISO 8601."""
    now = int(time.time())
    if value is None or value == "":
        return now, False
    try:
        when = int(value) if value.strip().isdigit() else int(datetime.fromisoformat(value).timestamp())
    except ValueError:
        raise _sms_error(40, f"Invalid date: {value}") from None
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
        raise _not_found(what, ident)

    def group(self, ident: str) -> Json:
        """A group by id or by name, rendered with its live member count."""
        for row in self.groups:
            if ident in (row["id"], row["name"]):
                return {**row, "contacts_count": len(self.memberships.get(row["id"], []))}
        raise _not_found("Group", ident)

    def blacklisted(self, number: str) -> bool:
        return any(b["phone_number"] == number and not _expired(b["expire_at"]) for b in self.blacklist)

    def charge(self, points: float) -> None:
        if points > self.profile["points"] + 1e-9:
            raise _sms_error(103, "Not enough points")
        self.profile["points"] = round(self.profile["points"] - points, 4)

    def default_sender(self) -> str:
        return next((s["sender"] for s in self.sendernames if s["is_default"]), "SMSAPI")

    def sender(self, requested: str | None) -> str:
        if not requested:
            return self.default_sender()
        if any(s["sender"] == requested and s["status"] == "ACTIVE" for s in self.sendernames):
            return requested
        raise _sms_error(14, "Invalid sender field")


def _expired(expire_at: str | None) -> bool:
    """Whether a blacklist entry has lapsed; unparseable dates count as still in force."""
    if expire_at is None:
        return False
    try:
        return datetime.fromisoformat(expire_at).timestamp() < time.time()
    except ValueError:
        return False


def _collection(rows: list[Json], total: int | None = None) -> Json:
    return {"size": len(rows) if total is None else total, "collection": rows}


def _page(rows: list[Json], args: Json, default_limit: int = 50) -> list[Json]:
    offset = args.get("offset", 0)
    return rows[offset : offset + args.get("limit", default_limit)]


def _matches(row: Json, needle: str, fields: Iterable[str]) -> bool:
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


def _tool(
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


def _s(description: str, **extra: Any) -> Json:
    return {"type": "string", "description": description, **extra}


def _i(description: str, **extra: Any) -> Json:
    return {"type": "integer", "description": description, **extra}


def _b(description: str) -> Json:
    return {"type": "boolean", "description": description}


def _n(description: str) -> Json:
    return {"type": "number", "description": description}


_PAGING: Json = {"limit": _i("Page size", minimum=1, maximum=500), "offset": _i("Rows to skip", minimum=0)}
_STR_OR_NULL: Json = {"type": ["string", "null"]}

# Untrusted strings carry only a type, no pattern/length: the proxy rewrites them, and the
# rewritten value must still validate.
_SMS_ITEM: Json = {
    "type": "object",
    "properties": {
        "id": {"type": "string"},
        "direction": {"type": "string", "enum": ["incoming", "outgoing"]},
        "number": {"type": "string"},
        "submitted_number": {"type": "string"},
        "sender": {"type": "string"},
        "message": {"type": "string"},
        "status": {"type": "string"},
        "date_sent": {"type": "integer"},
        "points": {"type": "number"},
        "parts": {"type": "integer"},
        "error": {"type": ["integer", "null"]},
        "idx": _STR_OR_NULL,
    },
    "required": ["id", "direction", "number", "sender", "message", "status", "date_sent"],
}
SMS_OUTPUT_SCHEMA: Json = {
    "type": "object",
    "properties": {"count": {"type": "integer"}, "list": {"type": "array", "items": _SMS_ITEM}},
    "required": ["count", "list"],
}
_CONTACT_ITEM: Json = {
    "type": "object",
    "properties": {
        "id": {"type": "string"},
        "idx": _STR_OR_NULL,
        "first_name": _STR_OR_NULL,
        "last_name": _STR_OR_NULL,
        "birthday_date": _STR_OR_NULL,
        "phone_number": _STR_OR_NULL,
        "gender": _STR_OR_NULL,
        "city": _STR_OR_NULL,
        "email": _STR_OR_NULL,
        "source": _STR_OR_NULL,
        "date_created": {"type": "string"},
        "date_updated": {"type": "string"},
        "description": _STR_OR_NULL,
    },
    "required": ["id", "phone_number"],
}
CONTACTS_OUTPUT_SCHEMA: Json = {
    "type": "object",
    "properties": {"size": {"type": "integer"}, "collection": {"type": "array", "items": _CONTACT_ITEM}},
    "required": ["size", "collection"],
}
_GROUP_ITEM: Json = {
    "type": "object",
    "properties": {
        "id": {"type": "string"},
        "name": {"type": "string"},
        "contacts_count": {"type": "integer"},
        "description": _STR_OR_NULL,
        "created_by": {"type": "string"},
        "idx": _STR_OR_NULL,
        "permissions": {"type": "array"},
    },
    "required": ["id", "name", "contacts_count"],
}
GROUPS_OUTPUT_SCHEMA: Json = {
    "type": "object",
    "properties": {"size": {"type": "integer"}, "collection": {"type": "array", "items": _GROUP_ITEM}},
    "required": ["size", "collection"],
}


# --------------------------------------------------------------------------- sms

_SEND_PROPS: Json = {
    "message": _s("Message text; long messages are split into parts (GSM-7 160/153, Unicode 70/67)"),
    "from": _s("Sender name; must be an active sender name, default sender name when omitted"),
    "date": _s("Scheduled send time: unix timestamp or ISO 8601; omitted = send now"),
    "test": _b("Validate and price the message without sending it or charging points"),
}


def _split_recipients(raw: str) -> list[str]:
    return [part.strip() for part in raw.split(",") if part.strip()]


def _classify(sb: Sandbox, recipients: list[str]) -> tuple[list[tuple[str, str]], list[Json]]:
    valid: list[tuple[str, str]] = []
    invalid: list[Json] = []
    for raw in recipients:
        number = normalise_number(raw)
        if number is None:
            invalid.append(_invalid(raw))
        elif sb.blacklisted(number):
            invalid.append(_invalid(raw, "Phone number is on the blacklist"))
        else:
            valid.append((raw, number))
    return valid, invalid


def _send(sb: Sandbox, recipients: list[str], args: Json) -> Json:
    message: str = args["message"]
    parts = sms_parts(message)
    if not message or parts > MAX_PARTS:
        raise _sms_error(11, "Message too long or there is no message")
    sender = sb.sender(args.get("from"))
    date_sent, scheduled = _send_date(args.get("date"))
    valid, invalid = _classify(sb, recipients)
    if not valid:
        raise _sms_error(13, "No correct phone numbers", invalid_numbers=invalid)
    points = round(POINTS_PER_PART * parts, 2)
    test = bool(args.get("test"))
    if test:
        if points * len(valid) > sb.profile["points"] + 1e-9:
            raise _sms_error(103, "Not enough points")
    else:
        sb.charge(points * len(valid))
    sent = [
        {
            "id": sb.new_id(),
            "points": points,
            "number": number,
            "date_sent": date_sent,
            "submitted_number": raw,
            "status": "QUEUE",
            "error": None,
            "idx": None,
            "parts": parts,
        }
        for raw, number in valid
    ]
    if not test:
        sb.sms.extend(
            {
                **row,
                "direction": "outgoing",
                "sender": sender,
                "message": message,
                "status": "QUEUE" if scheduled else "SENT",
            }
            for row in sent
        )
    body: Json = {"count": len(sent), "list": sent}
    if invalid:
        body["invalid_numbers"] = invalid
    return body


@_tool(
    "send_sms",
    "Send SMS",
    "Send an SMS to one or more phone numbers (sms.do). Costs 0.16 points per part per recipient; "
    "`test: true` validates and prices without sending.",
    {"to": _s("Recipients: phone numbers separated by commas, e.g. '48600100200,48600100201'"), **_SEND_PROPS},
    ("to", "message"),
    open_world=True,
)
def send_sms(sb: Sandbox, args: Json) -> Json:
    return _send(sb, _split_recipients(args["to"]), args)


@_tool(
    "send_group_sms",
    "Send SMS to a contact group",
    "Send an SMS to every member of a contacts group (by group name or id).",
    {"group": _s("Group name or id"), **_SEND_PROPS},
    ("group", "message"),
    open_world=True,
)
def send_group_sms(sb: Sandbox, args: Json) -> Json:
    try:
        group = sb.group(args["group"])
    except SmsapiError:
        raise _sms_error(18, f"Group {args['group']} does not exist") from None
    members = sb.memberships.get(group["id"], [])
    numbers = [c["phone_number"] for c in sb.contacts if c["id"] in members and c["phone_number"]]
    return _send(sb, numbers, args)


@_tool(
    "get_sms",
    "List SMS messages",
    "List sent and received SMS messages, newest first, or one message by id. Message text is third-party content.",
    {
        "id": _s("Message id"),
        "direction": _s("Filter by direction", enum=["incoming", "outgoing"]),
        "status": _s("Filter by status, e.g. DELIVERED"),
        **_PAGING,
    },
    output_schema=SMS_OUTPUT_SCHEMA,
)
def get_sms(sb: Sandbox, args: Json) -> Json:
    if "id" in args:
        rows = [row for row in sb.sms if row["id"] == args["id"]]
        if not rows:
            raise _sms_error(301, "ID of messages doesn't exist")
    else:
        rows = sorted(sb.sms, key=lambda row: row["date_sent"], reverse=True)
        rows = [
            row
            for row in rows
            if args.get("direction") in (None, row["direction"]) and args.get("status") in (None, row["status"])
        ]
        rows = _page(rows, args)
    return {"count": len(rows), "list": rows}


@_tool(
    "delete_scheduled_sms",
    "Delete scheduled SMS",
    "Cancel scheduled (not yet sent) messages by id (sms.do sch_del).",
    {"id": _s("Message ids separated by commas")},
    ("id",),
)
def delete_scheduled_sms(sb: Sandbox, args: Json) -> Json:
    now = time.time()
    ids = _split_recipients(args["id"])
    doomed = [row for row in sb.sms if row["id"] in ids and row["status"] == "QUEUE" and row["date_sent"] > now]
    if len(doomed) != len(set(ids)):
        raise _sms_error(301, "ID of messages doesn't exist")
    sb.sms[:] = [row for row in sb.sms if row not in doomed]
    return {"count": len(doomed), "list": [{"id": row["id"]} for row in doomed]}


# --------------------------------------------------------------------------- sender names

_SENDER_NAME = re.compile(r"(?=.*[A-Za-z])[A-Za-z0-9]{1,11}")


@_tool("get_sendernames", "List sender names", "List the account's sender names and their approval status.")
def get_sendernames(sb: Sandbox, args: Json) -> Json:
    return _collection(sb.sendernames)


@_tool(
    "add_sendername",
    "Add sender name",
    "Register a new sender name (up to 11 letters and digits); it stays INACTIVE until approved.",
    {"sender": _s("Sender name")},
    ("sender",),
)
def add_sendername(sb: Sandbox, args: Json) -> Json:
    sender = args["sender"]
    if not _SENDER_NAME.fullmatch(sender):
        raise _rest_error(400, "invalid_sender", "Sender name must be 1-11 letters or digits")
    if any(s["sender"] == sender for s in sb.sendernames):
        raise _rest_error(409, "sender_exists", f"Sender name {sender} already exists")
    row = {
        "sender": sender,
        "status": "INACTIVE",
        "is_default": False,
        "created_at": datetime.now().astimezone().isoformat(timespec="seconds"),
    }
    sb.sendernames.append(row)
    return row


@_tool(
    "set_default_sendername",
    "Set default sender name",
    "Make an active sender name the default.",
    {"sender": _s("Sender name")},
    ("sender",),
)
def set_default_sendername(sb: Sandbox, args: Json) -> Json:
    row = sb.find(sb.sendernames, args["sender"], "Sender name", key="sender")
    if row["status"] != "ACTIVE":
        raise _rest_error(400, "sender_inactive", f"Sender name {row['sender']} is not active")
    for other in sb.sendernames:
        other["is_default"] = other is row
    return row


@_tool(
    "delete_sendername",
    "Delete sender name",
    "Delete a sender name; the default one cannot be deleted.",
    {"sender": _s("Sender name")},
    ("sender",),
)
def delete_sendername(sb: Sandbox, args: Json) -> Json:
    row = sb.find(sb.sendernames, args["sender"], "Sender name", key="sender")
    if row["is_default"]:
        raise _rest_error(400, "sender_is_default", "The default sender name cannot be deleted")
    sb.sendernames.remove(row)
    return {"deleted": True, "sender": row["sender"]}


# --------------------------------------------------------------------------- contacts and groups

_CONTACT_FIELDS: Json = {
    "first_name": _s("First name"),
    "last_name": _s("Last name"),
    "email": _s("E-mail address"),
    "phone_number": _s("Phone number"),
    "gender": _s("Gender", enum=["male", "female", "undefined"]),
    "birthday_date": _s("Birthday, YYYY-MM-DD"),
    "city": _s("City"),
    "description": _s("Free-text description"),
    "source": _s("Where the contact came from"),
}
_CONTACT_SEARCH = ("first_name", "last_name", "phone_number", "email", "city", "description")


def _now_iso() -> str:
    return datetime.now().astimezone().isoformat(timespec="seconds")


def _checked_phone(sb: Sandbox, raw: str, exclude_id: str | None = None) -> str:
    number = normalise_number(raw)
    if number is None:
        raise _rest_error(400, "invalid_phone_number", f"Invalid phone number: {raw}")
    if any(c["phone_number"] == number and c["id"] != exclude_id for c in sb.contacts):
        raise _rest_error(409, "contact_conflict", f"Contact with phone number {number} already exists")
    return number


@_tool(
    "get_contacts",
    "List contacts",
    "Search the contact database. Names and descriptions are third-party content.",
    {
        "q": _s("Free-text search"),
        "phone_number": _s("Exact phone number"),
        "group_id": _s("Only members of this group"),
        **_PAGING,
    },
    output_schema=CONTACTS_OUTPUT_SCHEMA,
)
def get_contacts(sb: Sandbox, args: Json) -> Json:
    rows = sb.contacts
    if "q" in args:
        rows = [c for c in rows if _matches(c, args["q"], _CONTACT_SEARCH)]
    if "phone_number" in args:
        wanted = normalise_number(args["phone_number"]) or args["phone_number"]
        rows = [c for c in rows if c["phone_number"] == wanted]
    if "group_id" in args:
        members = sb.memberships.get(sb.group(args["group_id"])["id"], [])
        rows = [c for c in rows if c["id"] in members]
    return _collection(_page(rows, args), total=len(rows))


@_tool("create_contact", "Create contact", "Add a contact to the database.", _CONTACT_FIELDS, ("phone_number",))
def create_contact(sb: Sandbox, args: Json) -> Json:
    now = _now_iso()
    row: Json = {
        "id": sb.new_id(),
        "idx": None,
        "first_name": "",
        "last_name": "",
        "birthday_date": None,
        "phone_number": None,
        "gender": "undefined",
        "city": None,
        "email": None,
        "source": None,
        "date_created": now,
        "date_updated": now,
        "description": None,
    }
    row.update(args)
    row["phone_number"] = _checked_phone(sb, args["phone_number"])
    sb.contacts.append(row)
    return row


@_tool(
    "update_contact",
    "Update contact",
    "Change fields of an existing contact.",
    {"id": _s("Contact id"), **_CONTACT_FIELDS},
    ("id",),
)
def update_contact(sb: Sandbox, args: Json) -> Json:
    row = sb.find(sb.contacts, args["id"], "Contact")
    changes = {k: v for k, v in args.items() if k != "id"}
    if "phone_number" in changes:
        changes["phone_number"] = _checked_phone(sb, changes["phone_number"], exclude_id=row["id"])
    row.update(changes, date_updated=_now_iso())
    return row


@_tool(
    "delete_contact",
    "Delete contact",
    "Delete a contact permanently (also from all groups).",
    {"id": _s("Contact id")},
    ("id",),
)
def delete_contact(sb: Sandbox, args: Json) -> Json:
    row = sb.find(sb.contacts, args["id"], "Contact")
    sb.contacts.remove(row)
    for members in sb.memberships.values():
        if row["id"] in members:
            members.remove(row["id"])
    return {"deleted": True, "id": row["id"]}


@_tool(
    "get_groups",
    "List contact groups",
    "List contact groups with member counts. Group names and descriptions are third-party content.",
    {"name": _s("Filter by name (substring)")},
    output_schema=GROUPS_OUTPUT_SCHEMA,
)
def get_groups(sb: Sandbox, args: Json) -> Json:
    rows = [sb.group(g["id"]) for g in sb.groups if _matches(g, args.get("name", ""), ("name",))]
    return _collection(rows)


@_tool(
    "create_group",
    "Create contact group",
    "Create an empty contact group.",
    {"name": _s("Group name"), "description": _s("Description"), "idx": _s("Your own reference")},
    ("name",),
)
def create_group(sb: Sandbox, args: Json) -> Json:
    if any(g["name"] == args["name"] for g in sb.groups):
        raise _rest_error(409, "group_conflict", f"Group {args['name']} already exists")
    row = {
        "id": sb.new_id(),
        "name": args["name"],
        "description": args.get("description"),
        "created_by": sb.profile["username"],
        "idx": args.get("idx"),
        "permissions": [],
    }
    sb.groups.append(row)
    sb.memberships[row["id"]] = []
    return sb.group(row["id"])


@_tool(
    "delete_group", "Delete contact group", "Delete a group; its contacts are kept.", {"id": _s("Group id")}, ("id",)
)
def delete_group(sb: Sandbox, args: Json) -> Json:
    row = sb.find(sb.groups, args["id"], "Group")
    sb.groups.remove(row)
    sb.memberships.pop(row["id"], None)
    return {"deleted": True, "id": row["id"]}


@_tool(
    "get_contact_groups",
    "List a contact's groups",
    "List the groups a contact belongs to.",
    {"contact_id": _s("Contact id")},
    ("contact_id",),
)
def get_contact_groups(sb: Sandbox, args: Json) -> Json:
    contact = sb.find(sb.contacts, args["contact_id"], "Contact")
    return _collection([sb.group(gid) for gid, members in sb.memberships.items() if contact["id"] in members])


@_tool(
    "add_contact_to_group",
    "Add contact to group",
    "Make a contact a member of a group.",
    {"group_id": _s("Group id"), "contact_id": _s("Contact id")},
    ("group_id", "contact_id"),
)
def add_contact_to_group(sb: Sandbox, args: Json) -> Json:
    group = sb.find(sb.groups, args["group_id"], "Group")
    contact = sb.find(sb.contacts, args["contact_id"], "Contact")
    members = sb.memberships.setdefault(group["id"], [])
    if contact["id"] not in members:
        members.append(contact["id"])
    return contact


@_tool(
    "remove_contact_from_group",
    "Remove contact from group",
    "Remove a contact from a group.",
    {"group_id": _s("Group id"), "contact_id": _s("Contact id")},
    ("group_id", "contact_id"),
)
def remove_contact_from_group(sb: Sandbox, args: Json) -> Json:
    group = sb.find(sb.groups, args["group_id"], "Group")
    members = sb.memberships.get(group["id"], [])
    if args["contact_id"] not in members:
        raise _not_found("Group member", args["contact_id"])
    members.remove(args["contact_id"])
    return {"deleted": True, "group_id": group["id"], "contact_id": args["contact_id"]}


@_tool("get_custom_fields", "List custom fields", "List the contact database's custom fields.")
def get_custom_fields(sb: Sandbox, args: Json) -> Json:
    return _collection(sb.custom_fields)


@_tool("get_profile", "Account profile", "Account details and points balance.")
def get_profile(sb: Sandbox, args: Json) -> Json:
    return {**sb.profile, "points": round(sb.profile["points"], 2)}


# --------------------------------------------------------------------------- subusers

_SUBUSER_FIELDS: Json = {
    "description": _s("Description"),
    "active": _b("Whether the subuser may log in and send"),
    "points_from_account": _n("Points moved from the main account"),
    "points_per_month": _n("Points granted every month"),
}


def _apply_subuser(row: Json, args: Json) -> Json:
    row.update({k: args[k] for k in ("description", "active") if k in args})
    points = row["points"]
    points["from_account"] = args.get("points_from_account", points["from_account"])
    points["per_month"] = args.get("points_per_month", points["per_month"])
    return row


@_tool("get_subusers", "List subusers", "List subuser accounts. Descriptions are third-party content.")
def get_subusers(sb: Sandbox, args: Json) -> Json:
    return _collection(sb.subusers)


@_tool(
    "create_subuser",
    "Create subuser",
    "Create a subuser account with its own point limits.",
    {"username": _s("Login"), "password": _s("Password (write-only)"), **_SUBUSER_FIELDS},
    ("username", "password"),
)
def create_subuser(sb: Sandbox, args: Json) -> Json:
    if any(u["username"] == args["username"] for u in sb.subusers):
        raise _rest_error(409, "username_conflict", f"Username {args['username']} is taken")
    row = {
        "id": sb.new_id(16),
        "username": args["username"],
        "active": False,
        "description": None,
        "points": {"from_account": 0, "per_month": 0},
    }
    sb.subusers.append(_apply_subuser(row, args))
    return row


@_tool(
    "update_subuser",
    "Update subuser",
    "Change a subuser's description, activation or point limits.",
    {"id": _s("Subuser id"), "password": _s("New password (write-only)"), **_SUBUSER_FIELDS},
    ("id",),
)
def update_subuser(sb: Sandbox, args: Json) -> Json:
    return _apply_subuser(sb.find(sb.subusers, args["id"], "Subuser"), args)


@_tool("delete_subuser", "Delete subuser", "Delete a subuser account.", {"id": _s("Subuser id")}, ("id",))
def delete_subuser(sb: Sandbox, args: Json) -> Json:
    sb.subusers.remove(sb.find(sb.subusers, args["id"], "Subuser"))
    return {"deleted": True, "id": args["id"]}


# --------------------------------------------------------------------------- short URLs


@_tool("get_short_urls", "List short URLs", "List cut.li / idz.do short links with hit counts.")
def get_short_urls(sb: Sandbox, args: Json) -> Json:
    return _collection(sb.short_urls)


@_tool(
    "create_short_url",
    "Create short URL",
    "Create a public short link (idz.do) to a URL.",
    {
        "url": _s("Target URL"),
        "name": _s("Link name, used as the path"),
        "description": _s("Description"),
        "expire": _s("Expiry, ISO 8601"),
    },
    ("url",),
    open_world=True,
)
def create_short_url(sb: Sandbox, args: Json) -> Json:
    if not re.match(r"https?://", args["url"]):
        raise _rest_error(400, "invalid_url", f"Invalid URL: {args['url']}")
    link_id = str(max((int(u["id"]) for u in sb.short_urls), default=0) + 1)
    name = args.get("name") or f"l{link_id}"
    row = {
        "id": link_id,
        "name": name,
        "url": args["url"],
        "short_url": f"http://idz.do/{name}",
        "type": "URL",
        "expire": args.get("expire"),
        "hits": 0,
        "hits_unique": 0,
        "description": args.get("description"),
    }
    sb.short_urls.append(row)
    return row


@_tool("delete_short_url", "Delete short URL", "Delete a short link.", {"id": _s("Link id")}, ("id",))
def delete_short_url(sb: Sandbox, args: Json) -> Json:
    sb.short_urls.remove(sb.find(sb.short_urls, args["id"], "Short URL"))
    return {"deleted": True, "id": args["id"]}


@_tool(
    "get_short_url_clicks",
    "Short URL clicks",
    "Click statistics for short links.",
    {"ids": _s("Link ids separated by commas; all links when omitted")},
)
def get_short_url_clicks(sb: Sandbox, args: Json) -> Json:
    ids = _split_recipients(args.get("ids", ""))
    return _collection([c for c in sb.short_url_clicks if not ids or c["idz_id"] in ids])


# --------------------------------------------------------------------------- HLR


@_tool(
    "check_hlr",
    "HLR lookup",
    "Check whether numbers are live on a mobile network (hlr.do). Costs 0.1 points per number.",
    {"number": _s("Phone numbers separated by commas")},
    ("number",),
    open_world=True,
)
def check_hlr(sb: Sandbox, args: Json) -> Json | list[Json]:
    recipients = _split_recipients(args["number"])
    valid = [(raw, normalise_number(raw)) for raw in recipients]
    if not any(number for _, number in valid):
        raise _sms_error(13, "No correct phone numbers", invalid_numbers=[_invalid(r) for r in recipients])
    sb.charge(HLR_PRICE * sum(1 for _, number in valid if number))
    rows = [
        {"status": "OK", "number": number, "id": sb.new_id(12), "price": HLR_PRICE}
        if number
        else {"status": "ERROR", "number": raw, "error": 13}
        for raw, number in valid
    ]
    return rows[0] if len(rows) == 1 else rows


# --------------------------------------------------------------------------- blacklist


def _blacklist_add(sb: Sandbox, raw: str, expire_at: str | None) -> Json:
    number = normalise_number(raw)
    if number is None:
        raise _rest_error(400, "invalid_phone_number", f"Invalid phone number: {raw}")
    if any(b["phone_number"] == number for b in sb.blacklist):
        raise _rest_error(409, "phone_number_conflict", f"{number} is already blacklisted")
    row = {
        "id": str(max((int(b["id"]) for b in sb.blacklist), default=0) + 1),
        "phone_number": number,
        "expire_at": expire_at,
        "created_at": datetime.now().astimezone().isoformat(timespec="seconds"),
    }
    sb.blacklist.append(row)
    return row


@_tool(
    "get_blacklist",
    "List blacklist",
    "List blacklisted phone numbers (never messaged).",
    {"q": _s("Search phone numbers"), **_PAGING},
)
def get_blacklist(sb: Sandbox, args: Json) -> Json:
    rows = [b for b in sb.blacklist if _matches(b, args.get("q", ""), ("phone_number",))]
    return _collection(_page(rows, args), total=len(rows))


@_tool(
    "add_to_blacklist",
    "Add to blacklist",
    "Blacklist a phone number, optionally until a date.",
    {"phone_number": _s("Phone number"), "expire_at": _s("Expiry, ISO 8601; never when omitted")},
    ("phone_number",),
)
def add_to_blacklist(sb: Sandbox, args: Json) -> Json:
    return _blacklist_add(sb, args["phone_number"], args.get("expire_at"))


@_tool(
    "remove_from_blacklist",
    "Remove from blacklist",
    "Remove one blacklist entry by id.",
    {"id": _s("Blacklist entry id")},
    ("id",),
)
def remove_from_blacklist(sb: Sandbox, args: Json) -> Json:
    sb.blacklist.remove(sb.find(sb.blacklist, args["id"], "Blacklist entry"))
    return {"deleted": True, "id": args["id"]}


@_tool("clear_blacklist", "Clear blacklist", "Remove every entry from the blacklist.")
def clear_blacklist(sb: Sandbox, args: Json) -> Json:
    count = len(sb.blacklist)
    sb.blacklist.clear()
    return {"deleted": True, "count": count}


@_tool(
    "import_blacklist",
    "Import blacklist",
    "Import phone numbers into the blacklist from CSV text: one number per line, optional second column expire_at.",
    {"csv": _s("CSV text")},
    ("csv",),
)
def import_blacklist(sb: Sandbox, args: Json) -> Json:
    added: list[Json] = []
    skipped: list[str] = []
    for line in args["csv"].splitlines():
        cells = [cell.strip() for cell in line.split(",")]
        if not cells[0] or cells[0].lower() == "phone_number":
            continue
        try:
            added.append(_blacklist_add(sb, cells[0], cells[1] if len(cells) > 1 and cells[1] else None))
        except SmsapiError:
            skipped.append(cells[0])
    return {**_collection(added), "skipped": skipped}


# --------------------------------------------------------------------------- MCP server


def _validate_arguments(tool: types.Tool, arguments: Json) -> None:
    error = jsonschema.exceptions.best_match(jsonschema.Draft202012Validator(tool.input_schema).iter_errors(arguments))
    if error is not None:
        raise _sms_error(8, f"Error in request: {error.message}")


def json_result(body: Any, *, is_error: bool = False, structured: bool = False) -> types.CallToolResult:
    """REST JSON passed through as text, optionally also as structuredContent."""
    text = json.dumps(body, ensure_ascii=False)
    return types.CallToolResult(
        content=[types.TextContent(text=text)], is_error=is_error, structured_content=body if structured else None
    )


def run_tool(sb: Sandbox, name: str, arguments: Json) -> types.CallToolResult:
    spec = TOOLS.get(name)
    if spec is None:
        raise MCPError(code=INVALID_PARAMS, message=f"Unknown tool: {name}")
    try:
        _validate_arguments(spec.tool, arguments)
        body = spec.run(sb, arguments)
    except SmsapiError as exc:
        return json_result(exc.body, is_error=True)
    return json_result(body, structured=spec.tool.output_schema is not None)


def build_sandbox(record_path: str | os.PathLike[str] | None = None) -> Server[Any]:
    """A fresh sandbox server with its own in-memory account."""
    sb = Sandbox()
    recorder = CallRecorder(record_path)

    async def on_list_tools(
        ctx: ServerRequestContext[Any, Any], params: types.PaginatedRequestParams | None
    ) -> types.ListToolsResult:
        return types.ListToolsResult(tools=[spec.tool for spec in TOOLS.values()])

    async def on_call_tool(
        ctx: ServerRequestContext[Any, Any], params: types.CallToolRequestParams
    ) -> types.CallToolResult:
        recorder.tool_call(ctx, params)
        return run_tool(sb, params.name, params.arguments or {})

    def input_schema(name: str) -> Json | None:
        spec = TOOLS.get(name)
        return spec.tool.input_schema if spec else None

    return Server(
        SERVER_NAME,
        version="1.0.0",
        title="SMSAPI sandbox",
        instructions="In-memory SMSAPI sandbox: the hosted SMSAPI MCP tool catalogue over fake account data. "
        "Nothing is sent; no network is used.",
        get_tool_input_schema=input_schema,
        on_list_tools=on_list_tools,
        on_call_tool=on_call_tool,
    )


# --------------------------------------------------------------------------- serving


async def serve_http(server: Server[Any], host: str, port: int, label: str) -> None:
    """Streamable HTTP at /mcp on a socket we bind, announcing "<label>: MCP endpoint URL" on stderr."""
    app = server.streamable_http_app(streamable_http_path="/mcp", host=host)
    sock = bind(host, port)
    await serve_asgi(app, sock, announce=lambda url: f"{label}: MCP endpoint {url}/mcp")


async def serve_stdio(server: Server[Any]) -> None:
    async with stdio_server() as (read_stream, write_stream):
        await server.run(read_stream, write_stream, server.create_initialization_options())


async def serve_sandbox_http(
    host: str = "127.0.0.1", port: int = 0, record_path: str | os.PathLike[str] | None = None
) -> None:
    await serve_http(build_sandbox(record_path), host, port, "mcp-guard sandbox")


async def serve_sandbox_stdio(record_path: str | os.PathLike[str] | None = None) -> None:
    await serve_stdio(build_sandbox(record_path))


def server_arg_parser(prog: str, description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--host", default="127.0.0.1", help="HTTP bind address (default 127.0.0.1)")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--port", type=int, default=0, help="HTTP port; 0 picks a free one (default)")
    where.add_argument("--stdio", action="store_true", help="serve MCP on stdin/stdout instead of HTTP")
    parser.add_argument("--record", metavar="FILE", help="append one JSON line per received call to FILE")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = server_arg_parser("python -m proxy.backends.sandbox", "In-memory SMSAPI sandbox MCP server.")
    args = parser.parse_args(argv)
    record = args.record or os.environ.get(RECORD_ENV) or None

    async def serve() -> None:
        if args.stdio:
            await serve_sandbox_stdio(record)
        else:
            await serve_sandbox_http(args.host, args.port, record)

    return run_until_signalled(serve, "mcp-guard sandbox")


if __name__ == "__main__":
    raise SystemExit(main())
