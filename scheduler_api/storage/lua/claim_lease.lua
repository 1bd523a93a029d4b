-- claim_lease: the worker whose RQ job carries a batch takes it (scheduler_api.storage.firings.claim_lease).
-- Whatever the answer, the job that asks has taken the batch off the outbox.
--
-- KEYS[1] leases        sorted set sa:leases: batch id -> when its worker's lease runs out
-- KEYS[2] batch         hash sa:batch:{batch id}: firing id -> firing JSON
-- KEYS[3] outbox        sorted set sa:outbox: batch id -> when to push it
-- KEYS[4] pushed        hash sa:pushed: batch id -> the RQ job it was pushed in
-- KEYS[5] owners        hash sa:lease-owners: batch id -> the token of the worker holding it
-- ARGV[1] batch id
-- ARGV[2] now
-- ARGV[3] when the lease runs out
-- ARGV[4] the claiming worker's token
-- Returns 1: claimed; 0: the batch is empty (done); -1: another worker's lease still runs.
local leases_key = KEYS[1]
local batch_key = KEYS[2]
local outbox_key = KEYS[3]
local pushed_key = KEYS[4]
local batch_id = ARGV[1]
local now = tonumber(ARGV[2])
local lease_expiry = ARGV[3]

redis.call('ZREM', outbox_key, batch_id)
redis.call('HDEL', pushed_key, batch_id)
if redis.call('EXISTS', batch_key) == 0 then return 0 end
local current = redis.call('ZSCORE', leases_key, batch_id)
if current and tonumber(current) > now then return -1 end
redis.call('ZADD', leases_key, lease_expiry, batch_id)
redis.call('HSET', KEYS[5], batch_id, ARGV[4])
return 1
