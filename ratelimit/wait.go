package ratelimit

import (
	"context"
	"fmt"
	"time"

	"github.com/surgekit/surge/internal/jitter"
)

// waitN retries allow until it allows, sleeping RetryAfter plus up to 20% jitter in between, so
// that waiters on one key do not all wake at the same instant.
func waitN(ctx context.Context, allow func(context.Context, string, int) (Result, error), key string, n int) error {
	for {
		res, err := allow(ctx, key, n)
		if err != nil {
			return err
		}
		if res.Allowed {
			return nil
		}
		d := res.RetryAfter
		sleep := d + jitter.Full(d/5)
		if deadline, ok := ctx.Deadline(); ok {
			left := time.Until(deadline)
			if left < d {
				return fmt.Errorf("ratelimit: wait %q: next token in %v, deadline in %v: %w", key, d, left, ErrWaitDeadline)
			}
			sleep = min(sleep, left)
		}
		t := time.NewTimer(sleep)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("ratelimit: wait %q: %w", key, ctx.Err())
		case <-t.C:
		}
	}
}
