package redistest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"runtime"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"
)

// alive reports whether a process with this pid exists.
func alive(pid int) bool {
	err := syscall.Kill(pid, 0)
	return err == nil || errors.Is(err, syscall.EPERM)
}

func requireGone(t *testing.T, pids []int) {
	t.Helper()
	require.NotEmpty(t, pids, "the test started no process")
	for _, pid := range pids {
		require.False(t, alive(pid), "pid %d survived its test", pid)
	}
}

func TestMini(t *testing.T) {
	m, c := Mini(t)
	ctx := context.Background()
	require.NoError(t, c.Set(ctx, "k", "v", 0).Err())
	got, err := m.Get("k")
	require.NoError(t, err)
	require.Equal(t, "v", got)
}

func TestServerAnswersAndIsKilledAtCleanup(t *testing.T) {
	LookPath(t, "redis-server", "redis-server") // skip here, not in the subtest, so the PID check below runs only with a server
	var pids []int
	t.Run("server", func(t *testing.T) {
		s := Server(t)
		ctx := context.Background()
		require.NoError(t, s.Client().Set(ctx, "k", "v", 0).Err())
		require.Equal(t, "v", s.Client().Get(ctx, "k").Val())
		info, err := s.Client().Info(ctx, "server", "persistence").Result()
		require.NoError(t, err)
		require.Equal(t, "0", infoField(info, "aof_enabled"), "persistence must be off")
		pids = s.PIDs()
		require.True(t, alive(s.PID()))
	})
	requireGone(t, pids)
}

func TestServerRestartKeepsPort(t *testing.T) {
	s := Server(t)
	ctx := context.Background()
	addr := s.Addr()
	require.NoError(t, s.Client().Set(ctx, "k", "v", 0).Err())
	oldPID := s.PID()

	s.Restart()
	require.Equal(t, addr, s.Addr())
	require.NotEqual(t, oldPID, s.PID())
	require.False(t, alive(oldPID), "the old process must be gone after Restart")
	// The shared client reconnects by itself; the data is gone since persistence is off.
	require.Eventually(t, func() bool { return s.Client().Ping(ctx).Err() == nil }, 5*time.Second, 10*time.Millisecond)
	require.ErrorIs(t, s.Client().Get(ctx, "k").Err(), redis.Nil)
}

func TestServerKill(t *testing.T) {
	s := Server(t)
	ctx := context.Background()
	require.NoError(t, s.Client().Ping(ctx).Err())
	pid := s.PID()
	s.Kill()
	require.Zero(t, s.PID())
	require.False(t, alive(pid))
	require.Error(t, s.Client().Ping(ctx).Err())
}

func TestServerPauseMakesCommandsTimeOut(t *testing.T) {
	s := Server(t)
	ctx := context.Background()
	c := s.NewClient(&redis.Options{ReadTimeout: 100 * time.Millisecond, MaxRetries: -1})
	require.NoError(t, c.Ping(ctx).Err())

	s.Pause(time.Minute)
	err := c.Ping(ctx).Err()
	var ne net.Error
	require.ErrorAs(t, err, &ne, "a paused server must make commands time out")
	require.True(t, ne.Timeout(), "want a timeout, got %v", err)

	s.Resume()
	require.Eventually(t, func() bool { return c.Ping(ctx).Err() == nil }, 5*time.Second, 10*time.Millisecond)
}

func TestServerPauseResumesByItself(t *testing.T) {
	s := Server(t)
	ctx := context.Background()
	c := s.NewClient(&redis.Options{ReadTimeout: 2 * time.Second, MaxRetries: -1})
	require.NoError(t, c.Ping(ctx).Err())
	s.Pause(50 * time.Millisecond)
	// The read timeout is far longer than the pause: the answer comes once SIGCONT is sent.
	require.NoError(t, c.Ping(ctx).Err())
}

func TestParallelServersGetDistinctPorts(t *testing.T) {
	seen := map[string]bool{}
	for range 4 {
		s := Server(t)
		require.False(t, seen[s.Addr()], "port %s handed out twice", s.Addr())
		seen[s.Addr()] = true
		require.NoError(t, s.Client().Ping(context.Background()).Err())
	}
}

// outcome records how a helper ended a test, standing in for testing.TB so that both the skip
// and the failure can be observed without ending the real test.
type outcome struct {
	testing.TB
	skipped, failed bool
	msg             string
}

func (o *outcome) Helper()          {}
func (o *outcome) Skip(args ...any) { o.skipped, o.msg = true, fmt.Sprint(args...); runtime.Goexit() }
func (o *outcome) Fatalf(f string, args ...any) {
	o.failed, o.msg = true, fmt.Sprintf(f, args...)
	runtime.Goexit()
}

// run calls fn with o on its own goroutine (Skip and Fatalf end it) and waits.
func (o *outcome) run(fn func(testing.TB)) {
	done := make(chan struct{})
	go func() { defer close(done); fn(o) }()
	<-done
}

func TestMissingBinarySkipsOrFails(t *testing.T) {
	t.Setenv("PATH", t.TempDir())
	for _, required := range []string{"", "1"} {
		t.Setenv(RequireEnv, required)
		o := &outcome{TB: t}
		o.run(func(tb testing.TB) {
			Server(tb)
			t.Error("Server returned without redis-server on PATH")
		})
		require.Equal(t, required == "", o.skipped, "%s=%q: skipped", RequireEnv, required)
		require.Equal(t, required == "1", o.failed, "%s=%q: failed", RequireEnv, required)
		require.Contains(t, o.msg, "apt-get install -y redis-server", "the message says how to install it")
	}
}

func TestClusterSurvivesMasterKill(t *testing.T) {
	if testing.Short() {
		t.Skip("cluster start takes seconds")
	}
	LookPath(t, "redis-server", "redis-server")
	LookPath(t, "redis-cli", "redis-tools")
	var pids []int
	t.Run("cluster", func(t *testing.T) {
		c := Cluster(t, 3, 1)
		ctx := context.Background()
		require.Len(t, c.Nodes(), 6)
		for _, n := range c.Nodes() {
			info, err := n.Client().ClusterInfo(ctx).Result()
			require.NoError(t, err)
			require.Equal(t, "ok", infoField(info, "cluster_state"))
		}
		const key = "surge:harness:key"
		require.NoError(t, c.Client().Set(ctx, key, "v", 0).Err())
		// WAIT counts the writes of its own connection, so write and wait on one connection to
		// the key's master.
		conn := c.MasterOf(key).Client().Conn()
		defer conn.Close()
		require.NoError(t, conn.Set(ctx, key, "v2", 0).Err())
		acked, err := conn.Wait(ctx, 1, time.Second).Result()
		require.NoError(t, err)
		require.EqualValues(t, 1, acked, "the replica must acknowledge before the kill")

		killed := c.KillMaster(key)
		require.Zero(t, killed.PID())
		require.NotEqual(t, killed.Addr(), c.MasterOf(key).Addr(), "a replica must have been promoted")
		require.Equal(t, "v2", c.Client().Get(ctx, key).Val())
		for _, n := range c.Nodes() {
			pids = append(pids, n.PIDs()...)
		}
	})
	requireGone(t, pids)
}

func TestFreePortPairs(t *testing.T) {
	p, err := FreePort()
	require.NoError(t, err)
	require.Less(t, p, 55535)
	require.True(t, listenable(p) && listenable(p+10000))
}

// A cluster without replicas cannot fail over, so a paused master must not be declared failed:
// with the 1s node timeout the others answered CLUSTERDOWN for every slot within about two
// seconds, and a test that paused a master depended on how fast a loaded machine ran it.
func TestClusterWithoutReplicasOutlastsAPausedMaster(t *testing.T) {
	if testing.Short() {
		t.Skip("cluster start takes seconds")
	}
	c := Cluster(t, 3, 0)
	ctx := context.Background()
	paused := c.Nodes()[0]
	paused.Pause(time.Minute)
	t.Cleanup(paused.Resume)
	// Not a synchronisation: the point is what has not happened once this much time passed.
	time.Sleep(4 * time.Second)
	for _, n := range c.Nodes()[1:] {
		info, err := n.Client().ClusterInfo(ctx).Result()
		require.NoError(t, err)
		require.Equal(t, "ok", infoField(info, "cluster_state"), "%s after a master was paused 4s", n.Addr())
	}
}
