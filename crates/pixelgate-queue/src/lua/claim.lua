
-- claim: ARGV[1] most events (0 only gives back expired leases), ARGV[2] lease in ms.
-- Returns {lease id or 0, events given back from expired leases, {events...}}.
local err = check_keys()
if err then return err end
local max, e1 = int_arg(1, 0, 100000)
if e1 then return e1 end
local lease_ms, e2 = int_arg(2, 1, 86400000)
if e2 then return e2 end

local now = now_ms()
local requeued = requeue_expired(now)
if max == 0 then
  return {0, requeued, {}}
end
-- Range then trim: the batch pop of the original design, made safe by the lease below. A claim
-- takes at least what it just gave back, so returned events never linger at the head where a
-- newer lease expiring later would be pushed in front of them.
local items = redis.call('LRANGE', KEYS[1], 0, math.max(max, requeued) - 1)
if #items == 0 then
  return {0, requeued, {}}
end
redis.call('LTRIM', KEYS[1], #items, -1)
local id = redis.call('HINCRBY', KEYS[3], 'seq', 1)
redis.call('HSET', KEYS[3], id, cmsgpack.pack(items), id .. ':n', #items)
redis.call('HINCRBY', KEYS[3], 'inflight', #items)
redis.call('ZADD', KEYS[2], now + lease_ms, id)
return {id, requeued, items}
