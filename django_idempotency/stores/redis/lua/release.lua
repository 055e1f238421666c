-- release: drop our running record so a retry may run the action; tell waiters.
-- KEYS[1] record
-- ARGV[1] owner token   ARGV[2] channel
-- Returns 1, or 0 when the token no longer owns the record.
local record = redis.call('GET', KEYS[1])
if not record or string.byte(record, 1) ~= 82 or string.sub(record, 5, 16) ~= ARGV[1] then
  return 0
end
redis.call('DEL', KEYS[1])
if string.byte(record, 2) == 119 then
  redis.call('PUBLISH', ARGV[2], KEYS[1] .. ' R')
end
return 1
