-- Put disabled entries of one aHash back into a list's index (guard/store/writes.py), as the add
-- script writes an entry: its `entries` record, band members and snapshot record at once.
-- KEYS: entries, ver, meta, snap, disabled, the change log, band keys of the aHash. ARGV: field, which entries
-- (a pHash hex, '' for the entry without a pHash, '*' for every entry of the aHash), the aHash as
-- 8 big-endian bytes, the layout the band keys follow (refused if the list was re-created with
-- another). Returns {entries enabled, matching entries found in the index already}.
local layout = redis.call('HGET', KEYS[3], 'layout')
if not layout then return redis.error_reply('guard: list metadata changed (list gone)') end
if layout ~= ARGV[4] then
  return redis.error_reply('guard: list metadata changed (re-created with another layout)')
end
local listed = {}
local stored = redis.call('HGET', KEYS[1], ARGV[1])
if stored then listed = cjson.decode(stored) end
local enabled_already = 0
for _, existing in ipairs(listed) do
  if ARGV[2] == '*' or existing['phash'] == ARGV[2] then enabled_already = enabled_already + 1 end
end
local disabled = redis.call('HGET', KEYS[5], ARGV[1])
if not disabled then return {0, enabled_already} end
local kept, back, matched = {}, 0, 0
local snap = ''
for _, entry in ipairs(cjson.decode(disabled)) do
  if ARGV[2] == '*' or entry['phash'] == ARGV[2] then
    matched = matched + 1
    local duplicate = false
    for _, existing in ipairs(listed) do
      if existing['phash'] == entry['phash'] then duplicate = true break end
    end
    if not duplicate then
      table.insert(listed, entry)
      snap = snap .. snapshot_record(ARGV[3], entry['phash'])
      back = back + 1
    end
  else
    table.insert(kept, entry)
  end
end
if matched == 0 then return {0, enabled_already} end
redis.call('HINCRBY', KEYS[3], 'disabled', -matched)
if #kept == 0 then
  redis.call('HDEL', KEYS[5], ARGV[1])
else
  redis.call('HSET', KEYS[5], ARGV[1], cjson.encode(kept))
end
if back > 0 then
  redis.call('HSET', KEYS[1], ARGV[1], cjson.encode(listed))
  redis.call('APPEND', KEYS[4], snap)
  for k = 7, #KEYS do redis.call('SADD', KEYS[k], ARGV[1]) end
  redis.call('HINCRBY', KEYS[3], 'entries', back)
end
log_change(KEYS[6], redis.call('INCR', KEYS[2]), snap, '')
return {back, enabled_already}
