-- MightContain of one or more keys in one shard (after config.lua).
-- KEYS[1] bitmap, KEYS[2] config (same hash tag)
-- ARGV[1] expected config, ARGV[2] the keys' bit offsets, 4 bytes little-endian each,
-- ARGV[3] k, the offsets per key
-- Returns a string with one character per key: '1' when all its bits are set, else '0'; the
-- empty string when the shard was never written; an error reply "BLOOMCONFIG <stored>" when the
-- stored config differs (or is missing while the bitmap exists).
local offs, k = ARGV[2], tonumber(ARGV[3])
local state = check_config()
if state == 'new' then
  return '' -- never written: nothing is in it
elseif state ~= 'ok' then
  return redis.error_reply(state)
end
local out = {}
for j = 0, #offs / (4 * k) - 1 do
  local hit = '1'
  local first = j * 4 * k + 1
  for i = first, first + 4 * (k - 1), 4 do
    local a, b, c, d = string.byte(offs, i, i + 3)
    if redis.call('GETBIT', KEYS[1], a + b * 256 + c * 65536 + d * 16777216) == 0 then
      hit = '0'
      break
    end
  end
  out[j + 1] = hit
end
return table.concat(out)
