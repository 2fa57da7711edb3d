// Command cache shows surge's cache-aside in front of a slow "database" (50 ms per query):
//
//  1. a miss loads once; then hits come from the local tier, or from Redis in a 2nd process;
//  2. a stampede: 200 concurrent requests for one cold key run the loader once;
//  3. ids that do not exist: a Bloom guard rejects most, a negative entry remembers the rest;
//  4. update the database, Delete the key: every process's local tier drops it (pub/sub);
//  5. stale-while-revalidate: past RefreshAfter, the old value at once, one background reload.
//
// It uses REDIS_ADDR when set, else an embedded miniredis.
//
//	go run ./examples/cache
package main

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/surgekit/surge/bloom"
	"github.com/surgekit/surge/cache"
	"github.com/surgekit/surge/examples/internal/backend"
)

// db is the source of truth: products 1..100, 50 ms per query.
type db struct {
	mu      sync.Mutex
	prices  map[string]int
	queries atomic.Int64
}

func (d *db) set(id string, price int) { d.mu.Lock(); d.prices[id] = price; d.mu.Unlock() }

func (d *db) load(ctx context.Context, id string) (int, error) {
	d.queries.Add(1)
	select {
	case <-time.After(50 * time.Millisecond):
	case <-ctx.Done():
		return 0, ctx.Err()
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	p, ok := d.prices[id]
	if !ok {
		return 0, cache.ErrNotFound // remembered as a negative entry
	}
	return p, nil
}

func main() { backend.Main("cache", 0, run) }

func run(ctx context.Context) error {
	rb, err := backend.StartRedis(ctx, os.Stdout)
	if err != nil {
		return err
	}
	defer rb.Close()
	src := &db{prices: map[string]int{}}
	guard, err := bloom.NewLocal(100, 0.05)
	if err != nil {
		return err
	}
	for i := 1; i <= 100; i++ {
		src.set(strconv.Itoa(i), 100*i)
		_ = guard.Add(ctx, strconv.Itoa(i))
	}
	prefix := fmt.Sprintf("example:price:%d:", time.Now().UnixNano())
	opt := &cache.Options{Prefix: prefix, TTL: time.Minute, Guard: guard, Local: &cache.LocalOptions{TTL: 10 * time.Second}}
	// Two caches with the same options are two processes of one service.
	a, err := cache.New[int](rb.Client, opt)
	if err != nil {
		return err
	}
	defer a.Close()
	b, err := cache.New[int](rb.Client, opt)
	if err != nil {
		return err
	}
	defer b.Close()
	fetch := func(c *cache.Cache[int], id string) string {
		q, t := src.queries.Load(), time.Now()
		v, err := c.Fetch(ctx, id, src.load)
		res := strconv.Itoa(v)
		if err != nil {
			res = err.Error()
		}
		return fmt.Sprintf("%-17s %8v, %d db queries", res, time.Since(t).Round(10*time.Microsecond), src.queries.Load()-q)
	}

	fmt.Println("\n1. miss, local hit, other process:")
	fmt.Println("   A first fetch           :", fetch(a, "7"))
	fmt.Println("   A again (local tier)    :", fetch(a, "7"))
	fmt.Println("   B (Redis tier)          :", fetch(b, "7"))

	fmt.Println("\n2. 200 concurrent fetches of a cold key:")
	q := src.queries.Load()
	var wg sync.WaitGroup
	for range 200 {
		wg.Go(func() { _, _ = a.Fetch(ctx, "8", src.load) })
	}
	wg.Wait()
	fmt.Printf("   %d db queries, %d callers joined the running load\n", src.queries.Load()-q, a.Stats().SharedLoads)

	fmt.Println("\n3. ids that do not exist:")
	fmt.Println("   id 5000 (Bloom says no) :", fetch(a, "5000"))
	for i := 101; ; i++ { // find an id the Bloom filter lets through (a false positive)
		if ok, _ := guard.MightContain(ctx, strconv.Itoa(i)); ok {
			fmt.Printf("   id %-4d (false positive): %s\n", i, fetch(a, strconv.Itoa(i)))
			fmt.Printf("   id %-4d again (negative): %s\n", i, fetch(a, strconv.Itoa(i)))
			break
		}
	}

	fmt.Println("\n4. update the database, then Delete the key:")
	_ = fetch(b, "9") // B holds 9 in its local tier
	src.set("9", 999)
	if err := a.Delete(ctx, "9"); err != nil {
		return err
	}
	time.Sleep(100 * time.Millisecond) // the invalidation crosses Redis pub/sub to B
	fmt.Println("   B after A's Delete      :", fetch(b, "9"))

	fmt.Println("\n5. stale-while-revalidate (RefreshAfter 300ms, Redis tier only):")
	swr, err := cache.New[int](rb.Client, &cache.Options{Prefix: prefix + "swr:", TTL: time.Minute, RefreshAfter: 300 * time.Millisecond})
	if err != nil {
		return err
	}
	defer swr.Close()
	fmt.Println("   first fetch             :", fetch(swr, "7"))
	src.set("7", 777)
	time.Sleep(400 * time.Millisecond)
	fmt.Println("   400ms later: stale, fast:", fetch(swr, "7"))
	time.Sleep(200 * time.Millisecond) // the background refresh lands
	fmt.Println("   refreshed in background :", fetch(swr, "7"))

	s := a.Stats()
	fmt.Printf("\nA's stats: %d local hits, %d misses, %d loads, %d guard rejects; done\n", s.LocalHits, s.Misses, s.Loads, s.GuardRejects)
	return nil
}
