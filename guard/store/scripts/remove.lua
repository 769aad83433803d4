-- Take entries of one aHash out of a list's index (guard/store/writes.py): removed for good, or
-- moved to the list's disabled entries.
-- KEYS: the aHash's entry bucket, ver, meta, snap, its disabled bucket, the change log, the
-- snapshot's tombstones (guard/store/snapshot.py), its band keys. ARGV: its band member (signed aHash), which entries (an entry record's field, or '*' for
-- every entry of the aHash), the aHash as 8 big-endian bytes, the layout the band keys follow
-- (refused if the list was re-created with another), the mode: 'remove' (the matching disabled
-- entries are removed too) or 'disable'.
-- Returns {entries taken out of the index, matching entries found disabled, the snapshot's
-- length, its tombstones' length} (the writer compacts the snapshot when they grow).
local layout = redis.call('HGET', KEYS[3], 'layout')
if not layout and ARGV[5] == 'disable' then
  -- A list being dropped: its entries must not be moved under metadata this would re-create.
  return redis.error_reply('guard: list metadata changed (list gone)')
end
if layout and layout ~= ARGV[4] then
  return redis.error_reply('guard: list metadata changed (re-created with another layout)')
end
local refused = refuse_old_records(KEYS[3])
if refused then return refused end
local removed = entries_of(KEYS[1], ARGV[3], ARGV[2])
local was_disabled = entries_of(KEYS[5], ARGV[3], ARGV[2])
if ARGV[5] == 'remove' and #was_disabled > 0 then
  for _, entry in ipairs(was_disabled) do redis.call('HDEL', KEYS[5], entry[1]) end
  redis.call('HINCRBY', KEYS[3], 'disabled', -#was_disabled)
end
if #removed == 0 then
  if ARGV[5] == 'remove' and #was_disabled > 0 then
    log_change(KEYS[6], redis.call('INCR', KEYS[2]), '', '')
  end
  return {0, #was_disabled, 0, 0}
end
for _, entry in ipairs(removed) do redis.call('HDEL', KEYS[1], entry[1]) end
if #entries_of(KEYS[1], ARGV[3], '*') == 0 then
  for k = 8, #KEYS do redis.call('SREM', KEYS[k], ARGV[1]) end
end
if ARGV[5] == 'disable' then
  for _, entry in ipairs(removed) do redis.call('HSET', KEYS[5], entry[1], entry[2]) end
  redis.call('HINCRBY', KEYS[3], 'disabled', #removed)
end
-- The snapshot keeps their records; they go to its tombstones (rewriting the snapshot here would
-- hold Redis for a copy of it).
local taken = {}  -- the snapshot records taken out of the index, for the change log
for _, entry in ipairs(removed) do table.insert(taken, record_of(entry[1])) end
redis.call('APPEND', KEYS[7], table.concat(taken))
log_change(KEYS[6], redis.call('INCR', KEYS[2]), '', table.concat(taken))
redis.call('HINCRBY', KEYS[3], 'entries', -#removed)
return {#removed, #was_disabled, redis.call('STRLEN', KEYS[4]), redis.call('STRLEN', KEYS[7])}
