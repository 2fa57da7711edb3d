package cache

import (
	"context"
	"errors"
	"fmt"
	"math"

	"github.com/redis/go-redis/v9"
)

// Fetch returns the value of key: from the local tier, from Redis, or from load (whose result
// is then cached; a load returning an error that wraps [ErrNotFound] is cached as a negative
// entry). Concurrent Fetches of one missing key in this process run load once; with
// Options.Lease, processes sharing the Redis run it once between them.
//
// Fetch blocks until the value is there or ctx ends; when ctx ends it returns ctx.Err() at once
// while the load goes on for the other waiters (bounded by LoadTimeout). A stale value
// (RefreshAfter, EarlyRefreshBeta) is returned at once while a background load refreshes it.
//
// Errors: [ErrNotFound] when the record does not exist; the loader's error, wrapped (a panic
// becomes an error wrapping [ErrLoaderPanic]); with FailClosed, Redis read errors, wrapped;
// [ErrClosed] after Close. Fetch is safe for concurrent use. A local hit does not allocate.
func (c *Cache[V]) Fetch(ctx context.Context, key string, load Loader[V]) (V, error) {
	if c.local != nil {
		if e, ok := c.local.GetIfPresent(key); ok {
			c.st.localHits.Add(1)
			if e.notFound {
				var zero V
				return zero, ErrNotFound
			}
			return e.v, nil
		}
	}
	return c.fetch(ctx, key, load)
}

// fetch is Fetch past the local tier.
func (c *Cache[V]) fetch(ctx context.Context, key string, load Loader[V]) (V, error) {
	var zero V
	if load == nil {
		c.tel.count(resError, 1)
		return zero, fmt.Errorf("cache: fetch %q: nil loader", key)
	}
	if key == "" {
		c.tel.count(resError, 1)
		return zero, ErrEmptyKey
	}
	if c.closed.Load() {
		c.tel.count(resError, 1)
		return zero, ErrClosed
	}
	if !c.guardAllows(ctx, key) {
		c.tel.count(resNegativeHit, 1)
		return zero, ErrNotFound
	}
	snap := c.snapshot(key)
	h, v, err := c.readRedis(ctx, key)
	redisDown := false
	switch {
	case err == nil:
		c.storeLocal(snap, key, v, h)
		if h.tombstone {
			c.st.negativeHits.Add(1)
			c.tel.count(resNegativeHit, 1)
			return zero, ErrNotFound
		}
		c.st.redisHits.Add(1)
		if c.shouldRefresh(h) {
			c.leadFree(ctx, []string{key}, []header{h}, oneLoader(load), false)
		}
		return v, nil
	case errors.Is(err, redis.Nil), errors.Is(err, errDecode):
	case ctx.Err() != nil:
		c.tel.count(resError, 1)
		return zero, ctx.Err() // the caller gave up: no reason to load
	case c.cfg.OnRedisError == FailClosed:
		c.tel.count(resError, 1)
		return zero, fmt.Errorf("cache: fetch %q: %w", key, err)
	default:
		redisDown = true
	}
	c.st.misses.Add(1)
	c.tel.count(resMiss, 1)
	f := c.leadFree(ctx, []string{key}, nil, oneLoader(load), redisDown)[0]
	select {
	case <-f.done:
		return f.v, f.err
	case <-ctx.Done():
		return zero, ctx.Err()
	}
}

// guardAllows asks the Guard; false is a counted reject, an error a counted "maybe".
func (c *Cache[V]) guardAllows(ctx context.Context, key string) bool {
	if c.cfg.Guard == nil {
		return true
	}
	ok, err := c.cfg.Guard.MightContain(ctx, key)
	switch {
	case err != nil:
		c.st.guardErrors.Add(1)
		return true
	case !ok:
		c.st.guardRejects.Add(1)
		return false
	}
	return true
}

// shouldRefresh decides, for a value just read from Redis, whether a background refresh starts:
// past RefreshAfter (counted as stale served), or picked early by XFetch. It also counts the
// request as a stale or redis_hit result (telemetry.go).
func (c *Cache[V]) shouldRefresh(h header) bool {
	if h.soft == 0 && c.cfg.EarlyRefreshBeta == 0 {
		c.tel.count(resRedisHit, 1)
		return false
	}
	now := c.now().UnixMilli()
	if h.soft != 0 && now >= h.soft {
		c.st.staleServed.Add(1)
		c.tel.count(resStale, 1)
		return true
	}
	c.tel.count(resRedisHit, 1)
	if c.xfetch(now, h) {
		c.st.earlyRefreshes.Add(1)
		return true
	}
	return false
}

// xfetch is the XFetch test (Vattani et al., VLDB 2015): refresh when
// now - delta·beta·ln(rand) >= expiry, delta being the last load duration.
func (c *Cache[V]) xfetch(nowMs int64, h header) bool {
	if c.cfg.EarlyRefreshBeta == 0 || h.loadDur <= 0 {
		return false
	}
	r := c.rand()
	if r <= 0 {
		return true // ln(0) = -Inf: the gap is infinite
	}
	deltaMs := float64(h.loadDur.Microseconds()) / 1000
	return float64(nowMs)-deltaMs*c.cfg.EarlyRefreshBeta*math.Log(r) >= float64(h.hard)
}

// oneLoader adapts a Loader to the batch machinery: a missing key in the map means not found.
func oneLoader[V any](load Loader[V]) BatchLoader[V] {
	return func(ctx context.Context, keys []string) (map[string]V, error) {
		v, err := load(ctx, keys[0])
		if err != nil {
			if errors.Is(err, ErrNotFound) {
				return nil, nil
			}
			return nil, err
		}
		return map[string]V{keys[0]: v}, nil
	}
}
