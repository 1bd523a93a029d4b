-- signing_create: a workspace's signing secret, created if it has none
-- (scheduler_api.storage.signing_keys.read_many). Two callers racing create one secret: the first
-- one's; the other gets it back.
--
-- KEYS[1] signing   hash sa:sign:{workspace id}: secret, created_at, previous, previous_expires_at
-- ARGV[1] a new secret as stored (sealed with SECRETS_KEY, or plain without it)
-- ARGV[2] now, unix seconds (its created_at)
-- Returns the hash as a flat list of fields and values (HGETALL).
local signing_key = KEYS[1]
local new_secret = ARGV[1]
local now = ARGV[2]

if redis.call('HSETNX', signing_key, 'secret', new_secret) == 1 then
    redis.call('HSET', signing_key, 'created_at', now)
end
return redis.call('HGETALL', signing_key)
