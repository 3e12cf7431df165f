-- Shared head of every lease script. A Redis script does not roll back, so each one checks the
-- types of its keys and its arguments before its first write.
-- KEYS[1]: the queue (list). KEYS[2]: lease deadlines (zset: lease id -> Unix ms).
-- KEYS[3]: lease data (hash: id -> msgpack array of events, "id:n" -> count,
--          "seq" -> last lease id, "inflight" -> events leased and not yet acknowledged).

local function check_type(key, want)
  local t = redis.call('TYPE', key)
  t = t.ok or t
  if t ~= 'none' and t ~= want then
    return redis.error_reply('WRONGTYPE pixelgate: ' .. key .. ' is a ' .. t .. ', expected a ' .. want)
  end
end

local function check_keys()
  return check_type(KEYS[1], 'list') or check_type(KEYS[2], 'zset') or check_type(KEYS[3], 'hash')
end

local function int_arg(i, lo, hi)
  local v = tonumber(ARGV[i])
  if v == nil or v ~= math.floor(v) or v < lo or v > hi then
    return nil, redis.error_reply('ERR pixelgate: argument ' .. i .. ' must be a whole number from ' .. lo .. ' to ' .. hi)
  end
  return v
end

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- Puts one lease's events back at the head of the queue in their original order and forgets
-- the lease. Returns how many events went back.
local function requeue(id)
  redis.call('ZREM', KEYS[2], id)
  local packed = redis.call('HGET', KEYS[3], id)
  if not packed then
    return 0
  end
  local events = cmsgpack.unpack(packed)
  -- LPUSH puts its last argument at the head, so push from the end, in chunks that fit
  -- Lua's argument limit.
  local i = #events
  while i >= 1 do
    local chunk = {}
    local stop = math.max(1, i - 999)
    for j = i, stop, -1 do
      chunk[#chunk + 1] = events[j]
    end
    redis.call('LPUSH', KEYS[1], unpack(chunk))
    i = stop - 1
  end
  redis.call('HDEL', KEYS[3], id, id .. ':n')
  redis.call('HINCRBY', KEYS[3], 'inflight', -#events)
  return #events
end

-- Gives back every lease whose deadline has passed. The newest lease goes first, so the events
-- of the oldest lease end up at the very head: nothing jumps the queue.
local function requeue_expired(now)
  local ids = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now)
  table.sort(ids, function(a, b) return tonumber(a) > tonumber(b) end)
  local n = 0
  for _, id in ipairs(ids) do
    n = n + requeue(id)
  end
  return n
end
