-- Seeding: the key's budget from the ledger, where Redis lacks it.
-- KEYS[1] the key's hash, KEYS[2] its reservations (dropped with a fresh budget),
-- KEYS[3] its reconcile window.
-- ARGV: gen period period_start spent credit idle_ttl_ms last_topup_id window_ttl_ms
-- then (request_id, micros) pairs (period '-' for none, credit '' for none,
-- window_ttl_ms '' for no window). Fills in what the budget lacks; credit taken from
-- the seed also takes the pending top-ups it does not include. A fresh budget also
-- starts a fresh window: '@g' its generation, '@log' 1 (settlements log their
-- charges), 's:<request id>' what the seed counted.
-- Returns 2 if it made a fresh budget, 1 if it filled something in, else 0.
local key = KEYS[1]
local function d(x) return string.format('%d', x) end
local pstart = tonumber(ARGV[3])
local h = redis.call('HMGET', key, 'g', 'pk', 'ps', 'cr')
local changed = 0
if not h[1] then
  redis.call('HSET', key, 'g', ARGV[1], 'pk', ARGV[2], 'ps', d(pstart),
             'sp', d(tonumber(ARGV[4])), 'rs', '0')
  redis.call('DEL', KEYS[2], KEYS[3])
  if ARGV[8] ~= '' then
    redis.call('HSET', KEYS[3], '@g', ARGV[1], '@log', '1')
    for i = 9, #ARGV, 2 do
      redis.call('HSET', KEYS[3], 's:' .. ARGV[i], ARGV[i + 1])
    end
    redis.call('PEXPIRE', KEYS[3], ARGV[8])
  end
  changed = 2
elseif h[2] ~= ARGV[2] or tonumber(h[3]) < pstart then
  redis.call('HSET', key, 'pk', ARGV[2], 'ps', d(pstart), 'sp', d(tonumber(ARGV[4])))
  changed = 1
end
if not h[4] and ARGV[5] ~= '' then
  local credit = tonumber(ARGV[5])
  local seen = tonumber(ARGV[7])
  local last = seen
  local all = redis.call('HGETALL', key)
  for i = 1, #all, 2 do
    local f = all[i]
    if string.sub(f, 1, 3) == 'pt:' then
      local id = tonumber(string.sub(f, 4))
      if id > seen then
        credit = credit + tonumber(all[i + 1])
        if id > last then last = id end
      end
      redis.call('HDEL', key, f)
    end
  end
  redis.call('HSET', key, 'cr', d(credit), 'ti', d(last))
  if changed == 0 then changed = 1 end
end
if redis.call('PTTL', key) < tonumber(ARGV[6]) then
  redis.call('PEXPIRE', key, ARGV[6])
end
return changed
