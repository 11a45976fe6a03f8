-- Synctrack's own atomic writes into dramatiq's Redis layout (see redis_queues.py).
-- ARGV[1] names the command, ARGV[2] is how many rings a doorbell keeps at most.
local command = ARGV[1]

local function ring(bell)
  redis.call('LPUSH', bell, '1')
  redis.call('LTRIM', bell, 0, tonumber(ARGV[2]) - 1)
end

if command == 'enqueue_unseen' then
  -- KEYS: queue list, messages hash, doorbell, then one key per item.
  -- ARGV: command, rings, key ttl (s), the message's Redis id, its prefix and suffix, then one JSON item per key.
  local ttl = ARGV[3]
  local redis_id = ARGV[4]
  local items = {}
  local results = {}
  for i = 4, #KEYS do
    if redis.call('SET', KEYS[i], redis_id, 'NX', 'EX', ttl) then
      items[#items + 1] = ARGV[i + 3]
      results[i - 3] = 1
    else
      results[i - 3] = 0
    end
  end
  if #items > 0 then
    redis.call('HSET', KEYS[2], redis_id, ARGV[5] .. '[' .. table.concat(items, ',') .. ']' .. ARGV[6])
    redis.call('RPUSH', KEYS[1], redis_id)
    ring(KEYS[3])
  end
  return results

elseif command == 'redrive' then
  -- KEYS: dead-letter set, dead-letter messages hash, queue list, queue messages hash, doorbell.
  -- ARGV: command, rings, the dead letter's Redis id, the new message's Redis id, the new message.
  if redis.call('ZREM', KEYS[1], ARGV[3]) == 1 then
    redis.call('HDEL', KEYS[2], ARGV[3])
    redis.call('HSET', KEYS[4], ARGV[4], ARGV[5])
    redis.call('RPUSH', KEYS[3], ARGV[4])
    ring(KEYS[5])
    return 1
  end
  return 0

elseif command == 'peek' then
  -- KEYS: per queue its list, its messages hash, its delay queue's list, its dead-letter set.
  -- Returns per queue: messages waiting, the oldest one's enqueue time (ms, -1: none), delayed, dead letters.
  local out = {}
  for i = 1, #KEYS, 4 do
    local waiting = redis.call('LLEN', KEYS[i])
    local oldest = -1
    if waiting > 0 then
      local message = redis.call('HGET', KEYS[i + 1], redis.call('LINDEX', KEYS[i], 0))
      if message then
        -- The message's own field ends its JSON; a body inside it is a JSON string, whose quotes are escaped.
        for stamp in string.gmatch(message, '"message_timestamp":%s*(%d+)') do
          oldest = tonumber(stamp)
        end
      end
    end
    out[#out + 1] = waiting
    out[#out + 1] = oldest
    out[#out + 1] = redis.call('LLEN', KEYS[i + 2])
    out[#out + 1] = redis.call('ZCARD', KEYS[i + 3])
  end
  return out
end
return redis.error_reply('unknown command ' .. tostring(command))
