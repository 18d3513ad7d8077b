-- A top-up: added to the cached credit once per id.
-- KEYS[1] the key's hash. ARGV: micros topup_id pending_ttl_ms (topup_id '' for none).
-- Adds to cached credit once per id (returns 1); without cached credit remembers an
-- identified top-up for the seed being read (returns 0).
local key = KEYS[1]
local id = ARGV[2]
if redis.call('HEXISTS', key, 'cr') == 1 then
  if id ~= '' then
    local seen = tonumber(redis.call('HGET', key, 'ti') or '0')
    if tonumber(id) <= seen then return 1 end
    redis.call('HSET', key, 'ti', id)
  end
  redis.call('HINCRBY', key, 'cr', ARGV[1])
  return 1
end
if id ~= '' then
  redis.call('HSET', key, 'pt:' .. id, ARGV[1])
  if redis.call('PTTL', key) < tonumber(ARGV[3]) then
    redis.call('PEXPIRE', key, ARGV[3])
  end
end
return 0
