-- Settlement: correct the token bucket and the budget to the actual usage.
-- KEYS[1] the key's hash, KEYS[2] its reservations, KEYS[3] its reconcile window.
-- ARGV: now_ms tpm delta_tokens gen reserved_micros actual_micros period period_start
--       idle_ttl_ms reservation_id mode reservation_ttl_ms
--       (tpm -1: no token correction; gen '': no budget; reservation_id '': none)
-- Mode 's' settles. Mode 'c' cancels an admission whose reply never came: releases
-- its reservation if the admission ran, else leaves a tombstone so that it never does.
-- A reservation is released only if its entry is still there: never twice. Until a
-- reconcile window's first round ('@log' 1), each charge is logged there
-- ('c:<request id>'); while it is open, a request charged already (settled twice, or
-- by the reconcile: 'r:') is not charged again.
-- Returns 1 if the budget was charged here, else 0.
local key = KEYS[1]
local zkey = KEYS[2]
local now = tonumber(ARGV[1])
local tpm = tonumber(ARGV[2])
local delta = tonumber(ARGV[3])
local gen = ARGV[4]
local reserved = tonumber(ARGV[5])
local actual = tonumber(ARGV[6])
local period = ARGV[7]
local pstart = tonumber(ARGV[8])
local ttl = tonumber(ARGV[9])
local rid = ARGV[10]
local rttl = tonumber(ARGV[12])
local member = rid .. ':' .. d(reserved)
if ARGV[11] == 'c' then
  if redis.call('ZREM', zkey, member) == 1 then
    if redis.call('HEXISTS', key, 'rs') == 1 then
      local rs = num(redis.call('HGET', key, 'rs')) - reserved
      if rs < 0 then rs = 0 end
      redis.call('HSET', key, 'rs', d(rs))
    end
  else
    redis.call('ZADD', zkey, d(now + rttl), rid .. ':x')
    if redis.call('PTTL', zkey) < rttl then redis.call('PEXPIRE', zkey, d(rttl)) end
  end
  return 0
end
local h = redis.call('HMGET', key, 'rt', 'tt', 'tc', 'g', 'pk', 'ps', 'sp', 'rs', 'cr')
local tt = num(h[2])
if tpm > 0 and delta ~= 0 then
  tt = put(key, 'tt', 'tc', backlog(tt, num(h[3]), now, tpm) + delta * W, now, tpm)
end
local charged = 0
if gen ~= '' and h[4] == gen then
  local sp = num(h[7])
  if h[5] ~= '-' and h[5] == period and num(h[6]) < pstart then
    sp = 0
    redis.call('HSET', key, 'ps', d(pstart))
  end
  local rs = num(h[8]) - purge(zkey, now)
  if rid == '' or redis.call('ZREM', zkey, member) == 1 then rs = rs - reserved end
  if rs < 0 then rs = 0 end
  local charge = actual
  if rid ~= '' and redis.call('EXISTS', KEYS[3]) == 1 then
    local w = redis.call('HMGET', KEYS[3], 'c:' .. rid, 'r:' .. rid, '@log')
    if w[1] or w[2] then
      charge = 0
    elseif w[3] == '1' then
      redis.call('HSET', KEYS[3], 'c:' .. rid, d(actual))
    end
  end
  redis.call('HSET', key, 'sp', d(sp + charge), 'rs', d(rs))
  if h[9] then redis.call('HSET', key, 'cr', d(tonumber(h[9]) - charge)) end
  charged = 1
end
if redis.call('EXISTS', key) == 1 then
  expire(key, zkey, h[4], ttl, now, num(h[1]), tt)
end
return charged
