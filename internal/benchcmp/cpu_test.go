package benchcmp

import (
	"context"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// CPU per operation is what the side-by-side benchmarks report beside wall clock: client and
// redis-server share the machine's cores, so throughput is made of it, and a busy machine
// distorts it far less than it distorts wall-clock rates.

// processCPU returns the user + system CPU time this process (benchmark goroutines, clients,
// in-process brokers, GC) has used so far.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// serverCPU returns the user + system CPU time redis-server has used so far (INFO cpu).
func serverCPU(b *testing.B, rdb *redis.Client) time.Duration {
	s := infoField(b, rdb, "cpu", "used_cpu_sys", "") + infoField(b, rdb, "cpu", "used_cpu_user", "")
	return time.Duration(s * float64(time.Second))
}

// infoField returns the float value of name in an INFO section's "name:value" lines, or, with
// sub, of "sub=value" inside it (commandstats lines); 0 when absent.
func infoField(b *testing.B, rdb *redis.Client, section, name, sub string) float64 {
	s, err := rdb.Info(context.Background(), section).Result()
	if err != nil {
		b.Fatal(err)
	}
	for line := range strings.Lines(s) {
		v, ok := strings.CutPrefix(strings.TrimSpace(line), name+":")
		if !ok {
			continue
		}
		if sub != "" {
			for kv := range strings.SplitSeq(v, ",") {
				if x, ok := strings.CutPrefix(kv, sub+"="); ok {
					v = x
					break
				}
			}
		}
		f, err := strconv.ParseFloat(v, 64)
		if err != nil {
			b.Fatalf("INFO %s %s: %v", section, name, err)
		}
		return f
	}
	return 0
}
