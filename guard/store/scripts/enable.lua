-- Put disabled entries of one aHash back into a list's index (guard/store/writes.py), as the add
-- script writes an entry: its entry record, band members and snapshot record at once.
-- KEYS: the aHash's entry bucket, ver, meta, snap, its disabled bucket, the change log, the
-- snapshot's tombstones (unused here: see remove.lua), its band keys. ARGV: its band member (signed aHash), which entries (an entry record's field, or '*' for
-- every entry of the aHash), the aHash as 8 big-endian bytes, the layout the band keys follow
-- (refused if the list was re-created with another).
-- Returns {entries enabled, matching entries found in the index already}.
local layout = redis.call('HGET', KEYS[3], 'layout')
if not layout then return redis.error_reply('guard: list metadata changed (list gone)') end
if layout ~= ARGV[4] then
  return redis.error_reply('guard: list metadata changed (re-created with another layout)')
end
local refused = refuse_old_records(KEYS[3])
if refused then return refused end
local enabled_already = #entries_of(KEYS[1], ARGV[3], ARGV[2])
local matched = entries_of(KEYS[5], ARGV[3], ARGV[2])
if #matched == 0 then return {0, enabled_already} end
redis.call('HINCRBY', KEYS[3], 'disabled', -#matched)
local back, snap = 0, ''
for _, entry in ipairs(matched) do
  redis.call('HDEL', KEYS[5], entry[1])
  if redis.call('HSETNX', KEYS[1], entry[1], entry[2]) == 1 then
    snap = snap .. record_of(entry[1])
    back = back + 1
  end
end
if back > 0 then
  redis.call('APPEND', KEYS[4], snap)
  for k = 8, #KEYS do redis.call('SADD', KEYS[k], ARGV[1]) end
  redis.call('HINCRBY', KEYS[3], 'entries', back)
end
log_change(KEYS[6], redis.call('INCR', KEYS[2]), snap, '')
return {back, enabled_already}
