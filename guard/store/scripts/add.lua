-- Add entries to a list, creating the list with its first entries (guard/store/writes.py).
-- KEYS: entries, ver, meta, snap, the drop marker, disabled, the change log, then `bands` band
-- keys per entry.
-- ARGV: bands, layout JSON, hash version, created, a fresh incarnation, a pending note ('' for
-- none: see below), 'disabled' to write the entries disabled (`guard rename` copying disabled
-- entries) or '', then per entry: field (signed aHash), pHash hex, entry JSON, its snapshot
-- record. An entry already listed, enabled or disabled, is present: an add never re-enables one.
-- Creates the list's metadata if it has none (so a list is born with its first entries, never
-- half made), and gives an incarnation to a list that has none (made before incarnations
-- existed). Refuses to create a list whose drop is under way or was interrupted (its leftover
-- band sets would join the new list: `guard drop` it again first); creating a list clears the
-- marker a finished drop left. A pending note (`guard rename` copying into a new list) is
-- written with the metadata it creates, and refused on a list that does not carry the same
-- note (a list that existed already); the note 'first load' (a load creating the list: lookups
-- wait for its end) is never refused. Returns {added, present, the list's incarnation}.
local bands = tonumber(ARGV[1])
if redis.call('EXISTS', KEYS[3]) == 0 then
  local marker = redis.call('GET', KEYS[5])
  if marker and string.sub(marker, 1, 8) == 'dropping' then
    return redis.error_reply('guard: list is being dropped (or its drop was interrupted): '
      .. 'run guard drop on it again, then re-create it')
  end
  redis.call('DEL', KEYS[5])
  redis.call('HSET', KEYS[3], 'hash_version', ARGV[3], 'bands', ARGV[1], 'layout', ARGV[2],
    'created', ARGV[4], 'entries', 0, 'incarnation', ARGV[5])
  if ARGV[6] ~= '' then redis.call('HSET', KEYS[3], 'pending', ARGV[6]) end
elseif redis.call('HGET', KEYS[3], 'bands') ~= ARGV[1]
    or redis.call('HGET', KEYS[3], 'layout') ~= ARGV[2]
    or redis.call('HGET', KEYS[3], 'hash_version') ~= ARGV[3] then
  return redis.error_reply('guard: list metadata changed (band count changed, or re-created)')
elseif ARGV[6] ~= '' and ARGV[6] ~= 'first load'
    and redis.call('HGET', KEYS[3], 'pending') ~= ARGV[6] then
  return redis.error_reply('guard: list exists already')
else
  redis.call('HSETNX', KEYS[3], 'incarnation', ARGV[5])
end
local added, present = 0, 0
local records = {}  -- the snapshot records added to the index, for the change log
local count = (#ARGV - 7) / 4
for i = 0, count - 1 do
  local at = 8 + 4 * i
  local field, phash, entry, record = ARGV[at], ARGV[at + 1], ARGV[at + 2], ARGV[at + 3]
  local stored = redis.call('HGET', KEYS[1], field)
  local entries = {}
  if stored then entries = cjson.decode(stored) end
  local found = false
  for _, existing in ipairs(entries) do
    if existing['phash'] == phash then found = true break end
  end
  local off = redis.call('HGET', KEYS[6], field)
  local disabled = {}
  if off then disabled = cjson.decode(off) end
  for _, existing in ipairs(disabled) do
    if existing['phash'] == phash then found = true break end
  end
  if found then
    present = present + 1
  elseif ARGV[7] == 'disabled' then
    table.insert(disabled, cjson.decode(entry))
    redis.call('HSET', KEYS[6], field, cjson.encode(disabled))
    added = added + 1
  else
    table.insert(entries, cjson.decode(entry))
    redis.call('HSET', KEYS[1], field, cjson.encode(entries))
    redis.call('APPEND', KEYS[4], record)
    table.insert(records, record)
    for b = 1, bands do redis.call('SADD', KEYS[7 + i * bands + b], field) end
    added = added + 1
  end
end
if added > 0 then
  log_change(KEYS[7], redis.call('INCR', KEYS[2]), table.concat(records), '')
  redis.call('HINCRBY', KEYS[3], ARGV[7] == 'disabled' and 'disabled' or 'entries', added)
end
return {added, present, redis.call('HGET', KEYS[3], 'incarnation')}
