package ratelimit

import (
	"context"
	"fmt"
	"time"

	"github.com/surgekit/surge/internal/jitter"
)

// derived gives Local and Redis the methods that follow from their AllowN. Both embed it, so
// these methods are documented once and behave the same on both.
type derived struct {
	limits []Limit
	allowN func(ctx context.Context, key string, n int) (Result, error)
}

// Limits returns a copy of the limits the limiter enforces.
func (d *derived) Limits() []Limit { return append([]Limit(nil), d.limits...) }

// Allow is AllowN(ctx, key, 1).
func (d *derived) Allow(ctx context.Context, key string) (Result, error) {
	return d.allowN(ctx, key, 1)
}

// Wait is WaitN(ctx, key, 1).
func (d *derived) Wait(ctx context.Context, key string) error { return waitN(ctx, d.allowN, key, 1) }

// WaitN blocks until n tokens of key can be taken, sleeping RetryAfter plus up to 20% jitter
// between tries (so that waiters, in one process or many, do not all retry together). It returns
// an error wrapping [ErrWaitDeadline] at once when the next try would come after ctx's deadline,
// the context's error when ctx ends while sleeping, and AllowN's errors.
func (d *derived) WaitN(ctx context.Context, key string, n int) error {
	return waitN(ctx, d.allowN, key, n)
}

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
