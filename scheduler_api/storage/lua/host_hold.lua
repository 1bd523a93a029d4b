-- host_hold: hold back a rate-limited (workspace, host) after its 429/503 asked for Retry-After
-- (scheduler_api.storage.host_limits.hold). A later time never shortens an earlier, longer hold.
--
-- KEYS[1] limit_key   hash sa:host:{ws}:{host} (host_acquire.lua)
-- ARGV[1] seconds to hold back from now (Redis's clock)
local limit_key = KEYS[1]
local seconds = tonumber(ARGV[1])

local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local state = redis.call('HMGET', limit_key, 'next', 'until')
local next_at = tonumber(state[1]) or 0
local held_until = math.max(tonumber(state[2]) or 0, now + seconds)
redis.call('HSET', limit_key, 'until', tostring(held_until))
redis.call('EXPIRE', limit_key, math.ceil(math.max(next_at, held_until) - now) + 1)
return tostring(held_until)
