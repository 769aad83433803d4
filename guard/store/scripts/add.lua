-- Add entries to a list, creating the list with its first entries (guard/store/writes.py).
-- KEYS: labels, ver, meta, snap, the drop marker, the change log, then per entry: its entry
-- bucket, its disabled bucket and its `bands` band keys.
-- ARGV: bands, layout JSON, hash version, created, a fresh incarnation, a pending note ('' for
-- none: see below), 'disabled' to write the entries disabled (`guard rename` copying disabled
-- entries) or '', then per entry: its field (aHash and pHash bytes), its band member (signed
-- aHash), its label ('' for none) and the rest of its record (guard/store/records.py). An
-- entry already listed, enabled or disabled, is present: an add never re-enables one.
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
    'created', ARGV[4], 'entries', 0, 'incarnation', ARGV[5], 'records', 'COMPACT')
  if ARGV[6] ~= '' then redis.call('HSET', KEYS[3], 'pending', ARGV[6]) end
elseif redis.call('HGET', KEYS[3], 'bands') ~= ARGV[1]
    or redis.call('HGET', KEYS[3], 'layout') ~= ARGV[2]
    or redis.call('HGET', KEYS[3], 'hash_version') ~= ARGV[3] then
  return redis.error_reply('guard: list metadata changed (band count changed, or re-created)')
elseif ARGV[6] ~= '' and ARGV[6] ~= 'first load'
    and redis.call('HGET', KEYS[3], 'pending') ~= ARGV[6] then
  return redis.error_reply('guard: list exists already')
elseif redis.call('HGET', KEYS[3], 'records') ~= 'COMPACT' then
  return redis.error_reply('guard: list needs upgrade (entries in the older JSON layout)')
else
  redis.call('HSETNX', KEYS[3], 'incarnation', ARGV[5])
end
local added, present = 0, 0
local records = {}  -- the snapshot records added to the index, for the change log
local count = (#ARGV - 7) / 4
for i = 0, count - 1 do
  local at = 8 + 4 * i
  local field, member, label, tail = ARGV[at], ARGV[at + 1], ARGV[at + 2], ARGV[at + 3]
  local bucket, off = KEYS[7 + i * (bands + 2)], KEYS[8 + i * (bands + 2)]
  if redis.call('HEXISTS', bucket, field) == 1 or redis.call('HEXISTS', off, field) == 1 then
    present = present + 1
  else
    local record = label_id(KEYS[1], KEYS[3], label) .. ':' .. tail
    if ARGV[7] == 'disabled' then
      redis.call('HSET', off, field, record)
    else
      redis.call('HSET', bucket, field, record)
      local snap = record_of(field)
      redis.call('APPEND', KEYS[4], snap)
      table.insert(records, snap)
      for b = 1, bands do redis.call('SADD', KEYS[8 + i * (bands + 2) + b], member) end
    end
    added = added + 1
  end
end
if added > 0 then
  log_change(KEYS[6], redis.call('INCR', KEYS[2]), table.concat(records), '')
  redis.call('HINCRBY', KEYS[3], ARGV[7] == 'disabled' and 'disabled' or 'entries', added)
end
return {added, present, redis.call('HGET', KEYS[3], 'incarnation')}
