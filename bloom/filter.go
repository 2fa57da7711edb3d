package bloom

import (
	"context"
	"errors"
	"fmt"
	"iter"
)

// Filter is a Bloom filter: a set that answers "certainly not" or "maybe". [*Local] and
// [*Redis] implement it (and so satisfy cache.Guard).
type Filter interface {
	// Add inserts keys; after it returns nil every later MightContain of them is true.
	Add(ctx context.Context, keys ...string) error
	// MightContain is false when key was certainly never added, true when it may have been.
	MightContain(ctx context.Context, key string) (bool, error)
}

// WarmBatch is the number of keys [Warm] hands to one Add call (one round trip for a [Redis]
// filter).
const WarmBatch = 1000

// Warm adds every key of keys to f in batches of [WarmBatch] (one Add call, so one pipelined
// round trip on a [Redis] filter, per batch) and returns how many keys it added. It blocks until
// keys is exhausted, ctx ends or an Add fails; then it returns the count of keys in batches that
// were added and the error (ctx.Err() or the Add error, wrapped). Safe for concurrent use as far
// as f is; it does not keep the keys.
//
// Use it to fill a new filter from the source of truth, for example at start-up for a [Local] or
// for a rebuild (see [Live]).
func Warm(ctx context.Context, f Filter, keys iter.Seq[string]) (int, error) {
	if f == nil {
		return 0, errors.New("bloom: warm: nil filter")
	}
	batch := make([]string, 0, WarmBatch)
	added := 0
	flush := func() error {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := f.Add(ctx, batch...); err != nil {
			return err
		}
		added += len(batch)
		clear(batch) // drop references to the keys before reusing the array
		batch = batch[:0]
		return nil
	}
	var err error
	for key := range keys {
		batch = append(batch, key)
		if len(batch) == WarmBatch {
			if err = flush(); err != nil {
				break
			}
		}
	}
	if err == nil && len(batch) > 0 {
		err = flush()
	}
	if err != nil {
		return added, fmt.Errorf("bloom: warm after %d keys: %w", added, err)
	}
	return added, nil
}
