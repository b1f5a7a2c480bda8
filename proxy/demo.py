"""What `mcp-guard demo` tells a newcomer: where it listens, what policy is in force, what to paste."""

from __future__ import annotations

import json

from proxy.policy import LoadedPolicy


def banner(url: str, loaded: LoadedPolicy, groups: list[str]) -> str:
    policy = loaded.policy
    mcp_url = f"{url}/"
    cursor = json.dumps({"mcpServers": {"smsapi-guarded": {"url": mcp_url}}}, indent=2)
    desktop = json.dumps(
        {"mcpServers": {"smsapi-guarded": {"command": "npx", "args": ["-y", "mcp-remote", mcp_url]}}}, indent=2
    )
    gated = "on" if policy.confirm.destructive else "OFF"
    lines = [
        "",
        "mcp-guard demo: the SMSAPI sandbox (in-memory, no credentials, no network) behind mcp-guard",
        "",
        f"  MCP endpoint   {mcp_url}",
        f"  tool groups    {', '.join(f'{url}/{g}' for g in groups) or '-'}",
        f"  health         {url}/healthz",
        f"  policy         {loaded.path}  (team '{policy.team}')",
        f"  scopes         {', '.join(policy.scopes or []) or '-'}",
        f"  confirmations  destructive tools {gated}; trifecta {policy.trifecta.action}; "
        f"envelope {'on' if policy.output.envelope else 'OFF'}",
        "",
        "Claude Code:",
        f"  claude mcp add --transport http smsapi-guarded {mcp_url}",
        "",
        "Cursor (~/.cursor/mcp.json):",
        *("  " + line for line in cursor.splitlines()),
        "",
        "Claude Desktop (claude_desktop_config.json, through mcp-remote):",
        *("  " + line for line in desktop.splitlines()),
        "",
        "MCP Inspector:",
        f"  npx @modelcontextprotocol/inspector --cli {mcp_url} --transport http --method tools/list",
        "",
        "Try: ask your agent to read the incoming SMS (get_sms), then to send one (send_sms).",
        "Ctrl-C stops the demo.",
    ]
    return "\n".join(lines)
