
-- ack: ARGV[1] lease id. Forgets the lease once its sink committed.
-- Returns how many events it held, or 0 when the lease was already given back.
local err = check_keys()
if err then return err end
local id, e1 = int_arg(1, 1, 9007199254740991)
if e1 then return e1 end

local n = redis.call('HGET', KEYS[3], id .. ':n')
if not n then
  return 0
end
redis.call('HDEL', KEYS[3], id, id .. ':n')
redis.call('ZREM', KEYS[2], id)
redis.call('HINCRBY', KEYS[3], 'inflight', -tonumber(n))
return tonumber(n)
