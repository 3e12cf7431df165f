-- Stream mode's write: appends a batch of events to the stream, or none of them when that
-- would take the stream past its cap (the drain is that far behind). The writer then spools
-- the batch instead, so no answered event is trimmed away before a drain took it.
-- KEYS[1]: the stream. ARGV[1]: the cap (queue.stream_maxlen). ARGV[2..]: the events.
-- Returns the stream's length after the batch, or the error `FULL pixelgate: ...`.

local t = redis.call('TYPE', KEYS[1])
t = t.ok or t
if t ~= 'none' and t ~= 'stream' then
  return redis.error_reply('WRONGTYPE pixelgate: ' .. KEYS[1] .. ' is a ' .. t .. ', expected a stream')
end
local cap = tonumber(ARGV[1])
if cap == nil or cap ~= math.floor(cap) or cap < 1 then
  return redis.error_reply('ERR pixelgate: argument 1 must be a whole number of entries')
end
local len = redis.call('XLEN', KEYS[1])
local after = len + #ARGV - 1
if after > cap then
  return redis.error_reply('FULL pixelgate: ' .. KEYS[1] .. ' holds ' .. len .. ' of ' .. cap .. ' entries')
end
for i = 2, #ARGV do
  redis.call('XADD', KEYS[1], '*', 'event', ARGV[i])
end
return after
