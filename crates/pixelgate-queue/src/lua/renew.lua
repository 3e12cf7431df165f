
-- renew: ARGV[1] lease id, ARGV[2] lease in ms from now. Returns 1, or 0 when the lease is gone.
local err = check_keys()
if err then return err end
local id, e1 = int_arg(1, 1, 9007199254740991)
if e1 then return e1 end
local lease_ms, e2 = int_arg(2, 1, 86400000)
if e2 then return e2 end

if not redis.call('ZSCORE', KEYS[2], id) then
  return 0
end
redis.call('ZADD', KEYS[2], 'XX', now_ms() + lease_ms, id)
return 1
