package benchcmp

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/zeromicro/go-zero/core/logx"

	"github.com/surgekit/surge/internal/redistest"
)

// redisAddr is the shared redis-server, started once by TestMain for every benchmark. Kafka
// benchmarks start their own in-process kfake cluster (internal/kafkatest).
var redisAddr string

// newRedis returns a client for the shared server, with a pool large enough for the parallel
// benchmarks, closed when b ends.
func newRedis(b testing.TB) *redis.Client {
	c := redis.NewClient(&redis.Options{Addr: redisAddr, PoolSize: 64})
	b.Cleanup(func() { _ = c.Close() })
	return c
}

// flush empties the shared server between benchmarks so one's keys do not skew another's.
func flush(b testing.TB, c *redis.Client) {
	if err := c.FlushAll(context.Background()).Err(); err != nil {
		b.Fatal(err)
	}
}

func TestMain(m *testing.M) {
	logx.Disable() // go-zero would print stat lines into the benchmark output
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		fmt.Fprintln(os.Stderr, "benchcmp: redis-server is not on PATH (apt-get install -y redis-server)")
		os.Exit(1)
	}
	port, err := redistest.FreePort()
	if err != nil {
		fmt.Fprintln(os.Stderr, "benchcmp:", err)
		os.Exit(1)
	}
	dir, _ := os.MkdirTemp("", "benchcmp")
	cmd := exec.Command(bin, "--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--save", "",
		"--appendonly", "no", "--dir", dir, "--logfile", filepath.Join(dir, "redis.log"))
	if err := cmd.Start(); err != nil {
		fmt.Fprintln(os.Stderr, "benchcmp: start redis-server:", err)
		os.Exit(1)
	}
	redisAddr = net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	c := redis.NewClient(&redis.Options{Addr: redisAddr})
	deadline := time.Now().Add(10 * time.Second)
	for c.Ping(context.Background()).Err() != nil {
		if time.Now().After(deadline) {
			fmt.Fprintln(os.Stderr, "benchcmp: redis-server did not answer")
			_ = cmd.Process.Kill()
			os.Exit(1)
		}
		time.Sleep(10 * time.Millisecond)
	}
	_ = c.Close()

	code := m.Run()
	_ = cmd.Process.Kill()
	_ = cmd.Wait()
	_ = os.RemoveAll(dir)
	os.Exit(code)
}
