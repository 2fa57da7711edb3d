// Package examples_test builds every example program once and runs each in embedded mode
// (miniredis, kfake: REDIS_ADDR and KAFKA_BROKERS are removed from its environment) with
// short flags, checking that it exits 0 and prints the line that shows it worked.
package examples_test

import (
	"bufio"
	"context"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

var programs = []string{"workerpool", "cache", "lock", "bloom", "ratelimit", "events", "ginmw", "orderservice"}

// build compiles every program into one temporary directory with a single go build.
func build(t *testing.T) string {
	t.Helper()
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("go tool not on PATH")
	}
	dir := t.TempDir()
	args := []string{"build", "-o", dir + string(filepath.Separator)}
	for _, p := range programs {
		args = append(args, "./"+p)
	}
	cmd := exec.Command(goBin, args...)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return dir
}

// embeddedEnv is the test's environment without the variables that select real servers.
func embeddedEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "REDIS_ADDR=") && !strings.HasPrefix(kv, "KAFKA_BROKERS=") {
			env = append(env, kv)
		}
	}
	return env
}

func TestExamples(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs every example program")
	}
	bin := build(t)
	cases := []struct {
		name string
		args []string
		want []string // substrings of the combined output
	}{
		{"workerpool", []string{"-duration", "300ms"}, []string{"workerpool: shut down cleanly", "jobs/s"}},
		{"cache", nil, []string{"embedded miniredis", "200 concurrent fetches of a cold key:\n   1 db queries", "Bloom says no) : cache: not found"}},
		{"lock", []string{"-duration", "1500ms"}, []string{"runs the job (fence 1)", "rejected: fence"}},
		{"bloom", []string{"-n", "2000", "-probes", "500"}, []string{"local filter:", "redis=true  local=true"}},
		{"ratelimit", []string{"-duration", "500ms"}, []string{"denied, retry after", "answered by the fallback"}},
		{"events", []string{"-accounts", "4", "-per-account", "5"}, []string{"embedded kfake", "out of order within an account: 0", "dead-lettered: 1"}},
		{"ginmw", nil, []string{"Cache-Status: surge; hit", "Retry-After", "Idempotent-Replayed: true"}},
		{"orderservice", []string{"-demo", "-warmup", "1s", "-duration", "2s", "-clients", "20", "-orders", "1000"},
			[]string{"typical Go + Redis service, before -> after its cache (published)", "48% -> 92%", "128 ms -> 8 ms",
				"ids Zipf-distributed (s=1.10", "orders/s paid", "no cache warm-up", "inventory consumer applied 9",
				"answered 429", "held the lock and expired", "lag monitor: group",
				// 1006 orders (1000 and the tour's 6) in batches of 200: six queries, at least.
				"cache.FetchMany of all 1006 orders in batches of 200, 4 at a time: "}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			cmd := exec.CommandContext(ctx, filepath.Join(bin, tc.name), tc.args...)
			cmd.Env = embeddedEnv()
			out, err := cmd.CombinedOutput()
			if err != nil {
				t.Fatalf("%s %v: %v\n%s", tc.name, tc.args, err, out)
			}
			for _, w := range tc.want {
				if !strings.Contains(string(out), w) {
					t.Errorf("output lacks %q:\n%s", w, out)
				}
			}
			if tc.name == "orderservice" {
				checkDemoTable(t, string(out))
				checkDemoTrace(t, string(out))
			}
		})
	}
	t.Run("orderservice-server", func(t *testing.T) {
		t.Parallel()
		testServer(t, filepath.Join(bin, "orderservice"))
	})
}

// checkDemoTrace asserts that the demo's first POST /orders and the inventory consumer's handling
// of its OrderCreated (through the outbox, the relay and Kafka) ran in one trace.
func checkDemoTrace(t *testing.T, out string) {
	t.Helper()
	m := regexp.MustCompile(`ran in trace ([0-9a-f]{32}) [^\n]*\n[^\n]*OrderCreated ran in trace (\S+)`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("no trace lines in:\n%s", out)
	}
	if m[1] != m[2] {
		t.Errorf("POST /orders ran in trace %s, the inventory consumer's span in %s; want one trace", m[1], m[2])
	}
}

// checkDemoTable asserts that both columns of the demo table saw traffic and no request
// errors, that hits and misses are timed apart (no hits without the cache, every miss at least
// the database latency), and that the output never says "seed".
func checkDemoTable(t *testing.T, out string) {
	t.Helper()
	if i := strings.Index(strings.ToLower(out), "seed"); i >= 0 {
		t.Errorf("output says %q: %s", out[i:i+4], out[max(0, i-60):min(len(out), i+60)])
	}
	row := func(name string) []string {
		m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(name) + `\s+(\S+)\s+(\S+)`).FindStringSubmatch(out)
		if m == nil {
			t.Fatalf("no %q row in:\n%s", name, out)
		}
		return m[1:]
	}
	if errs := row("request errors"); errs[0] != "0" || errs[1] != "0" {
		t.Errorf("request errors: no cache %s, surge %s; want 0 and 0\n%s", errs[0], errs[1], out)
	}
	if rps := row("requests/s"); rps[0] == "0" || rps[1] == "0" {
		t.Errorf("requests/s: %v, want traffic in both phases", rps)
	}
	// The warm-up loads in batches: one query per batch, a second or third pass only for what
	// the first did not cache.
	if m := regexp.MustCompile(`cache.FetchMany of all (\d+) orders in batches of (\d+), \d+ at a time: (\d+) database queries`).FindStringSubmatch(out); m == nil {
		t.Errorf("no FetchMany warm-up line in:\n%s", out)
	} else {
		n, _ := strconv.Atoi(m[1])
		batch, _ := strconv.Atoi(m[2])
		q, _ := strconv.Atoi(m[3])
		if per := (n + batch - 1) / batch; q < per || q > 3*per {
			t.Errorf("warm-up of %d orders in batches of %d took %d queries, want %d to %d", n, batch, q, per, 3*per)
		}
	}
	if hit := row("hit rate"); hit[0] != "0.0%" || hit[1] == "0.0%" {
		t.Errorf("hit rate: %v, want 0.0%% without cache and more with surge", hit)
	}
	count := func(name string) [2]int {
		var n [2]int
		for i, f := range row(name) {
			v, err := strconv.Atoi(f)
			if err != nil {
				t.Fatalf("%s: %q is not a count", name, f)
			}
			n[i] = v
		}
		return n
	}
	hits, misses := count("hits"), count("misses")
	if hits[0] != 0 || misses[0] == 0 {
		t.Errorf("no cache: %d hits and %d misses, want 0 hits, every request a miss", hits[0], misses[0])
	}
	if hits[1] <= misses[1] {
		t.Errorf("surge after its warm-up: %d hits and %d misses, want mostly hits", hits[1], misses[1])
	}
	// p50/p99/p999 in milliseconds; "-" when the class is empty.
	lat := func(name string, col int) []float64 {
		f := row(name)[col]
		if f == "-" {
			return nil
		}
		parts := strings.Split(f, "/")
		if len(parts) != 3 {
			t.Fatalf("%s: %q, want p50/p99/p999", name, f)
		}
		var v []float64
		for _, p := range parts {
			x, err := strconv.ParseFloat(p, 64)
			if err != nil {
				t.Fatalf("%s: %q: %v", name, f, err)
			}
			v = append(v, x)
		}
		if !(v[0] <= v[1] && v[1] <= v[2]) {
			t.Errorf("%s: %q, want p50 <= p99 <= p999", name, f)
		}
		return v
	}
	if l := lat("hits p50/p99/p999 ms", 0); l != nil {
		t.Errorf("no cache: hit latencies %v, want none", l)
	}
	if lat("hits p50/p99/p999 ms", 1) == nil {
		t.Error("surge: no hit latencies")
	}
	// Without the cache a request waits for its own query of -db-latency (100ms) at least. (With
	// it, a miss that joins a load already running waits less.)
	if l := lat("misses p50/p99/p999 ms", 0); l == nil || l[0] < 100 {
		t.Errorf("no cache: miss latencies %v ms, want p50 at least the database latency of 100 ms", l)
	}
}

// testServer starts orderservice in server mode on a free port, exercises the API and
// stops it with SIGINT, expecting a graceful exit 0.
func testServer(t *testing.T, bin string) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "-addr", "127.0.0.1:0", "-orders", "1000", "-db-latency", "5ms")
	cmd.Env = embeddedEnv()
	cmd.Stderr = io.Discard // the access log
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var (
		mu   sync.Mutex
		text strings.Builder
		url  = make(chan string, 1)
		read = make(chan struct{})
	)
	go func() {
		defer close(read)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			line := sc.Text()
			mu.Lock()
			text.WriteString(line + "\n")
			mu.Unlock()
			if m := regexp.MustCompile(`listening on (http://\S+)`).FindStringSubmatch(line); m != nil {
				url <- m[1]
			}
		}
	}()
	var base string
	select {
	case base = <-url:
	case <-read:
		t.Fatalf("orderservice exited before listening:\n%s", text.String())
	case <-ctx.Done():
		t.Fatal("orderservice did not start listening in time")
	}

	var lastCache string // X-Cache of the last answer
	expect := func(method, path, token string, want int) string {
		t.Helper()
		req, _ := http.NewRequestWithContext(ctx, method, base+path, strings.NewReader(`{"item":"mouse","quantity":1,"amount_cents":2500}`))
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
			req.Header.Set("Idempotency-Key", "test-1")
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("%s %s: %v", method, path, err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != want {
			t.Errorf("%s %s: HTTP %d, want %d: %s", method, path, resp.StatusCode, want, body)
		}
		if resp.Header.Get("X-Request-ID") == "" {
			t.Errorf("%s %s: no X-Request-ID", method, path)
		}
		lastCache = resp.Header.Get("X-Cache")
		return string(body)
	}
	cached := func(path, want string) {
		t.Helper()
		if lastCache != want {
			t.Errorf("GET %s: X-Cache %q, want %q", path, lastCache, want)
		}
	}
	expect("GET", "/orders/42", "", http.StatusOK)
	cached("/orders/42", "miss")
	expect("GET", "/orders/42", "", http.StatusOK)
	cached("/orders/42", "hit")
	expect("GET", "/orders/99999999", "", http.StatusNotFound)
	cached("/orders/99999999", "hit") // the Bloom guard answers: no database query
	expect("POST", "/orders", "", http.StatusUnauthorized)
	token := expect("GET", "/token?sub=tester", "", http.StatusOK)
	first := expect("POST", "/orders", token, http.StatusCreated)
	if again := expect("POST", "/orders", token, http.StatusCreated); again != first {
		t.Errorf("idempotent retry answered %s, want the first answer %s", again, first)
	}
	expect("PUT", "/orders/1001/pay", token, http.StatusOK)

	if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	<-read
	if err := cmd.Wait(); err != nil {
		t.Fatalf("orderservice after SIGINT: %v\n%s", err, text.String())
	}
	mu.Lock()
	defer mu.Unlock()
	if !strings.Contains(text.String(), "shut down cleanly") {
		t.Errorf("no clean shutdown line:\n%s", text.String())
	}
}
