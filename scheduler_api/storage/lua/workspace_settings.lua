-- workspace_settings: replace a workspace's settings document, only if the client's If-Match
-- still holds (scheduler_api.storage.workspace_settings.write).
--
-- KEYS[1] settings  hash sa:wsconf:{workspace id}: doc (the JSON), etag, and the fields the record
--                   script reads: alert_url, alert_after, disable_after (absent: not set)
-- KEYS[2] state     hash sa:state:{workspace id}: settings without alerts or auto-disable stop the
--                   counting, so the triggers' failure counts ({id}!) and alert flags ({id}^) go:
--                   a count never outlives the settings it was kept for
-- ARGV[1] the ETags the client's If-Match names, separated by spaces ('' when it names none)
-- ARGV[2] the new ETag
-- ARGV[3] the document's JSON
-- ARGV[4] the alert url ('' = no alerts)
-- ARGV[5] alerts.after_failures ('' = no alerts)
-- ARGV[6] auto_disable_after_failures ('' = never)
-- Returns {'ok'} | {'precondition', the current ETag} (nothing written). The ETag of a workspace
-- without stored settings is '0'.
local settings_key = KEYS[1]
local if_match = ARGV[1]
local new_etag = ARGV[2]

local current = redis.call('HGET', settings_key, 'etag') or '0'
if if_match ~= '' then
  local matched = false
  for tag in string.gmatch(if_match, '%S+') do matched = matched or tag == current end
  if not matched then return {'precondition', current} end
end
redis.call('DEL', settings_key)
redis.call('HSET', settings_key, 'doc', ARGV[3], 'etag', new_etag)
if ARGV[4] ~= '' then redis.call('HSET', settings_key, 'alert_url', ARGV[4], 'alert_after', ARGV[5]) end
if ARGV[6] ~= '' then redis.call('HSET', settings_key, 'disable_after', ARGV[6]) end
if ARGV[4] == '' and ARGV[6] == '' then
  for _, field in ipairs(redis.call('HKEYS', KEYS[2])) do
    local last = string.sub(field, -1)
    if last == '!' or last == '^' then redis.call('HDEL', KEYS[2], field) end
  end
end
return {'ok'}
