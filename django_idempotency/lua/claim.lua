-- claim: create a running record, or report what is already there. One atomic step.
-- KEYS[1] record   KEYS[2] wake list
-- ARGV[1] the running record to create   ARGV[2] fingerprint ('-' = do not compare)
-- ARGV[3] lease in ms
-- Returns {'claimed'} | {'mismatch'} | {'running', lease ms left} | {'stored', record}
local record = redis.call('GET', KEYS[1])
if not record then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[3])
  -- A wake token left by an earlier owner would wake our own waiters at once.
  redis.call('DEL', KEYS[2])
  return {'claimed'}
end
local state, _, fingerprint = string.match(record, '^(%S+) (%S+) (%S+) ')
if ARGV[2] ~= '-' and fingerprint ~= ARGV[2] then
  return {'mismatch'}
end
if state == 'running' then
  return {'running', redis.call('PTTL', KEYS[1])}
end
return {'stored', record}
