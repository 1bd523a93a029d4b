-- swap: rewrite one definition only if it is still the one read
-- (scheduler_api.storage.triggers.rotate_secrets; a concurrent replace wins).
--
-- KEYS[1] definitions   hash sa:ws:{workspace id}: index -> definition JSON
-- ARGV[1] index
-- ARGV[2] the definition JSON as read
-- ARGV[3] the new definition JSON
-- Returns 1 if swapped, 0 if the definition had changed (or is gone).
local definitions_key = KEYS[1]
local index = ARGV[1]
local expected = ARGV[2]
local new = ARGV[3]

if redis.call('HGET', definitions_key, index) == expected then
  redis.call('HSET', definitions_key, index, new)
  return 1
end
return 0
