// Package luascript is the one way surge runs its Lua scripts: EVALSHA first, EVAL when the
// server answers NOSCRIPT (after SCRIPT FLUSH, a restart or a failover to a replica that never
// saw the script), so a lost script cache heals on the next call. [RunAll] sends many calls in
// one pipelined round trip (per node on a cluster client), and a [Pipe] gathers the calls of
// concurrent callers into such round trips.
//
// Every script takes all of its data as KEYS and ARGV; the keys of one call share one hash tag.
package luascript

import (
	"context"
	"strings"

	"github.com/redis/go-redis/v9"
)

// Script is a Lua script known by its SHA1. It is safe for concurrent use; build it once, as a
// package variable next to the embedded source.
type Script struct {
	s *redis.Script
}

// New returns the script made of srcs joined in order (a shared prelude, then the body).
func New(srcs ...string) *Script {
	return &Script{s: redis.NewScript(strings.Join(srcs, ""))}
}

// Hash returns the script's SHA1, as EVALSHA takes it.
func (s *Script) Hash() string { return s.s.Hash() }

// Run runs the script once with EVALSHA, re-sending it with EVAL on NOSCRIPT.
func (s *Script) Run(ctx context.Context, rdb redis.Scripter, keys []string, args ...any) *redis.Cmd {
	return s.s.Run(ctx, rdb, keys, args...)
}

// EvalSha queues (on a pipeline) or runs EVALSHA. A caller using it on its own pipeline must
// handle NOSCRIPT itself (see [IsNoScript]); [RunAll] does that.
func (s *Script) EvalSha(ctx context.Context, c redis.Scripter, keys []string, args ...any) *redis.Cmd {
	return s.s.EvalSha(ctx, c, keys, args...)
}

// Eval queues (on a pipeline) or runs EVAL with the full source.
func (s *Script) Eval(ctx context.Context, c redis.Scripter, keys []string, args ...any) *redis.Cmd {
	return s.s.Eval(ctx, c, keys, args...)
}

// IsNoScript reports whether err is the server's NOSCRIPT answer.
func IsNoScript(err error) bool { return redis.HasErrorPrefix(err, "NOSCRIPT") }

// Call is one script run inside [RunAll].
type Call struct {
	Script *Script
	Keys   []string
	Args   []any
}

// RunAll runs calls in one pipelined round trip (one per node on a cluster client) with EVALSHA,
// then re-sends with EVAL, in a second round trip, only the calls that met NOSCRIPT. It returns one
// Cmd per call, in the order of calls; each carries its own error (a pipeline error is reported on
// every command it affected). One call is run directly, without a pipeline.
func RunAll(ctx context.Context, rdb redis.Cmdable, calls []Call) []*redis.Cmd {
	cmds := make([]*redis.Cmd, len(calls))
	switch len(calls) {
	case 0:
		return cmds
	case 1:
		c := calls[0]
		cmds[0] = c.Script.Run(ctx, rdb, c.Keys, c.Args...)
		return cmds
	}
	_, _ = rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, c := range calls {
			cmds[i] = c.Script.EvalSha(ctx, p, c.Keys, c.Args...)
		}
		return nil
	})
	var retry []int
	for i, cmd := range cmds {
		if IsNoScript(cmd.Err()) {
			retry = append(retry, i)
		}
	}
	if len(retry) == 0 {
		return cmds
	}
	_, _ = rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for _, i := range retry {
			c := calls[i]
			cmds[i] = c.Script.Eval(ctx, p, c.Keys, c.Args...)
		}
		return nil
	})
	return cmds
}
