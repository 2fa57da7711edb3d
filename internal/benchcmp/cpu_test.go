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

// measureCost reports, per op, what load on a shared machine distorts least: the CPU time of
// this process ("cpu-us/op", client work with the Go runtime) and of redis-server ("srv-cpu-us/op",
// INFO cpu), and the server's own time inside script calls ("script-us/op", INFO commandstats
// usec of EVALSHA and EVAL). Call it after warm-up and the returned func after the loop.
func measureCost(b *testing.B, rdb *redis.Client) func() {
	cpu0, srv0, scr0 := processCPU(), serverCPU(b, rdb), scriptUsec(b, rdb)
	return func() {
		cpu1, srv1, scr1 := processCPU(), serverCPU(b, rdb), scriptUsec(b, rdb)
		n := float64(b.N)
		b.ReportMetric(float64(cpu1-cpu0)/float64(time.Microsecond)/n, "cpu-us/op")
		b.ReportMetric(float64(srv1-srv0)/float64(time.Microsecond)/n, "srv-cpu-us/op")
		b.ReportMetric((scr1-scr0)/n, "script-us/op")
	}
}

// scriptUsec is the microseconds redis-server has spent inside EVALSHA and EVAL so far.
func scriptUsec(b *testing.B, rdb *redis.Client) float64 {
	return infoField(b, rdb, "commandstats", "cmdstat_evalsha", "usec") + infoField(b, rdb, "commandstats", "cmdstat_eval", "usec")
}

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
