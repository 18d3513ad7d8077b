-- Reconcile: bring the live budget to the ledger's, request by request, after a seed.
-- KEYS[1] the key's hash, KEYS[2] its reservations, KEYS[3] its reconcile window.
-- ARGV: gen now_ms mode, then for mode 'r' (request_id, status, micros, created_s)
-- quads: the ledger's rows (status 'p' pending: micros is its reserved worst case;
-- 'f' final: its cost); for mode 'k' the request ids still to watch; mode 'x' closes.
-- What Redis counted for a request is what the seed counted ('s:'), what settlements
-- charged since ('c:') and what earlier reconciles added ('r:'). A row whose
-- reservation is live is left to its settlement; a pending row already settled here is
-- left to its final row; every other row is charged the difference (logged in 'r:', so
-- a reconcile run again, or a settlement arriving later, adds nothing). A pending row
-- not reserved and not settled here is unresolved: its request straddled the seed.
-- Mode 'k', once the rows since the seed are reconciled: only the unresolved requests
-- can still change, so the window keeps their entries only and settlements stop
-- logging. Returns {1} if the window is not this seed's, else {0, micros added,
-- unresolved request ids...} for 'r', {0} for 'k' and 'x'.
local key, zkey, wkey = KEYS[1], KEYS[2], KEYS[3]
local gen, mode = ARGV[1], ARGV[3]
if redis.call('HGET', wkey, '@g') ~= gen or redis.call('HGET', key, 'g') ~= gen then
  return {1}
end
if mode == 'x' then
  redis.call('DEL', wkey)
  return {0}
end
if mode == 'k' then
  local kept = {}
  for i = 4, #ARGV do
    local w = redis.call('HMGET', wkey, 's:' .. ARGV[i], 'r:' .. ARGV[i])
    kept[#kept + 1] = {ARGV[i], w[1], w[2]}
  end
  local ttl = redis.call('PTTL', wkey)
  redis.call('DEL', wkey)
  redis.call('HSET', wkey, '@g', gen, '@log', '0')
  for i = 1, #kept do
    if kept[i][2] then redis.call('HSET', wkey, 's:' .. kept[i][1], kept[i][2]) end
    if kept[i][3] then redis.call('HSET', wkey, 'r:' .. kept[i][1], kept[i][3]) end
  end
  if ttl > 0 then redis.call('PEXPIRE', wkey, ttl) end
  return {0}
end
local now = tonumber(ARGV[2])
local live = {}
local members = redis.call('ZRANGEBYSCORE', zkey, '(' .. d(now), '+inf')
for i = 1, #members do
  local rid = string.match(members[i], '^(.*):%d+$')  -- tombstones ('<id>:x') do not count
  if rid then live[rid] = true end
end
local h = redis.call('HMGET', key, 'pk', 'ps', 'sp', 'cr')
local sp, cr = num(h[3]), h[4] and tonumber(h[4])
local periodic, pstart = h[1] and h[1] ~= '-', num(h[2])
local added, unresolved = 0, {}
for i = 4, #ARGV, 4 do
  local rid, final = ARGV[i], ARGV[i + 1] == 'f'
  local micros, at = tonumber(ARGV[i + 2]), tonumber(ARGV[i + 3])
  if not live[rid] then
    local w = redis.call('HMGET', wkey, 's:' .. rid, 'c:' .. rid, 'r:' .. rid)
    if final or not w[2] then
      if not final then unresolved[#unresolved + 1] = rid end
      local delta = micros - num(w[1]) - num(w[2]) - num(w[3])
      if delta ~= 0 then
        redis.call('HSET', wkey, 'r:' .. rid, d(num(w[3]) + delta))
        if cr then cr = cr - delta end
        if periodic and at >= pstart then sp = sp + delta end
        added = added + delta
      end
    end
  end
end
if added ~= 0 then
  redis.call('HSET', key, 'sp', d(sp))
  if cr then redis.call('HSET', key, 'cr', d(cr)) end
end
local out = {0, d(added)}
for i = 1, #unresolved do out[#out + 1] = unresolved[i] end
return out
