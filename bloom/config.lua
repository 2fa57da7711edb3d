-- Prelude of add.lua and contains.lua (prepended in Go): the shard's config check.
-- KEYS[1] bitmap, KEYS[2] config, ARGV[1] the config the caller expects.
-- Returns 'ok' when the stored config matches, 'new' when the shard was never written, else the
-- error text 'BLOOMCONFIG <stored>' (a bitmap without config counts as a mismatch).
local function check_config()
  local cfg = redis.call('GET', KEYS[2])
  if cfg == ARGV[1] then
    return 'ok'
  end
  if cfg then
    return 'BLOOMCONFIG ' .. cfg
  end
  if redis.call('EXISTS', KEYS[1]) == 1 then
    return 'BLOOMCONFIG <missing>'
  end
  return 'new'
end

