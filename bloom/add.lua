-- Add of one or more keys to one shard (after config.lua).
-- KEYS[1] bitmap, KEYS[2] config (same hash tag)
-- ARGV[1] expected config, ARGV[2] the keys' bit offsets, 4 bytes little-endian each,
-- ARGV[3] '1' when the script may create a never-written shard (storing its config), else '0'
-- Returns 1 when the bits are set, 0 (and no write) when the shard is new and ARGV[3] is '0';
-- an error reply "BLOOMCONFIG <stored>" (and no write) when the stored config differs or is
-- missing while the bitmap exists.
local state = check_config()
if state == 'new' then
  if ARGV[3] ~= '1' then
    return 0
  end
  redis.call('SET', KEYS[2], ARGV[1])
elseif state ~= 'ok' then
  return redis.error_reply(state)
end
local offs = ARGV[2]
for i = 1, #offs, 4 do
  local a, b, c, d = string.byte(offs, i, i + 3)
  redis.call('SETBIT', KEYS[1], a + b * 256 + c * 65536 + d * 16777216, 1)
end
return 1
