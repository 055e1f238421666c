-- release: drop our running record so a retry may run the action, and wake the waiters.
-- KEYS[1] record   KEYS[2] wake list
-- ARGV[1] owner token   ARGV[2] wake TTL in ms
-- Returns 1, or 0 when the token no longer owns the record.
local record = redis.call('GET', KEYS[1])
if not record or string.match(record, '^%S+ (%S+) ') ~= ARGV[1] then
  return 0
end
redis.call('DEL', KEYS[1], KEYS[2])
redis.call('RPUSH', KEYS[2], '1')
redis.call('PEXPIRE', KEYS[2], ARGV[2])
return 1
