package benchcmp

import (
	"encoding/csv"
	"net"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"testing"
)

// clients is the concurrency of the throughput benchmarks: redis-benchmark's -c and, for surge,
// SetParallelism(clients/GOMAXPROCS) goroutines.
const clients = 64

// BenchmarkPhysicalLimit runs redis-benchmark's GET against the shared server at the same
// concurrency, value size and key spread (10,000 keys, written first by its SET test) as the
// cache throughput benchmark: the ceiling no client sending one GET per read can pass on this
// machine. It reports ops/s; ns/op is meaningless here.
func BenchmarkPhysicalLimit(b *testing.B) {
	bin, err := exec.LookPath("redis-benchmark")
	if err != nil {
		b.Skip("redis-benchmark not installed (apt-get install -y redis-tools)")
	}
	host, port, _ := net.SplitHostPort(redisAddr)
	var opsPerSec float64
	for range b.N {
		out, err := exec.Command(bin, "-h", host, "-p", port, "-t", "set,get", "-c", strconv.Itoa(clients),
			"-n", "200000", "-d", "200", "-r", "10000", "--csv").Output()
		if err != nil {
			b.Fatalf("redis-benchmark: %v", err)
		}
		recs, err := csv.NewReader(strings.NewReader(string(out))).ReadAll()
		if err != nil || len(recs) < 2 {
			b.Fatalf("redis-benchmark output: %q", out)
		}
		if opsPerSec, err = strconv.ParseFloat(recs[len(recs)-1][1], 64); err != nil {
			b.Fatalf("redis-benchmark ops/s %q: %v", recs[len(recs)-1][1], err)
		}
	}
	b.ReportMetric(opsPerSec, "ops/s")
}

func gomaxprocs() int { return runtime.GOMAXPROCS(0) }
