"""The `mcp-guard` command line: its parser and one function per command.

Start-up failures (a bad policy, a missing variable, an unreachable upstream) are one clear
line on stderr and exit code 2, never a traceback; what is settled before serving, and how it
fails, is `proxy.startup`.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from proxy import __version__, logs, redact, startup
from proxy.grants import GrantError
from proxy.policy import AuditPolicy, LoadedPolicy, PolicyError, load_policy, policies_dir
from proxy.startup import StartupError

if TYPE_CHECKING:
    from proxy.auth import KeyRing

EXIT_INVALID = 2


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if getattr(args, "verbose", False) else logging.WARNING,
        stream=sys.stderr,
        format="mcp-guard %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("mcp_guard.audit").setLevel(logging.INFO)
    # Before anything logs: with -v the HTTP client and the SDK print upstream URLs and headers.
    logs.install()
    try:
        return int(args.func(args) or 0)
    except (PolicyError, StartupError) as exc:
        print(str(exc), file=sys.stderr)
        return EXIT_INVALID
    except GrantError as exc:  # a sealed store that cannot be opened (wrong key, damaged file)
        print(f"mcp-guard: {exc}", file=sys.stderr)
        return EXIT_INVALID
    except KeyboardInterrupt:
        return 130


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mcp-guard", description="A security-hardening proxy for MCP servers.")
    parser.add_argument("--version", action="version", version=f"mcp-guard {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="serve Streamable HTTP in front of the policy's upstreams")
    serve.add_argument("--policy", action="append", required=True, help="team policy YAML (repeat with --keys)")
    serve.add_argument("--keys", help="proxy keys file (auth: keys): sha256 digests of keys mapped to teams")
    _http_args(serve)
    serve.add_argument(
        "--header-timeout",
        type=float,
        default=None,
        metavar="SECONDS",
        help="close a connection that has not sent a whole request head within this time (default 10)",
    )
    serve.add_argument(
        "--max-sessions",
        type=int,
        default=None,
        metavar="N",
        help="open handshake-era sessions of all callers together; beyond it a new one closes the least recently "
        "used idle one (default and most 9000)",
    )
    serve.add_argument(
        "--state",
        metavar="URL",
        help="share limits, confirmations and session history with other replicas: redis://host:port/db "
        "(default: the policy's state.url, else this process's memory)",
    )
    serve.add_argument(
        "--state-key-file",
        metavar="FILE",
        help="the key that seals 2026-07-28 request states, shared by every replica (or MCP_GUARD_STATE_KEY); "
        "at least 32 bytes, e.g. `python -c 'import secrets; print(secrets.token_hex(32))'`",
    )
    _store_key_arg(serve)
    serve.set_defaults(func=_cmd_serve)

    stdio = sub.add_parser("stdio", help="serve over stdio, for clients that launch a command")
    stdio.add_argument("--policy", required=True)
    stdio.add_argument("-v", "--verbose", action="store_true")
    _store_key_arg(stdio)
    stdio.set_defaults(func=_cmd_stdio)

    login = sub.add_parser("login", help="log in to an OAuth upstream in the browser and store the grant encrypted")
    login.add_argument("--policy", required=True)
    login.add_argument("--upstream", help="which upstream (default: the policy's only OAuth upstream)")
    login.add_argument("--no-browser", action="store_true", help="print the login URL only")
    _store_key_arg(login)
    login.set_defaults(func=_cmd_login)

    check = sub.add_parser("check", help="validate a policy and print the effective tool table")
    check.add_argument("--policy", required=True)
    check.set_defaults(func=_cmd_check)

    pin = sub.add_parser("pin", help="pin the upstreams' tool definitions in the policy's lockfile")
    pin.add_argument("--policy", required=True)
    mode = pin.add_mutually_exclusive_group()
    mode.add_argument("--diff", action="store_true", help="show what changed since the pins; exit 1 on drift")
    mode.add_argument("--approve", nargs="+", metavar="TOOL", help="re-pin only these tools")
    _store_key_arg(pin)
    pin.set_defaults(func=_cmd_pin)

    demo = sub.add_parser("demo", help="the built-in SMSAPI sandbox behind the proxy: no credentials, no network")
    _http_args(demo)
    demo.set_defaults(func=_cmd_demo)

    sandbox = sub.add_parser("sandbox", help="the SMSAPI sandbox upstream alone (MCP at /mcp)")
    sandbox.add_argument("--host", default="127.0.0.1")
    group = sandbox.add_mutually_exclusive_group()
    group.add_argument("--port", type=int, default=8788)
    group.add_argument("--stdio", action="store_true")
    sandbox.add_argument("--record", help="append one JSON line per call received (for tests)")
    sandbox.set_defaults(func=_cmd_sandbox)

    schema = sub.add_parser("schema", help="print the policy file's JSON Schema")
    schema.set_defaults(func=_cmd_schema)

    keys = sub.add_parser("keys", help="manage proxy keys (auth: keys)")
    keys_sub = keys.add_subparsers(dest="keys_command", required=True)
    new = keys_sub.add_parser("new", help="make a key for a team, print it once and append its digest")
    new.add_argument("--team", required=True)
    new.add_argument("--label", required=True, help="who holds the key, for the audit log (e.g. ops-laptop)")
    new.add_argument("--keys", default="keys.yaml", help="keys file to append to (default keys.yaml)")
    new.set_defaults(func=_cmd_keys_new)
    return parser


def _http_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8787)
    parser.add_argument(
        "--allowed-host", action="append", default=[], help="a Host header to accept besides loopback (repeatable)"
    )
    parser.add_argument("-v", "--verbose", action="store_true")


# -- commands --------------------------------------------------------------------------------------------


def _cmd_check(args: argparse.Namespace) -> int:
    from proxy.check import run_check

    return run_check(args.policy)


def _cmd_pin(args: argparse.Namespace) -> int:
    from proxy.pin_command import pin

    (loaded,), store_key = startup.policies_with_grants([load_policy(args.policy)], args)
    return int(startup.run(pin, loaded, args.diff, args.approve or [], store_key))


def _cmd_schema(args: argparse.Namespace) -> int:
    from proxy.policy import Policy

    print(json.dumps(Policy.model_json_schema(), indent=2))
    return 0


def _cmd_sandbox(args: argparse.Namespace) -> int:
    from proxy.backends import sandbox

    argv = ["--stdio"] if args.stdio else ["--host", args.host, "--port", str(args.port)]
    if args.record:
        argv += ["--record", args.record]
    return sandbox.main(argv)


def _cmd_stdio(args: argparse.Namespace) -> int:
    loaded, store_key = startup.policies_with_grants([load_policy(args.policy)], args)
    startup.stdio_grant(loaded[0], store_key)
    startup.read_lockfiles(loaded)
    instructions, offered = startup.run(startup.probe, loaded, store_key)
    startup.warn_unpinned(loaded)

    async def run() -> None:
        from proxy.gateway import Gateway
        from proxy.stdio import serve_stdio

        # A team's stdio processes may share limits and history too; each seals only its own states.
        state, _ = startup.shared_state(loaded, args, need_key=False)
        gateway = Gateway(loaded, offered=offered, check_pins=True, state=state, store_key=store_key)
        await serve_stdio(gateway, instructions=instructions)

    startup.run(run)
    return 0


def _cmd_serve(args: argparse.Namespace) -> int:
    loaded = [load_policy(path) for path in args.policy]
    keyring = startup.keyring(args.keys, loaded) if args.keys else None
    if keyring is None:
        if len(loaded) > 1:
            raise StartupError("mcp-guard: several --policy files need --keys (proxy keys per team)")
        if loaded[0].policy.auth.mode == "keys":
            raise StartupError(f"mcp-guard: {loaded[0].path} sets auth.mode keys; pass --keys FILE")
    return _serve_http(loaded, args, keyring=keyring)


def _cmd_keys_new(args: argparse.Namespace) -> int:
    from proxy.auth import new_key

    key = new_key(Path(args.keys), args.team, args.label)
    print(key)
    print(
        f"mcp-guard: key for team '{args.team}' ({args.label}) added to {args.keys} as a sha256 digest; "
        "this is the only time the key is shown.",
        file=sys.stderr,
    )
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    loaded = load_policy(policies_dir() / "demo.yaml")
    # The shipped policy lives inside the installed package; its audit file belongs where the user is.
    audit = AuditPolicy(path=str(Path.cwd() / "mcp-guard-demo-audit.jsonl"))
    loaded = replace(loaded, policy=loaded.policy.model_copy(update={"audit": audit}))
    return _serve_http([loaded], args, demo=True)


def _serve_http(
    loaded: list[LoadedPolicy], args: argparse.Namespace, *, demo: bool = False, keyring: KeyRing | None = None
) -> int:
    from proxy.capacity import MAX_SESSIONS
    from proxy.gateway import Gateway
    from proxy.http import LOOPBACK, build_http_app
    from proxy.netutil import HEADER_TIMEOUT, bind, run_until_signalled, serve_asgi

    header_timeout = getattr(args, "header_timeout", None)  # `demo` has no such option
    if header_timeout is None:
        header_timeout = HEADER_TIMEOUT
    elif not 0 < header_timeout < float("inf"):
        raise StartupError("mcp-guard: --header-timeout must be a positive number of seconds")
    max_sessions = getattr(args, "max_sessions", None)  # `demo` has no such option either
    if max_sessions is None:
        max_sessions = MAX_SESSIONS
    elif not 1 <= max_sessions <= MAX_SESSIONS:  # above it the SDK's own table (10,000) fills first
        raise StartupError(f"mcp-guard: --max-sessions must be between 1 and {MAX_SESSIONS}")
    loaded, store_key = startup.policies_with_grants(loaded, args)
    startup.read_lockfiles(loaded)
    instructions, offered = startup.run(startup.probe, loaded, store_key)
    if not demo:  # the demo's sandbox is ours: nothing to pin against
        startup.warn_unpinned(loaded)
    if args.host not in LOOPBACK and not args.allowed_host:
        print(
            f"mcp-guard: WARNING serving on {args.host} without --allowed-host: only loopback Host headers are "
            "accepted. Terminate TLS in front of mcp-guard before exposing it (see README, Deployment).",
            file=sys.stderr,
        )
    elif args.host not in LOOPBACK:
        print(
            f"mcp-guard: WARNING serving plain HTTP on {args.host}; tokens cross the network in clear text unless "
            "a TLS-terminating proxy is in front (see README, Deployment).",
            file=sys.stderr,
        )
    state, state_key = startup.shared_state(loaded, args)
    gateway = Gateway(loaded, offered=offered, check_pins=True, state=state, state_key=state_key, store_key=store_key)
    app = build_http_app(
        gateway,
        host=args.host,
        allowed_hosts=args.allowed_host,
        instructions=instructions,
        keyring=keyring,
        max_sessions=max_sessions,
    )
    try:
        sock = bind(args.host, args.port)
    except OSError as exc:
        raise StartupError(f"mcp-guard: cannot listen on {args.host}:{args.port}: {exc.strerror}") from None

    def announce(url: str) -> str:
        if demo:
            from proxy.demo import banner

            return banner(url, loaded[0], gateway.groups())
        teams = ", ".join(f"'{p.policy.team}'" for p in loaded)
        return f"mcp-guard {__version__}: serving team {teams} at {url}/ (health: {url}/healthz)"

    return run_until_signalled(
        lambda: serve_asgi(app, sock, announce=announce, header_timeout=header_timeout), "mcp-guard"
    )


def _store_key_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--store-key-file",
        metavar="FILE",
        help="the key of the encrypted OAuth grant store (or MCP_GUARD_STORE_KEY); at least 32 bytes",
    )


def _cmd_login(args: argparse.Namespace) -> int:
    from proxy.grants import GrantError, store_key
    from proxy.oauth_client import grant_store, login, oauth_servers

    loaded = load_policy(args.policy)
    servers = oauth_servers(loaded)
    if args.upstream is not None and args.upstream not in servers:
        raise StartupError(f"mcp-guard: {args.upstream!r} is not an upstream with `oauth:` in {args.policy}")
    if args.upstream is None and len(servers) != 1:
        raise StartupError(
            "mcp-guard: name the upstream with --upstream"
            if servers
            else f"mcp-guard: {args.policy} has no upstream with `oauth:`"
        )
    server = args.upstream or servers[0]
    try:
        key = store_key(args.store_key_file)
        store = grant_store(loaded, server, key)
        scopes = startup.run(partial(login, browser=not args.no_browser), loaded, server, store)
    except GrantError as exc:
        raise StartupError(f"mcp-guard: {exc}") from None
    except Exception as exc:  # the flow failed: say so plainly, never with a token in it
        why = logs.printable(redact.redact(_cause(exc))[:300])
        print(f"mcp-guard: login to '{server}' failed: {why}", file=sys.stderr)
        return 1
    granted = " ".join(sorted(scopes)) or "(the server did not say)"
    print(f"mcp-guard: logged in to '{server}'; granted scopes: {granted}; grant stored encrypted in {store.path}")
    return 0


def _cause(exc: BaseException) -> str:
    """What failed, in words: the first error inside task groups (whose own text says only how many)."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return str(exc) or type(exc).__name__
