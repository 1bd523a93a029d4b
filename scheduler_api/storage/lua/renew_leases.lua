-- renew_leases: a worker extends the leases of the batches it still holds
-- (scheduler_api.storage.leases.renew_leases).
--
-- KEYS[1] leases        sorted set sa:leases: batch id -> when its worker's lease runs out
-- KEYS[2] owners        hash sa:lease-owners: batch id -> the token of the worker holding it
-- ARGV[1] the new end of the leases
-- ARGV[2] the worker's token
-- ARGV[3..] batch ids
-- Returns the batch ids the worker does not hold any more (reaped, or claimed by another worker).
local expiry = ARGV[1]
local token = ARGV[2]
local lost = {}
for i = 3, #ARGV do
  local batch_id = ARGV[i]
  if redis.call('HGET', KEYS[2], batch_id) == token and redis.call('ZSCORE', KEYS[1], batch_id) then
    redis.call('ZADD', KEYS[1], expiry, batch_id)
  else
    lost[#lost + 1] = batch_id
  end
end
return lost
