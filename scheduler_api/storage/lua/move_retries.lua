-- move_retries: due retries go into a new batch; ZREM decides who moved each one
-- (scheduler_api.storage.firings.move_retries).
--
-- KEYS[1] retries       sorted set sa:retries: firing id -> when its next attempt is due
-- KEYS[2] retry data    hash sa:retry-data: firing id -> firing JSON of that attempt
-- KEYS[3] batch         hash sa:batch:{batch id}: firing id -> firing JSON
-- KEYS[4] outbox        sorted set sa:outbox: batch id -> when to push it
-- ARGV[1] batch id
-- ARGV[2] now
-- ARGV[3] the most retries to move
-- Returns how many moved.
local retries_key = KEYS[1]
local retry_data_key = KEYS[2]
local batch_key = KEYS[3]
local outbox_key = KEYS[4]
local batch_id = ARGV[1]
local now = ARGV[2]
local limit = tonumber(ARGV[3])

local due = redis.call('ZRANGEBYSCORE', retries_key, '-inf', now, 'LIMIT', 0, limit)
local moved = 0
for _, firing_id in ipairs(due) do
  if redis.call('ZREM', retries_key, firing_id) == 1 then
    local firing_json = redis.call('HGET', retry_data_key, firing_id)
    redis.call('HDEL', retry_data_key, firing_id)
    if firing_json then
      redis.call('HSET', batch_key, firing_id, firing_json)
      moved = moved + 1
    end
  end
end
if moved > 0 then redis.call('ZADD', outbox_key, now, batch_id) end
return moved
