-- reap_leases: batches whose worker stopped renewing its lease (killed) go back to the outbox with
-- their undelivered firings (scheduler_api.storage.firings.reap_leases).
--
-- KEYS[1] leases        sorted set sa:leases: batch id -> when its worker's lease runs out
-- KEYS[2] outbox        sorted set sa:outbox: batch id -> when to push it
-- KEYS[3] owners        hash sa:lease-owners: batch id -> the token of the worker holding it
-- ARGV[1] now
-- ARGV[2] the batch key prefix, 'sa:batch:' (keys.BATCH_PREFIX)
-- Returns how many batches went back to the outbox.
--
-- The one exception to "every key in KEYS" (keys.py): the batch ids are found here, in the
-- leases, so their keys cannot be passed in; each is built from the prefix.
local leases_key = KEYS[1]
local outbox_key = KEYS[2]
local now = ARGV[1]
local batch_prefix = ARGV[2]
local limit = 1000  -- per call; the scheduler calls it every tick

local expired = redis.call('ZRANGEBYSCORE', leases_key, '-inf', now, 'LIMIT', 0, limit)
local requeued = 0
for _, batch_id in ipairs(expired) do
  redis.call('ZREM', leases_key, batch_id)
  redis.call('HDEL', KEYS[3], batch_id)  -- a worker resuming after this finds it is not its own
  if redis.call('EXISTS', batch_prefix .. batch_id) == 1 then
    redis.call('ZADD', outbox_key, now, batch_id)
    requeued = requeued + 1
  end
end
return requeued
