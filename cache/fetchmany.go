package cache

import (
	"context"
	"errors"
	"fmt"

	"github.com/redis/go-redis/v9"
)

// FetchMany is [Cache.Fetch] for many keys: local tier first, then one Redis round trip (an
// MGET on a *redis.Client, a pipeline of GETs per node with a ClusterClient; shared with the
// reads of concurrent Fetch and FetchMany calls that arrive while reads are in flight), then
// one call of load for all the keys still missing
// (or two, when some keys waited for another process's lease in vain). Keys already being loaded
// in this process (by Fetch or FetchMany) join that load instead. Keys load leaves out of its map
// do not exist: they are cached as negative entries and are absent from the returned map, as are
// keys found as negative entries or ruled out by the Guard. Duplicate keys are fetched once.
//
// FetchMany blocks like Fetch and returns ctx.Err() when ctx ends. On error (the loader's,
// wrapped; with FailClosed, Redis errors; [ErrClosed] after Close) the map still holds the
// values found. Safe for concurrent use.
func (c *Cache[V]) FetchMany(ctx context.Context, keys []string, load BatchLoader[V]) (map[string]V, error) {
	if load == nil {
		c.tel.count(resError, len(keys))
		return nil, errors.New("cache: fetch many: nil loader")
	}
	out := make(map[string]V, len(keys))
	rest := make([]string, 0, len(keys))
	seen := make(map[string]struct{}, len(keys))
	for i, k := range keys {
		if k == "" {
			c.tel.count(resError, len(keys)-i+len(rest)) // this key, the ones not looked at, and those not read
			return out, ErrEmptyKey
		}
		if _, dup := seen[k]; dup {
			continue
		}
		seen[k] = struct{}{}
		if e, ok := c.lookupLocal(k); ok {
			if !e.notFound {
				out[k] = e.v
			}
			continue
		}
		if c.closed.Load() {
			c.tel.count(resError, len(keys)-i+len(rest))
			return out, ErrClosed
		}
		if c.guardAllows(ctx, k) {
			rest = append(rest, k)
		} else {
			c.tel.count(resNegativeHit, 1)
		}
	}
	if len(rest) == 0 {
		return out, nil
	}

	snaps := make([]uint64, len(rest))
	for i, k := range rest {
		snaps[i] = c.snapshot(k)
	}
	vks := make([]string, len(rest))
	for i, k := range rest {
		vks[i] = c.valueKey(k)
	}
	vals, errs := c.rd.pipe.get(ctx, c.rdb, vks) // shares a round trip with concurrent reads
	var missing, stale []string
	var staleHeads []header
	redisDown := false
	for i, k := range rest {
		b, err := vals[i], errs[i]
		if err != nil {
			if !errors.Is(err, redis.Nil) {
				if ctx.Err() != nil {
					c.tel.count(resError, len(rest)-i+len(missing))
					return out, ctx.Err()
				}
				c.st.redisErrors.Add(1)
				if c.cfg.OnRedisError == FailClosed {
					c.tel.count(resError, len(rest)-i+len(missing))
					return out, fmt.Errorf("cache: fetch many %q: %w", k, err)
				}
				redisDown = true
			}
			missing = append(missing, k)
			continue
		}
		h, v, err := c.decode(b)
		switch {
		case err != nil:
			missing = append(missing, k)
		case h.tombstone:
			c.st.negativeHits.Add(1)
			c.tel.count(resNegativeHit, 1)
			c.storeLocal(snaps[i], k, v, h)
		default:
			c.st.redisHits.Add(1)
			c.storeLocal(snaps[i], k, v, h)
			out[k] = v
			if c.shouldRefresh(h) {
				stale, staleHeads = append(stale, k), append(staleHeads, h)
			}
		}
	}
	if len(stale) > 0 {
		c.leadFree(ctx, stale, staleHeads, load, false)
	}
	if len(missing) == 0 {
		return out, nil
	}
	c.st.misses.Add(uint64(len(missing)))
	c.tel.count(resMiss, len(missing))
	fl := c.leadFree(ctx, missing, nil, load, redisDown)
	var firstErr error
	for i, f := range fl {
		select {
		case <-f.done:
		case <-ctx.Done():
			return out, ctx.Err()
		}
		switch {
		case f.err == nil:
			out[missing[i]] = f.v
		case errors.Is(f.err, ErrNotFound):
		case firstErr == nil:
			firstErr = f.err
		}
	}
	return out, firstErr
}
