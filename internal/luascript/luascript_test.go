package luascript_test

import (
	"context"
	"testing"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/surgekit/surge/internal/luascript"
	"github.com/surgekit/surge/internal/redistest"
)

var incrBy = luascript.New("local n = tonumber(ARGV[1])\n", "return redis.call('INCRBY', KEYS[1], n)")

// cached reports whether the server holds the script with hash in its script cache.
func cached(t *testing.T, rdb redis.UniversalClient, hash string) bool {
	t.Helper()
	ok, err := rdb.ScriptExists(context.Background(), hash).Result()
	require.NoError(t, err)
	return ok[0]
}

func testRunHealsNoScript(t *testing.T, rdb redis.UniversalClient) {
	ctx := context.Background()
	require.NoError(t, rdb.ScriptFlush(ctx).Err())
	require.False(t, cached(t, rdb, incrBy.Hash()))

	n, err := incrBy.Run(ctx, rdb, []string{"{k}a"}, 2).Int64()
	require.NoError(t, err)
	require.EqualValues(t, 2, n)
	require.True(t, cached(t, rdb, incrBy.Hash()), "EVAL fallback loads the script")

	// RunAll after a flush: every call meets NOSCRIPT and is re-sent with EVAL.
	require.NoError(t, rdb.ScriptFlush(ctx).Err())
	calls := []luascript.Call{
		{Script: incrBy, Keys: []string{"{k}a"}, Args: []any{3}},
		{Script: incrBy, Keys: []string{"{k}b"}, Args: []any{4}},
		{Script: incrBy, Keys: []string{"{k}a"}, Args: []any{"not a number"}},
	}
	cmds := luascript.RunAll(ctx, rdb, calls)
	require.Len(t, cmds, 3)
	a, err := cmds[0].Int64()
	require.NoError(t, err)
	require.EqualValues(t, 5, a)
	b, err := cmds[1].Int64()
	require.NoError(t, err)
	require.EqualValues(t, 4, b)
	require.Error(t, cmds[2].Err(), "each call carries its own error")
	require.False(t, luascript.IsNoScript(cmds[2].Err()))

	// Second round: the script is cached; one round trip, same answers.
	cmds = luascript.RunAll(ctx, rdb, calls[:2])
	a, _ = cmds[0].Int64()
	b, _ = cmds[1].Int64()
	require.EqualValues(t, []int64{8, 8}, []int64{a, b})
	require.Empty(t, luascript.RunAll(ctx, rdb, nil))
}

func TestRunHealsNoScriptMini(t *testing.T) {
	_, rdb := redistest.Mini(t)
	testRunHealsNoScript(t, rdb)
}

func TestRunHealsNoScriptServer(t *testing.T) {
	s := redistest.Server(t)
	testRunHealsNoScript(t, s.Client())
}
