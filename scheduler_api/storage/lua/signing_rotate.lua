-- signing_rotate: a new signing secret for a workspace; the current one becomes the previous one,
-- which keeps signing until its expiry (scheduler_api.storage.signing_keys.rotate). The workers
-- hear of it on the changes channel, as of a trigger change, and read the secrets again.
--
-- KEYS[1] signing   hash sa:sign:{workspace id}: secret, created_at, previous, previous_expires_at
-- ARGV[1] the new secret as stored (sealed with SECRETS_KEY, or plain without it)
-- ARGV[2] now, unix seconds (its created_at)
-- ARGV[3] when the previous secret stops signing, unix seconds
-- ARGV[4] the changes channel (sa:changed; a channel, not a key)
-- ARGV[5] the workspace's jobId prefix, '{workspace id}:' (the message)
-- Returns the hash as a flat list of fields and values (HGETALL). A workspace without a secret
-- gets one with no previous.
local signing_key = KEYS[1]
local new_secret = ARGV[1]
local now = ARGV[2]
local previous_expires_at = ARGV[3]
local changes_channel = ARGV[4]
local job_id_prefix = ARGV[5]

local current = redis.call('HGET', signing_key, 'secret')
if current then
    redis.call('HSET', signing_key, 'previous', current, 'previous_expires_at', previous_expires_at)
end
redis.call('HSET', signing_key, 'secret', new_secret, 'created_at', now)
redis.call('PUBLISH', changes_channel, job_id_prefix)
return redis.call('HGETALL', signing_key)
