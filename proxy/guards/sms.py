"""SMS rules: who a send claims to be, who it goes to, and how many messages it costs (SPEC §11).

They apply to the tools whose profile names the argument roles (`sender`, `recipients`,
`message`) and only when the policy has an `sms` section. A refusal names the rule that refused
(sender, country, premium, invalid number); the upstream never sees such a call. One bound holds
with or without an `sms` section: a call naming more than `sms.MAX_RECIPIENTS` numbers is refused
before any of them is parsed. The rules themselves are pure functions in proxy/sms.py.
"""

from __future__ import annotations

from typing import Any

from proxy import sms
from proxy.catalog import ToolRule
from proxy.guards import Admitted, Ask, Refusal, Verdict
from proxy.policy import SmsPolicy


def check_sms(rule: ToolRule, policy: SmsPolicy | None, call: Admitted) -> Verdict:
    arguments = call.arguments
    named = named_recipients(rule, arguments)
    # With or without an `sms` section: past the bound, no rule, limit, cost line or audit line may
    # parse the numbers (sms.MAX_RECIPIENTS says why).
    if problem := sms.too_many(named):
        return Refusal(
            "denied",
            f"recipients > {sms.MAX_RECIPIENTS}",
            f"'{rule.exposed}' was refused: {problem}. It was not called.",
        )
    if policy is None:
        return call
    if rule.sender is not None:
        for name in rule.sender.args:
            value = arguments.get(name)
            if value is None or value == "":
                continue  # the upstream's default sender
            problem = sms.sender_problem(
                str(value),
                allow=policy.senders.allow,
                block_impersonation=policy.senders.block_impersonation,
            )
            if problem:
                return _refused(rule, "sender", problem)
    if rule.recipients is not None:
        checked = sms.check_recipients(
            named,
            countries=policy.recipients.countries,
            block_premium=policy.recipients.block_premium,
        )
        if checked.problem:
            return _refused(rule, "recipients", checked.problem)
        countries = policy.recipients.countries
        if countries and sms.names_group(arguments, rule.recipients.group_args):
            # Who is in the group is the upstream's to know: only a person can vouch for its countries.
            why = f"a group send: its numbers cannot be checked against this team's countries ({', '.join(countries)})"
            return Ask(arguments, (why,))
    return call


def _refused(rule: ToolRule, what: str, problem: str) -> Refusal:
    return Refusal(
        "denied",
        f"sms {what}: {problem}",
        f"'{rule.exposed}' was refused by this team's SMS rules: {problem}. It was not called.",
    )


def named_recipients(rule: ToolRule, arguments: dict[str, Any]) -> list[str]:
    """The numbers a send's recipient arguments name, split but not parsed; read no further than one
    past the bound, which refuses the call (and its audit line counts that many)."""
    if rule.recipients is None:
        return []
    bound = sms.MAX_RECIPIENTS
    return [v for name in rule.recipients.args for v in sms.split_recipients(arguments.get(name), bound)]


def recipients_of(rule: ToolRule, arguments: dict[str, Any]) -> tuple[int, bool]:
    """Distinct recipients of a send (duplicates once), and whether a group makes the count unknown."""
    if rule.recipients is None:
        return 0, False
    values = named_recipients(rule, arguments)
    return sms.distinct_recipients(values), sms.names_group(arguments, rule.recipients.group_args)


def parts_of(rule: ToolRule, arguments: dict[str, Any]) -> sms.Parts | None:
    if rule.message is None:
        return None
    text = "".join(str(arguments.get(name) or "") for name in rule.message.args)
    return sms.message_parts(text)


def message_count(rule: ToolRule, arguments: dict[str, Any]) -> int:
    """What a send costs in SMS messages: recipients × parts (a group send counts its parts once)."""
    parts = parts_of(rule, arguments)
    if parts is None:
        return 1
    recipients, _ = recipients_of(rule, arguments)
    return parts.parts * max(recipients, 1)


def cost_facts(rule: ToolRule, policy: SmsPolicy | None, arguments: dict[str, Any]) -> list[tuple[str, str]]:
    """The "Messages: 2 parts × 3 recipients = 6 messages" line of a confirmation prompt."""
    if policy is None or not policy.show_cost:
        return []
    parts = parts_of(rule, arguments)
    if parts is None:
        return []
    recipients, group = recipients_of(rule, arguments)
    price = rule.sms_price
    text = sms.describe(
        parts, max(recipients, 1), price.per_message if price else None, price.currency if price else ""
    )
    if group:
        text += "; plus every member of the group"
    return [("Messages", text)]


def audit_fields(rule: ToolRule, policy: SmsPolicy | None, arguments: dict[str, Any]) -> dict[str, Any]:
    parts = parts_of(rule, arguments) if policy is not None else None
    if parts is None:
        return {}
    return {"sms_parts": parts.parts, "sms_messages": message_count(rule, arguments), "sms_encoding": parts.encoding}
