"""Untrusted output: applies the sanitiser and the envelope to every MCP result shape (SPEC §5).

`sanitize.py` and `envelope.py` are pure string/JSON functions; this module knows where
untrusted text sits in tool results, resources, prompts, errors and tool listings.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import mcp.types as types

from proxy.envelope import dump_json, envelope, new_nonce, sanitize_json
from proxy.policy import OutputPolicy
from proxy.sanitize import sanitize_text

# Tool-listing keys whose text a model reads as instructions about the tool.
_DESCRIPTIVE_KEYS = frozenset({"description", "title"})


class OutputShield:
    def __init__(self, output: OutputPolicy) -> None:
        self.cfg = output

    def clean(self, text: str) -> str:
        return sanitize_text(
            text,
            strip_html=self.cfg.strip_html,
            strip_markdown=self.cfg.strip_markdown,
            max_chars=self.cfg.max_chars,
        )

    def wrap(self, body: str, source: str) -> str:
        if not self.cfg.envelope:
            return body
        return envelope(body, source, new_nonce())

    def text(self, text: str, source: str, fields: Sequence[str] | None = None) -> str:
        """One untrusted text block: JSON keeps its shape with only `fields` cleaned, other text is cleaned whole."""
        value = _as_json(text)
        if value is None:
            return self.wrap(self.clean(text), source)
        return self.wrap(dump_json(sanitize_json(value, fields, self.clean)), source)

    def tool_result(
        self, source: str, fields: Sequence[str] | None, result: types.CallToolResult
    ) -> types.CallToolResult:
        content = [self._block(b, source, fields) for b in result.content]
        structured = result.structured_content
        if structured is not None:
            structured = sanitize_json(structured, fields, self.clean)
        return result.model_copy(update={"content": content, "structured_content": structured})

    def _block(self, block: types.ContentBlock, source: str, fields: Sequence[str] | None) -> types.ContentBlock:
        if isinstance(block, types.TextContent):
            return block.model_copy(update={"text": self.text(block.text, source, fields)})
        if isinstance(block, types.EmbeddedResource):
            res = block.resource
            if isinstance(res, types.TextResourceContents):
                res = res.model_copy(update={"text": self.text(res.text, source)})
            return block.model_copy(update={"resource": res})
        if isinstance(block, types.ResourceLink):
            return block.model_copy(update=self._descriptive(block))
        return block

    def _descriptive(self, item: Any) -> dict[str, Any]:
        update: dict[str, Any] = {}
        for attr in ("name", "title", "description"):
            value = getattr(item, attr, None)
            if isinstance(value, str):
                update[attr] = self.clean(value)
        return update

    def resource_contents(
        self, source: str, contents: Sequence[types.TextResourceContents | types.BlobResourceContents]
    ) -> list[types.TextResourceContents | types.BlobResourceContents]:
        out: list[types.TextResourceContents | types.BlobResourceContents] = []
        for item in contents:
            if isinstance(item, types.TextResourceContents):
                item = item.model_copy(update={"text": self.text(item.text, source)})
            out.append(item)
        return out

    def prompt_messages(self, source: str, messages: Sequence[types.PromptMessage]) -> list[types.PromptMessage]:
        return [m.model_copy(update={"content": self._block(m.content, source, None)}) for m in messages]

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


def _as_json(text: str) -> Any | None:
    stripped = text.lstrip()
    if not stripped or stripped[0] not in "{[":
        return None
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, dict | list) else None
