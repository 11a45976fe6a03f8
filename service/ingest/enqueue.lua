-- De-duplicate a batch of webhooks and enqueue the new ones as one dramatiq message, atomically.
-- KEYS: messages hash, queue list, then the seen key of each event.
-- ARGV: dedupe ttl (s), the message's Redis id, the message's prefix and suffix, then each event's JSON item.
-- Returns one 1 (new, enqueued) or 0 (seen before) per event.
local ttl = ARGV[1]
local redis_id = ARGV[2]
local items = {}
local results = {}
for i = 1, #KEYS - 2 do
  if redis.call('SET', KEYS[i + 2], redis_id, 'NX', 'EX', ttl) then
    items[#items + 1] = ARGV[i + 4]
    results[i] = 1
  else
    results[i] = 0
  end
end
if #items > 0 then
  redis.call('HSET', KEYS[1], redis_id, ARGV[3] .. '[' .. table.concat(items, ',') .. ']' .. ARGV[4])
  redis.call('RPUSH', KEYS[2], redis_id)
end
return results
