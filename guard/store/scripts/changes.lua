-- Prepended to the scripts that change a list's version (guard/store/writes.py): after the INCR,
-- one item in the list's change log (a stream; guard/store/changes.py) whose id is the new
-- version ("<version>-0") and whose fields are the snapshot records the change added to the
-- index and took out of it, so a worker's mirror catches up by applying them instead of loading
-- the whole snapshot again. Only about the last CHANGES_KEPT versions are kept. A log that
-- cannot be written (a key of another type, an id out of order after a hand-made change) is
-- skipped: the worker then finds a gap in the versions and loads the snapshot, so a change
-- never fails on its log.
local function log_change(key, version, added, removed)
  redis.pcall('XADD', key, 'MINID', '~', string.format('%d-0', math.max(0, version - CHANGES_KEPT)),
    string.format('%d-0', version), 'add', added, 'del', removed)
end
