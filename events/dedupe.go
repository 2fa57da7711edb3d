package events

import (
	"context"
	"crypto/rand"
	_ "embed"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/surgekit/surge/internal/keys"
)

// Deduper is a store shared by every consumer of a group that remembers which events were
// handled, so a redelivered event (after a crash or a rebalance) is handled once. The
// [Consumer] passes ids of the form "group:eventID". Implementations must be safe for
// concurrent use.
type Deduper interface {
	// Claim takes id for handling for lease and returns a token for Done or Release. It returns
	// [ErrDuplicate] when id is done and [ErrClaimed] while another unexpired claim holds it.
	Claim(ctx context.Context, id string, lease time.Duration) (token string, err error)
	// Done records id as handled (or dead-lettered), whoever holds the claim now; token may be
	// "" when the consumer holds no claim.
	Done(ctx context.Context, id, token string) error
	// Release gives up a claim after a failure, if token still holds it, so a retry or another
	// consumer can take id at once.
	Release(ctx context.Context, id, token string) error
}

var (
	//go:embed dedupe_claim.lua
	claimLua    string
	claimScript = redis.NewScript(claimLua)
	//go:embed dedupe_release.lua
	releaseLua    string
	releaseScript = redis.NewScript(releaseLua)
)

// DedupePrefix starts every key [NewRedisDeduper] writes: DedupePrefix + "{" + id + "}".
const DedupePrefix = "surge:events:dedupe:"

type redisDeduper struct {
	rdb redis.UniversalClient
	ttl time.Duration
}

// NewRedisDeduper returns a [Deduper] on Redis: one key per event holding the claim token
// (expiring with the lease) and then "done" for ttl ([DefaultDedupeTTL] when ttl <= 0), which should exceed
// how long a redelivery can take (the topic's retention is the safe bound). It does not block
// and never closes rdb. Safe for concurrent use; errors are the client's, wrapped.
func NewRedisDeduper(rdb redis.UniversalClient, ttl time.Duration) Deduper {
	if ttl <= 0 {
		ttl = DefaultDedupeTTL
	}
	return &redisDeduper{rdb: rdb, ttl: ttl}
}

// Claim runs dedupe_claim.lua: one round trip, atomic.
func (d *redisDeduper) Claim(ctx context.Context, id string, lease time.Duration) (string, error) {
	if lease <= 0 {
		return "", fmt.Errorf("events: dedupe claim %q: lease %v is not positive", id, lease)
	}
	var b [16]byte
	_, _ = rand.Read(b[:])
	token := "c:" + hex.EncodeToString(b[:])
	n, err := claimScript.Run(ctx, d.rdb, []string{keys.Tagged(DedupePrefix, id)}, token, max(lease.Milliseconds(), 1)).Int()
	switch {
	case err != nil:
		return "", fmt.Errorf("events: dedupe claim %q: %w", id, err)
	case n == 0:
		return "", ErrDuplicate
	case n < 0:
		return "", ErrClaimed
	}
	return token, nil
}

// Done overwrites the claim with "done" for the deduper's ttl.
func (d *redisDeduper) Done(ctx context.Context, id, _ string) error {
	if err := d.rdb.Set(ctx, keys.Tagged(DedupePrefix, id), "done", d.ttl).Err(); err != nil {
		return fmt.Errorf("events: dedupe done %q: %w", id, err)
	}
	return nil
}

// Release runs dedupe_release.lua: deletes the key only while it holds token.
func (d *redisDeduper) Release(ctx context.Context, id, token string) error {
	err := releaseScript.Run(ctx, d.rdb, []string{keys.Tagged(DedupePrefix, id)}, token).Err()
	if err != nil && !errors.Is(err, redis.Nil) {
		return fmt.Errorf("events: dedupe release %q: %w", id, err)
	}
	return nil
}
