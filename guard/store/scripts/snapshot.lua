-- Prepended to remove.lua and enable.lua when they are loaded (guard/store/writes.py): one
-- entry's snapshot record (guard/mirror.py RECORD), given its aHash as 8 big-endian bytes and
-- its pHash as 16 hex digits ('' for none): aHash, pHash (8 zero bytes if none), then 1 if it
-- has a pHash, else 0.
local function snapshot_record(ahash_bytes, phash_hex)
  if phash_hex == '' then
    return ahash_bytes .. string.rep(string.char(0), 8) .. string.char(0)
  end
  local phash = string.gsub(phash_hex, '..', function(pair)
    return string.char(tonumber(pair, 16))
  end)
  return ahash_bytes .. phash .. string.char(1)
end
