-- The key's live state, for the admin API.
-- KEYS[1] the key's hash, KEYS[2] its reservations. ARGV: now_ms.
-- Returns {hash fields and values, micros of the reservations expired unsettled}.
local gone, freed = expired(KEYS[2], tonumber(ARGV[1]))
return {redis.call('HGETALL', KEYS[1]), d(freed)}
