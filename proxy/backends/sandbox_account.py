"""Sandbox tools for the account around messaging: subusers, short URLs, HLR lookups, the blacklist."""

from __future__ import annotations

import re
from datetime import datetime

from proxy.backends.sandbox_core import (
    HLR_PRICE,
    PAGING,
    Json,
    Sandbox,
    SmsapiError,
    bool_prop,
    collection,
    invalid_number,
    matches,
    normalise_number,
    num_prop,
    page,
    rest_error,
    sms_error,
    split_list,
    str_prop,
    tool,
)

# --------------------------------------------------------------------------- subusers

_SUBUSER_FIELDS: Json = {
    "description": str_prop("Description"),
    "active": bool_prop("Whether the subuser may log in and send"),
    "points_from_account": num_prop("Points moved from the main account"),
    "points_per_month": num_prop("Points granted every month"),
}


def _apply_subuser(row: Json, args: Json) -> Json:
    row.update({k: args[k] for k in ("description", "active") if k in args})
    points = row["points"]
    points["from_account"] = args.get("points_from_account", points["from_account"])
    points["per_month"] = args.get("points_per_month", points["per_month"])
    return row


@tool("get_subusers", "List subusers", "List subuser accounts. Descriptions are third-party content.")
def get_subusers(sb: Sandbox, args: Json) -> Json:
    return collection(sb.subusers)


@tool(
    "create_subuser",
    "Create subuser",
    "Create a subuser account with its own point limits.",
    {"username": str_prop("Login"), "password": str_prop("Password (write-only)"), **_SUBUSER_FIELDS},
    ("username", "password"),
)
def create_subuser(sb: Sandbox, args: Json) -> Json:
    if any(u["username"] == args["username"] for u in sb.subusers):
        raise rest_error(409, "username_conflict", f"Username {args['username']} is taken")
    row = {
        "id": sb.new_id(16),
        "username": args["username"],
        "active": False,
        "description": None,
        "points": {"from_account": 0, "per_month": 0},
    }
    sb.subusers.append(_apply_subuser(row, args))
    return row


@tool(
    "update_subuser",
    "Update subuser",
    "Change a subuser's description, activation or point limits.",
    {"id": str_prop("Subuser id"), "password": str_prop("New password (write-only)"), **_SUBUSER_FIELDS},
    ("id",),
)
def update_subuser(sb: Sandbox, args: Json) -> Json:
    return _apply_subuser(sb.find(sb.subusers, args["id"], "Subuser"), args)


@tool("delete_subuser", "Delete subuser", "Delete a subuser account.", {"id": str_prop("Subuser id")}, ("id",))
def delete_subuser(sb: Sandbox, args: Json) -> Json:
    sb.subusers.remove(sb.find(sb.subusers, args["id"], "Subuser"))
    return {"deleted": True, "id": args["id"]}


# --------------------------------------------------------------------------- short URLs


@tool("get_short_urls", "List short URLs", "List cut.li / idz.do short links with hit counts.")
def get_short_urls(sb: Sandbox, args: Json) -> Json:
    return collection(sb.short_urls)


@tool(
    "create_short_url",
    "Create short URL",
    "Create a public short link (idz.do) to a URL.",
    {
        "url": str_prop("Target URL"),
        "name": str_prop("Link name, used as the path"),
        "description": str_prop("Description"),
        "expire": str_prop("Expiry, ISO 8601"),
    },
    ("url",),
    open_world=True,
)
def create_short_url(sb: Sandbox, args: Json) -> Json:
    if not re.match(r"https?://", args["url"]):
        raise rest_error(400, "invalid_url", f"Invalid URL: {args['url']}")
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


@tool("delete_short_url", "Delete short URL", "Delete a short link.", {"id": str_prop("Link id")}, ("id",))
def delete_short_url(sb: Sandbox, args: Json) -> Json:
    sb.short_urls.remove(sb.find(sb.short_urls, args["id"], "Short URL"))
    return {"deleted": True, "id": args["id"]}


@tool(
    "get_short_url_clicks",
    "Short URL clicks",
    "Click statistics for short links.",
    {"ids": str_prop("Link ids separated by commas; all links when omitted")},
)
def get_short_url_clicks(sb: Sandbox, args: Json) -> Json:
    ids = split_list(args.get("ids", ""))
    return collection([c for c in sb.short_url_clicks if not ids or c["idz_id"] in ids])


# --------------------------------------------------------------------------- HLR


@tool(
    "check_hlr",
    "HLR lookup",
    "Check whether numbers are live on a mobile network (hlr.do). Costs 0.1 points per number.",
    {"number": str_prop("Phone numbers separated by commas")},
    ("number",),
    open_world=True,
)
def check_hlr(sb: Sandbox, args: Json) -> Json | list[Json]:
    recipients = split_list(args["number"])
    valid = [(raw, normalise_number(raw)) for raw in recipients]
    if not any(number for _, number in valid):
        raise sms_error(13, "No correct phone numbers", invalid_numbers=[invalid_number(r) for r in recipients])
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
        raise rest_error(400, "invalid_phone_number", f"Invalid phone number: {raw}")
    if any(b["phone_number"] == number for b in sb.blacklist):
        raise rest_error(409, "phone_number_conflict", f"{number} is already blacklisted")
    row = {
        "id": str(max((int(b["id"]) for b in sb.blacklist), default=0) + 1),
        "phone_number": number,
        "expire_at": expire_at,
        "created_at": datetime.now().astimezone().isoformat(timespec="seconds"),
    }
    sb.blacklist.append(row)
    return row


@tool(
    "get_blacklist",
    "List blacklist",
    "List blacklisted phone numbers (never messaged).",
    {"q": str_prop("Search phone numbers"), **PAGING},
)
def get_blacklist(sb: Sandbox, args: Json) -> Json:
    rows = [b for b in sb.blacklist if matches(b, args.get("q", ""), ("phone_number",))]
    return collection(page(rows, args), total=len(rows))


@tool(
    "add_to_blacklist",
    "Add to blacklist",
    "Blacklist a phone number, optionally until a date.",
    {"phone_number": str_prop("Phone number"), "expire_at": str_prop("Expiry, ISO 8601; never when omitted")},
    ("phone_number",),
)
def add_to_blacklist(sb: Sandbox, args: Json) -> Json:
    return _blacklist_add(sb, args["phone_number"], args.get("expire_at"))


@tool(
    "remove_from_blacklist",
    "Remove from blacklist",
    "Remove one blacklist entry by id.",
    {"id": str_prop("Blacklist entry id")},
    ("id",),
)
def remove_from_blacklist(sb: Sandbox, args: Json) -> Json:
    sb.blacklist.remove(sb.find(sb.blacklist, args["id"], "Blacklist entry"))
    return {"deleted": True, "id": args["id"]}


@tool("clear_blacklist", "Clear blacklist", "Remove every entry from the blacklist.")
def clear_blacklist(sb: Sandbox, args: Json) -> Json:
    count = len(sb.blacklist)
    sb.blacklist.clear()
    return {"deleted": True, "count": count}


@tool(
    "import_blacklist",
    "Import blacklist",
    "Import phone numbers into the blacklist from CSV text: one number per line, optional second column expire_at.",
    {"csv": str_prop("CSV text")},
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
    return {**collection(added), "skipped": skipped}
