"""Issue 18: mcp-guard under load, upstream faults and restarts (bounded soak tests)."""
