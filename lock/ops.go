package lock

import (
	"context"

	"github.com/redis/go-redis/v9"
)

// op names the script an operation runs on one node.
type op int8

const (
	opAcquire op = iota // arg: ttl in ms; reply: fence, or -(holder's PTTL)
	opRelease           // reply: 1 when released
	opRefresh           // arg: ttl in ms; reply: 1 when extended
	opTTL               // reply: PTTL in ms, or ttlNotHeld
	opFence             // arg: fence; reply: 1 when the counter is at least arg
)

// run runs op for l on one node, through s (a client, or a dedicated connection).
func (l *Lock) run(ctx context.Context, s redis.Scripter, o op, arg int64) (int64, error) {
	var cmd *redis.Cmd
	switch o {
	case opAcquire:
		cmd = acquireScript.Run(ctx, s, l.keys[:], l.token, arg, l.meta)
	case opRelease:
		cmd = releaseScript.Run(ctx, s, l.keys[:1], l.token, releaseChannel(l.keys[0]))
	case opRefresh:
		cmd = refreshScript.Run(ctx, s, l.keys[:1], l.token, arg)
	case opTTL:
		cmd = ttlScript.Run(ctx, s, l.keys[:1], l.token)
	default:
		cmd = fenceScript.Run(ctx, s, l.keys[:], l.token, arg)
	}
	return cmd.Int64()
}

// releaseChannel is the pub/sub channel release.lua publishes on; waiters subscribe to it.
func releaseChannel(lockKey string) string {
	return lockKey + ":released"
}
