-- Rewrite a list's entries from the JSON layout of an older guard as compact entry records, in
-- place (guard/store/upgrade.py). The band sets, snapshot and version stay as they are: the
-- index does not change, only where an entry's source, label and time are kept.
-- ARGV[1] 'move': KEYS: the old hash (`entries` or `disabled`), meta, labels, then per old field
-- the bucket its records go to. ARGV after the mode, per old field: the field (signed aHash),
-- its JSON as read (the field is moved only if it still holds it), the number of its records,
-- then per record: its field, label ('' for none) and the rest of its record. Returns the old
-- fields moved.
-- ARGV[1] 'finish': KEYS: the old `entries`, the old `disabled`, meta. Marks the list upgraded
-- if both old hashes are empty. Returns 1 if it did, else 0.
if ARGV[1] == 'finish' then
  if redis.call('EXISTS', KEYS[3]) == 0 then return 0 end
  if redis.call('EXISTS', KEYS[1]) == 1 or redis.call('EXISTS', KEYS[2]) == 1 then return 0 end
  redis.call('HSET', KEYS[3], 'records', 'COMPACT')
  return 1
end
if redis.call('EXISTS', KEYS[2]) == 0 then
  return redis.error_reply('guard: list metadata changed (list gone)')
end
local at, n, moved = 2, 0, 0
while at <= #ARGV do
  n = n + 1
  local old, expected, count = ARGV[at], ARGV[at + 1], tonumber(ARGV[at + 2])
  if redis.call('HGET', KEYS[1], old) == expected then
    for j = 0, count - 1 do
      local r = at + 3 + 3 * j
      local record = label_id(KEYS[3], KEYS[2], ARGV[r + 1]) .. ':' .. ARGV[r + 2]
      redis.call('HSETNX', KEYS[3 + n], ARGV[r], record)
    end
    redis.call('HDEL', KEYS[1], old)
    moved = moved + 1
  end
  at = at + 3 + 3 * count
end
return moved
