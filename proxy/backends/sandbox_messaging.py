"""Sandbox tools that send and read SMS, and manage sender names (the `sms` and `sms_sender` groups)."""

from __future__ import annotations

import re
import time
from datetime import datetime

from proxy.backends.sandbox_core import (
    MAX_PARTS,
    PAGING,
    POINTS_PER_PART,
    STR_OR_NULL,
    Json,
    Sandbox,
    SmsapiError,
    bool_prop,
    collection,
    invalid_number,
    normalise_number,
    page,
    rest_error,
    send_date,
    sms_error,
    sms_parts,
    split_list,
    str_prop,
    tool,
)

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
        "idx": STR_OR_NULL,
    },
    "required": ["id", "direction", "number", "sender", "message", "status", "date_sent"],
}
SMS_OUTPUT_SCHEMA: Json = {
    "type": "object",
    "properties": {"count": {"type": "integer"}, "list": {"type": "array", "items": _SMS_ITEM}},
    "required": ["count", "list"],
}


# --------------------------------------------------------------------------- sms

_SEND_PROPS: Json = {
    "message": str_prop("Message text; long messages are split into parts (GSM-7 160/153, Unicode 70/67)"),
    "from": str_prop("Sender name; must be an active sender name, default sender name when omitted"),
    "date": str_prop("Scheduled send time: unix timestamp or ISO 8601; omitted = send now"),
    "test": bool_prop("Validate and price the message without sending it or charging points"),
}


def _classify(sb: Sandbox, recipients: list[str]) -> tuple[list[tuple[str, str]], list[Json]]:
    valid: list[tuple[str, str]] = []
    invalid: list[Json] = []
    for raw in recipients:
        number = normalise_number(raw)
        if number is None:
            invalid.append(invalid_number(raw))
        elif sb.blacklisted(number):
            invalid.append(invalid_number(raw, "Phone number is on the blacklist"))
        else:
            valid.append((raw, number))
    return valid, invalid


def _send(sb: Sandbox, recipients: list[str], args: Json) -> Json:
    message: str = args["message"]
    parts = sms_parts(message)
    if not message or parts > MAX_PARTS:
        raise sms_error(11, "Message too long or there is no message")
    sender = sb.sender(args.get("from"))
    date_sent, scheduled = send_date(args.get("date"))
    valid, invalid = _classify(sb, recipients)
    if not valid:
        raise sms_error(13, "No correct phone numbers", invalid_numbers=invalid)
    points = round(POINTS_PER_PART * parts, 2)
    test = bool(args.get("test"))
    if test:
        if points * len(valid) > sb.profile["points"] + 1e-9:
            raise sms_error(103, "Not enough points")
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


@tool(
    "send_sms",
    "Send SMS",
    "Send an SMS to one or more phone numbers (sms.do). Costs 0.16 points per part per recipient; "
    "`test: true` validates and prices without sending.",
    {"to": str_prop("Recipients: phone numbers separated by commas, e.g. '48600100200,48600100201'"), **_SEND_PROPS},
    ("to", "message"),
    open_world=True,
)
def send_sms(sb: Sandbox, args: Json) -> Json:
    return _send(sb, split_list(args["to"]), args)


@tool(
    "send_group_sms",
    "Send SMS to a contact group",
    "Send an SMS to every member of a contacts group (by group name or id).",
    {"group": str_prop("Group name or id"), **_SEND_PROPS},
    ("group", "message"),
    open_world=True,
)
def send_group_sms(sb: Sandbox, args: Json) -> Json:
    try:
        group = sb.group(args["group"])
    except SmsapiError:
        raise sms_error(18, f"Group {args['group']} does not exist") from None
    members = sb.memberships.get(group["id"], [])
    numbers = [c["phone_number"] for c in sb.contacts if c["id"] in members and c["phone_number"]]
    return _send(sb, numbers, args)


@tool(
    "get_sms",
    "List SMS messages",
    "List sent and received SMS messages, newest first, or one message by id. Message text is third-party content.",
    {
        "id": str_prop("Message id"),
        "direction": str_prop("Filter by direction", enum=["incoming", "outgoing"]),
        "status": str_prop("Filter by status, e.g. DELIVERED"),
        **PAGING,
    },
    output_schema=SMS_OUTPUT_SCHEMA,
)
def get_sms(sb: Sandbox, args: Json) -> Json:
    if "id" in args:
        rows = [row for row in sb.sms if row["id"] == args["id"]]
        if not rows:
            raise sms_error(301, "ID of messages doesn't exist")
    else:
        rows = sorted(sb.sms, key=lambda row: row["date_sent"], reverse=True)
        rows = [
            row
            for row in rows
            if args.get("direction") in (None, row["direction"]) and args.get("status") in (None, row["status"])
        ]
        rows = page(rows, args)
    return {"count": len(rows), "list": rows}


@tool(
    "delete_scheduled_sms",
    "Delete scheduled SMS",
    "Cancel scheduled (not yet sent) messages by id (sms.do sch_del).",
    {"id": str_prop("Message ids separated by commas")},
    ("id",),
)
def delete_scheduled_sms(sb: Sandbox, args: Json) -> Json:
    now = time.time()
    ids = split_list(args["id"])
    doomed = [row for row in sb.sms if row["id"] in ids and row["status"] == "QUEUE" and row["date_sent"] > now]
    if len(doomed) != len(set(ids)):
        raise sms_error(301, "ID of messages doesn't exist")
    sb.sms[:] = [row for row in sb.sms if row not in doomed]
    return {"count": len(doomed), "list": [{"id": row["id"]} for row in doomed]}


# --------------------------------------------------------------------------- sender names

_SENDER_NAME = re.compile(r"(?=.*[A-Za-z])[A-Za-z0-9]{1,11}")


@tool("get_sendernames", "List sender names", "List the account's sender names and their approval status.")
def get_sendernames(sb: Sandbox, args: Json) -> Json:
    return collection(sb.sendernames)


@tool(
    "add_sendername",
    "Add sender name",
    "Register a new sender name (up to 11 letters and digits); it stays INACTIVE until approved.",
    {"sender": str_prop("Sender name")},
    ("sender",),
)
def add_sendername(sb: Sandbox, args: Json) -> Json:
    sender = args["sender"]
    if not _SENDER_NAME.fullmatch(sender):
        raise rest_error(400, "invalid_sender", "Sender name must be 1-11 letters or digits")
    if any(s["sender"] == sender for s in sb.sendernames):
        raise rest_error(409, "sender_exists", f"Sender name {sender} already exists")
    row = {
        "sender": sender,
        "status": "INACTIVE",
        "is_default": False,
        "created_at": datetime.now().astimezone().isoformat(timespec="seconds"),
    }
    sb.sendernames.append(row)
    return row


@tool(
    "set_default_sendername",
    "Set default sender name",
    "Make an active sender name the default.",
    {"sender": str_prop("Sender name")},
    ("sender",),
)
def set_default_sendername(sb: Sandbox, args: Json) -> Json:
    row = sb.find(sb.sendernames, args["sender"], "Sender name", key="sender")
    if row["status"] != "ACTIVE":
        raise rest_error(400, "sender_inactive", f"Sender name {row['sender']} is not active")
    for other in sb.sendernames:
        other["is_default"] = other is row
    return row


@tool(
    "delete_sendername",
    "Delete sender name",
    "Delete a sender name; the default one cannot be deleted.",
    {"sender": str_prop("Sender name")},
    ("sender",),
)
def delete_sendername(sb: Sandbox, args: Json) -> Json:
    row = sb.find(sb.sendernames, args["sender"], "Sender name", key="sender")
    if row["is_default"]:
        raise rest_error(400, "sender_is_default", "The default sender name cannot be deleted")
    sb.sendernames.remove(row)
    return {"deleted": True, "sender": row["sender"]}
