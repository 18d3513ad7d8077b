-- Admission: check the budget, RPM and TPM and make every reservation, atomically.
-- KEYS[1] the key's hash, KEYS[2] its reservations.
-- ARGV: now_ms rpm tpm est_tokens need_budget spend_limit period period_start
--       prepaid worst_micros idle_ttl_ms reservation_id reservation_ttl_ms
--       (rpm, tpm, spend_limit: -1 for none)
-- Returns {1} need seed | {2, spent, reserved} spend limit | {3, credit, reserved}
-- credit | {4, rq_backlog, tk_backlog} rate limited | {0, rq_backlog, tk_backlog, gen}
-- | {5} this reservation id was cancelled (its caller gave up before it ran)
local key = KEYS[1]
local zkey = KEYS[2]
local now = tonumber(ARGV[1])
local rpm = tonumber(ARGV[2])
local tpm = tonumber(ARGV[3])
local est = tonumber(ARGV[4])
local need_budget = ARGV[5] == '1'
local limit = tonumber(ARGV[6])
local period = ARGV[7]
local pstart = tonumber(ARGV[8])
local prepaid = ARGV[9] == '1'
local worst = tonumber(ARGV[10])
local ttl = tonumber(ARGV[11])
local rid = ARGV[12]
local rttl = tonumber(ARGV[13])
if need_budget and redis.call('ZSCORE', zkey, rid .. ':x') then return {5} end
local h = redis.call('HMGET', key, 'rt', 'rc', 'tt', 'tc', 'g', 'pk', 'ps', 'sp', 'rs', 'cr')
local gen = h[5]
local spent, reserved = 0, 0
if need_budget then
  if not gen then return {1} end
  if limit >= 0 and h[6] ~= period then return {1} end
  if prepaid and not h[10] then return {1} end
  spent = num(h[8])
  reserved = num(h[9])
  local freed = purge(zkey, now)
  if freed > 0 then
    reserved = reserved - freed
    if reserved < 0 then reserved = 0 end
    redis.call('HSET', key, 'rs', d(reserved))
  end
  if limit >= 0 and num(h[7]) < pstart then spent = 0 end
  if limit >= 0 and spent + reserved + worst > limit then
    return {2, spent, reserved}
  end
  if prepaid then
    local credit = num(h[10])
    if credit - reserved - worst < 0 then return {3, credit, reserved} end
  end
end
local rq, tk = -1, -1
local ok = true
if rpm > 0 then
  rq = backlog(num(h[1]), num(h[2]), now, rpm)
  if rq + W > W * rpm then ok = false end
end
if tpm > 0 then
  tk = backlog(num(h[3]), num(h[4]), now, tpm)
  if tk + est * W > W * tpm then ok = false end
end
if not ok then return {4, rq, tk} end
local rt, tt = num(h[1]), num(h[3])
if rpm > 0 then
  rq = rq + W
  rt = put(key, 'rt', 'rc', rq, now, rpm)
end
if tpm > 0 then
  tk = tk + est * W
  tt = put(key, 'tt', 'tc', tk, now, tpm)
end
local out_gen = ''
if need_budget then
  if limit >= 0 and num(h[7]) < pstart then
    redis.call('HSET', key, 'ps', d(pstart))
  end
  redis.call('HSET', key, 'sp', d(spent), 'rs', d(reserved + worst))
  redis.call('ZADD', zkey, d(now + rttl), rid .. ':' .. d(worst))
  out_gen = gen
end
expire(key, zkey, gen, ttl, now, rt, tt)
return {0, rq, tk, out_gen}
