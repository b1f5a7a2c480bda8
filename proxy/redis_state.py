"""Shared state in Redis (or Valkey) for several replicas behind a load balancer (SPEC §12).

Every operation that decides something is one atomic step on the server: a Lua script for the
rate windows (check every window, then count in all of them, or in none), `SET NX` for one-time
states. Time is Redis's own clock (`TIME`), so replicas whose clocks differ still share one
window. Keys carry the deployment's prefix and expire by themselves; sessions are stored under
digests, never their ids. A command that fails or times out raises `StateUnavailable`: the
pipeline refuses rather than decide on what one replica remembers. The client reconnects by
itself on the next command once Redis is back.
"""

from __future__ import annotations

import hashlib
import math
import secrets
from collections.abc import Sequence

import redis.asyncio as redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from proxy.state import NAMES_KEPT, Full, StateUnavailable, Window

# A handshake-era session's legs live as long as the session; Redis cannot see it end, so they
# expire after a day without a call (the SDK closes idle sessions after 30 minutes anyway).
SESSION_TTL = 86_400
TIMEOUT = 1.0  # seconds: a state backend slower than this is treated as down, not waited for

# KEYS: one sorted set per window. ARGV: take (0/1), nonce, then cap, seconds and weight per window.
# Members are "<weight>:<nonce>:<index>", scored by the time they were counted; "<key>:sum" holds
# the weights inside the window, so a call costs the entries that expire, not the whole window.
_RATE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local function weight_of(member) return tonumber(string.match(member, '^(%d+):')) end
for i, key in ipairs(KEYS) do
  local cap = tonumber(ARGV[3 * i])
  local seconds = tonumber(ARGV[3 * i + 1])
  local weight = tonumber(ARGV[3 * i + 2])
  local sum = key .. ':sum'
  local used = tonumber(redis.call('GET', sum) or '0')
  local gone = redis.call('ZRANGEBYSCORE', key, '-inf', now - seconds)
  if #gone > 0 then
    for _, member in ipairs(gone) do used = used - weight_of(member) end
    redis.call('ZREMRANGEBYSCORE', key, '-inf', now - seconds)
    if used <= 0 or redis.call('ZCARD', key) == 0 then used = 0 end
    redis.call('SET', sum, used, 'EX', math.ceil(seconds) + 1)
  end
  if used + weight > cap then
    local excess = used + weight - cap
    local wait = 0
    local hits = redis.call('ZRANGE', key, 0, -1, 'WITHSCORES')
    for j = 1, #hits, 2 do
      excess = excess - weight_of(hits[j])
      wait = tonumber(hits[j + 1]) + seconds - now
      if excess <= 0 then break end
    end
    return {i - 1, used, tostring(wait)}
  end
end
if ARGV[1] == '1' then
  for i, key in ipairs(KEYS) do
    local seconds = math.ceil(tonumber(ARGV[3 * i + 1])) + 1
    local weight = ARGV[3 * i + 2]
    redis.call('ZADD', key, now, weight .. ':' .. ARGV[2] .. ':' .. i)
    redis.call('EXPIRE', key, seconds)
    redis.call('INCRBY', key .. ':sum', tonumber(weight))
    redis.call('EXPIRE', key .. ':sum', seconds)
  end
end
return false
"""

# KEYS: the session's hash. ARGV: source, ttl, kept, legs…  Each leg's field holds its sources,
# newline-separated, at most `kept` of them.
_TOUCH = """
for i = 4, #ARGV do
  local leg = ARGV[i]
  local sources = redis.call('HGET', KEYS[1], leg)
  if not sources then
    redis.call('HSET', KEYS[1], leg, ARGV[1])
  else
    local seen, count = false, 0
    for name in string.gmatch(sources, '[^\\n]+') do
      count = count + 1
      if name == ARGV[1] then seen = true end
    end
    if not seen and count < tonumber(ARGV[3]) then
      redis.call('HSET', KEYS[1], leg, sources .. '\\n' .. ARGV[1])
    end
  end
end
if #ARGV < 4 then redis.call('HSETNX', KEYS[1], '_', '1') end
redis.call('EXPIRE', KEYS[1], ARGV[2])
return 1
"""


class RedisState:
    backend = "redis"

    def __init__(self, url: str, prefix: str = "mcp-guard") -> None:
        self.url = url
        self._prefix = prefix.rstrip(":") + ":"
        self._redis = redis.Redis.from_url(
            url,
            socket_timeout=TIMEOUT,
            socket_connect_timeout=TIMEOUT,
            retry_on_timeout=False,
            # One immediate retry: a pooled connection that died with a restarted Redis is replaced at
            # once; a Redis that is down fails the call within TIMEOUT rather than after backoffs.
            retry=Retry(NoBackoff(), 1),
            health_check_interval=30,
            max_connections=64,
        )
        self._rate = self._redis.register_script(_RATE)
        self._touch = self._redis.register_script(_TOUCH)

    def _key(self, kind: str, name: str) -> str:
        return f"{self._prefix}{kind}:{name}"

    @staticmethod
    def _session(session: str) -> str:
        # A handshake-era session id is a bearer handle for its principal: never stored as such.
        return hashlib.sha256(session.encode()).hexdigest()[:32]

    async def rate(self, windows: Sequence[Window], *, take: bool) -> Full | None:
        keys = [self._key("rate", w.key) for w in windows]
        argv: list[str | int | float] = [1 if take else 0, secrets.token_hex(8)]
        for window in windows:
            argv += [window.cap, window.seconds, window.weight]
        try:
            answer = await self._rate(keys=keys, args=argv)
        except RedisError as exc:
            raise _down(exc) from None
        if not answer:
            return None
        index, used, wait = answer
        return Full(int(index), int(used), float(wait))

    async def legs(self, session: str, idle: float | None) -> dict[str, list[str]]:
        key = self._key("legs", self._session(session))
        try:
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.hgetall(key)
                pipe.expire(key, _ttl(idle))  # a check is activity: the idle window runs from it
                fields, _ = await pipe.execute()
        except RedisError as exc:
            raise _down(exc) from None
        return {
            leg.decode(): sources.decode().split("\n") for leg, sources in fields.items() if leg != b"_" and sources
        }

    async def touch(self, session: str, source: str, legs: frozenset[str], idle: float | None) -> None:
        key = self._key("legs", self._session(session))
        try:
            await self._touch(keys=[key], args=[source.replace("\n", " "), _ttl(idle), NAMES_KEPT, *sorted(legs)])
        except RedisError as exc:
            raise _down(exc) from None

    async def first_use(self, nonce: str, ttl: float) -> bool:
        try:
            return bool(await self._redis.set(self._key("once", nonce), 1, nx=True, px=max(1, int(ttl * 1000))))
        except RedisError as exc:
            raise _down(exc) from None

    async def healthy(self) -> bool:
        try:
            return bool(await self._redis.ping())
        except RedisError:
            return False

    async def aclose(self) -> None:
        await self._redis.aclose()


def _ttl(idle: float | None) -> int:
    return SESSION_TTL if idle is None else max(1, math.ceil(idle))


def _down(exc: RedisError) -> StateUnavailable:
    # The exception text names the host and port at most; never the URL, which may hold a password.
    return StateUnavailable(f"Redis did not answer ({type(exc).__name__})")
