-- Remove the entries of one aHash (guard/store/writes.py; RECORD_SIZE is filled in on loading).
-- KEYS: entries, ver, meta, snap, band keys of the aHash. ARGV: field, pHash hex or '' for every
-- entry, the aHash as 8 big-endian bytes, the layout the band keys follow (refused if the list
-- was re-created with another).
local layout = redis.call('HGET', KEYS[3], 'layout')
if layout and layout ~= ARGV[4] then
  return redis.error_reply('guard: list metadata changed (re-created with another layout)')
end
local stored = redis.call('HGET', KEYS[1], ARGV[1])
if not stored then return 0 end
local kept, removed = {}, {}
for _, existing in ipairs(cjson.decode(stored)) do
  if ARGV[2] == '' or existing['phash'] == ARGV[2] then
    table.insert(removed, existing)
  else
    table.insert(kept, existing)
  end
end
if #removed == 0 then return 0 end
if #kept == 0 then
  redis.call('HDEL', KEYS[1], ARGV[1])
  for k = 5, #KEYS do redis.call('SREM', KEYS[k], ARGV[1]) end
else
  redis.call('HSET', KEYS[1], ARGV[1], cjson.encode(kept))
end
-- Splice each removed entry's record out of the snapshot (records are RECORD_SIZE bytes long:
-- a match only counts on a record boundary).
local snap = redis.call('GET', KEYS[4])
if snap then
  for _, entry in ipairs(removed) do
    local record = ARGV[3] .. string.rep(string.char(0), 8) .. string.char(0)
    if entry['phash'] ~= '' then
      local phash = string.gsub(entry['phash'], '..', function(pair)
        return string.char(tonumber(pair, 16))
      end)
      record = ARGV[3] .. phash .. string.char(1)
    end
    local at = string.find(snap, record, 1, true)
    while at and (at - 1) % RECORD_SIZE ~= 0 do at = string.find(snap, record, at + 1, true) end
    if at then snap = string.sub(snap, 1, at - 1) .. string.sub(snap, at + RECORD_SIZE) end
  end
  redis.call('SET', KEYS[4], snap)
end
redis.call('INCR', KEYS[2])
redis.call('HINCRBY', KEYS[3], 'entries', -#removed)
return #removed
