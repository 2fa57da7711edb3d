package bloom_test

import (
	"bytes"
	"context"
	"fmt"
	"slices"
	"sync"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/surgekit/surge/bloom"
)

func ExampleNewRedis() {
	mr := miniredis.NewMiniRedis()
	if err := mr.Start(); err != nil {
		panic(err)
	}
	defer mr.Close()
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	defer rdb.Close()
	ctx := context.Background()

	users, err := bloom.NewRedis(rdb, "users", 1000, 0.01, nil)
	if err != nil {
		panic(err)
	}
	n, err := bloom.Warm(ctx, users, slices.Values([]string{"u1", "u2", "u3"}))
	if err != nil {
		panic(err)
	}
	fmt.Println("warmed", n)
	for _, id := range []string{"u2", "nobody"} {
		ok, err := users.MightContain(ctx, id)
		if err != nil {
			ok = true // Redis trouble: "maybe", let the cache decide
		}
		fmt.Println(id, ok)
	}
	// Output:
	// warmed 3
	// u2 true
	// nobody false
}

func ExampleLocal() {
	ctx := context.Background()
	f, err := bloom.NewLocal(10_000, 0.001)
	if err != nil {
		panic(err)
	}
	_ = f.Add(ctx, "a", "b")
	ok, _ := f.MightContain(ctx, "a")
	fmt.Println("a", ok, "count", f.ApproximateCount())

	// Save and load, e.g. to start a process with a warm filter.
	var buf bytes.Buffer
	if _, err := f.WriteTo(&buf); err != nil {
		panic(err)
	}
	var g bloom.Local
	if _, err := g.ReadFrom(&buf); err != nil {
		panic(err)
	}
	ok, _ = g.MightContain(ctx, "b")
	fmt.Println("b", ok, "bits", g.Cap(), "k", g.K())
	// Output:
	// a true count 2
	// b true bits 143776 k 10
}

func ExampleLive() {
	ctx := context.Background()
	small, _ := bloom.NewLocal(100, 0.01)
	live, err := bloom.NewLive(small)
	if err != nil {
		panic(err)
	}
	_ = live.Add(ctx, "k1")

	// The filter outgrew its size: rebuild a bigger one from the source of truth. Adds made
	// meanwhile go to both filters; MightContain switches when the new one is full.
	source := []string{"k1", "k2"}
	bigger, _ := bloom.NewLocal(1_000_000, 0.01)
	n, old, err := live.Rebuild(ctx, bigger, slices.Values(source))
	if err != nil {
		panic(err)
	}
	ok, _ := live.MightContain(ctx, "k2")
	fmt.Println(n, ok, old == bloom.Filter(small))
	// Output:
	// 2 true true
}

// With Pipeline, checks made by concurrent callers while another is in flight share one round
// trip; a lone caller's check goes straight out, as without it.
func ExampleRedisOptions_pipeline() {
	mr := miniredis.NewMiniRedis()
	if err := mr.Start(); err != nil {
		panic(err)
	}
	defer mr.Close()
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	defer rdb.Close()
	ctx := context.Background()

	users, err := bloom.NewRedis(rdb, "users", 1000, 0.01, &bloom.RedisOptions{Pipeline: true})
	if err != nil {
		panic(err)
	}
	if err := users.Add(ctx, "u1", "u2", "u3"); err != nil {
		panic(err)
	}
	ids := []string{"u1", "u2", "u3", "nobody"}
	found := make([]bool, len(ids))
	var wg sync.WaitGroup
	for i, id := range ids { // e.g. request handlers checking at the same time
		wg.Go(func() {
			ok, err := users.MightContain(ctx, id)
			found[i] = ok || err != nil // an error means "maybe"
		})
	}
	wg.Wait()
	fmt.Println(found)
	// Output:
	// [true true true false]
}
