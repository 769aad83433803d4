-- Take entries of one aHash out of a list's index (guard/store/writes.py; RECORD_SIZE is filled
-- in on loading): removed for good, or moved to the list's disabled entries.
-- KEYS: the aHash's entry bucket, ver, meta, snap, its disabled bucket, the change log, its band
-- keys. ARGV: its band member (signed aHash), which entries (an entry record's field, or '*' for
-- every entry of the aHash), the aHash as 8 big-endian bytes, the layout the band keys follow
-- (refused if the list was re-created with another), the mode: 'remove' (the matching disabled
-- entries are removed too) or 'disable'.
-- Returns {entries taken out of the index, matching entries found disabled}.
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
  return {0, #was_disabled}
end
for _, entry in ipairs(removed) do redis.call('HDEL', KEYS[1], entry[1]) end
if #entries_of(KEYS[1], ARGV[3], '*') == 0 then
  for k = 7, #KEYS do redis.call('SREM', KEYS[k], ARGV[1]) end
end
if ARGV[5] == 'disable' then
  for _, entry in ipairs(removed) do redis.call('HSET', KEYS[5], entry[1], entry[2]) end
  redis.call('HINCRBY', KEYS[3], 'disabled', #removed)
end
-- Splice each removed entry's record out of the snapshot (records are RECORD_SIZE bytes long:
-- a match only counts on a record boundary).
local taken = {}  -- the snapshot records taken out of the index, for the change log
for _, entry in ipairs(removed) do table.insert(taken, record_of(entry[1])) end
local snap = redis.call('GET', KEYS[4])
if snap then
  for _, record in ipairs(taken) do
    local at = string.find(snap, record, 1, true)
    while at and (at - 1) % RECORD_SIZE ~= 0 do at = string.find(snap, record, at + 1, true) end
    if at then snap = string.sub(snap, 1, at - 1) .. string.sub(snap, at + RECORD_SIZE) end
  end
  redis.call('SET', KEYS[4], snap)
end
log_change(KEYS[6], redis.call('INCR', KEYS[2]), '', table.concat(taken))
redis.call('HINCRBY', KEYS[3], 'entries', -#removed)
return {#removed, #was_disabled}
