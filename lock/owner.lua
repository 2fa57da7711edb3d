-- owner.lua is prepended to release, refresh, ttl and fence: it defines owned(key, token), true
-- when key's value belongs to token. A value is "<token>:<fence>:<metadata>"; the whole token is
-- compared (it must not contain ':', so neither a prefix nor a longer string can match).
local function owned(key, token)
  if token == '' or string.find(token, ':', 1, true) then
    return false
  end
  local v = redis.call('GET', key)
  return v and string.sub(v, 1, #token + 1) == token .. ':'
end
