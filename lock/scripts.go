package lock

import (
	_ "embed"

	"github.com/surgekit/surge/internal/luascript"
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

// The scripts run with [luascript.Script.Run]: EVALSHA, falling back to EVAL after a flush or
// failover. Every script touches only keys of one lock, which share one hash tag.
var (
	acquireScript = luascript.New(acquireLua)
	releaseScript = luascript.New(ownerLua, releaseLua)
	refreshScript = luascript.New(ownerLua, refreshLua)
	ttlScript     = luascript.New(ownerLua, ttlLua)
	fenceScript   = luascript.New(ownerLua, fenceLua)
)

// ttlNotHeld is what ttl.lua answers when the token does not own the key.
const ttlNotHeld = -3
