package cache

import (
	_ "embed"

	"github.com/surgekit/surge/internal/luascript"
)

// The cache's Lua scripts, one .lua file each, run through internal/luascript.
var (
	//go:embed fill.lua
	fillLua    string
	fillScript = luascript.New(fillLua)

	//go:embed claim.lua
	claimLua    string
	claimScript = luascript.New(claimLua)

	//go:embed set.lua
	setLua    string
	setScript = luascript.New(setLua)

	//go:embed delete.lua
	deleteLua    string
	deleteScript = luascript.New(deleteLua)

	//go:embed renew.lua
	renewLua    string
	renewScript = luascript.New(renewLua)
)
