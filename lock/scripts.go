package lock

import (
	_ "embed"

	"github.com/redis/go-redis/v9"
)

var (
	//go:embed owner.lua
	ownerLua string
	//go:embed acquire.lua
	acquireLua string
	//go:embed release.lua
	releaseLua string
	//go:embed refresh.lua
	refreshLua string
	//go:embed ttl.lua
	ttlLua string
	//go:embed fence.lua
	fenceLua string
)

// The scripts run with [redis.Script.Run]: EVALSHA, falling back to EVAL after a flush or failover.
// Every script touches only the lock key and its fence counter, which share one hash tag.
var (
	acquireScript = redis.NewScript(acquireLua)
	releaseScript = redis.NewScript(ownerLua + releaseLua)
	refreshScript = redis.NewScript(ownerLua + refreshLua)
	ttlScript     = redis.NewScript(ownerLua + ttlLua)
	fenceScript   = redis.NewScript(ownerLua + fenceLua)
)

// ttlNotHeld is what ttl.lua answers when the token does not own the key.
const ttlNotHeld = -3
