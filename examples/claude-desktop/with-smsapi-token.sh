#!/bin/sh
# Runs a command with SMSAPI_TOKEN taken from the operating system's secret store, so the
# token is in no config file: Claude Desktop starts this script, the script starts
# `mcp-guard stdio`, and the policy reads ${SMSAPI_TOKEN}.
#
# Store the token once (service name mcp-guard-smsapi):
#   macOS:  security add-generic-password -s mcp-guard-smsapi -a "$USER" -w
#   Linux:  secret-tool store --label='SMSAPI token for mcp-guard' service mcp-guard-smsapi
set -eu

if command -v security >/dev/null 2>&1; then
    SMSAPI_TOKEN=$(security find-generic-password -s mcp-guard-smsapi -w 2>/dev/null || true)
elif command -v secret-tool >/dev/null 2>&1; then
    SMSAPI_TOKEN=$(secret-tool lookup service mcp-guard-smsapi 2>/dev/null || true)
else
    echo "with-smsapi-token: neither 'security' (macOS) nor 'secret-tool' (libsecret) is installed" >&2
    exit 2
fi
if [ -z "$SMSAPI_TOKEN" ]; then
    echo "with-smsapi-token: no token stored under service 'mcp-guard-smsapi'" >&2
    exit 2
fi
export SMSAPI_TOKEN
exec "$@"
