-- Prepended to the scripts that write snapshot records themselves (guard/store/writes.py): one
-- entry's snapshot record (guard/mirror.py RECORD), given its entry record's field (its aHash
-- and pHash, 8 big-endian bytes each, or its aHash alone): aHash, pHash (8 zero bytes if none),
-- then 1 if it has a pHash, else 0.
local function record_of(field)
  if #field == 16 then return field .. '\1' end
  return field .. string.rep('\0', 8) .. '\0'
end
-- The fields and records of a hash of entry records whose field starts with the 8-byte aHash
-- `ahash`, or just the field `which` if it is not '*': a list of {field, record}.
local function entries_of(key, ahash, which)
  local found = {}
  if which ~= '*' then
    local record = redis.call('HGET', key, which)
    if record then table.insert(found, {which, record}) end
    return found
  end
  local all = redis.call('HGETALL', key)
  for i = 1, #all, 2 do
    if string.sub(all[i], 1, 8) == ahash then table.insert(found, {all[i], all[i + 1]}) end
  end
  return found
end
-- A list whose meta exists but has no `records` field keeps JSON entries (an older guard): it
-- must be upgraded in place (guard/store/upgrade.py) before a script changes it.
local function refuse_old_records(meta)
  local records = redis.call('HGET', meta, 'records')
  if redis.call('EXISTS', meta) == 1 and records ~= 'COMPACT' then
    return redis.error_reply('guard: list needs upgrade (entries in the older JSON layout)')
  end
  return nil
end
