#!/bin/sh
# Adds mcp-guard to Claude Code as a project-scoped server (written to ./.mcp.json, which is
# safe to commit): the single quotes keep ${SMSAPI_TOKEN} unexpanded, so the file holds the
# variable's name and Claude Code reads the token from its environment when it connects.
set -eu
claude mcp add --transport http --scope project \
    --header 'Authorization: Bearer ${SMSAPI_TOKEN}' \
    smsapi-guarded http://127.0.0.1:8787/
