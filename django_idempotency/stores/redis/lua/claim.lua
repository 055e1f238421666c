-- claim: create our running record, or report the record already there. One atomic step.
-- KEYS[1] record
-- ARGV[1] the running record to create   ARGV[2] lease in ms
-- Returns 0 when we created it (we own the key now); the record when it is final; or
-- {record, lease ms left} when another caller is running it. In that last case the
-- record's waiter flag (its second byte) is set, so the owner's completion is published.
-- A running record flagged "refuse" (bit 16 of its fourth byte) is kept its hold (12
-- digits of ms, 28 bytes from its end) past its lease: its lease ms left is then 0 or
-- less once the owner died unfinished, and the claim reports it so instead of taking it.
local record = redis.call('GET', KEYS[1])
if not record then
  local px = ARGV[2]
  if bit.band(string.byte(ARGV[1], 4), 16) ~= 0 then
    px = px + tonumber(string.sub(ARGV[1], -28, -17))
  end
  redis.call('SET', KEYS[1], ARGV[1], 'PX', px)
  return 0
end
if string.byte(record, 1) == 82 then -- 'R': running
  if string.byte(record, 2) ~= 119 then -- not yet 'w'
    redis.call('SETRANGE', KEYS[1], 1, 'w')
  end
  local left = redis.call('PTTL', KEYS[1])
  if bit.band(string.byte(record, 4), 16) ~= 0 then
    left = left - tonumber(string.sub(record, -28, -17))
  end
  return {record, left}
end
return record
