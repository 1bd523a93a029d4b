-- swap: rewrite one hash field only if it still holds the value read: a definition, or a signing
-- secret (scheduler_api.storage.rotation.rotate_secrets; a concurrent replace or rotation wins).
--
-- KEYS[1] the hash      sa:ws:{workspace id} (index -> definition JSON) or sa:sign:{workspace id}
-- ARGV[1] the field
-- ARGV[2] its value as read
-- ARGV[3] the new value
-- Returns 1 if swapped, 0 if the value had changed (or is gone).
local definitions_key = KEYS[1]
local index = ARGV[1]
local expected = ARGV[2]
local new = ARGV[3]

if redis.call('HGET', definitions_key, index) == expected then
  redis.call('HSET', definitions_key, index, new)
  return 1
end
return 0
