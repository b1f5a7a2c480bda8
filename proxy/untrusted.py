"""Untrusted output: applies the sanitiser and the envelope to every MCP result shape (SPEC §5).

`sanitize.py` and `envelope.py` are pure string/JSON functions; this module knows where
untrusted text sits in tool results, resources, prompts, errors and tool listings.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from typing import Any

import mcp.types as types
from jsonschema import SchemaError
from jsonschema.protocols import Validator
from jsonschema.validators import validator_for
from referencing import Registry

from proxy.envelope import clean_json_text, envelope, new_nonce, sanitize_json
from proxy.policy import OutputPolicy
from proxy.sanitize import ParserBudget, all_unchanged, sanitize_text

# Tool-listing keys whose text a model reads as instructions about the tool.
_DESCRIPTIVE_KEYS = frozenset({"description", "title"})
_VALIDATORS_KEPT = 256

SCHEMA_BROKEN = (
    "mcp-guard: the tool's structured output no longer matches its outputSchema once its untrusted text was "
    "sanitised, so it is returned as an error with the sanitised text only."
)

Clean = Callable[[str], str]


class OutputShield:
    def __init__(self, output: OutputPolicy) -> None:
        self.cfg = output
        self._validators: dict[str, Validator] = {}

    def clean(self, text: str, budget: ParserBudget | None = None) -> str:
        return sanitize_text(
            text,
            strip_html=self.cfg.strip_html,
            strip_markdown=self.cfg.strip_markdown,
            max_chars=self.cfg.max_chars,
            parser_budget=budget,
        )

    def result_clean(self) -> Clean:
        """`clean` for the texts of one result: one markdown parser budget, each text cleaned once."""
        return _memo(partial(self.clean, budget=ParserBudget()))

    def unchanged(self, texts: list[str]) -> bool:
        """True if `clean` would leave every one of `texts` as it is (asked once per JSON value)."""
        return all_unchanged(texts, self.cfg.max_chars)

    def wrap(self, body: str, source: str) -> str:
        if not self.cfg.envelope:
            return body
        return envelope(body, source, new_nonce())

    def text(self, text: str, source: str, fields: Sequence[str] | None = None, clean: Clean | None = None) -> str:
        """One untrusted text block: JSON keeps its shape with only `fields` cleaned, other text is cleaned whole."""
        clean = clean or self.result_clean()
        cleaned = clean_json_text(text, fields, clean, self.unchanged)
        return self.wrap(clean(text) if cleaned is None else cleaned, source)

    def tool_result(
        self,
        source: str,
        fields: Sequence[str] | None,
        result: types.CallToolResult,
        output_schema: Mapping[str, Any] | None = None,
    ) -> types.CallToolResult:
        """Sanitise and wrap a tool result; `output_schema` is the tool's, when it declares one.

        structuredContent is kept, cleaned like the text (E5): clients and tools read it, and
        dropping it would break every client whose tool declares an outputSchema. Cleaning can
        make a value break the schema (escaping "<" lengthens a string past maxLength, a removed
        tag leaves a string outside an enum or pattern); the client's SDK would then reject the
        whole result. So the cleaned value is checked here, and a result that no longer fits
        fails closed: an error carrying the cleaned, enveloped text, never the raw value.
        """
        if result.is_error:
            fields = None  # an error body does not have the success shape the profile describes
        clean = self.result_clean()  # the text and structuredContent usually repeat the same strings
        content = [self._block(b, source, fields, clean) for b in result.content]
        structured = result.structured_content
        if structured is not None:
            structured = sanitize_json(structured, fields, clean, self.unchanged)
            if output_schema is not None and not result.is_error and not self._fits(output_schema, structured):
                return types.CallToolResult(content=[types.TextContent(text=SCHEMA_BROKEN), *content], is_error=True)
        return result.model_copy(update={"content": content, "structured_content": structured})

    def _fits(self, schema: Mapping[str, Any], value: Any) -> bool:
        try:
            validator = self._validator(schema)
        except SchemaError:
            return False  # a schema nobody can check against cannot vouch for the value either
        return next(iter(validator.iter_errors(value)), None) is None

    def _validator(self, schema: Mapping[str, Any]) -> Validator:
        key = json.dumps(schema, sort_keys=True, default=str)
        validator = self._validators.get(key)
        if validator is None:
            cls = validator_for(schema)
            cls.check_schema(schema)
            # No remote $ref resolution: an upstream's schema must not make the proxy fetch URLs.
            validator = cls(schema, registry=Registry())
            if len(self._validators) >= _VALIDATORS_KEPT:
                self._validators.pop(next(iter(self._validators)))
            self._validators[key] = validator
        return validator

    def _block(
        self, block: types.ContentBlock, source: str, fields: Sequence[str] | None, clean: Clean
    ) -> types.ContentBlock:
        if isinstance(block, types.TextContent):
            return block.model_copy(update={"text": self.text(block.text, source, fields, clean)})
        if isinstance(block, types.EmbeddedResource):
            res = block.resource
            if isinstance(res, types.TextResourceContents):
                res = res.model_copy(update={"text": self.text(res.text, source, None, clean)})
            return block.model_copy(update={"resource": res})
        if isinstance(block, types.ResourceLink):
            return block.model_copy(update=self._descriptive(block, clean))
        return block

    def _descriptive(self, item: Any, clean: Clean | None = None) -> dict[str, Any]:
        clean = clean or self.clean
        update: dict[str, Any] = {}
        for attr in ("name", "title", "description"):
            value = getattr(item, attr, None)
            if isinstance(value, str):
                update[attr] = clean(value)
        return update

    def resource_contents(
        self, source: str, contents: Sequence[types.TextResourceContents | types.BlobResourceContents]
    ) -> list[types.TextResourceContents | types.BlobResourceContents]:
        out: list[types.TextResourceContents | types.BlobResourceContents] = []
        clean = self.result_clean()
        for item in contents:
            if isinstance(item, types.TextResourceContents):
                item = item.model_copy(update={"text": self.text(item.text, source, None, clean)})
            out.append(item)
        return out

    def prompt_messages(self, source: str, messages: Sequence[types.PromptMessage]) -> list[types.PromptMessage]:
        clean = self.result_clean()
        return [m.model_copy(update={"content": self._block(m.content, source, None, clean)}) for m in messages]

    def listed(self, item: Any) -> Any:
        """A resource/prompt/template entry: its descriptive text is read by the model, so it gets E2."""
        return item.model_copy(update=self._descriptive(item))

    def tool(self, tool: types.Tool, name: str, annotations: types.ToolAnnotations | None) -> types.Tool:
        update: dict[str, Any] = {"name": name, "annotations": annotations}
        if tool.description is not None:
            update["description"] = self.clean(tool.description)
        if tool.title is not None:
            update["title"] = self.clean(tool.title)
        update["input_schema"] = self._schema_text(tool.input_schema)
        if tool.output_schema is not None:
            update["output_schema"] = self._schema_text(tool.output_schema)
        return tool.model_copy(update=update)

    def _schema_text(self, schema: Any) -> Any:
        # Descriptions inside schemas are read by the model too; the structure stays untouched.
        if isinstance(schema, dict):
            return {
                k: (self.clean(v) if k in _DESCRIPTIVE_KEYS and isinstance(v, str) else self._schema_text(v))
                for k, v in schema.items()
            }
        if isinstance(schema, list):
            return [self._schema_text(v) for v in schema]
        return schema

    def instructions(self, text: str | None) -> str | None:
        return None if text is None else self.clean(text)


def _memo(clean: Clean) -> Clean:
    seen: dict[str, str] = {}

    def cached(text: str) -> str:
        if text not in seen:
            seen[text] = clean(text)
        return seen[text]

    return cached


def relayed_question(server: str, message: str) -> str:
    """An upstream's question for the human, named and sanitised: its words, not mcp-guard's."""
    return f"The upstream server '{server}' asks (its words, not mcp-guard's):\n{sanitize_text(message)}"


_SCHEMA_TEXT = frozenset({"title", "description"})


def clean_form_schema(schema: Any) -> Any:
    """The upstream's form schema with its human-readable labels sanitised; names, types and values kept."""
    if isinstance(schema, dict):
        cleaned: dict[str, Any] = {}
        for key, value in schema.items():
            if key in _SCHEMA_TEXT and isinstance(value, str):
                cleaned[key] = sanitize_text(value)
            elif key == "enumNames" and isinstance(value, list):
                cleaned[key] = [sanitize_text(v) if isinstance(v, str) else v for v in value]
            else:
                cleaned[key] = clean_form_schema(value)
        return cleaned
    if isinstance(schema, list):
        return [clean_form_schema(v) for v in schema]
    return schema
