package cache_test

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/surgekit/surge/cache"
)

type User struct {
	ID   string `json:"id"`
	Name string `json:"name"`
}

// loaderFor returns a Loader reading db, which stands in for the source of truth.
func loaderFor(db map[string]User) cache.Loader[User] {
	return func(ctx context.Context, id string) (User, error) {
		u, ok := db[id]
		if !ok {
			return User{}, fmt.Errorf("user %s: %w", id, cache.ErrNotFound)
		}
		return u, nil
	}
}

// Fetch loads a missing key once, caches it, and remembers keys that do not exist.
func Example() {
	mr, _ := miniredis.Run() // any Redis: a *redis.Client, ClusterClient or failover client
	defer mr.Close()
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	defer rdb.Close()

	users, err := cache.New[User](rdb, &cache.Options{Prefix: "user:", TTL: 10 * time.Minute})
	if err != nil {
		panic(err)
	}
	defer users.Close()
	ctx := context.Background()
	db := map[string]User{"1": {ID: "1", Name: "Ada"}}
	loadUser := loaderFor(db)

	u, err := users.Fetch(ctx, "1", loadUser) // miss: loads and caches
	fmt.Println(u.Name, err)
	u, err = users.Fetch(ctx, "1", loadUser) // hit: from Redis
	fmt.Println(u.Name, err)
	_, err = users.Fetch(ctx, "2", loadUser) // does not exist: cached as a negative entry
	fmt.Println(errors.Is(err, cache.ErrNotFound))

	// After updating the database, delete the cache entry.
	db["1"] = User{ID: "1", Name: "Ada Lovelace"}
	_ = users.Delete(ctx, "1")
	u, _ = users.Fetch(ctx, "1", loadUser)
	fmt.Println(u.Name)
	// Output:
	// Ada <nil>
	// Ada <nil>
	// true
	// Ada Lovelace
}

func ExampleCache_Stats() {
	mr, _ := miniredis.Run()
	defer mr.Close()
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	defer rdb.Close()

	users, _ := cache.New[User](rdb, &cache.Options{Prefix: "user:", Local: &cache.LocalOptions{}})
	defer users.Close()
	ctx := context.Background()
	loadUser := loaderFor(map[string]User{"1": {ID: "1", Name: "Ada"}})
	for range 3 {
		_, _ = users.Fetch(ctx, "1", loadUser) // a miss, then two local hits
	}
	_, _ = users.Fetch(ctx, "404", loadUser) // a miss the loader says does not exist

	st := users.Stats()
	fmt.Printf("local hits %d, redis hits %d, misses %d, loads %d, load errors %d\n",
		st.LocalHits, st.RedisHits, st.Misses, st.Loads, st.LoadErrors)
	// Output:
	// local hits 2, redis hits 0, misses 2, loads 2, load errors 0
}

func ExampleCache_FetchMany() {
	mr, _ := miniredis.Run()
	defer mr.Close()
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	defer rdb.Close()

	users, _ := cache.New[User](rdb, &cache.Options{Prefix: "user:"})
	defer users.Close()
	got, err := users.FetchMany(context.Background(), []string{"7", "8"},
		func(ctx context.Context, ids []string) (map[string]User, error) {
			// One query for all misses; ids left out do not exist (cached as negative entries).
			return map[string]User{"7": {ID: "7", Name: "Grace"}}, nil
		})
	fmt.Println(len(got), got["7"].Name, err)
	// Output:
	// 1 Grace <nil>
}

// New names the bad field; every such error wraps ErrInvalidOptions.
func ExampleNew_invalidOptions() {
	mr, _ := miniredis.Run()
	defer mr.Close()
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	defer rdb.Close()

	// 10m ± 10% (the default Jitter): some values would expire before turning stale.
	_, err := cache.New[User](rdb, &cache.Options{TTL: 10 * time.Minute, RefreshAfter: 9*time.Minute + 30*time.Second})
	fmt.Println(errors.Is(err, cache.ErrInvalidOptions))
	fmt.Println(err)

	// A negative Jitter turns it off, and FailClosed returns Redis read errors to the caller.
	users, err := cache.New[User](rdb, &cache.Options{TTL: 10 * time.Minute, Jitter: -1,
		RefreshAfter: 9*time.Minute + 30*time.Second, OnRedisError: cache.FailClosed})
	fmt.Println(err)
	_ = users.Close()
	// Output:
	// true
	// cache: invalid options: Options.RefreshAfter must be in [0, TTL·(1−Jitter)) = [0, 9m0s), got 9m30s
	// <nil>
}
