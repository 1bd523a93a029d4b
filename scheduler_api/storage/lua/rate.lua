-- rate: count one call in a fixed one-window counter (scheduler_api.storage.quotas.take).
--
-- KEYS[1] counter   string sa:rate:{kind}:{workspace id}: calls in the current window; it expires
--                   when the window ends (the window starts with its first call)
-- ARGV[1] the most calls a window allows
-- ARGV[2] the window's length in milliseconds
-- Returns {1, ms left in the window} when the call is allowed, {0, ms left} when it is one too many.
-- Refused calls are counted too (they cannot lengthen the window: its expiry is set once).
local counter_key = KEYS[1]
local limit = tonumber(ARGV[1])
local window_ms = tonumber(ARGV[2])

local count = redis.call('INCR', counter_key)
local left = redis.call('PTTL', counter_key)
if count == 1 or left < 0 then
  redis.call('PEXPIRE', counter_key, window_ms)
  left = window_ms
end
if count > limit then return {0, left} end
return {1, left}
