// Command bloom shows surge's Bloom filters, the guard that keeps requests for records that
// do not exist (cache penetration) away from Redis and the database:
//
//  1. a Redis filter, shared by every process using its name, warmed from a stream of ids;
//  2. a Local filter with the same sizing, warmed the same way: same answers, no round trip;
//  3. the measured false-positive rate of both against the rate they were sized for.
//
// It uses REDIS_ADDR when set, else an embedded miniredis. (miniredis copies a whole string
// on every SETBIT, so warming a big Redis filter there is slow; a real server is not. Hence
// the modest default -n.)
//
//	go run ./examples/bloom
//	REDIS_ADDR=localhost:6379 go run ./examples/bloom -n 1000000 -fp 0.001
package main

import (
	"context"
	"flag"
	"fmt"
	"iter"
	"os"
	"strconv"
	"time"

	"github.com/surgekit/surge/bloom"
	"github.com/surgekit/surge/examples/internal/backend"
)

func main() {
	n := flag.Uint("n", 10_000, "number of existing ids to add")
	fp := flag.Float64("fp", 0.01, "target false-positive rate")
	probes := flag.Int("probes", 5_000, "ids that do not exist to test against the filters")
	flag.Parse()
	backend.Main("bloom", 0, func(ctx context.Context) error { return run(ctx, *n, *fp, *probes) })
}

// ids yields "order:<from>" .. "order:<to-1>", standing in for a scan of the database.
func ids(from, to uint) iter.Seq[string] {
	return func(yield func(string) bool) {
		for i := from; i < to; i++ {
			if !yield("order:" + strconv.FormatUint(uint64(i), 10)) {
				return
			}
		}
	}
}

func run(ctx context.Context, n uint, fp float64, probes int) error {
	rb, err := backend.StartRedis(ctx, os.Stdout)
	if err != nil {
		return err
	}
	defer rb.Close()

	name := fmt.Sprintf("example:orders:%d", time.Now().UnixNano()) // a fresh filter per run
	shared, err := bloom.NewRedis(rb.Client, name, n, fp, nil)
	if err != nil {
		return err
	}
	defer func() { _ = shared.Delete(context.WithoutCancel(ctx)) }()
	local, err := bloom.NewLocal(n, fp)
	if err != nil {
		return err
	}
	fmt.Printf("\nfilters sized for %d ids at fp %.3g: m=%d bits (%.0f KiB), k=%d hashes\n",
		n, fp, local.Cap(), float64(local.Cap())/8/1024, local.K())

	for _, f := range []struct {
		name string
		f    bloom.Filter
	}{{"redis", shared}, {"local", local}} {
		start := time.Now()
		added, err := bloom.Warm(ctx, f.f, ids(0, n))
		if err != nil {
			return fmt.Errorf("warm %s filter: %w", f.name, err)
		}
		fmt.Printf("1. warmed the %s filter with %d ids in %v\n", f.name, added, time.Since(start).Round(time.Millisecond))
	}

	fmt.Println("\n2. a few lookups (an existing id is never reported missing):")
	for _, key := range []string{"order:0", "order:42", fmt.Sprintf("order:%d", n-1), "order:-7", fmt.Sprintf("order:%d", n+12345)} {
		inRedis, err := shared.MightContain(ctx, key)
		if err != nil {
			return err
		}
		inLocal, _ := local.MightContain(ctx, key)
		fmt.Printf("   %-16s redis=%-5v local=%v\n", key, inRedis, inLocal)
	}

	fmt.Printf("\n3. %d ids that were never added:\n", probes)
	for _, f := range []struct {
		name string
		f    bloom.Filter
	}{{"redis", shared}, {"local", local}} {
		start, falsePos := time.Now(), 0
		for key := range ids(n+1_000_000, n+1_000_000+uint(probes)) {
			ok, err := f.f.MightContain(ctx, key)
			if err != nil {
				return err
			}
			if ok {
				falsePos++
			}
		}
		el := time.Since(start)
		fmt.Printf("   %-5s filter: %d false positives (%.2f%%, target %.2f%%), %v per lookup\n", f.name, falsePos,
			100*float64(falsePos)/float64(probes), 100*fp, (el / time.Duration(probes)).Round(100*time.Nanosecond))
	}
	fill, err := shared.FillRatio(ctx)
	if err != nil {
		return err
	}
	count, err := shared.ApproximateCount(ctx)
	if err != nil {
		return err
	}
	fmt.Printf("   redis filter fill ratio %.2f, about %d ids in it\n", fill, count)
	fmt.Println("\nbloom example done")
	return nil
}
