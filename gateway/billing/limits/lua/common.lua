-- Helpers shared by admit.lua, settle.lua and status.lua: scripts.py prepends this
-- file to each, and fills in W and DEBT below from the Python constants they are
-- named after (gateway/billing/limits/gcra.py), so both sides use the same numbers.
-- Clamped backlog in ms*units and its write-back as (tat, carry).
local W = ${WINDOW_MS}
local DEBT = ${MAX_DEBT_WINDOWS}
local function d(x) return string.format('%d', x) end
local function num(v) if v then return tonumber(v) end return 0 end
local function backlog(tat, carry, now, lim)
  local b = (tat - now) * lim + carry
  if b < 0 then return 0 end
  return b
end
local function put(key, tf, cf, b, now, lim)
  if b < 0 then b = 0 end
  local cap = DEBT * W * lim
  if b > cap then b = cap end
  local q = math.floor(b / lim)
  local tat = now + q
  redis.call('HSET', key, tf, d(tat), cf, d(b - q * lim))
  return tat
end
local function expire(key, zkey, has_budget, ttl, now, rt, tt)
  -- a budget lives for the idle TTL; buckets only until they are empty again
  local ms = math.max(rt, tt) - now + 1000
  if has_budget and ttl > ms then ms = ttl end
  if ms < 1000 then ms = 1000 end
  redis.call('PEXPIRE', key, d(ms))
  redis.call('PEXPIRE', zkey, d(ms))
end
local function expired(zkey, now)
  -- the reservations that expired unsettled: their members and total micros
  local gone = redis.call('ZRANGEBYSCORE', zkey, '-inf', d(now))
  local freed = 0
  for i = 1, #gone do
    local v = tonumber(string.match(gone[i], ':(%d+)$'))  -- tombstones ('<id>:x') free 0
    if v then freed = freed + v end
  end
  return gone, freed
end
local function purge(zkey, now)
  local gone, freed = expired(zkey, now)
  if #gone > 0 then redis.call('ZREMRANGEBYSCORE', zkey, '-inf', d(now)) end
  return freed
end
