package cache

import (
	"context"
	_ "embed"

	"github.com/redis/go-redis/v9"
)

var (
	//go:embed fill.lua
	fillSrc    string
	fillScript = redis.NewScript(fillSrc)

	//go:embed claim.lua
	claimSrc    string
	claimScript = redis.NewScript(claimSrc)
)

// scriptCall is one script run inside a pipeline.
type scriptCall struct {
	s    *redis.Script
	keys []string
	args []any
}

// runScripts runs calls in one pipelined round trip (per cluster node) with EVALSHA and re-runs
// the ones that met NOSCRIPT (after a flush or failover) with EVAL. It returns one Cmd per call;
// each Cmd carries its own error.
func runScripts(ctx context.Context, rdb redis.UniversalClient, calls []scriptCall) []*redis.Cmd {
	if len(calls) == 1 {
		return []*redis.Cmd{calls[0].s.Run(ctx, rdb, calls[0].keys, calls[0].args...)}
	}
	cmds := make([]*redis.Cmd, len(calls))
	_, _ = rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, cl := range calls {
			cmds[i] = cl.s.EvalSha(ctx, p, cl.keys, cl.args...)
		}
		return nil
	})
	var retry []int
	for i, cmd := range cmds {
		if redis.HasErrorPrefix(cmd.Err(), "NOSCRIPT") {
			retry = append(retry, i)
		}
	}
	if len(retry) > 0 {
		_, _ = rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
			for _, i := range retry {
				cmds[i] = calls[i].s.Eval(ctx, p, calls[i].keys, calls[i].args...)
			}
			return nil
		})
	}
	return cmds
}
