-- Fragment, included by the loader (scheduler_api.storage.scripts) into commit_due.lua,
-- record.lua and sweep.lua: the per-workspace keys those scripts take, and retention.

-- The per-workspace key groups in KEYS from KEYS[first] on, one group per workspace: records,
-- history, done, failed (keys.history_keys), led by the definitions hash (sa:ws:{id}) when
-- `with_definitions` and followed by the state hash (sa:state:{id}) when `with_state`. An item of
-- a script names its workspace by the group's number (1-based).
local function workspace_groups(first, with_definitions, with_state)
  local lead = with_definitions and 1 or 0
  local size = 4 + lead + (with_state and 1 or 0)
  local groups = {}
  for at = first, #KEYS, size do
    groups[#groups + 1] = {
      definitions = with_definitions and KEYS[at] or nil,
      records = KEYS[at + lead],
      history = KEYS[at + lead + 1],
      done = KEYS[at + lead + 2],
      failed = KEYS[at + lead + 3],
      state = with_state and KEYS[at + lead + 4] or nil,
    }
  end
  return groups
end

-- Retention of one workspace's records (scheduler_api.storage.history): delivered ones older than
-- `keep.seconds` and beyond the newest `keep.done`, failed ones beyond the newest `keep.failed`,
-- and any beyond the newest `keep.history` by scheduled time. `ws` is one of `workspace_groups`.
local function trim(ws, now, keep)
  local function drop(ids)
    for _, id in ipairs(ids) do
      redis.call('HDEL', ws.records, id)
      redis.call('ZREM', ws.history, id)
      redis.call('ZREM', ws.done, id)
      redis.call('ZREM', ws.failed, id)
    end
  end
  if keep.seconds >= 0 then drop(redis.call('ZRANGEBYSCORE', ws.done, '-inf', now - keep.seconds)) end
  local extra = redis.call('ZCARD', ws.done) - keep.done
  if extra > 0 then drop(redis.call('ZRANGE', ws.done, 0, extra - 1)) end
  extra = redis.call('ZCARD', ws.failed) - keep.failed
  if extra > 0 then drop(redis.call('ZRANGE', ws.failed, 0, extra - 1)) end
  extra = redis.call('ZCARD', ws.history) - keep.history
  if extra > 0 then drop(redis.call('ZRANGE', ws.history, 0, extra - 1)) end
end

-- The retention settings (firings.Retention.args), four ARGV from ARGV[first] on.
local function retention_at(first)
  return {
    seconds = tonumber(ARGV[first]),
    done = tonumber(ARGV[first + 1]),
    failed = tonumber(ARGV[first + 2]),
    history = tonumber(ARGV[first + 3]),
  }
end
