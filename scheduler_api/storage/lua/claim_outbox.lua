-- claim_outbox: the batch ids due to be pushed (or checked) by this scheduler; each comes due
-- again after `retry after` seconds unless a worker claims it by then
-- (scheduler_api.storage.firings.claim_outbox).
--
-- KEYS[1] outbox        sorted set sa:outbox: batch id -> when to push it
-- ARGV[1] now
-- ARGV[2] retry after (seconds)
-- ARGV[3] the most batch ids to claim
-- Returns the claimed batch ids.
local outbox_key = KEYS[1]
local now = tonumber(ARGV[1])
local retry_after = tonumber(ARGV[2])
local limit = tonumber(ARGV[3])

local due = redis.call('ZRANGEBYSCORE', outbox_key, '-inf', now, 'LIMIT', 0, limit)
for _, batch_id in ipairs(due) do
  redis.call('ZADD', outbox_key, now + retry_after, batch_id)
end
return due
