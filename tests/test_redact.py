"""Issue 13, item 9: no secret reaches a log line, at any level, from any logger (proxy/redact.py).

The unit tests drive the filter directly; the end-to-end tests run `mcp-guard stdio -v` and
`mcp-guard serve -v` in front of the sandbox with a key in the upstream URL and a token in a
header, and read every line the proxy wrote to stderr.
"""

from __future__ import annotations

import io
import logging
import re
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any
from urllib.parse import quote, quote_plus, unquote, unquote_plus

import httpx2
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from mcp import Client, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp.client.streamable_http import streamable_http_client

from proxy import logs, redact
from proxy.logs import RedactingFilter
from proxy.policy import load_policy
from proxy.redact import MARKER, MIN_ANYWHERE, WITHHELD, SecretRegistry
from tests.harness import MODES, PY, Proc, calls, env_with, proxy_http, wait_for, write_policy
from tests.test_identity import sha

# --------------------------------------------------------------------------- helpers


def emit(registry: SecretRegistry, fmt: str = "%(message)s", **log: Any) -> str:
    """What a stderr-like handler carrying the filter writes for one logging call."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter(fmt))
    handler.addFilter(RedactingFilter(registry))
    logger = logging.getLogger(f"mcp_guard.test_redact.{secrets.token_hex(4)}")
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    logger.addHandler(handler)
    try:
        msg = log.pop("msg")
        args = log.pop("args", ())
        logger.debug(msg, *args, **log)
    finally:
        logger.removeHandler(handler)
    return stream.getvalue()


def registry(*values: str) -> SecretRegistry:
    reg = SecretRegistry()
    for value in values:
        reg.add(value)
    return reg


def encoded(secret: str) -> set[str]:
    return {secret, quote(secret, safe=""), quote_plus(secret), quote(secret)}


# --------------------------------------------------------------------------- text nobody vetted


@given(st.text())
def test_a_log_message_is_one_line_without_controls(words: str) -> None:
    # A tool name or an upstream's error words in a message can neither start a forged line nor
    # reach the terminal as an escape sequence.
    out = emit(SecretRegistry(), msg="upstream said: %s", args=(words,))
    assert out.endswith("\n")
    assert out[:-1].isprintable()


def test_a_traceback_keeps_its_lines_but_loses_its_escapes() -> None:
    try:
        raise RuntimeError("bad \x1b]52;c;ZXZpbA==\x07 answer\u202e")
    except RuntimeError:
        out = emit(SecretRegistry(), msg="failed\nforged", exc_info=True)
    assert out.startswith("failed\\nforged\nTraceback")
    assert "\x1b" not in out and "\x07" not in out and "\u202e" not in out
    assert "bad \\x1b]52;c;ZXZpbA==\\x07 answer\\u202e" in out


# --------------------------------------------------------------------------- the forms


@pytest.mark.parametrize(
    ("line", "gone"),
    [
        # (2) URL userinfo and secret-named query / fragment parameters, case-insensitively
        ("GET https://alice:s3cr3t-pw@api.example.com/mcp", ["alice", "s3cr3t-pw"]),
        ("Connecting to http://127.0.0.1:9/mcp?api_key=k-1a2b3c&page=2", ["k-1a2b3c"]),
        ("https://h/x?API_KEY=v1x&apiKey=v2x&ApiKey=v3x&key=v4x", ["v1x", "v2x", "v3x", "v4x"]),
        ("https://h/x?token=t1q&access_token=t2q&refresh_token=t3q&Secret=t4q", ["t1q", "t2q", "t3q", "t4q"]),
        ("https://h/x?password=p1w&sig=p2w&Signature=p3w&auth=p4w", ["p1w", "p2w", "p3w", "p4w"]),
        ("https://h/cb?code=c0de9&client_secret=cs9&state=ok", ["c0de9", "cs9"]),
        ("https://h/cb#access_token=frag77&token_type=bearer", ["frag77"]),
        ("relative path /mcp?x=1&api_key=rel55 logged by a server", ["rel55"]),
        ("form body client_secret=fb1&grant_type=refresh_token&refresh_token=fb2", ["fb1", "fb2"]),
        ("kwargs Config(api_key='kw1', token=b'kw2', timeout=3)", ["kw1", "kw2"]),
        # (3) credential headers, as header lines and as Python/JSON reprs
        ("Authorization: Bearer hdr-abc.def", ["hdr-abc.def"]),
        ("proxy-authorization: Basic dXNlcjpwYXNz", ["dXNlcjpwYXNz"]),
        ("Cookie: sid=ck1; theme=dark", ["sid=ck1", "dark"]),
        ("X-Api-Key: xk-123", ["xk-123"]),
        ("headers=[(b'authorization', b'Bearer rep-111'), (b'accept', b'*/*')]", ["rep-111"]),
        ("return_value=(b'HTTP/1.1', 200, b'OK', [(b'set-cookie', b'session=sc-9; Path=/')])", ["sc-9"]),
        ("{'Authorization': 'Token dict-22', 'x-api-key': 'dict-33'}", ["dict-22", "dict-33"]),
        ('{"headers": {"Authorization": "Bearer json-44"}}', ["json-44"]),
        ('b\'data: {\\"password\\":\\"esc-55\\"}\'', ["esc-55"]),
        ("params={'arguments': {'password': 'hunter2', 'to': '48500'}}", ["hunter2"]),
        # Bearer / Basic anywhere, including in bytes reprs
        ("retrying with Bearer free-66 after 401", ["free-66"]),
        ("sent b'Bearer bytes-77' upstream", ["bytes-77"]),
        ("basic QWxhZGRpbjpvcGVu in a sentence", ["QWxhZGRpbjpvcGVu"]),
    ],
)
def test_structural_forms_are_redacted(line: str, gone: list[str]) -> None:
    out = emit(registry(), msg=line)
    for value in gone:
        assert value not in out, out
    assert MARKER in out


@pytest.mark.parametrize(
    "line",
    [
        "connect_tcp.started host='127.0.0.1' port=8787 local_address=None timeout=30.0",
        'HTTP Request: POST http://127.0.0.1:8787/mcp?page=2 "HTTP/1.1 200 OK"',
        "KeyError: 'get_profile'",
        "TokenError: the upstream refused; status_code=401",
        "{'code': -32600, 'message': 'Invalid Request'}",
    ],
)
def test_ordinary_lines_are_left_alone(line: str) -> None:
    """Debug output must stay useful: names that only resemble a credential keep their values."""
    assert emit(registry("unrelated-secret-value"), msg=line) == line + "\n"


def test_registered_secret_in_any_parameter_and_any_encoding() -> None:
    secret = "s p/c:é+k&=1"
    reg = registry(secret)
    lines = [
        f"https://h/mcp?x={secret}",
        f"https://h/mcp?x={quote(secret, safe='')}",
        f"https://h/mcp?x={quote_plus(secret)}",
        "https://h/mcp?x=s%20p/c:%c3%a9%2Bk%26%3D1",  # lower-case escapes, as some encoders write them
        f"raw {secret} in prose",
        f"json {{'v': {secret!r}}} and {secret.encode()!r}",
    ]
    for line in lines:
        out = emit(reg, msg=line)
        assert all(form not in out for form in encoded(secret)), out
        assert secret not in unquote(out) and secret not in unquote_plus(out), out


def test_secret_in_the_path_or_host_of_a_url() -> None:
    reg = registry("pathtok-123456", "h0st-secret")
    out = emit(reg, msg="GET https://h0st-secret.example.com/bot/pathtok%2D123456/send?x=1")
    assert "pathtok" not in out and "h0st-secret" not in out
    assert "/bot/" in out and "/send?x=1" in out


def test_short_secrets_go_where_they_stand_alone() -> None:
    """Shorter than MIN_ANYWHERE: redacted as a whole token, not inside other words (see module doc)."""
    reg = registry("q7z", "k9")
    out = emit(reg, msg="GET https://h/mcp?x=q7z&y=2 'X-Custom': 'k9' path /k9/ and pq7zr stays")
    assert re.search(r"(?<![A-Za-z0-9])(q7z|k9)(?![A-Za-z0-9])", out) is None, out
    assert "pq7zr" in out
    assert len("q7z") < MIN_ANYWHERE


def test_long_secrets_go_even_inside_words() -> None:
    out = emit(registry("inner-secret"), msg="xxinner-secretyy")
    assert out == f"xx{MARKER}yy\n"


def test_client_authorization_is_registered_with_its_credential_and_bounded() -> None:
    reg = SecretRegistry(max_clients=2)
    reg.add_client("Bearer client-one-token")
    reg.add_client("Bearer client-two-token")
    out = emit(reg, msg="saw client-one-token and client-two-token")
    assert "client-one-token" not in out and "client-two-token" not in out
    reg.add_client("Bearer client-one-token")  # seen again: most recent now
    reg.add_client("Bearer client-three-token")  # evicts client-two, the least recently seen
    out = emit(reg, msg="client-one-token client-two-token client-three-token")
    assert "client-one-token" not in out and "client-three-token" not in out
    assert "client-two-token" in out


def test_percent_args_exceptions_and_stacks() -> None:
    secret = "exc-secret-9f8e7d"
    reg = registry(secret)
    assert secret not in emit(reg, msg="url %s %r %d", args=(f"?k={secret}", {"v": secret}, 3))
    assert secret not in emit(reg, msg="mapping %(v)s", args=({"v": secret},))
    assert secret not in emit(reg, msg=ValueError(secret))
    try:
        try:
            raise KeyError(f"inner {secret}")
        except KeyError as inner:
            raise RuntimeError(f"outer https://u:{secret}@h/") from inner
    except RuntimeError:
        out = emit(reg, msg="failed", exc_info=True, stack_info=True)
    assert "Traceback" in out and "RuntimeError" in out and "KeyError" in out and "Stack (most recent" in out
    assert secret not in out


def test_a_record_that_cannot_be_formatted_or_cleaned_is_withheld(monkeypatch: pytest.MonkeyPatch) -> None:
    secret = "withheld-secret-1234"
    reg = registry(secret)
    assert emit(reg, msg="%d items " + secret, args=("not a number",)) == WITHHELD + "\n"

    def broken(text: str) -> list[tuple[int, int]]:
        raise RuntimeError(f"bug while looking at {text}")

    monkeypatch.setattr(redact._Matcher, "spans", lambda self, text: broken(text))
    out = emit(reg, msg=f"has {secret}")
    assert out == WITHHELD + "\n"


def test_install_covers_handlers_added_later_and_costs_nothing_below_the_level(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """uvicorn configures its own, non-propagating handlers when a server starts: they are covered too."""
    secret = "install-secret-5555"
    reg = registry(secret)
    factory = logging.getLogRecordFactory()
    undo = logs.install(reg)
    try:
        stream = io.StringIO()
        late = logging.StreamHandler(stream)
        late.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
        uvicorn_like = logging.getLogger("mcp_guard.test_redact.uvicorn_like")
        uvicorn_like.propagate = False
        uvicorn_like.setLevel(logging.WARNING)
        uvicorn_like.addHandler(late)
        try:
            try:
                raise OSError(f"cannot reach https://h/mcp?x={secret}")
            except OSError:
                uvicorn_like.exception("Exception in ASGI application")
            cleaned: list[str] = []
            monkeypatch.setattr(reg, "redact", lambda text: cleaned.append(text) or text)
            uvicorn_like.debug("below the level: %s", secret)
            assert cleaned == []  # no record was made, so nothing was cleaned
        finally:
            uvicorn_like.removeHandler(late)
        out = stream.getvalue()
        assert "Exception in ASGI application" in out and "OSError" in out
        assert secret not in out
    finally:
        undo()
    assert logging.getLogRecordFactory() is factory


def test_policy_interpolation_registers_the_values(tmp_path: Path) -> None:
    key = "policy-key-" + secrets.token_hex(6)
    path = write_policy(
        tmp_path / "p.yaml",
        {"up": {"url": "https://h/mcp?api_key=${MCPG_T_KEY}", "headers": {"X-Custom": "${MCPG_T_HDR}"}}},
    )
    load_policy(path, env={"MCPG_T_KEY": key, "MCPG_T_HDR": "hdr-" + key})
    assert key not in redact.redact(f"sent x={key} and hdr-{key}")


# --------------------------------------------------------------------------- the property

# Printable text, weighted towards the marker's own characters and URL syntax, where a replacement
# could complete a secret across its edges.
_PRINTABLE = st.one_of(
    st.characters(blacklist_categories=("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp")),
    st.sampled_from(list("[REDACT]%=&?/:'\"\\+ ")),
)
_DELIMITERS = st.sampled_from([" ", "=", "/", "'", '"', "&", "?", ":", ",", "(", "[", "\t", ""])


def _leaks(secret: str, out: str) -> bool:
    forms = encoded(secret)
    if len(secret) >= MIN_ANYWHERE:
        return any(form in out for form in forms)
    return any(re.search(rf"(?<![A-Za-z0-9])({re.escape(f)})(?![A-Za-z0-9])", out) for f in forms)


@settings(deadline=None, max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(
    secret=st.text(_PRINTABLE, min_size=1, max_size=40),
    prefix=st.text(_PRINTABLE, max_size=30),
    suffix=st.text(_PRINTABLE, max_size=30),
    left=_DELIMITERS,
    right=_DELIMITERS,
    where=st.sampled_from(["message", "arg", "exception"]),
)
def test_no_registered_secret_survives_formatting(
    secret: str, prefix: str, suffix: str, left: str, right: str, where: str
) -> None:
    # Whitespace hides nothing and is not registered; no marker can hide a value it contains itself.
    assume(secret.strip())
    assume(not _leaks(secret, MARKER) and not _leaks(secret, WITHHELD))
    if len(secret) < MIN_ANYWHERE:
        # A short value is redacted where it stands alone (module doc): embed it that way.
        left, right = left or " ", right or " "
    text = prefix + left + secret + right + suffix
    reg = registry(secret)
    if where == "message":
        out = emit(reg, msg=text)
    elif where == "arg":
        out = emit(reg, msg="value: %s (%r)", args=(text, text))
    else:
        try:
            raise ValueError(text)
        except ValueError:
            out = emit(reg, msg="failed", exc_info=True)
    assert not _leaks(secret, out), out


# --------------------------------------------------------------------------- end to end

KEY = f"mcpg key/{secrets.token_hex(8)}é"  # needs URL-encoding, so the encoded forms are exercised
TOKEN = "mcpg-token-" + secrets.token_hex(12)
CLIENT = "mcpg-client-" + secrets.token_hex(12)
ENV = {"MCPG_TEST_KEY": KEY, "MCPG_TEST_TOKEN": TOKEN}


def assert_clean(text: str) -> None:
    for secret in (KEY, TOKEN, CLIENT):
        for form in encoded(secret):
            assert form not in text, f"{form!r} leaked"
    for url in re.findall(r"https?://\S+", text):
        for secret in (KEY, TOKEN, CLIENT):
            assert secret not in unquote(url) and secret not in unquote_plus(url), url


def assert_verbose(text: str) -> None:
    """The HTTP client's and the SDK's debug logging happened: redaction did not just silence it."""
    assert re.search(r"INFO httpx2: HTTP Request: POST http://127\.0\.0\.1:\d+/mcp\?api_key=\[REDACTED\]", text)
    assert "DEBUG httpcore2.http11: send_request_headers.started" in text
    assert "DEBUG mcp.client.streamable_http: Connecting to StreamableHTTP endpoint" in text


@pytest.fixture(scope="module")
def keyed_policy(sandbox: tuple[Proc, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The policy's own credentials: a key in the URL's query and a token in a header."""
    upstream = {
        "url": sandbox[0].url + "?api_key=${MCPG_TEST_KEY}",
        "headers": {"Authorization": "Bearer ${MCPG_TEST_TOKEN}"},
    }
    return write_policy(tmp_path_factory.mktemp("redact") / "keyed.yaml", {"smsapi": upstream})


@pytest.fixture(scope="module")
def passthrough_policy(sandbox: tuple[Proc, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """No Authorization of its own, so each client's header is forwarded upstream."""
    upstream = {"url": sandbox[0].url + "?api_key=${MCPG_TEST_KEY}"}
    return write_policy(
        tmp_path_factory.mktemp("redact") / "pass.yaml", {"smsapi": upstream}, auth={"mode": "passthrough"}
    )


@contextmanager
def verbose_proxy(policy: Path) -> Iterator[Proc]:
    """`mcp-guard serve -v`, addressed by its own announcement.

    The harness takes the first URL a process prints; with -v that is the upstream's, logged by the
    start-up probe before the proxy announces where it serves.
    """
    with proxy_http(policy, "-v", env=ENV) as proc:
        assert wait_for(lambda: any(_SERVING.search(line) for line in proc.lines), timeout=30), proc.lines
        m = next(m for line in proc.lines if (m := _SERVING.search(line)))
        yield replace(proc, url=m.group(1))


_SERVING = re.compile(r"serving team .* at (http://\S+/) ")


@pytest.fixture(scope="module")
def keyed_http(keyed_policy: Path) -> Iterator[Proc]:
    with verbose_proxy(keyed_policy) as proc:
        yield proc


@pytest.fixture(scope="module")
def passthrough_http(passthrough_policy: Path) -> Iterator[Proc]:
    with verbose_proxy(passthrough_policy) as proc:
        yield proc


async def exercise(client: Client) -> None:
    assert (await client.list_tools()).tools
    assert not (await client.call_tool("get_profile", {})).is_error
    assert not (await client.call_tool("get_profile", {})).is_error


@pytest.mark.anyio
@pytest.mark.parametrize("mode", MODES)
async def test_stdio_verbose_logs_hold_no_secret(
    mode: str, sandbox: tuple[Proc, Path], keyed_policy: Path, tmp_path: Path
) -> None:
    before = len(calls(sandbox[1], "get_profile"))
    params = StdioServerParameters(
        command=PY, args=["-m", "proxy", "stdio", "--policy", str(keyed_policy), "-v"], env=env_with(ENV)
    )
    errlog = tmp_path / "stderr.txt"
    with errlog.open("w") as err:
        async with Client(stdio_client(params, errlog=err), mode=mode) as client:
            await exercise(client)
    seen = calls(sandbox[1], "get_profile")[before:]
    assert [c["auth_sha256"] for c in seen] == [sha(f"Bearer {TOKEN}")] * 2  # the token really went upstream
    text = errlog.read_text()
    assert_verbose(text)
    assert_clean(text)


@pytest.mark.anyio
@pytest.mark.parametrize("mode", MODES)
async def test_http_verbose_logs_hold_no_secret(mode: str, sandbox: tuple[Proc, Path], keyed_http: Proc) -> None:
    before = len(calls(sandbox[1], "get_profile"))
    async with Client(keyed_http.url, mode=mode) as client:
        await exercise(client)
    seen = calls(sandbox[1], "get_profile")[before:]
    assert [c["auth_sha256"] for c in seen] == [sha(f"Bearer {TOKEN}")] * 2
    text = "".join(keyed_http.lines)
    assert_verbose(text)
    assert_clean(text)


@pytest.mark.anyio
@pytest.mark.parametrize("mode", MODES)
async def test_passthrough_verbose_logs_hold_no_client_token(
    mode: str, sandbox: tuple[Proc, Path], passthrough_http: Proc
) -> None:
    before = len(calls(sandbox[1], "get_profile"))
    http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {CLIENT}"})
    async with Client(streamable_http_client(passthrough_http.url, http_client=http), mode=mode) as client:
        await exercise(client)
    seen = calls(sandbox[1], "get_profile")[before:]
    assert [c["auth_sha256"] for c in seen] == [sha(f"Bearer {CLIENT}")] * 2  # forwarded, as passthrough does
    text = "".join(passthrough_http.lines)
    assert_verbose(text)
    assert_clean(text)
