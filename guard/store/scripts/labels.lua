-- Prepended to the scripts that write entry records (guard/store/writes.py, upgrade.py): a
-- label's id in the list's `labels` hash, interning it the first time (ids
-- count up in meta's `labels`, never reused while the list lives). '' for no label.
local interned = {}
local function label_id(labels, meta, label)
  if label == '' then return '' end
  local id = interned[label] or redis.call('HGET', labels, '=' .. label)
  if not id then
    id = tostring(redis.call('HINCRBY', meta, 'labels', 1))
    redis.call('HSET', labels, '=' .. label, id, id, label)
  end
  interned[label] = id
  return id
end
