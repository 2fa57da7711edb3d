package redistest

import (
	"context"
	"fmt"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// clusterReadyTimeout bounds the wait for a new cluster (slots assigned, replicas in sync) and
// for a failover after [RedisCluster.KillMaster].
const clusterReadyTimeout = 60 * time.Second

// RedisCluster is a real Redis Cluster on loopback ports, owned by one test.
type RedisCluster struct {
	t        testing.TB
	nodes    []*RedisServer
	replicas int
	client   *redis.ClusterClient
}

// Cluster starts masters*(1+replicasPerMaster) redis-server nodes with cluster mode on, joins
// them with `redis-cli --cluster create`, and waits until every node reports cluster_state:ok and
// every master lists its replicas online. It takes several seconds: start one per test package
// and share it. Skips (or fails, with SURGE_REQUIRE_SERVERS=1) when redis-server or redis-cli is
// missing. Every node is killed when t ends.
func Cluster(t testing.TB, masters, replicasPerMaster int) *RedisCluster {
	t.Helper()
	if masters < 3 {
		t.Fatalf("redistest: Cluster needs at least 3 masters, got %d", masters)
	}
	cli := LookPath(t, "redis-cli", "redis-tools")
	c := &RedisCluster{t: t, replicas: replicasPerMaster}
	// With replicas, a short node timeout lets a failover finish within a test. Without them
	// no failover can happen, and a short timeout only makes the other masters declare a
	// paused one failed and answer CLUSTERDOWN for every slot: a test that pauses a master
	// would then depend on how fast a loaded machine runs it.
	nodeTimeout := "1000"
	if replicasPerMaster == 0 {
		nodeTimeout = "60000"
	}
	for range masters * (1 + replicasPerMaster) {
		c.nodes = append(c.nodes, Server(t, WithArgs(
			"--cluster-enabled", "yes",
			"--cluster-config-file", "nodes.conf",
			"--cluster-node-timeout", nodeTimeout,
			"--cluster-require-full-coverage", "yes",
		)))
	}
	args := []string{"--cluster", "create"}
	for _, n := range c.nodes {
		args = append(args, n.Addr())
	}
	args = append(args, "--cluster-replicas", strconv.Itoa(replicasPerMaster), "--cluster-yes")
	if out, err := exec.Command(cli, args...).CombinedOutput(); err != nil {
		t.Fatalf("redistest: redis-cli --cluster create: %v\n%s", err, out)
	}
	c.waitHealthy(nil)

	addrs := make([]string, len(c.nodes))
	for i, n := range c.nodes {
		addrs[i] = n.Addr()
	}
	c.client = redis.NewClusterClient(&redis.ClusterOptions{Addrs: addrs})
	t.Cleanup(func() { _ = c.client.Close() })
	return c
}

// Client returns a cluster client for all nodes, shared and closed when t ends.
func (c *RedisCluster) Client() *redis.ClusterClient { return c.client }

// Nodes returns every node, masters and replicas, in start order.
func (c *RedisCluster) Nodes() []*RedisServer { return slices.Clone(c.nodes) }

// MasterOf returns the node currently serving key's slot as master.
func (c *RedisCluster) MasterOf(key string) *RedisServer {
	c.t.Helper()
	ctx := context.Background()
	slot, err := c.anyLive().Client().ClusterKeySlot(ctx, key).Result()
	if err != nil {
		c.t.Fatalf("redistest: CLUSTER KEYSLOT: %v", err)
	}
	for _, n := range c.live() {
		nodes, err := n.Client().ClusterNodes(ctx).Result()
		if err != nil {
			continue
		}
		for _, ln := range parseNodes(nodes) {
			if ln.master && !ln.failed && ln.serves(int(slot)) {
				for _, cand := range c.live() {
					if cand.Addr() == ln.addr {
						return cand
					}
				}
			}
		}
	}
	c.t.Fatalf("redistest: no live master serves slot %d", slot)
	return nil
}

// KillMaster kills the master serving key's slot, waits until one of its replicas has been
// promoted and every live node reports cluster_state:ok, refreshes the client's slot map and
// returns the killed node. Write with `WAIT 1 1000` before calling it if the test needs the data
// to survive.
func (c *RedisCluster) KillMaster(key string) *RedisServer {
	c.t.Helper()
	if c.replicas == 0 {
		c.t.Fatal("redistest: KillMaster needs a cluster with replicas")
	}
	m := c.MasterOf(key)
	m.Kill()
	c.waitHealthy(m)
	ctx := context.Background()
	c.client.ReloadState(ctx)
	// ReloadState is asynchronous: wait until the client routes key to a live master.
	deadline := time.Now().Add(clusterReadyTimeout)
	for {
		err := c.client.Exists(ctx, key).Err()
		if err == nil {
			return m
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("redistest: client still failing after failover: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (c *RedisCluster) live() []*RedisServer {
	var out []*RedisServer
	for _, n := range c.nodes {
		if n.PID() != 0 {
			out = append(out, n)
		}
	}
	return out
}

func (c *RedisCluster) anyLive() *RedisServer {
	if l := c.live(); len(l) > 0 {
		return l[0]
	}
	c.t.Fatal("redistest: no live cluster node")
	return nil
}

// waitHealthy waits until every live node says cluster_state:ok, every slot is served by a live
// master, and every master has its replicas online (a dead node, if given, is not counted).
func (c *RedisCluster) waitHealthy(dead *RedisServer) {
	c.t.Helper()
	ctx := context.Background()
	deadline := time.Now().Add(clusterReadyTimeout)
	var why string
	for time.Now().Before(deadline) {
		why = c.unhealthy(ctx, dead)
		if why == "" {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	c.t.Fatalf("redistest: cluster not healthy after %v: %s", clusterReadyTimeout, why)
}

func (c *RedisCluster) unhealthy(ctx context.Context, dead *RedisServer) string {
	live := c.live()
	for _, n := range live {
		info, err := n.Client().ClusterInfo(ctx).Result()
		if err != nil {
			return fmt.Sprintf("%s: CLUSTER INFO: %v", n.Addr(), err)
		}
		if infoField(info, "cluster_state") != "ok" {
			return fmt.Sprintf("%s: cluster_state %s", n.Addr(), infoField(info, "cluster_state"))
		}
	}
	nodes, err := live[0].Client().ClusterNodes(ctx).Result()
	if err != nil {
		return fmt.Sprintf("CLUSTER NODES: %v", err)
	}
	covered := 0
	for _, ln := range parseNodes(nodes) {
		if !ln.master || ln.failed || (dead != nil && ln.addr == dead.Addr()) {
			continue
		}
		covered += ln.slotCount()
		var srv *RedisServer
		for _, n := range live {
			if n.Addr() == ln.addr {
				srv = n
			}
		}
		if srv == nil {
			return fmt.Sprintf("master %s is not a live node", ln.addr)
		}
		// After a failover the promoted shard has a replica fewer; only the start waits for replicas.
		want := c.replicas
		if dead != nil {
			want = 0
		}
		repl, err := srv.Client().Info(ctx, "replication").Result()
		if err != nil {
			return fmt.Sprintf("%s: INFO replication: %v", ln.addr, err)
		}
		if online := strings.Count(repl, "state=online"); online < want {
			return fmt.Sprintf("master %s has %d of %d replicas online", ln.addr, online, want)
		}
	}
	if covered != 16384 {
		return fmt.Sprintf("%d of 16384 slots served", covered)
	}
	return ""
}

// nodeLine is one parsed line of CLUSTER NODES.
type nodeLine struct {
	id, addr, masterID string
	master, failed     bool
	slots              [][2]int
}

func (n nodeLine) serves(slot int) bool {
	for _, r := range n.slots {
		if slot >= r[0] && slot <= r[1] {
			return true
		}
	}
	return false
}

func (n nodeLine) slotCount() int {
	total := 0
	for _, r := range n.slots {
		total += r[1] - r[0] + 1
	}
	return total
}

// parseNodes parses CLUSTER NODES output:
// <id> <ip:port@cport> <flags> <master> <ping> <pong> <epoch> <link> <slot>...
func parseNodes(s string) []nodeLine {
	var out []nodeLine
	for line := range strings.Lines(s) {
		f := strings.Fields(line)
		if len(f) < 8 {
			continue
		}
		addr, _, _ := strings.Cut(f[1], "@")
		n := nodeLine{id: f[0], addr: addr, masterID: f[3]}
		for flag := range strings.SplitSeq(f[2], ",") {
			switch flag {
			case "master":
				n.master = true
			case "fail", "fail?", "noaddr":
				n.failed = true
			}
		}
		for _, sl := range f[8:] {
			if strings.HasPrefix(sl, "[") {
				continue // a slot being migrated or imported
			}
			lo, hi, isRange := strings.Cut(sl, "-")
			a, err1 := strconv.Atoi(lo)
			b := a
			var err2 error
			if isRange {
				b, err2 = strconv.Atoi(hi)
			}
			if err1 == nil && err2 == nil {
				n.slots = append(n.slots, [2]int{a, b})
			}
		}
		out = append(out, n)
	}
	return out
}
