-- host_acquire: let one request to a rate-limited (workspace, host) start now, or say how long to
-- wait (scheduler_api.storage.host_limits.acquire). Times are Redis's clock (TIME), so every
-- worker is measured against the same one.
--
-- KEYS[1] limit_key   hash sa:host:{ws}:{host}: ``next`` (when the next request may start) and
--                     ``until`` (held back by a Retry-After until then)
-- KEYS[2] flight_key  sorted set sa:flight:{ws}:{host}: lease id -> when the lease runs out
-- ARGV[1] seconds between two requests (1 / per_second), or '' for no per-second bound
-- ARGV[2] requests in flight at once, or '' for no bound
-- ARGV[3] the lease id of this request (released with ZREM when it ends)
-- ARGV[4] the lease's length in seconds (a killed worker's slot frees itself after it)
-- ARGV[5] the wait to return while every slot is taken (no slot's end can be foreseen)
-- ARGV[6] '1' when the caller holds a reserved start (an earlier answer's second element): only a
--         hold is checked then (a hold lets go of its lease; the caller starts over)
-- Returns {wait, reserved}: wait '0' when the request may start now (its lease taken), else the
-- seconds to wait (a string: Redis would truncate a Lua number); reserved 1 when a start `wait`
-- from now is reserved for the caller (with its lease, if any: the in-flight bound is never
-- exceeded), so it sleeps and asks once more instead of racing every other waiter. With reserved
-- 0 nothing is taken.
local limit_key = KEYS[1]
local flight_key = KEYS[2]
local interval = tonumber(ARGV[1])
local concurrency = tonumber(ARGV[2])
local lease_id = ARGV[3]
local lease_seconds = tonumber(ARGV[4])
local poll = tonumber(ARGV[5])
local reserved = ARGV[6] == '1'

local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local state = redis.call('HMGET', limit_key, 'next', 'until')
local next_at = tonumber(state[1]) or 0
local held_until = tonumber(state[2]) or 0

if held_until > now then
  if reserved and concurrency then redis.call('ZREM', flight_key, lease_id) end
  return {tostring(held_until - now), 0}
end
if reserved then return {'0', 0} end
if concurrency then
  redis.call('ZREMRANGEBYSCORE', flight_key, '-inf', now)
  if redis.call('ZCARD', flight_key) >= concurrency then return {tostring(poll), 0} end
end
local wait = 0
if interval then
  -- A token bucket of one token, refilled continuously: starts at least `interval` apart, so no
  -- sliding second holds more than per_second of them. The caller gets the next free start.
  local start = math.max(next_at, now)
  wait = start - now
  redis.call('HSET', limit_key, 'next', tostring(start + interval))
  redis.call('EXPIRE', limit_key, math.ceil(math.max(start + interval, held_until) - now) + 1)
end
if concurrency then
  redis.call('ZADD', flight_key, now + wait + lease_seconds, lease_id)
  redis.call('EXPIRE', flight_key, math.ceil(wait + lease_seconds) + 1)
end
if wait > 0 then return {tostring(wait), 1} end
return {'0', 0}
