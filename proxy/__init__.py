"""mcp-guard: a security-hardening proxy for the Model Context Protocol."""

__version__ = "0.1.0"
