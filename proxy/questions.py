"""An upstream's questions, as relayed to the client: form and URL elicitations and sampling requests.

Each is rebuilt from what mcp-guard knows, never copied: a question's words are named as the
upstream's and cleaned, a form schema has every string and key cleaned, a URL must be plain https,
and a sampling request keeps only the fields a model needs, each cleaned (bleach's rule: what is not
allowed never passes). The identifiers an upstream picks and a client echoes back must be plain
tokens: an elicitation id that is not is replaced by mcp-guard's own, and a 2026-07-28 request whose
`inputRequests` key is not is refused (`relayed_inputs`).
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Mapping
from typing import Any

import mcp.types as types

from proxy.policy import OutputPolicy
from proxy.untrusted import Clean, OutputShield, is_base64, markup_media

JSON = dict[str, Any]

_SHIELD = OutputShield(OutputPolicy())
_URL = re.compile(
    r"https://[A-Za-z0-9.-]+(?::[0-9]{1,5})?(?:/[A-Za-z0-9._~!$'()*+,;=:@%/-]*)?(?:\?[A-Za-z0-9._~!$'()*+,;=:@%/?&-]*)?"
)
# An identifier the client hands back unchanged: it is shown to nobody, so nothing but a token passes.
_TOKEN = re.compile(r"[A-Za-z0-9_.:-]{1,128}")
_MEDIA = {"image": re.compile(r"image/[a-z0-9.+-]{1,64}"), "audio": re.compile(r"audio/[a-z0-9.+-]{1,64}")}
_PRIORITIES = ("costPriority", "speedPriority", "intelligencePriority")


def plain_token(value: object) -> bool:
    """Whether an upstream's identifier may be passed on for the client to echo back."""
    return isinstance(value, str) and _TOKEN.fullmatch(value) is not None


def elicitation_id(asked: str | None) -> str:
    """The id a relayed URL elicitation carries: shown to nobody but kept by the client, so the
    upstream's only when it is a plain token, else mcp-guard's own."""
    return asked if asked is not None and plain_token(asked) else secrets.token_hex(8)


def relayed_question(server: str, message: str) -> str:
    """An upstream's question for the human, named and sanitised: its words, not mcp-guard's."""
    return f"The upstream server '{server}' asks (its words, not mcp-guard's):\n{_SHIELD.result_clean()(message)}"


def url_question(server: str, message: str, url: str) -> str:
    """An upstream's request to open a page: its words, and exactly where the link goes."""
    return f"{relayed_question(server, message)}\nIt asks you to open this page: {url}"


def clean_url(url: str) -> str | None:
    """An upstream's URL for the human, if it is a plain https URL a person can read whole; else None.

    No userinfo, no fragment, no blank, no character that could carry markup or hide text, at most
    2048 characters: the human sees exactly where the link goes."""
    if len(url) > 2048 or not _URL.fullmatch(url):
        return None
    return url


def clean_form_schema(schema: Any) -> Any:
    """The upstream's form schema with every string and key sanitised (labels, enum values and
    their titles, defaults); a pattern that cleaning would change is dropped."""
    return _SHIELD.schema(schema) if isinstance(schema, dict) else {"type": "object", "properties": {}}


def sampling_request(params: types.CreateMessageRequestParams) -> types.CreateMessageRequestParams:
    """An upstream's sampling request as relayed (policy `sampling: allow`), rebuilt field by field.

    Its texts reach the client's model, so every one is cleaned (not enveloped: they are the
    upstream's prompt by design). Kept: the messages (text, image and audio blocks, tool uses and
    their results), the system prompt, stop sequences, model hints and priorities, temperature, the
    token limit, the tools offered and the tool choice. Dropped: `includeContext` (an upstream must
    not pull the client's other conversations in), `metadata` and `_meta` (opaque to mcp-guard, so
    unchecked), `task`, and any block or field it does not know.
    """
    raw = params.model_dump(by_alias=True, mode="json", exclude_none=True)
    clean = _SHIELD.result_clean()
    out: JSON = {"maxTokens": raw["maxTokens"], "messages": []}
    for message in raw.get("messages", []):
        content = message.get("content")
        blocks = [b for item in (content if isinstance(content, list) else [content]) if (b := _block(item, clean))]
        if blocks:  # one block stays one block, as the upstream sent it
            kept = blocks if isinstance(content, list) else blocks[0]
            out["messages"].append({"role": message["role"], "content": kept})
    if isinstance(raw.get("systemPrompt"), str):
        out["systemPrompt"] = clean(raw["systemPrompt"])
    if isinstance(raw.get("temperature"), int | float):
        out["temperature"] = raw["temperature"]
    if isinstance(raw.get("stopSequences"), list):
        out["stopSequences"] = [clean(s) for s in raw["stopSequences"] if isinstance(s, str)]
    if isinstance(prefs := raw.get("modelPreferences"), dict):
        kept: JSON = {k: prefs[k] for k in _PRIORITIES if isinstance(prefs.get(k), int | float)}
        hints = [h["name"] for h in prefs.get("hints") or [] if isinstance(h, dict) and isinstance(h.get("name"), str)]
        if hints:
            kept["hints"] = [{"name": clean(name)} for name in hints]
        out["modelPreferences"] = kept
    if isinstance(raw.get("tools"), list):
        out["tools"] = [_tool(tool, clean) for tool in raw["tools"] if isinstance(tool, dict)]
    if isinstance(choice := raw.get("toolChoice"), dict) and choice.get("mode") in ("auto", "required", "none"):
        out["toolChoice"] = {"mode": choice["mode"]}
    return types.CreateMessageRequestParams.model_validate(out)


def relayed_inputs(
    asked: Mapping[str, Any] | None,
    server: str,
    *,
    can_elicit: bool,
    can_elicit_url: bool,
    url_allowed: bool,
    sampling_allowed: bool,
) -> dict[str, Any] | str:
    """A 2026-07-28 upstream's `inputRequests`, rebuilt for the client; or why they are refused (in
    words that follow "upstream 'X' "). All or nothing: one request that cannot be relayed refuses all."""
    requests: dict[str, Any] = {}
    for key, request in (asked or {}).items():
        if not plain_token(key):
            # The client answers under the same key: an upstream's text in it would pass unseen.
            return "asked for input under a key that is no plain token"
        if isinstance(request, types.ElicitRequest) and isinstance(request.params, types.ElicitRequestFormParams):
            if not can_elicit:
                return "asked the user a question, but this client cannot elicit"
            params = request.params.model_copy(
                update={
                    "message": relayed_question(server, request.params.message),
                    "requested_schema": clean_form_schema(request.params.requested_schema),
                }
            )
            requests[key] = types.ElicitRequest(params=params)
        elif isinstance(request, types.ElicitRequest) and isinstance(request.params, types.ElicitRequestURLParams):
            if not url_allowed:
                return "asked to send the user to a URL, which this policy refuses"
            url = clean_url(request.params.url)
            if url is None:
                return "asked to send the user to a URL that is no plain https URL"
            if not can_elicit_url:
                return "asked to send the user to a URL, but this client cannot"
            message = url_question(server, request.params.message, url)
            relayed_id = elicitation_id(request.params.elicitation_id)
            update = {"message": message, "url": url, "elicitation_id": relayed_id}
            requests[key] = types.ElicitRequest(params=request.params.model_copy(update=update))
        elif isinstance(request, types.CreateMessageRequest) and sampling_allowed:
            requests[key] = types.CreateMessageRequest(params=sampling_request(request.params))
        else:
            kind = (
                "sampling, which this team's policy refuses"
                if isinstance(request, types.CreateMessageRequest)
                else "a request mcp-guard does not relay"
            )
            return f"asked for {kind}"
    return requests


def _block(block: Any, clean: Clean) -> JSON | None:
    """A sampling message's block, rebuilt; None for one that is not relayed."""
    if not isinstance(block, dict):
        return None
    kind = block.get("type")
    if kind == "text" and isinstance(block.get("text"), str):
        return {"type": "text", "text": clean(block["text"])}
    if kind in _MEDIA:
        data, mime = block.get("data"), block.get("mimeType")
        if is_base64(data) and isinstance(mime, str) and _MEDIA[kind].fullmatch(mime) and not markup_media(mime):
            return {"type": kind, "data": data, "mimeType": mime}
        return None
    if kind == "tool_use" and isinstance(block.get("input"), dict):
        return {
            "type": "tool_use",
            "id": clean(str(block.get("id", ""))),
            "name": clean(str(block.get("name", ""))),
            "input": _SHIELD.json(block["input"], clean),
        }
    if kind == "tool_result":
        inner = block.get("content")
        kept = [b for item in (inner if isinstance(inner, list) else []) if (b := _block(item, clean))]
        result: JSON = {
            "type": "tool_result",
            "toolUseId": clean(str(block.get("toolUseId", ""))),
            "content": [b for b in kept if b["type"] in ("text", *_MEDIA)],
        }
        if isinstance(block.get("structuredContent"), dict):
            result["structuredContent"] = _SHIELD.json(block["structuredContent"], clean)
        if isinstance(block.get("isError"), bool):
            result["isError"] = block["isError"]
        return result
    return None


def _tool(tool: JSON, clean: Clean) -> JSON:
    """A tool offered to the client's model for this sampling: as tools/list shows one (name, words,
    schemas and hints cleaned), without its `_meta` and `execution`."""
    out = _SHIELD.tool(tool, clean(str(tool.get("name", ""))), _SHIELD.annotations(tool.get("annotations"), {}))
    out.pop("_meta", None)
    out.pop("execution", None)
    return out
