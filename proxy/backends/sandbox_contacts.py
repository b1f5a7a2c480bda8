"""Sandbox tools for contacts, groups and custom fields (the `contacts` group)."""

from __future__ import annotations

from datetime import datetime

from proxy.backends.sandbox_core import (
    PAGING,
    STR_OR_NULL,
    Json,
    Sandbox,
    collection,
    matches,
    normalise_number,
    not_found,
    page,
    rest_error,
    str_prop,
    tool,
)

_CONTACT_ITEM: Json = {
    "type": "object",
    "properties": {
        "id": {"type": "string"},
        "idx": STR_OR_NULL,
        "first_name": STR_OR_NULL,
        "last_name": STR_OR_NULL,
        "birthday_date": STR_OR_NULL,
        "phone_number": STR_OR_NULL,
        "gender": STR_OR_NULL,
        "city": STR_OR_NULL,
        "email": STR_OR_NULL,
        "source": STR_OR_NULL,
        "date_created": {"type": "string"},
        "date_updated": {"type": "string"},
        "description": STR_OR_NULL,
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
        "description": STR_OR_NULL,
        "created_by": {"type": "string"},
        "idx": STR_OR_NULL,
        "permissions": {"type": "array"},
    },
    "required": ["id", "name", "contacts_count"],
}
GROUPS_OUTPUT_SCHEMA: Json = {
    "type": "object",
    "properties": {"size": {"type": "integer"}, "collection": {"type": "array", "items": _GROUP_ITEM}},
    "required": ["size", "collection"],
}


# --------------------------------------------------------------------------- contacts and groups

_CONTACT_FIELDS: Json = {
    "first_name": str_prop("First name"),
    "last_name": str_prop("Last name"),
    "email": str_prop("E-mail address"),
    "phone_number": str_prop("Phone number"),
    "gender": str_prop("Gender", enum=["male", "female", "undefined"]),
    "birthday_date": str_prop("Birthday, YYYY-MM-DD"),
    "city": str_prop("City"),
    "description": str_prop("Free-text description"),
    "source": str_prop("Where the contact came from"),
}
_CONTACT_SEARCH = ("first_name", "last_name", "phone_number", "email", "city", "description")


def _now_iso() -> str:
    return datetime.now().astimezone().isoformat(timespec="seconds")


def _checked_phone(sb: Sandbox, raw: str, exclude_id: str | None = None) -> str:
    number = normalise_number(raw)
    if number is None:
        raise rest_error(400, "invalid_phone_number", f"Invalid phone number: {raw}")
    if any(c["phone_number"] == number and c["id"] != exclude_id for c in sb.contacts):
        raise rest_error(409, "contact_conflict", f"Contact with phone number {number} already exists")
    return number


@tool(
    "get_contacts",
    "List contacts",
    "Search the contact database. Names and descriptions are third-party content.",
    {
        "q": str_prop("Free-text search"),
        "phone_number": str_prop("Exact phone number"),
        "group_id": str_prop("Only members of this group"),
        **PAGING,
    },
    output_schema=CONTACTS_OUTPUT_SCHEMA,
)
def get_contacts(sb: Sandbox, args: Json) -> Json:
    rows = sb.contacts
    if "q" in args:
        rows = [c for c in rows if matches(c, args["q"], _CONTACT_SEARCH)]
    if "phone_number" in args:
        wanted = normalise_number(args["phone_number"]) or args["phone_number"]
        rows = [c for c in rows if c["phone_number"] == wanted]
    if "group_id" in args:
        members = sb.memberships.get(sb.group(args["group_id"])["id"], [])
        rows = [c for c in rows if c["id"] in members]
    return collection(page(rows, args), total=len(rows))


@tool("create_contact", "Create contact", "Add a contact to the database.", _CONTACT_FIELDS, ("phone_number",))
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


@tool(
    "update_contact",
    "Update contact",
    "Change fields of an existing contact.",
    {"id": str_prop("Contact id"), **_CONTACT_FIELDS},
    ("id",),
)
def update_contact(sb: Sandbox, args: Json) -> Json:
    row = sb.find(sb.contacts, args["id"], "Contact")
    changes = {k: v for k, v in args.items() if k != "id"}
    if "phone_number" in changes:
        changes["phone_number"] = _checked_phone(sb, changes["phone_number"], exclude_id=row["id"])
    row.update(changes, date_updated=_now_iso())
    return row


@tool(
    "delete_contact",
    "Delete contact",
    "Delete a contact permanently (also from all groups).",
    {"id": str_prop("Contact id")},
    ("id",),
)
def delete_contact(sb: Sandbox, args: Json) -> Json:
    row = sb.find(sb.contacts, args["id"], "Contact")
    sb.contacts.remove(row)
    for members in sb.memberships.values():
        if row["id"] in members:
            members.remove(row["id"])
    return {"deleted": True, "id": row["id"]}


@tool(
    "get_groups",
    "List contact groups",
    "List contact groups with member counts. Group names and descriptions are third-party content.",
    {"name": str_prop("Filter by name (substring)")},
    output_schema=GROUPS_OUTPUT_SCHEMA,
)
def get_groups(sb: Sandbox, args: Json) -> Json:
    rows = [sb.group(g["id"]) for g in sb.groups if matches(g, args.get("name", ""), ("name",))]
    return collection(rows)


@tool(
    "create_group",
    "Create contact group",
    "Create an empty contact group.",
    {"name": str_prop("Group name"), "description": str_prop("Description"), "idx": str_prop("Your own reference")},
    ("name",),
)
def create_group(sb: Sandbox, args: Json) -> Json:
    if any(g["name"] == args["name"] for g in sb.groups):
        raise rest_error(409, "group_conflict", f"Group {args['name']} already exists")
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


@tool(
    "delete_group",
    "Delete contact group",
    "Delete a group; its contacts are kept.",
    {"id": str_prop("Group id")},
    ("id",),
)
def delete_group(sb: Sandbox, args: Json) -> Json:
    row = sb.find(sb.groups, args["id"], "Group")
    sb.groups.remove(row)
    sb.memberships.pop(row["id"], None)
    return {"deleted": True, "id": row["id"]}


@tool(
    "get_contact_groups",
    "List a contact's groups",
    "List the groups a contact belongs to.",
    {"contact_id": str_prop("Contact id")},
    ("contact_id",),
)
def get_contact_groups(sb: Sandbox, args: Json) -> Json:
    contact = sb.find(sb.contacts, args["contact_id"], "Contact")
    return collection([sb.group(gid) for gid, members in sb.memberships.items() if contact["id"] in members])


@tool(
    "add_contact_to_group",
    "Add contact to group",
    "Make a contact a member of a group.",
    {"group_id": str_prop("Group id"), "contact_id": str_prop("Contact id")},
    ("group_id", "contact_id"),
)
def add_contact_to_group(sb: Sandbox, args: Json) -> Json:
    group = sb.find(sb.groups, args["group_id"], "Group")
    contact = sb.find(sb.contacts, args["contact_id"], "Contact")
    members = sb.memberships.setdefault(group["id"], [])
    if contact["id"] not in members:
        members.append(contact["id"])
    return contact


@tool(
    "remove_contact_from_group",
    "Remove contact from group",
    "Remove a contact from a group.",
    {"group_id": str_prop("Group id"), "contact_id": str_prop("Contact id")},
    ("group_id", "contact_id"),
)
def remove_contact_from_group(sb: Sandbox, args: Json) -> Json:
    group = sb.find(sb.groups, args["group_id"], "Group")
    members = sb.memberships.get(group["id"], [])
    if args["contact_id"] not in members:
        raise not_found("Group member", args["contact_id"])
    members.remove(args["contact_id"])
    return {"deleted": True, "group_id": group["id"], "contact_id": args["contact_id"]}


@tool("get_custom_fields", "List custom fields", "List the contact database's custom fields.")
def get_custom_fields(sb: Sandbox, args: Json) -> Json:
    return collection(sb.custom_fields)


@tool("get_profile", "Account profile", "Account details and points balance.")
def get_profile(sb: Sandbox, args: Json) -> Json:
    return {**sb.profile, "points": round(sb.profile["points"], 2)}
