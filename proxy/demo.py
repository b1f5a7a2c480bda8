"""What `mcp-guard demo` runs and tells a newcomer: where it listens, what policy is in force, what to paste.

The demo policy ships inside the package, so `mcp-guard demo` (proxy/cli.py) moves its audit
file to the directory the demo was started from; the banner says where that is.
"""

from __future__ import annotations

import json
import shlex

from proxy.policy import LimitRule, LoadedPolicy

# Pinned like tests/npm/package.json (tests/test_demo.py checks they agree): `npx -y` with a
# bare name would run whatever the registry serves that day.
MCP_REMOTE = "mcp-remote@0.15.1"
INSPECTOR = "@modelcontextprotocol/inspector@2.12.0"
SERVER_NAME = "smsapi-guarded"


def banner(url: str, loaded: LoadedPolicy, groups: list[str]) -> str:
    """The start-up text on stderr. The MCP endpoint is the first URL in it: tests and scripts read that one."""
    policy = loaded.policy
    mcp_url = f"{url}/"
    gated = ", ".join(["destructive tools", *policy.confirm.tools]) if policy.confirm.destructive else "OFF"
    limits = "; ".join(_limit(rule) for rule in policy.limits)
    audit = loaded.audit_path
    lines = [
        "",
        "mcp-guard demo: the SMSAPI sandbox (in-memory, no credentials, no network) behind mcp-guard",
        "",
        f"  MCP endpoint   {mcp_url}",
        f"  tool groups    {', '.join(f'{url}/{g}' for g in groups) or '-'}",
        f"  health         {url}/healthz",
        f"  policy         {loaded.path}  (team '{policy.team}')",
        f"  scopes         {', '.join(policy.scopes or []) or '-'}",
        f"  confirmation   {gated}; trifecta {policy.trifecta.action}; "
        f"without elicitation {policy.confirm.without_elicitation}",
        f"  limits         {limits or '-'}",
        f"  output         envelope {'on' if policy.output.envelope else 'OFF'}, "
        f"strip_html {'on' if policy.output.strip_html else 'OFF'}, "
        f"strip_markdown {'on' if policy.output.strip_markdown else 'OFF'}",
        f"  audit          {audit if audit is not None else 'stderr'}  (one JSON line per decision)",
        f"  tool table     mcp-guard check --policy {shlex.quote(str(loaded.path))}",
        "",
        *_configs(mcp_url),
        "",
        "Try: ask your agent to read the incoming SMS (get_sms), then to send one (send_sms).",
        "Sends are confirmed through MCP elicitation; a client without it gets a refusal, and the",
        "sandbox never sees the call. Ctrl-C stops the demo.",
    ]
    return "\n".join(lines)


def _limit(rule: LimitRule) -> str:
    parts = [
        f"{rule.per_minute}/min" if rule.per_minute else "",
        f"max {rule.max_recipients} recipients" if rule.max_recipients else "",
    ]
    return f"{' '.join(rule.tools)}: {', '.join(p for p in parts if p)}"


def _configs(mcp_url: str) -> list[str]:
    http = {"mcpServers": {SERVER_NAME: {"url": mcp_url}}}
    remote = {"mcpServers": {SERVER_NAME: {"command": "npx", "args": ["-y", MCP_REMOTE, mcp_url]}}}
    vscode = {"name": SERVER_NAME, "type": "http", "url": mcp_url}
    return [
        "Claude Code:",
        f"  claude mcp add --transport http {SERVER_NAME} {mcp_url}",
        "",
        "Cursor (~/.cursor/mcp.json):",
        *_indent(json.dumps(http, indent=2)),
        "",
        "Claude Desktop (claude_desktop_config.json, through mcp-remote):",
        *_indent(json.dumps(remote, indent=2)),
        "",
        "VS Code:",
        f"  code --add-mcp {shlex.quote(json.dumps(vscode))}",
        "",
        "MCP Inspector (command line):",
        f"  npx -y {INSPECTOR} --cli {mcp_url} --transport http --method tools/list",
    ]


def _indent(text: str) -> list[str]:
    return ["  " + line for line in text.splitlines()]
