-- The first step of dropping a list (guard/store/writes.py): in one step, the list's metadata and
-- version counter go and a drop marker takes their place, so every reader sees the list gone at
-- once (a lookup finds no metadata; `guard lists` skips it) and no add can re-create it over the
-- keys still to delete. KEYS: meta, ver, the drop marker. Returns how many keys it deleted (0: the
-- list had no metadata; the marker is then left as it was).
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local incarnation = redis.call('HGET', KEYS[1], 'incarnation') or ''
redis.call('SET', KEYS[3], 'dropping ' .. incarnation)
return redis.call('DEL', KEYS[1], KEYS[2])
