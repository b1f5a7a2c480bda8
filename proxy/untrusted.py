"""Untrusted output: every MCP shape an upstream sends, cleaned by default (SPEC §5).

Works on wire JSON (dicts), not on the SDK's models: an allowlist decides which keys and block
types pass, and what it does not know never passes (bleach's rule).  Every string and every key
that passes is cleaned, at any depth, JSON text inside strings included; model-visible text goes
into a `<tool_output>` envelope.  `sanitize.py`, `json_clean.py` and `envelope.py` are the pure
string/JSON functions, `untrusted_text.py` the shield's string half (`TextShield`: one string, one
result's strings, JSON values, the envelope); this module knows where text sits in each MCP shape.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Mapping
from typing import Any

from jsonschema import SchemaError
from jsonschema.protocols import Validator
from jsonschema.validators import validator_for
from referencing import Registry

from proxy import credentials
from proxy.json_clean import Verbatim, sanitize_json
from proxy.policy import OutputPolicy
from proxy.untrusted_text import JSON, Clean, TextShield

# SEP-986: the names a tool, prompt or resource may have; anything else is hidden and refused.
PLAIN_NAME = re.compile(r"[A-Za-z0-9_\-./]{1,128}")
# Resource names are display names in practice ("Resource 1"): single blanks between words pass.
PLAIN_RESOURCE_NAME = re.compile(r"(?=.{1,128}\Z)[A-Za-z0-9_\-./]+(?: [A-Za-z0-9_\-./]+)*")
_BASE64 = re.compile(r"[A-Za-z0-9+/]*={0,2}")
_MIME = re.compile(r"[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,63}/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,63}(?:;[ -~]{0,128})?")
_VALIDATORS_KEPT = 256
_ROLES = frozenset({"user", "assistant"})
# A block type named in our placeholder: words joined by single "_" or "-", which no markdown
# reads as emphasis ("__strong__" is bold).
SHOWN_KIND = re.compile(r"[A-Za-z][A-Za-z0-9]{0,31}(?:[_-][A-Za-z0-9]{1,31}){0,3}")
# What a resource, resource template or prompt entry may carry (besides `_meta`); the rest is dropped.
_LISTED = frozenset(
    {"uri", "uriTemplate", "name", "title", "description", "mimeType", "size", "annotations", "arguments"}
)

SCHEMA_BROKEN = (
    "mcp-guard: the tool's structured output no longer matches its outputSchema once its untrusted text was "
    "sanitised, so it is returned as an error with the sanitised text only."
)


SCHEMA_MISSING = (
    "mcp-guard: the tool declares an outputSchema but the upstream returned no structured output, so the "
    "result is returned as an error with its sanitised text only."
)


def plain_name(name: object) -> bool:
    return isinstance(name, str) and PLAIN_NAME.fullmatch(name) is not None and not credentials.holds(name)


def plain_resource_name(name: object) -> bool:
    return isinstance(name, str) and PLAIN_RESOURCE_NAME.fullmatch(name) is not None and not credentials.holds(name)


class OutputShield(TextShield):
    def __init__(self, output: OutputPolicy) -> None:
        super().__init__(output)
        self._validators: dict[str, tuple[Validator, bool]] = {}

    # -- tool results ----------------------------------------------------------------------------

    def tool_result(
        self,
        source: str,
        raw: Mapping[str, Any],
        output_schema: Mapping[str, Any] | None = None,
        verbatim: Verbatim | None = None,
    ) -> JSON:
        """A tools/call result as wire JSON, cleaned; only content, structuredContent, isError and
        _meta pass.

        structuredContent is kept, cleaned like the text (E5): the text block that repeats it is
        cleaned by the same function, so the two stay consistent.  Cleaning can make a value break
        the schema (a removed tag leaves a string outside an enum or pattern); the client's SDK
        would then reject the whole result, so the cleaned value is checked here, and a result that
        no longer fits fails closed: an error carrying the cleaned, enveloped text, never the raw value.
        """
        is_error = raw.get("isError") is True
        if is_error:
            verbatim = None  # an error body does not have the success shape the profile describes
        clean = self.result_clean()
        blocks = raw.get("content")
        content = [self.block(b, source, clean, verbatim) for b in blocks] if isinstance(blocks, list) else []
        out: JSON = {"content": content}
        if is_error:
            out["isError"] = True
        if (meta := self.meta(raw.get("_meta"), clean)) is not None:
            out["_meta"] = meta
        if output_schema is not None and not is_error and "structuredContent" not in raw:
            # The client would reject a result without the structured output its tool promised.
            return {"content": [_text(SCHEMA_MISSING), *content], "isError": True}
        if "structuredContent" in raw:
            given = raw["structuredContent"]
            structured = sanitize_json(given, clean, self.unchanged, verbatim)
            if not isinstance(structured, dict):
                structured = None  # MCP allows only an object here
            broken = structured is None or (
                output_schema is not None and not is_error and not self._fits(output_schema, structured, given)
            )
            if broken and output_schema is not None and not is_error:
                return {"content": [_text(SCHEMA_BROKEN), *content], "isError": True}
            if structured is not None:
                out["structuredContent"] = structured
        return out

    def block(self, block: Any, source: str, clean: Clean, verbatim: Verbatim | None = None) -> JSON:
        """One content block; a type mcp-guard does not know, or a malformed one, becomes a placeholder."""
        kind = block.get("type") if isinstance(block, dict) else None
        try:
            out = self._block(block, kind, source, clean, verbatim) if isinstance(block, dict) else None
        except (TypeError, ValueError, KeyError):
            out = None
        if out is None:
            shown = kind if isinstance(kind, str) and SHOWN_KIND.fullmatch(kind) else "unnamed"
            return _text(f"[mcp-guard removed a content block of type '{shown}' that it does not pass on]")
        if (meta := self.meta(block.get("_meta"), clean)) is not None:
            out["_meta"] = meta
        if (annotations := _annotations(block.get("annotations"), clean)) is not None:
            out["annotations"] = annotations
        return out

    def _block(self, block: JSON, kind: Any, source: str, clean: Clean, verbatim: Verbatim | None) -> JSON | None:
        if kind == "text" and isinstance(block.get("text"), str):
            return {"type": "text", "text": self.text(block["text"], source, clean, verbatim)}
        if kind in ("image", "audio") and is_base64(block.get("data")):
            # An image is an image: "text/html" on one would have a client render the upstream's markup.
            mime = _mime(block.get("mimeType"))
            plain = mime.startswith(f"{kind}/") and not markup_media(mime)  # image/svg+xml is markup, scripts and all
            return {"type": kind, "data": block["data"], "mimeType": mime} if plain else None
        if kind == "resource" and isinstance(block.get("resource"), dict):
            resource = self.contents(block["resource"], source, clean)
            return None if resource is None else {"type": "resource", "resource": resource}
        if kind == "resource_link":
            return self._link(block, source, clean)
        return None

    def _link(self, block: JSON, source: str, clean: Clean) -> JSON | None:
        # Name, title and description are the upstream's words for the model: they go into an
        # envelope; the name that stays outside must be a plain name.
        if not isinstance(block.get("uri"), str):
            return None
        name = block.get("name")
        out: JSON = {"type": "resource_link", "uri": clean(block["uri"])}
        out["name"] = name if plain_resource_name(name) else "resource"
        words = [
            f"{label}: {block[key]}"
            for key, label in (("name", "name"), ("title", "title"), ("description", "description"))
            if isinstance(block.get(key), str) and not (key == "name" and name == out["name"])
        ]
        if words:
            out["description"] = self.text("\n".join(words), source, clean)
        if isinstance(block.get("mimeType"), str):
            out["mimeType"] = _mime(block["mimeType"])
        if isinstance(block.get("size"), int) and not isinstance(block.get("size"), bool):
            out["size"] = block["size"]
        return out

    def contents(self, item: Any, source: str, clean: Clean) -> JSON | None:
        """One resource's contents (text or blob); None when it is neither."""
        if not isinstance(item, dict) or not isinstance(item.get("uri"), str):
            return None
        out: JSON = {"uri": clean(item["uri"])}
        if isinstance(item.get("mimeType"), str):
            out["mimeType"] = _mime(item["mimeType"])
        if isinstance(item.get("text"), str):
            out["text"] = self.text(item["text"], source, clean)
        elif is_base64(item.get("blob")) and markup_media(out.get("mimeType", "")):
            # Text (HTML, SVG, JSON...) in base64 is still text a client renders or a model reads:
            # it is decoded and cleaned like any text, and one that is not UTF-8 does not pass.
            decoded = _utf8(item["blob"])
            if decoded is None:
                return None
            out["text"] = self.text(decoded, source, clean)
        elif is_base64(item.get("blob")):
            out["blob"] = item["blob"]
        else:
            return None
        if (meta := self.meta(item.get("_meta"), clean)) is not None:
            out["_meta"] = meta
        return out

    def _fits(self, schema: Mapping[str, Any], value: Any, raw: Any) -> bool:
        """Whether the cleaned `value` fits the schema as the client sees it.

        When cleaning changed neither the value nor the schema, the client receives the upstream's
        own value under the upstream's own schema, exactly as without mcp-guard: that pair is the
        client's to judge, and validating a large result here would cost more than the rest of its
        path. A schema that is not a valid schema still vouches for nothing.
        """
        try:
            validator, as_written = self._validator(schema)
        except SchemaError:
            return False  # a schema nobody can check against cannot vouch for the value either
        if as_written and value == raw:
            return True
        try:
            return next(iter(validator.iter_errors(value)), None) is None
        except Exception:  # an unresolvable $ref and the like: no proof the value fits
            return False

    def _validator(self, upstream_schema: Mapping[str, Any]) -> tuple[Validator, bool]:
        """The validator of the schema as the client sees it (cleaned like the values), and whether
        cleaning left that schema as the upstream wrote it."""
        key = json.dumps(upstream_schema, sort_keys=True, default=str)
        known = self._validators.get(key)
        if known is None:
            schema = self.schema(upstream_schema)
            cls = validator_for(schema)
            cls.check_schema(schema)
            # No remote $ref resolution: an upstream's schema must not make the proxy fetch URLs.
            known = (cls(schema, registry=Registry()), schema == upstream_schema)
            if len(self._validators) >= _VALIDATORS_KEPT:
                self._validators.pop(next(iter(self._validators)))
            self._validators[key] = known
        return known

    # -- resources, prompts, completions, errors, notifications ------------------------------------

    def resource_contents(self, source: str, contents: Any) -> list[JSON]:
        clean = self.result_clean()
        items = contents if isinstance(contents, list) else []
        out = []
        for item in items:
            cleaned = self.contents(item, source, clean)
            out.append(
                cleaned
                if cleaned is not None
                else {
                    "uri": "mcp-guard:removed",
                    "text": self.wrap(
                        "[mcp-guard removed resource contents that were neither text nor base64 data]", source
                    ),
                }
            )
        return out

    def prompt_result(self, source: str, raw: Mapping[str, Any]) -> JSON:
        clean = self.result_clean()
        messages = raw.get("messages") if isinstance(raw.get("messages"), list) else []
        out_messages = []
        for message in messages:
            role = message.get("role") if isinstance(message, dict) else None
            content = message.get("content") if isinstance(message, dict) else None
            out_messages.append(
                {"role": role if role in _ROLES else "user", "content": self.block(content, source, clean)}
            )
        out: JSON = {"messages": out_messages}
        if isinstance(raw.get("description"), str):
            out["description"] = self.wrap(clean(raw["description"]), source)
        if (meta := self.meta(raw.get("_meta"), clean)) is not None:
            out["_meta"] = meta
        return out

    def completion(self, raw: Mapping[str, Any]) -> JSON:
        completion = raw.get("completion") if isinstance(raw.get("completion"), dict) else {}
        clean = self.result_clean()
        values = completion.get("values") if isinstance(completion.get("values"), list) else []
        out: JSON = {"values": [clean(v) for v in values if isinstance(v, str)][:100]}
        if isinstance(completion.get("total"), int) and not isinstance(completion.get("total"), bool):
            out["total"] = completion["total"]
        if isinstance(completion.get("hasMore"), bool):
            out["hasMore"] = completion["hasMore"]
        return {"completion": out}

    def upstream_words(self, source: str, text: str) -> str:
        """An upstream's own text (an error, a failure reason), cleaned and enveloped (E6)."""
        return self.text(text, source)

    def error_message(self, ours: str, server: str, upstream_text: str | None) -> str:
        """A JSON-RPC error message: mcp-guard's words, then the upstream's apart and enveloped."""
        if not upstream_text:
            return ours
        return f"{ours}\nIts error:\n{self.upstream_words(f'{server}:error', upstream_text)}"

    def progress_message(self, message: str | None) -> str | None:
        return None if message is None else self.result_clean()(message)

    def log_data(self, data: Any) -> Any:
        clean = self.result_clean()
        return clean(data) if isinstance(data, str) else self.json(data, clean)

    def instructions(self, text: str | None) -> str | None:
        return None if text is None else self.result_clean()(text)

    # -- listings --------------------------------------------------------------------------------

    def tool(self, tool: Mapping[str, Any], exposed: str, annotations: JSON | None) -> JSON:
        """A tool for tools/list: every string of it is read by the model, so every one is cleaned."""
        clean = self.result_clean()
        out: JSON = {"name": exposed, "inputSchema": self.schema(tool.get("inputSchema"), clean)}
        for key in ("title", "description"):
            if isinstance(tool.get(key), str):
                out[key] = clean(tool[key])
        if isinstance(tool.get("outputSchema"), dict):
            out["outputSchema"] = self.schema(tool["outputSchema"], clean)
        if annotations is not None:
            out["annotations"] = annotations
        if (meta := self.meta(tool.get("_meta"), clean)) is not None:
            out["_meta"] = meta
        if isinstance(tool.get("execution"), dict):
            out["execution"] = self.json(tool["execution"], clean)
        return out

    def schema(self, schema: Any, clean: Clean | None = None) -> JSON:
        """A JSON Schema with every string and key cleaned.  A `pattern` is a regular expression the
        upstream checks, which cleaning would corrupt: one that cleaning would change is dropped
        (the upstream still checks it), never passed on as markup."""
        clean = clean or self.result_clean()
        if not isinstance(schema, dict):
            return {"type": "object"}
        return sanitize_json(_without_changed_patterns(schema, clean), clean, self.unchanged)

    def listed(self, item: Mapping[str, Any]) -> JSON:
        """A resource, template or prompt entry: the fields a listing has, every string and key of
        them cleaned. `icons` never pass: a client fetches or renders their URLs (`javascript:`, an
        SVG `data:` URL), and cleaning text cannot make a URL safe to load."""
        clean = self.result_clean()
        out: JSON = self.json({k: v for k, v in item.items() if k in _LISTED}, clean)
        meta = self.meta(item.get("_meta"), clean)
        if meta is not None:
            out["_meta"] = meta
        return out

    def annotations(self, upstream: Mapping[str, Any] | None, overrides: Mapping[str, bool]) -> JSON | None:
        """Tool annotations: hints are booleans, the title is cleaned, anything else is dropped."""
        out: JSON = {}
        for key in ("readOnlyHint", "destructiveHint", "idempotentHint", "openWorldHint"):
            value = overrides.get(key, upstream.get(key) if upstream else None)
            if isinstance(value, bool):
                out[key] = value
        if upstream and isinstance(upstream.get("title"), str):
            out["title"] = self.result_clean()(upstream["title"])
        return out or None


def _text(text: str) -> JSON:
    return {"type": "text", "text": text}


def is_base64(value: Any) -> bool:
    return isinstance(value, str) and len(value) % 4 == 0 and _BASE64.fullmatch(value) is not None


def markup_media(mime: str) -> bool:
    """Whether a media type is text a client may render: text/*, JSON, XML (SVG), JavaScript."""
    kind = mime.split(";", 1)[0].strip().lower()
    return (
        kind.startswith("text/")
        or kind.endswith(("+xml", "+json", "/xml", "/json", "/javascript", "/ecmascript"))
        or kind in ("application/xhtml+xml", "application/x-javascript")
    )


def _utf8(data: str) -> str | None:
    try:
        return base64.b64decode(data, validate=True).decode("utf-8")
    except (ValueError, UnicodeDecodeError):
        return None


def _mime(value: Any) -> str:
    if isinstance(value, str) and _MIME.fullmatch(value) and not re.search(r"[<>&`*_\[\]]", value):
        return value
    return "application/octet-stream"


def _annotations(value: Any, clean: Clean) -> JSON | None:
    if not isinstance(value, dict):
        return None
    out: JSON = {}
    audience = value.get("audience")
    if isinstance(audience, list):
        out["audience"] = [role for role in audience if role in _ROLES]
    priority = value.get("priority")
    if isinstance(priority, int | float) and not isinstance(priority, bool) and 0 <= priority <= 1:
        out["priority"] = priority
    if isinstance(value.get("lastModified"), str):
        out["lastModified"] = clean(value["lastModified"])
    return out or None


def _without_changed_patterns(schema: Any, clean: Clean) -> Any:
    if isinstance(schema, dict):
        return {
            k: _without_changed_patterns(v, clean)
            for k, v in schema.items()
            if not (k == "pattern" and isinstance(v, str) and clean(v) != v)
        }
    if isinstance(schema, list):
        return [_without_changed_patterns(v, clean) for v in schema]
    return schema
