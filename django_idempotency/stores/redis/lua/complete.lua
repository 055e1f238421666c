-- complete: replace our running record with the final one; tell waiters if there are any.
-- KEYS[1] record
-- ARGV[1] owner token   ARGV[2] final record   ARGV[3] record TTL in ms   ARGV[4] channel
-- Returns 1, or 0 when the token no longer owns the record (the lease was lost: write
-- nothing). A retried call whose first attempt succeeded finds its own record: 1.
local record = redis.call('GET', KEYS[1])
if not record or string.byte(record, 1) ~= 82 or string.sub(record, 5, 16) ~= ARGV[1] then
  if record == ARGV[2] then
    return 1
  end
  return 0
end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
if string.byte(record, 2) == 119 then
  redis.call('PUBLISH', ARGV[4], KEYS[1] .. ' D')
end
return 1
