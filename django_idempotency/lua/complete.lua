-- complete: replace our running record with the final one and wake the waiters.
-- KEYS[1] record   KEYS[2] wake list
-- ARGV[1] owner token   ARGV[2] final record   ARGV[3] record TTL in ms   ARGV[4] wake TTL in ms
-- Returns 1, or 0 when the token no longer owns the record (lease lost: write nothing).
local record = redis.call('GET', KEYS[1])
if not record or string.match(record, '^%S+ (%S+) ') ~= ARGV[1] then
  return 0
end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
-- The element is the final record itself, so a woken waiter needs no second read.
-- One element is enough: each waiter rotates it (BLMOVE list list), so all of them see it.
redis.call('DEL', KEYS[2])
redis.call('RPUSH', KEYS[2], ARGV[2])
redis.call('PEXPIRE', KEYS[2], ARGV[4])
return 1
