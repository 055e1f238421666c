-- renew: extend the lease of a running record we still own.
-- KEYS[1] record
-- ARGV[1] owner token   ARGV[2] lease in ms
-- Returns 1, or 0 when the token no longer owns the record (the lease was lost).
-- A record flagged "refuse" (see claim) stays its hold past the lease.
local record = redis.call('GET', KEYS[1])
if not record or string.byte(record, 1) ~= 82 or string.sub(record, 5, 16) ~= ARGV[1] then
  return 0
end
local lease = tonumber(ARGV[2])
if bit.band(string.byte(record, 4), 16) ~= 0 then
  lease = lease + tonumber(string.sub(record, -28, -17))
end
redis.call('PEXPIRE', KEYS[1], lease)
return 1
